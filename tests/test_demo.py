"""``dropfetch demo`` (issue 12): sample downloads served on loopback, a daemon, the
status view, then a clean stop; and its parts on their own."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from dropfetch.config import load_config
from dropfetch.demo import MARKER, DemoError, demo_config, outcome, prepare_dir
from dropfetch.demosite import PATTERN, SampleSite, samples
from dropfetch.status import Sidecar, Status
from harness import WAIT, check_sidecar, wait_for

SMALL = 3 * 1024**2 + 12345  # the large sample in these tests: not a whole number of blocks


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# --- the parts ---------------------------------------------------------------------------


def test_site_serves_the_samples_then_closes_its_port():
    items = samples(SMALL)
    with SampleSite(items) as site:
        by_name = {s.name: s for s in items}
        for name in ("tools-1.0", "photos", "release-notes", "tampered"):
            assert _get(site.url(by_name[name].path)) == (200, by_name[name].body)
        assert _get(site.url("/missing.tar.gz"))[0] == 404
        assert _get(site.url("/nothing-here"))[0] == 404
        status, body = _get(site.url("/disk-image.img"))
        port = site.port
    assert status == 200 and len(body) == SMALL
    assert body == (PATTERN * (SMALL // len(PATTERN) + 1))[:SMALL]
    assert _refused(port)


def test_samples_cover_each_kind_and_each_failure():
    items = samples(SMALL)
    assert [s.expect for s in items if s.expect != "ok"] == ["http_404", "checksum_mismatch"]
    tampered = next(s for s in items if s.name == "tampered")
    assert (
        tampered.body is not None and tampered.sha256 != hashlib.sha256(tampered.body).hexdigest()
    )
    assert next(s for s in items if s.name == "disk-image").files == ["disk-image.img"]
    assert next(s for s in items if s.name == "photos").files == [
        "photos/beach.jpg",
        "photos/forest.jpg",
        "photos/index.txt",
    ]
    assert samples(SMALL)[0].body == items[0].body  # the same archives at every start


def test_demo_config_lets_only_loopback_through(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(demo_config()))
    config = load_config(path)
    defaults = load_config(None)
    blocked = config.download.block_networks

    def is_blocked(addr: str) -> bool:
        return any(ipaddress.ip_address(addr) in net for net in blocked)

    assert not is_blocked("127.0.0.1")
    assert is_blocked("169.254.169.254") and is_blocked("::1") and is_blocked("0.0.0.1")
    assert set(defaults.download.block_networks) - set(blocked) == {
        ipaddress.ip_network("127.0.0.0/8")
    }
    assert config.inbox == tmp_path / "inbox" and config.outbox == tmp_path / "outbox"


def test_prepare_dir_refuses_a_directory_that_is_not_a_demo(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError, match="holds no earlier demo"):
        prepare_dir(other)
    assert (other / "precious.txt").read_text() == "keep me"
    earlier = tmp_path / "demo"
    prepare_dir(earlier)
    (earlier / "outbox").mkdir()
    (earlier / "outbox" / "old").write_text("x")
    prepare_dir(earlier)
    assert sorted(p.name for p in earlier.iterdir()) == [MARKER]


def test_outcome_says_whether_a_job_ended_as_it_should():
    items = {s.name: s for s in samples(SMALL)}
    tools, missing = items["tools-1.0"], items["missing"]

    def sidecar(status: Status, **fields: object) -> Sidecar:
        return Sidecar(id="x", job="x.url", job_sha256="0" * 64, status=status, **fields)  # type: ignore[arg-type]

    ok = sidecar(Status.OK, files=tools.files, output="tools-1.0")
    assert outcome(tools, ok) == (True, "ok: 3 files in outbox/tools-1.0/")
    assert outcome(tools, sidecar(Status.OK, files=["other"]))[0] is False
    assert outcome(tools, None) == (False, "did not end (no status yet)")
    assert outcome(tools, sidecar(Status.DOWNLOADING)) == (False, "did not end (downloading)")
    failed = sidecar(
        Status.FAILED, error={"code": "http_404", "message": "the server answered 404"}
    )
    fine, line = outcome(missing, failed)
    assert fine and "http_404, on purpose" in line and "the server answered 404" in line
    assert outcome(missing, ok)[0] is False
    other = sidecar(Status.FAILED, error={"code": "network", "message": "reset"})
    assert outcome(missing, other) == (
        False,
        "should have failed with http_404, ended failed (network)",
    )


# --- the whole demo ----------------------------------------------------------------------


def _demo(directory: Path, *args: str) -> subprocess.Popen[str]:
    """The demo in ``directory``, named relative to its parent, the working directory
    (as `make demo` names var/demo)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dropfetch", "demo", "--dir", directory.name, *args],
        cwd=directory.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _left_behind(directory: Path) -> list[str]:
    """Command lines of processes that name the demo's directory (its daemon)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(directory / "config.yaml") in cmdline:
            found.append(cmdline)
    return found


def _port(output: str) -> int:
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", output)
    assert m, output
    return int(m.group(1))


@pytest.mark.e2e
def test_demo_downloads_every_sample_and_leaves_nothing_running(tmp_path):
    directory = tmp_path / "demo"
    demo = _demo(directory, "--big", str(SMALL), "--rate", "0")
    output, _ = demo.communicate(timeout=300)
    assert demo.returncode == 0, output
    inbox, outbox = directory / "inbox", directory / "outbox"
    for s in samples(SMALL):
        sidecar = check_sidecar(json.loads((inbox / f"{s.name}.status.json").read_text()))
        assert f"  {s.name}  " in output
        if s.expect == "ok":
            assert sidecar["status"] == "ok" and sidecar["files"] == s.files, sidecar
            for name, data in s.members.items():
                assert (outbox / s.name / name).read_bytes() == data
        else:
            assert sidecar["status"] == "failed", sidecar
            assert sidecar["error"]["code"] == s.expect, sidecar
            assert not (outbox / s.name).exists()
    assert (outbox / "release-notes/release-notes.txt").read_bytes() == next(
        s.body for s in samples(SMALL) if s.name == "release-notes"
    )
    image = outbox / "disk-image/disk-image.img"
    assert image.stat().st_size == SMALL
    with image.open("rb") as fh:
        assert fh.read(len(PATTERN)) == PATTERN
    assert "Every job ended as it should" in output
    assert "NAME" in output.upper()  # the status view ran
    assert _refused(_port(output))
    assert _left_behind(directory) == []


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_stops_everything_on_ctrl_c_or_a_kill(tmp_path, sig):
    directory = tmp_path / "demo"
    demo = _demo(directory, "--big", "512MiB", "--rate", "1MiB")  # minutes: it is cut short
    sidecar = directory / "inbox" / "disk-image.status.json"
    try:
        wait_for(
            lambda: sidecar.is_file() and '"downloading"' in sidecar.read_text(),
            timeout=120,
            interval=0.1,
            message="the large sample to be downloading",
        )
        assert len(_left_behind(directory)) == 1  # its daemon, found by its command line
        demo.send_signal(sig)
        output, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 130, output
    assert "Interrupted" in output
    assert "disk-image     did not end" in output
    assert json.loads(sidecar.read_text())["status"] == "queued"  # checkpointed by the stop
    assert _refused(_port(output))
    assert _left_behind(directory) == []
