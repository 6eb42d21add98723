"""End to end: a real daemon subprocess, a real HTTP server, real files (issue 2)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from archives import OS_TEMPLATE, tar_bytes, zip_bytes
from harness import DEBUG_LOG, FAST_TICK, wait_for, wait_idle, wait_looked

SMALL = {"a.txt": b"alpha\n", "dir/b.bin": os.urandom(5000), "dir/sub/c.txt": b"c" * 100}


def test_plain_job_file_tar_gz_os_template(fault_server, make_daemon):
    fault_server.add("/debian-7.tar.gz", tar_bytes(OS_TEMPLATE, compression="gz"))
    d = make_daemon()
    d.drop("debian-7", "# a comment first\n\n" + fault_server.url("/debian-7.tar.gz") + "\n")
    sc = d.wait_status("debian-7")
    assert sc["status"] == "ok", sc
    assert sc["files"] == sorted(OS_TEMPLATE)
    assert sc["output"] == "debian-7"
    assert sc["archive"]["format"] == "tar.gz"
    assert sc["progress"] == 100 and sc["attempt"] == 1 and sc["error"] is None
    for name, data in OS_TEMPLATE.items():
        assert (d.outbox / "debian-7" / name).read_bytes() == data
    assert not list((d.work / "staging").iterdir())
    assert not list((d.work / "partial").iterdir())


def test_windows_internet_shortcut(fault_server, make_daemon):
    fault_server.add("/w.zip", zip_bytes(SMALL))
    d = make_daemon()
    shortcut = (
        "\ufeff[{000214A0-0000-0000-C000-000000000046}]\r\nProp3=19,11\r\n"
        "[InternetShortcut]\r\nIDList=\r\nURL=" + fault_server.url("/w.zip") + "\r\n"
    )
    d.drop("win", shortcut.encode("utf-8"))
    sc = d.wait_status("win")
    assert sc["status"] == "ok", sc
    assert sc["files"] == sorted(SMALL)
    assert sc["archive"]["format"] == "zip"


@pytest.mark.parametrize(
    ("compression", "fmt"), [("xz", "tar.xz"), ("zst", "tar.zst"), ("bz2", "tar.bz2"), ("", "tar")]
)
def test_tar_formats(fault_server, make_daemon, compression, fmt):
    fault_server.add("/pkg", tar_bytes(SMALL, compression=compression))  # no suffix: sniffed
    d = make_daemon()
    d.drop("pkg", fault_server.url("/pkg"))
    sc = d.wait_status("pkg")
    assert sc["status"] == "ok", sc
    assert sc["archive"]["format"] == fmt
    assert d.output_files("pkg") == sorted(SMALL)


def test_yaml_job_with_sha256_and_single_gz(fault_server, make_daemon):
    payload = b"just one file\n" * 1000
    body = gzip.compress(payload)
    fault_server.add("/notes.txt.gz", body)
    d = make_daemon()
    d.drop(
        "notes",
        f"url: {fault_server.url('/notes.txt.gz')}\nsha256: {hashlib.sha256(body).hexdigest()}\n",
    )
    sc = d.wait_status("notes")
    assert sc["status"] == "ok", sc
    assert sc["files"] == ["notes.txt"]
    assert (d.outbox / "notes" / "notes.txt").read_bytes() == payload
    assert sc["archive"]["sha256"] == hashlib.sha256(body).hexdigest()


def test_sha256_mismatch_publishes_nothing(fault_server, make_daemon):
    fault_server.add("/x.tar.gz", tar_bytes(SMALL, compression="gz"))
    d = make_daemon()
    d.drop("bad", f"url: {fault_server.url('/x.tar.gz')}\nsha256: {'0' * 64}\n")
    sc = d.wait_status("bad")
    assert sc["status"] == "failed"
    assert sc["error"]["code"] == "checksum_mismatch"
    assert "SHA-256" in sc["error"]["message"]
    assert not (d.outbox / "bad").exists()
    assert not list((d.work / "partial").iterdir())


def test_non_archive_delivered_as_file(fault_server, make_daemon):
    data = b"<html>not an archive</html>" * 10
    fault_server.add("/page/report.html", data)
    fault_server.add("/raw", os.urandom(3000))
    d = make_daemon()
    d.drop("page", fault_server.url("/page/report.html"))
    d.drop("raw", f"url: {fault_server.url('/raw')}\nfilename: blob.bin\n")
    d.drop("noext", f"url: {fault_server.url('/x.tar')}\nextract: false\n")
    fault_server.add("/x.tar", tar_bytes(SMALL))
    assert d.wait_status("page")["files"] == ["report.html"]
    assert (d.outbox / "page" / "report.html").read_bytes() == data
    assert d.wait_status("raw")["files"] == ["blob.bin"]
    sc = d.wait_status("noext")
    assert sc["status"] == "ok" and sc["files"] == ["x.tar"], sc


def test_http_404_is_final(fault_server, make_daemon):
    d = make_daemon()
    d.drop("missing", fault_server.url("/nothing-here.tar.gz"))
    sc = d.wait_status("missing")
    assert sc["status"] == "failed"
    assert sc["error"]["code"] == "http_404"
    assert sc["attempt"] == 1
    assert len(fault_server.requests_for("/nothing-here.tar.gz")) == 1


def test_blocked_address_with_default_networks(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes(SMALL))
    d = make_daemon(download={"block_networks": ["127.0.0.0/8", "::1/128"]})
    d.drop("internal", fault_server.url("/x.zip"))
    sc = d.wait_status("internal")
    assert sc["status"] == "failed"
    assert sc["error"]["code"] == "blocked_address"
    assert not fault_server.requests_for("/x.zip")


def test_invalid_job_file_and_daemon_goes_on(fault_server, make_daemon):
    fault_server.add("/good.zip", zip_bytes(SMALL))
    d = make_daemon()
    d.drop("broken", b"\xff\xfe not utf-8 \x80")
    d.drop("ftp", "ftp://example.org/file.tar.gz")
    d.drop("good", fault_server.url("/good.zip"))
    sc = d.wait_status("broken")
    assert sc["status"] == "failed" and sc["error"]["code"] == "bad_job", sc
    assert "UTF-8" in sc["error"]["message"]
    assert d.wait_status("ftp")["error"]["code"] == "bad_url"
    assert d.wait_status("good")["status"] == "ok"


def test_removal_purges_output_and_sidecar(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes(SMALL))
    d = make_daemon()
    job = d.drop("gone", fault_server.url("/x.zip"))
    d.wait_status("gone", "ok")
    assert (d.outbox / "gone").is_dir()
    job.unlink()
    wait_for(
        lambda: not d.sidecar_path("gone").exists() and not (d.outbox / "gone").exists(),
        message="the purge",
    )


def test_removal_with_keep_leaves_output(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes(SMALL))
    d = make_daemon(on_job_removed="keep")
    job = d.drop("kept", fault_server.url("/x.zip"))
    d.wait_status("kept", "ok")
    job.unlink()
    wait_for(
        lambda: "kept: job removed; output and sidecar kept" in d.log(),
        message="the daemon to handle the removal",
    )
    assert (d.outbox / "kept").is_dir()
    assert d.sidecar("kept")["status"] == "ok"


def test_removal_during_download_stops_and_purges(fault_server, make_daemon):
    fault_server.add("/slow.bin", os.urandom(2_000_000), rate=200_000)
    d = make_daemon()
    job = d.drop("slow", fault_server.url("/slow.bin"))
    d.wait_status("slow", "downloading")
    job.unlink()
    wait_for(lambda: not d.sidecar_path("slow").exists(), message="the purge")
    assert not (d.outbox / "slow").exists()
    wait_for(lambda: not list((d.work / "partial").iterdir()), message="partials removed")


def test_changed_job_file_replaces_output(fault_server, make_daemon):
    fault_server.add("/v1.zip", zip_bytes({"v1.txt": b"one"}))
    fault_server.add("/v2.zip", zip_bytes({"v2.txt": b"two"}))
    d = make_daemon()
    d.drop("app", fault_server.url("/v1.zip"))
    first = d.wait_status("app", "ok")
    d.drop("app", fault_server.url("/v2.zip"))
    wait_for(
        lambda: (
            (d.sidecar("app") or {}).get("job_sha256") != first["job_sha256"]
            and d.sidecar("app")["status"] == "ok"
        ),
        message="the new version",
    )
    assert d.output_files("app") == ["v2.txt"]


def test_restart_does_not_redo_finished_jobs(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes(SMALL))
    d = make_daemon(rescan_interval=0.5, **DEBUG_LOG)
    d.drop("once", fault_server.url("/x.zip"))
    d.drop("bad", "not a url at all")
    d.wait_status("once", "ok")
    d.wait_status("bad", "failed")
    assert d.stop() == 0
    before = len(fault_server.requests)
    updated = d.sidecar("once")["updated"]
    d.start(env=FAST_TICK)
    d.drop("later", fault_server.url("/x.zip"))
    d.wait_status("later", "ok")
    wait_looked(d)  # it has seen "once" and "bad" again...
    wait_idle(d)  # ...and done all it meant to with them
    assert d.sidecar("once")["updated"] == updated
    assert len(fault_server.requests) == before + 1


def test_fifty_jobs_four_workers(fault_server, make_daemon):
    d = make_daemon(workers=4)
    for i in range(50):
        fault_server.add(
            f"/j{i}.tar.gz", tar_bytes({f"f{i}.txt": str(i).encode()}, compression="gz")
        )
    for i in range(50):
        d.drop(f"job{i}", fault_server.url(f"/j{i}.tar.gz"))
    for i in range(50):
        sc = d.wait_status(f"job{i}")
        assert sc["status"] == "ok", sc
        assert sc["files"] == [f"f{i}.txt"]
    assert len(fault_server.requests) == 50


def test_progress_is_observable(fault_server, make_daemon):
    # a zip (extracted after the download, never streamed) that unpacks to 120 MB:
    # small on the wire, slow enough to unpack that the unpacking phase is seen
    body = zip_bytes({"zeros.bin": bytes(120_000_000), "random.bin": os.urandom(100_000)})
    fault_server.add("/big.zip", body, rate=len(body) // 3)
    d = make_daemon(status={"update_interval": 0.05})
    d.drop("big", fault_server.url("/big.zip"))
    seen: list[tuple[str, int | None]] = []
    deadline = time.monotonic() + 240  # only bounds a failure: 120 MB to unpack
    while time.monotonic() < deadline:
        sc = d.sidecar("big")
        if sc:
            if not seen or seen[-1] != (sc["status"], sc["progress"]):
                seen.append((sc["status"], sc["progress"]))
            if sc["status"] in ("ok", "failed"):
                break
        time.sleep(0.01)
    statuses = [s for s, _ in seen]
    assert statuses[-1] == "ok", seen
    downloading = [p for s, p in seen if s == "downloading" and p is not None]
    assert len(downloading) >= 3, seen
    assert downloading == sorted(downloading) and downloading[-1] > downloading[0]
    assert 0 < max(downloading) <= 100
    assert "unpacking" in statuses
    assert statuses.index("unpacking") > statuses.index("downloading")


def test_sidecar_is_never_half_written(fault_server, make_daemon):
    fault_server.add("/big.bin", os.urandom(2_000_000), rate=2_000_000)
    d = make_daemon(status={"update_interval": 0.01})
    d.drop("atomic", fault_server.url("/big.bin"))
    reads = 0
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        nonlocal reads
        path = d.sidecar_path("atomic")
        while not stop.is_set():
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                json.loads(raw)
            except ValueError:
                errors.append(raw.decode(errors="replace"))
            reads += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        d.wait_status("atomic")
    finally:
        stop.set()
        t.join()
    assert not errors
    assert reads > 100


def test_cli_submit_status_retry_delete(fault_server, make_daemon):
    fault_server.add("/tool-1.0.tar.gz", tar_bytes(SMALL, compression="gz"))
    d = make_daemon()
    env = {**os.environ}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dropfetch", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )

    out = cli("submit", fault_server.url("/tool-1.0.tar.gz"), "--config", str(d.config_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(d.inbox / "tool-1.0.url")
    assert d.wait_status("tool-1.0")["status"] == "ok"
    dup = cli("submit", fault_server.url("/tool-1.0.tar.gz"), "--inbox", str(d.inbox))
    assert dup.returncode == 2 and "exists" in dup.stderr
    table = cli("status", "--inbox", str(d.inbox))
    assert table.returncode == 0 and "tool-1.0" in table.stdout and "ok" in table.stdout
    js = json.loads(cli("status", "--json", "--inbox", str(d.inbox)).stdout)
    assert [s["id"] for s in js] == ["tool-1.0"]
    requests_before = len(fault_server.requests)
    assert cli("retry", "tool-1.0", "--inbox", str(d.inbox)).returncode == 0
    wait_for(lambda: len(fault_server.requests) > requests_before, message="the retry")
    d.wait_status("tool-1.0", "ok")
    assert cli("delete", "tool-1.0", "--inbox", str(d.inbox)).returncode == 0
    wait_for(lambda: not (d.outbox / "tool-1.0").exists(), message="the purge")
    assert cli("delete", "tool-1.0", "--inbox", str(d.inbox)).returncode == 1


def test_keep_archive_next_to_output_and_purged_with_it(fault_server, make_daemon):
    body = tar_bytes(SMALL, compression="xz")
    fault_server.add("/k.tar.xz", body)
    d = make_daemon()
    job = d.drop("k", f"url: {fault_server.url('/k.tar.xz')}\nkeep_archive: true\n")
    sc = d.wait_status("k")
    assert sc["status"] == "ok" and sc["archive"]["kept"] == "k.tar.xz", sc
    assert (d.outbox / "k.tar.xz").read_bytes() == body
    assert d.output_files("k") == sorted(SMALL)
    job.unlink()
    wait_for(
        lambda: not (d.outbox / "k.tar.xz").exists() and not (d.outbox / "k").exists(),
        message="the purge of the output and the kept archive",
    )
