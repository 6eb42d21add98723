"""End to end: checksum, checksum_url and mirrors with a real daemon and real servers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from archives import tar_bytes
from dropfetch.checksums import Checksum
from dropfetch.jobfile import parse_job

SMALL = {"a.txt": b"alpha\n", "dir/b.bin": os.urandom(5000)}


def test_checksum_sha512_ok_and_md5_mismatch(fault_server, make_daemon):
    body = tar_bytes(SMALL, compression="gz")
    fault_server.add("/x.tar.gz", body)
    d = make_daemon()
    sha512 = hashlib.sha512(body).hexdigest()
    d.drop("good", f"url: {fault_server.url('/x.tar.gz')}\nchecksum: SHA512:{sha512.upper()}\n")
    d.drop("bad", f"url: {fault_server.url('/x.tar.gz')}\nchecksum: md5:{'0' * 32}\n")
    sc = d.wait_status("good")
    assert sc["status"] == "ok", sc
    assert sc["archive"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert d.output_files("good") == sorted(SMALL)
    sc = d.wait_status("bad")
    assert sc["status"] == "failed" and sc["error"]["code"] == "checksum_mismatch", sc
    assert hashlib.md5(body).hexdigest() in sc["error"]["message"]  # noqa: S324
    assert not (d.outbox / "bad").exists()
    assert not list((d.work / "partial").iterdir())


def test_submit_checksum_options(tmp_path):
    inbox = tmp_path / "inbox"
    md5 = "ab" * 16
    done = subprocess.run(
        [
            *(sys.executable, "-m", "dropfetch", "submit", "--inbox", str(inbox)),
            "https://example.org/x/tool.tar.gz",
            *("--name", "t", "--checksum", f"MD5:{md5}"),
            *("--checksum-url", "https://example.org/x/MD5SUMS"),
            *("--mirror", "https://m1.example/tool.tar.gz"),
            *("--mirror", "https://m2.example/tool.tar.gz"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == str(inbox / "t.url")
    spec = parse_job((inbox / "t.url").read_bytes())
    assert spec.checksum == Checksum("md5", md5)
    assert spec.checksum_url == "https://example.org/x/MD5SUMS"
    assert spec.mirrors == ("https://m1.example/tool.tar.gz", "https://m2.example/tool.tar.gz")
    bad = subprocess.run(
        [
            *(sys.executable, "-m", "dropfetch", "submit", "--inbox", str(inbox)),
            "--checksum",
            "sha1:00",
            "https://example.org/y.zip",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "40 hexadecimal digits" in bad.stderr


def test_checksum_url_entry_by_name(fault_server, make_daemon):
    body = tar_bytes(SMALL, compression="gz")
    fault_server.add("/d/tool-1.0.tar.gz", body)
    fault_server.add("/d/raw", body)
    sums = f"{'f' * 128}  other.tar.gz\r\n{hashlib.sha512(body).hexdigest()} *tool-1.0.tar.gz\r\n"
    fault_server.add("/d/SHA512SUMS", sums.encode())
    fault_server.add("/d/bare.md5", hashlib.md5(body).hexdigest().encode() + b"\n")  # noqa: S324
    fault_server.add("/d/moved", redirect_to=fault_server.url("/d/SHA512SUMS"))
    d = make_daemon()
    sums_url = fault_server.url("/d/SHA512SUMS")
    d.drop("good", f"url: {fault_server.url('/d/tool-1.0.tar.gz')}\nchecksum_url: {sums_url}\n")
    d.drop(  # the entry of the filename option's name, through a redirect
        "named",
        f"url: {fault_server.url('/d/raw')}\nfilename: tool-1.0.tar.gz\nextract: false\n"
        f"checksum_url: {fault_server.url('/d/moved')}\n",
    )
    d.drop(
        "bare",
        f"url: {fault_server.url('/d/raw')}\nchecksum_url: {fault_server.url('/d/bare.md5')}\n",
    )
    d.drop("noentry", f"url: {fault_server.url('/d/raw')}\nchecksum_url: {sums_url}\n")
    d.drop(
        "gone",
        f"url: {fault_server.url('/d/raw')}\nchecksum_url: {fault_server.url('/d/nothing')}\n",
    )
    assert d.wait_status("good")["status"] == "ok"
    assert d.output_files("good") == sorted(SMALL)
    sc = d.wait_status("named")
    assert sc["status"] == "ok" and sc["files"] == ["tool-1.0.tar.gz"], sc
    assert d.wait_status("bare")["status"] == "ok"
    sc = d.wait_status("noentry")
    assert sc["error"]["code"] == "checksum_mismatch", sc
    assert "no entry for 'raw'" in sc["error"]["message"]
    sc = d.wait_status("gone")
    assert sc["error"]["code"] == "http_404", sc
    assert sc["error"]["message"].startswith("the checksum file (checksum_url): ")
    assert not (d.outbox / "noentry").exists() and not (d.outbox / "gone").exists()
    # the checksum file is read before the download: the failed jobs fetched nothing
    assert len(fault_server.requests_for("/d/raw")) == 2  # named and bare


def test_checksum_url_passes_block_networks(make_daemon):
    from faultserver import FaultServer

    body = b"plain file\n"
    with FaultServer("127.0.0.2") as allowed, FaultServer("127.0.0.1") as internal:
        internal.add("/SHA256SUMS", f"{hashlib.sha256(body).hexdigest()}  f.txt\n".encode())
        allowed.add("/f.txt", body)
        allowed.add("/sums", redirect_to=internal.url("/SHA256SUMS"))
        d = make_daemon(download={"block_networks": ["127.0.0.1/32"]})
        d.drop("f", f"url: {allowed.url('/f.txt')}\nchecksum_url: {allowed.url('/sums')}\n")
        sc = d.wait_status("f")
        assert sc["error"]["code"] == "blocked_address", sc
        assert not internal.requests and not allowed.requests_for("/f.txt")


def test_read_small_caps_the_size(fault_server):
    import threading

    from dropfetch.config import DownloadConfig
    from dropfetch.download import Downloader
    from dropfetch.errors import HttpStatusError, TooLargeError

    fault_server.add("/big", b"x" * 5000, chunked=True)
    fault_server.add("/small", b"0123456789")
    with Downloader(DownloadConfig(block_networks=())) as d:
        cancel = threading.Event()
        assert d.read_small(fault_server.url("/small"), limit=10, cancel=cancel) == b"0123456789"
        with pytest.raises(TooLargeError, match="larger than 4096 bytes"):
            d.read_small(fault_server.url("/big"), limit=4096, cancel=cancel)
        with pytest.raises(HttpStatusError) as info:
            d.read_small(fault_server.url("/none"), limit=10, cancel=cancel)
        assert info.value.code == "http_404"
