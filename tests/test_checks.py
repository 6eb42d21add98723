"""End to end: checksum, checksum_url and mirrors with a real daemon and real servers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

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
