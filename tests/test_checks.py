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


def _servers(n: int, host: str = "127.0.0.1"):
    from contextlib import ExitStack

    from faultserver import FaultServer

    stack = ExitStack()
    return stack, [stack.enter_context(FaultServer(host)) for _ in range(n)]


def test_mirrors_404_then_503_forever_then_ok(make_daemon):
    body = os.urandom(100_000)
    stack, (first, second, third) = _servers(3)
    with stack:
        second.add("/pub/tool.bin", body, statuses=[503] * 1000)
        third.add("/other/name-on-mirror.bin", body)
        d = make_daemon(download={"max_attempts": 3})
        mirrors = [
            second.url("/pub/tool.bin"),
            third.url("/other/name-on-mirror.bin?token=s3cret"),
        ]
        d.drop(
            "tool",
            f"url: {first.url('/dl/tool.bin')}\nsha256: {hashlib.sha256(body).hexdigest()}\n"
            f"mirrors: [{mirrors[0]}, '{mirrors[1]}']\n",
        )
        sc = d.wait_status("tool")
        assert sc["status"] == "ok", sc
        # the sidecar shows the mirror in use, redacted; the name is the job's URL's
        assert sc["url"] == third.url("/other/name-on-mirror.bin?***")
        assert sc["files"] == ["tool.bin"]
        assert (d.outbox / "tool" / "tool.bin").read_bytes() == body
        # one try on the 404, max_attempts on the 503, one on the third: per URL
        assert len(first.requests_for("/dl/tool.bin")) == 1
        assert len(second.requests_for("/pub/tool.bin")) == 3
        assert len(third.requests_for("/other/name-on-mirror.bin")) == 1
        assert sc["attempt"] == 5
        assert not list((d.work / "partial").iterdir())
        assert "s3cret" not in d.log()


def test_every_mirror_failing_fails_with_the_last_error(make_daemon):
    stack, (first, second) = _servers(2)
    with stack:
        second.add("/x.bin", b"x", statuses=[410])
        d = make_daemon()
        d.drop("gone", f"url: {first.url('/x.bin')}\nmirrors: [{second.url('/x.bin')}]\n")
        sc = d.wait_status("gone")
        assert sc["status"] == "failed" and sc["error"]["code"] == "http_410", sc
        assert sc["url"] == second.url("/x.bin") and sc["attempt"] == 2
        assert not list((d.work / "partial").iterdir())


def test_every_hop_of_every_mirror_passes_block_networks(make_daemon):
    body = b"the file\n" * 100
    stack, (internal,) = _servers(1)
    stack2, (outside,) = _servers(1, "127.0.0.2")
    with stack, stack2:
        internal.add("/secret", b"internal data")
        outside.add("/to-internal", redirect_to=internal.url("/secret"))
        outside.add("/f.txt", body)
        d = make_daemon(download={"block_networks": ["127.0.0.1/32", "10.0.0.0/8"]})
        d.drop(
            "f",
            f"url: {outside.url('/missing/f.txt')}\nmirrors:\n"
            f"  - {outside.url('/to-internal')}\n  - http://10.255.255.1/f.txt\n"
            f"  - {internal.url('/secret')}\n  - {outside.url('/f.txt')}\n",
        )
        sc = d.wait_status("f")
        assert sc["status"] == "ok", sc
        assert (d.outbox / "f" / "f.txt").read_bytes() == body
        assert not internal.requests  # neither by the redirect nor as a mirror
        log = d.log()
        assert log.count("blocked_address") >= 3, log[-3000:]


def test_a_mirror_with_other_bytes_starts_the_file_over(make_daemon):
    old = os.urandom(400_000)
    new = os.urandom(400_000)  # the same size, other bytes: another file (another ETag)
    stack, (first, second) = _servers(2)
    with stack:
        # the first breaks off every answer: its tries leave a partial file of its bytes
        first.add("/f.bin", old, drop_after=100_000, drop_times=1000)
        second.add("/f.bin", new)
        d = make_daemon(download={"max_attempts": 2})
        d.drop(
            "f",
            f"url: {first.url('/f.bin')}\nextract: false\n"
            f"checksum: sha512:{hashlib.sha512(new).hexdigest()}\n"
            f"mirrors: [{second.url('/f.bin')}]\n",
        )
        sc = d.wait_status("f")
        assert sc["status"] == "ok", sc
        assert (d.outbox / "f" / "f.bin").read_bytes() == new
        (asked,) = second.requests_for("/f.bin")
        assert asked.header("Range") == "bytes=200000-"  # it was asked to continue...
        assert asked.header("If-Range") == first.resources["/f.bin"].etag  # ...that file
        # ...and sent its own, whole (200): nothing of the first's bytes is left


def test_a_mirror_of_another_size_with_the_same_etag_starts_over(make_daemon):
    old = os.urandom(400_000)
    new = os.urandom(500_000)
    stack, (first, second) = _servers(2)
    with stack:
        first.add("/f.bin", old, drop_after=100_000, drop_times=1000)
        etag = first.resources["/f.bin"].etag
        second.add("/f.bin", new, headers={"ETag": etag})  # a lying validator
        d = make_daemon(download={"max_attempts": 2})
        d.drop(
            "f",
            f"url: {first.url('/f.bin')}\nextract: false\n"
            f"checksum: sha1:{hashlib.sha1(new).hexdigest()}\n"  # noqa: S324
            f"mirrors: [{second.url('/f.bin')}]\n",
        )
        sc = d.wait_status("f")
        assert sc["status"] == "ok", sc
        assert (d.outbox / "f" / "f.bin").read_bytes() == new
        # asked to continue; the 206 of another size is refused and the partial file
        # dropped; the next try asks for the whole file
        ranges = [r.header("Range") for r in second.requests_for("/f.bin")]
        assert ranges == ["bytes=200000-", None], ranges


def test_a_mirror_with_the_same_file_continues_it(make_daemon):
    body = os.urandom(400_000)
    stack, (first, second) = _servers(2)
    with stack:
        first.add("/f.bin", body, drop_after=100_000, drop_times=1000)
        second.add("/f.bin", body)  # the same bytes: the same strong ETag
        d = make_daemon(download={"max_attempts": 2})
        d.drop(
            "f",
            f"url: {first.url('/f.bin')}\nextract: false\n"
            f"sha256: {hashlib.sha256(body).hexdigest()}\nmirrors: [{second.url('/f.bin')}]\n",
        )
        sc = d.wait_status("f")
        assert sc["status"] == "ok", sc
        assert (d.outbox / "f" / "f.bin").read_bytes() == body
        (asked,) = second.requests_for("/f.bin")
        assert asked.header("Range") == "bytes=200000-"
