"""Issue 4 end to end: hostile archives, URLs and job files next to good jobs."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from archives import compress, tar_bytes, zip_bytes
from archives7z import seven_z_zeros
from faultserver import FaultServer
from hostile import CASES, Target

HOSTILE = [c for c in CASES if c.expected != "ok" and not c.config]  # default limits


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
        else:
            out[rel] = "dir" + oct(p.stat().st_mode)
    return out


def good_archives() -> dict[str, tuple[bytes, list[str]]]:
    out: dict[str, tuple[bytes, list[str]]] = {}
    for i in range(20):
        files = {f"g{i}/f{j}.txt": os.urandom(100 + i * j) for j in range(1 + i % 4)}
        kind = ("gz", "xz", "zst", "bz2", "", "zip")[i % 6]
        data = zip_bytes(files) if kind == "zip" else tar_bytes(files, compression=kind)
        out[f"good{i}"] = (data, sorted(files))
    return out


def test_twenty_hostile_and_twenty_good_jobs(make_daemon, fault_server, tmp_path):
    assert len(HOSTILE) >= 20
    sentinel = tmp_path / "sentinel"
    (sentinel / "dir").mkdir(parents=True)
    (sentinel / "file1").write_text("precious\n")
    (sentinel / "dir" / "file2").write_bytes(os.urandom(1000))
    before = tree_digest(sentinel)
    d = make_daemon(start=False, workers=4, work_dir=str(tmp_path / "work"))
    target = Target(dest=tmp_path / "work" / "staging" / "job", sentinel=sentinel)
    for case in HOSTILE:
        fault_server.add(f"/h/{case.name}", case.build(target))
    good = good_archives()
    for name, (data, _) in good.items():
        fault_server.add(f"/g/{name}", data)
    d.start()
    for case in HOSTILE:
        d.drop(case.name, fault_server.url(f"/h/{case.name}"))
    for name in good:
        d.drop(name, fault_server.url(f"/g/{name}"))
    for case in HOSTILE:
        sc = d.wait_status(case.name)
        assert (sc["status"], sc["error"]["code"] if sc["error"] else None) == (
            "failed",
            case.expected,
        ), (case.name, sc)
        assert sc["error"]["message"]
        assert not (d.outbox / case.name).exists()
    for name, (_, files) in good.items():
        sc = d.wait_status(name)
        assert sc["status"] == "ok", sc
        assert sc["files"] == files
    assert tree_digest(sentinel) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["sentinel", "work", "inbox", "outbox", "config.yaml", d.log_path.name]
    )
    assert sorted(p.name for p in d.outbox.iterdir()) == sorted(good)
    assert not list((tmp_path / "work" / "staging").iterdir())
    assert "unexpected error" not in d.log()


def _routable_ipv4() -> str | None:
    """A local address outside the default block_networks, for an 'allowed' server."""
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in out.splitlines():
        addr = line.split()[3].split("/")[0]
        if not addr.startswith(("127.", "169.254.")):
            return addr
    return None


DEFAULT_BLOCKS = ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8"]


def test_default_config_refuses_internal_addresses(make_daemon, fault_server):
    fault_server.add("/x.zip", zip_bytes({"f": b"1"}))
    d = make_daemon(download={"block_networks": DEFAULT_BLOCKS, "timeout_connect": 2})
    d.drop("loopback", fault_server.url("/x.zip"))
    d.drop("localhost", f"http://localhost:{fault_server.port}/x.zip")
    d.drop("v6", f"http://[::1]:{fault_server.port}/x.zip")
    d.drop("metadata", "http://169.254.169.254/latest/meta-data/")
    d.drop("zero", f"http://0.0.0.0:{fault_server.port}/x.zip")
    for name in ("loopback", "localhost", "v6", "metadata", "zero"):
        sc = d.wait_status(name)
        assert sc["status"] == "failed" and sc["error"]["code"] == "blocked_address", sc
        assert "block_networks" in sc["error"]["message"]
    assert fault_server.requests == []


def test_redirect_to_internal_address_is_refused(make_daemon, fault_server):
    addr = _routable_ipv4()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this machine for an 'allowed' server")
    fault_server.add("/secret", b"internal data")
    with FaultServer(host=addr) as outside:
        outside.add("/to-loopback", redirect_to=fault_server.url("/secret"))
        outside.add("/to-metadata", redirect_to="http://169.254.169.254/latest/meta-data/")
        outside.add("/to-v6", redirect_to=f"http://[::1]:{fault_server.port}/secret")
        outside.add("/ok.zip", zip_bytes({"f": b"1"}))
        d = make_daemon(download={"block_networks": DEFAULT_BLOCKS})
        d.drop("allowed", outside.url("/ok.zip"))
        assert d.wait_status("allowed")["status"] == "ok"
        for name in ("to-loopback", "to-metadata", "to-v6"):
            d.drop(name, outside.url(f"/{name}"))
            sc = d.wait_status(name)
            assert sc["error"]["code"] == "blocked_address", sc
    assert fault_server.requests == []


def test_redirect_loop_and_too_many_redirects(make_daemon, fault_server):
    fault_server.add("/loop-a", redirect_to="/loop-b")
    fault_server.add("/loop-b", redirect_to="/loop-a")
    for i in range(5):
        fault_server.add(f"/hop{i}", redirect_to=f"/hop{i + 1}")
    fault_server.add("/hop5", zip_bytes({"f": b"1"}))
    d = make_daemon(download={"max_redirects": 3})
    d.drop("loop", fault_server.url("/loop-a"))
    d.drop("chain", fault_server.url("/hop0"))
    for name in ("loop", "chain"):
        sc = d.wait_status(name)
        assert sc["status"] == "failed" and sc["error"]["code"] == "bad_url", sc
        assert "redirect" in sc["error"]["message"]
    assert len(fault_server.requests_for("/loop-a")) <= 3


def test_credentials_never_in_sidecar_or_log(make_daemon, fault_server):
    fault_server.add("/private.zip", zip_bytes({"f": b"1"}))
    d = make_daemon(log={"level": "debug"})
    url = f"http://alice:hunter2@127.0.0.1:{fault_server.port}/private.zip?token=TOPSECRET"
    d.drop("secret", url)
    d.drop("secret404", url.replace("private", "missing"))
    sc = d.wait_status("secret")
    assert sc["status"] == "ok"
    assert sc["url"] == f"http://***@127.0.0.1:{fault_server.port}/private.zip?***"
    bad = d.wait_status("secret404")
    assert bad["error"]["code"] == "http_404"
    for text in (d.log(), str(sc), str(bad), d.sidecar_path("secret404").read_text()):
        assert "hunter2" not in text and "TOPSECRET" not in text and "alice" not in text


def test_hostile_job_files_and_names(make_daemon, fault_server):
    fault_server.add("/x.zip", zip_bytes({"f": b"1"}))
    d = make_daemon()
    bad = {
        "binary": os.urandom(200).replace(b"\n", b"") + b"\x00",
        "huge": b"#" * 70_000 + b"\nhttp://x/",
        "spaces": b"http://example.org/a b.zip",
        "empty": b"",
        "notmapping": b"url:\n  - 1\n",
        "unknownopt": f"url: {fault_server.url('/x.zip')}\nmirror: x\n".encode(),
        "pathname": f"url: {fault_server.url('/x.zip')}\nfilename: ../../x\n".encode(),
        "ctl\x01name": fault_server.url("/x.zip").encode(),
        "rtl\u202egnp.exe": fault_server.url("/x.zip").encode(),  # the same rule as C0
        "c1\x85name": fault_server.url("/x.zip").encode(),
        "n" * 201: fault_server.url("/x.zip").encode(),
        "é" * 101: fault_server.url("/x.zip").encode(),
        "名" * 70: fault_server.url("/x.zip").encode(),
    }
    for name, data in bad.items():
        d.drop(name, data)
    d.drop("fine", fault_server.url("/x.zip"))
    assert d.wait_status("fine")["status"] == "ok"
    for name in bad:
        sc = d.wait_status(name)
        assert sc["status"] == "failed" and sc["error"]["code"] == "bad_job", (name, sc)
        assert len(sc["error"]["message"]) > 10
    assert sorted(p.name for p in d.outbox.iterdir() if not p.name.startswith(".")) == ["fine"]


def test_gzip_bomb_job_fails_and_others_finish(make_daemon, fault_server):
    bomb = compress(bytes(100 << 20), "gz")
    fault_server.add("/bomb.gz", bomb)
    fault_server.add("/x.zip", zip_bytes({"f": b"1"}))
    d = make_daemon(extract={"max_ratio": 50})
    d.drop("bomb", fault_server.url("/bomb.gz"))
    d.drop("fine", fault_server.url("/x.zip"))
    assert d.wait_status("fine")["status"] == "ok"
    sc = d.wait_status("bomb")
    assert sc["error"]["code"] == "archive_limits", sc
    assert not (d.outbox / "bomb").exists()


def test_7z_bomb_against_max_total_size_fails_and_staging_is_cleaned(make_daemon, fault_server):
    """Issue 14's acceptance: a 7z of 1 GiB of zeros (made by 7zz, about 230 KB) against
    ``max_total_size: 64MiB`` fails with archive_limits, and nothing stays in staging."""
    bomb = seven_z_zeros(1 << 30)
    assert len(bomb) < 1 << 20
    fault_server.add("/zeros.7z", bomb)
    fault_server.add("/x.zip", zip_bytes({"f": b"1"}))
    d = make_daemon(extract={"max_total_size": "64MiB"})
    d.drop("bomb", fault_server.url("/zeros.7z"))
    d.drop("fine", fault_server.url("/x.zip"))
    sc = d.wait_status("bomb")
    assert (sc["status"], sc["error"]["code"]) == ("failed", "archive_limits"), sc
    assert "max_total_size" in sc["error"]["message"]
    assert d.wait_status("fine")["status"] == "ok"
    assert not (d.outbox / "bomb").exists()
    assert list((d.work / "staging").iterdir()) == []
