"""dropfetch.download against a real, misbehaving HTTP server on loopback."""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from dropfetch import __version__
from dropfetch.config import DownloadConfig
from dropfetch.download import Downloader, Transfer
from dropfetch.errors import (
    BadUrlError,
    BlockedAddressError,
    CancelledError,
    DiskFullError,
    DownloadTimeoutError,
    HttpStatusError,
    NetworkError,
    TooLargeError,
)
from dropfetch.netguard import blocked_network
from dropfetch.resume import meta_path
from dropfetch.urlpolicy import check_url, redact_url
from faultserver import FaultServer, fault_server  # noqa: F401 - the fixture

OPEN = DownloadConfig(block_networks=(), timeout_connect=5, timeout_read=5)
DATA = os.urandom(3 * 1024 * 1024 + 12345)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make(config: DownloadConfig = OPEN, **kw: Any) -> Downloader:
    return Downloader(config, **kw)


@pytest.fixture
def dl() -> Iterator[Downloader]:
    d = make()
    yield d
    d.close()


@pytest.fixture
def partial(tmp_path: Path) -> Path:
    return tmp_path / "job.part"


@pytest.fixture
def srv(fault_server: FaultServer) -> FaultServer:  # noqa: F811 - pytest fixture
    return fault_server


# --- plain transfers ---------------------------------------------------------------


def test_plain_download(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/files/a%20b.bin", DATA)
    seen: list[Transfer] = []
    result = dl.fetch(srv.url("/files/a%20b.bin"), partial, on_progress=seen.append)
    assert result.size == len(DATA) == partial.stat().st_size
    assert result.sha256 == sha(DATA)
    assert partial.read_bytes() == DATA
    assert result.filename == "a b.bin"
    assert result.resumed_from == 0
    assert result.url == srv.url("/files/a%20b.bin")
    assert meta_path(partial).exists()  # kept for the caller
    req = srv.requests[-1]
    assert req.header("Accept-Encoding") == "identity"
    assert req.header("User-Agent") == f"dropfetch/{__version__}"
    assert req.header("Range") is None
    assert seen[-1].bytes_done == len(DATA)
    assert all(t.bytes_total == len(DATA) for t in seen)
    assert [t.bytes_done for t in seen] == sorted(t.bytes_done for t in seen)


def test_keep_alive_and_user_agent(srv: FaultServer, partial: Path) -> None:
    srv.add("/a", b"x" * 1000)
    with make(DownloadConfig(block_networks=(), user_agent="probe/1")) as d:
        d.fetch(srv.url("/a"), partial)
        d.fetch(srv.url("/a"), partial.with_name("b"))
    assert [r.header("User-Agent") for r in srv.requests] == ["probe/1", "probe/1"]


def test_content_encoding_is_saved_raw(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    body = gzip.compress(b"hello " * 10000)
    srv.add("/t.tar.gz", body, headers={"Content-Encoding": "gzip"})
    result = dl.fetch(srv.url("/t.tar.gz"), partial)
    assert partial.read_bytes() == body
    assert result.sha256 == sha(body)


def test_chunked_body(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/c", DATA, chunked=True)
    seen: list[Transfer] = []
    result = dl.fetch(srv.url("/c"), partial, on_progress=seen.append)
    assert result.sha256 == sha(DATA)
    assert seen[-1].bytes_total is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="report 1.pdf"', "report 1.pdf"),
        ("attachment; filename*=UTF-8''%C3%A9t%C3%A9.zip", "été.zip"),
        ('attachment; filename="../../etc/passwd"', "dl.bin"),
        ('attachment; filename=".bashrc"', "dl.bin"),
    ],
)
def test_filename_from_content_disposition(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
    header: str,
    expected: str,
) -> None:
    srv.add("/dl.bin", b"abc", headers={"Content-Disposition": header})
    assert dl.fetch(srv.url("/dl.bin"), partial).filename == expected


def test_no_filename_for_bare_host(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/", b"abc")
    assert dl.fetch(srv.url("/"), partial).filename is None


# --- resume --------------------------------------------------------------------------


def test_drop_then_resume_from_exact_offset(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    cut = int(len(DATA) * 0.4)
    res = srv.add("/big", DATA, drop_after=cut)
    with pytest.raises(NetworkError) as info:
        dl.fetch(srv.url("/big"), partial)
    assert info.value.retryable
    assert partial.stat().st_size == cut
    seen: list[Transfer] = []
    result = dl.fetch(srv.url("/big"), partial, on_progress=seen.append)
    second = srv.requests[-1]
    assert second.header("Range") == f"bytes={cut}-"
    assert second.header("If-Range") == res.etag
    assert result.resumed_from == cut
    assert result.sha256 == sha(DATA)
    assert partial.read_bytes() == DATA
    assert seen[0].resumed_from == cut
    assert seen[-1].bytes_done == len(DATA)


def test_resume_uses_last_modified_without_strong_etag(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    res = srv.add("/w", DATA, drop_after=1000, headers={"ETag": 'W/"weak"'})
    with pytest.raises(NetworkError):
        dl.fetch(srv.url("/w"), partial)
    result = dl.fetch(srv.url("/w"), partial)
    assert srv.requests[-1].header("If-Range") == res.last_modified
    assert result.resumed_from == 1000
    assert result.sha256 == sha(DATA)


def test_no_validator_starts_over(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/nv", DATA, drop_after=1000, validators=False)
    with pytest.raises(NetworkError):
        dl.fetch(srv.url("/nv"), partial)
    result = dl.fetch(srv.url("/nv"), partial)
    assert srv.requests[-1].header("Range") is None
    assert result.resumed_from == 0
    assert result.sha256 == sha(DATA)


def test_ignore_range_restarts_from_zero(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    srv.add("/ir", DATA, drop_after=len(DATA) // 2, ignore_range=True)
    with pytest.raises(NetworkError):
        dl.fetch(srv.url("/ir"), partial)
    result = dl.fetch(srv.url("/ir"), partial)
    assert srv.requests[-1].header("Range") == f"bytes={len(DATA) // 2}-"
    assert result.resumed_from == 0
    assert result.sha256 == sha(DATA)
    assert partial.read_bytes() == DATA


def test_file_replaced_between_attempts_is_not_spliced(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    srv.add("/r", DATA, drop_after=len(DATA) // 3)
    with pytest.raises(NetworkError):
        dl.fetch(srv.url("/r"), partial)
    new = os.urandom(len(DATA) - 100)
    srv.replace("/r", new)
    result = dl.fetch(srv.url("/r"), partial)
    assert srv.requests[-1].header("If-Range") is not None
    assert result.resumed_from == 0
    assert result.sha256 == sha(new)
    assert partial.read_bytes() == new
    assert json.loads(meta_path(partial).read_text())["etag"] == srv.resources["/r"].etag


def test_wrong_content_range_discards_partial(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    srv.add("/wcr", DATA, drop_after=5000, wrong_content_range=True)
    with pytest.raises(NetworkError):
        dl.fetch(srv.url("/wcr"), partial)
    with pytest.raises(NetworkError, match="wrong Content-Range"):
        dl.fetch(srv.url("/wcr"), partial)
    assert not partial.exists()
    assert not meta_path(partial).exists()
    result = dl.fetch(srv.url("/wcr"), partial)
    assert srv.requests[-1].header("Range") is None
    assert result.sha256 == sha(DATA)


def test_416_means_complete(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/done", DATA)
    dl.fetch(srv.url("/done"), partial)
    result = dl.fetch(srv.url("/done"), partial)
    assert srv.requests[-1].header("Range") == f"bytes={len(DATA)}-"
    assert result.size == len(DATA)
    assert result.resumed_from == len(DATA)
    assert result.sha256 == sha(DATA)


def test_416_with_other_total_starts_over(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    res = srv.add("/short", b"0123456789")
    partial.write_bytes(b"0123456789abcdef")  # longer than the file: not ours
    meta_path(partial).write_text(
        json.dumps(
            {"url": srv.url("/short"), "etag": res.etag, "last_modified": None, "total": None}
        )
    )
    result = dl.fetch(srv.url("/short"), partial)
    assert [r.header("Range") for r in srv.requests] == ["bytes=16-", None]
    assert partial.read_bytes() == b"0123456789"
    assert result.sha256 == sha(b"0123456789")


def test_partial_without_meta_is_discarded(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    srv.add("/m", DATA)
    partial.write_bytes(b"junk" * 1000)
    result = dl.fetch(srv.url("/m"), partial)
    assert srv.requests[-1].header("Range") is None
    assert result.sha256 == sha(DATA)


def test_partial_for_other_url_is_discarded(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    res = srv.add("/m", DATA)
    partial.write_bytes(DATA[:1000])
    meta_path(partial).write_text(
        json.dumps(
            {"url": srv.url("/other"), "etag": res.etag, "last_modified": None, "total": None}
        )
    )
    result = dl.fetch(srv.url("/m"), partial)
    assert srv.requests[-1].header("Range") is None
    assert result.sha256 == sha(DATA)


# --- HTTP errors, timeouts, broken servers ---------------------------------------


def test_503_with_retry_after(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/busy", DATA, statuses=[503], retry_after="7")
    with pytest.raises(HttpStatusError) as info:
        dl.fetch(srv.url("/busy"), partial)
    err = info.value
    assert (err.status, err.code, err.retryable, err.retry_after) == (503, "http_503", True, 7)
    assert dl.fetch(srv.url("/busy"), partial).sha256 == sha(DATA)


def test_429_with_http_date_retry_after(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    srv.add("/slow", b"x", statuses=[429], retry_after=formatdate(time.time() + 60, usegmt=True))
    with pytest.raises(HttpStatusError) as info:
        dl.fetch(srv.url("/slow"), partial)
    assert info.value.retryable
    assert info.value.retry_after is not None
    assert 50 < info.value.retry_after <= 61


def test_404_is_final(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    with pytest.raises(HttpStatusError) as info:
        dl.fetch(srv.url("/missing?token=secret"), partial)
    assert info.value.code == "http_404"
    assert not info.value.retryable
    assert "secret" not in str(info.value)
    assert "?***" in str(info.value)


def test_stall_times_out(srv: FaultServer, partial: Path) -> None:
    # the server hangs up after 30 s: had the client waited for that instead of its own
    # timeout_read, it would end in a NetworkError (connection ended early), not here
    srv.add("/stall", DATA, stall_after=100_000, stall_seconds=30)
    with (
        make(DownloadConfig(block_networks=(), timeout_read=0.5)) as d,
        pytest.raises(DownloadTimeoutError) as info,
    ):
        d.fetch(srv.url("/stall"), partial)
    assert info.value.retryable
    assert partial.stat().st_size == 100_000


def test_content_length_longer_than_body(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    srv.add("/lie", DATA, lie_length=len(DATA) + 500)
    with pytest.raises(NetworkError, match="ended early"):
        dl.fetch(srv.url("/lie"), partial)
    assert partial.stat().st_size == len(DATA)


def test_content_length_shorter_than_body(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    srv.add("/lie", DATA, lie_length=1000)
    srv.add("/next", b"next")
    assert dl.fetch(srv.url("/lie"), partial).size == 1000  # framing follows the header
    # the rest of the body must not be taken for the next answer
    assert dl.fetch(srv.url("/next"), partial.with_name("n")).sha256 == sha(b"next")


def test_connection_refused_is_retryable(dl: Downloader, partial: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NetworkError) as info:
        dl.fetch(f"http://127.0.0.1:{port}/x", partial)
    assert info.value.retryable


def test_max_size_from_content_length(srv: FaultServer, partial: Path) -> None:
    srv.add("/big", DATA)
    with (
        make(DownloadConfig(block_networks=(), max_size=len(DATA) - 1)) as d,
        pytest.raises(TooLargeError),
    ):
        d.fetch(srv.url("/big"), partial)
    assert not partial.exists()


def test_max_size_counted_without_content_length(srv: FaultServer, partial: Path) -> None:
    srv.add("/big", DATA, chunked=True)
    with (
        make(DownloadConfig(block_networks=(), max_size=1024 * 1024)) as d,
        pytest.raises(TooLargeError) as info,
    ):
        d.fetch(srv.url("/big"), partial)
    assert not info.value.retryable
    assert partial.stat().st_size <= 1024 * 1024


def test_min_free_space(srv: FaultServer, partial: Path) -> None:
    srv.add("/f", DATA)
    with make(min_free_space=1 << 62) as d, pytest.raises(DiskFullError) as info:
        d.fetch(srv.url("/f"), partial)
    assert info.value.retryable


# --- SSRF --------------------------------------------------------------------------


def test_default_block_networks_refuse_loopback(srv: FaultServer, partial: Path) -> None:
    srv.add("/x", b"x")
    with make(DownloadConfig()) as d:
        for url in (srv.url("/x"), f"http://localhost:{srv.port}/x"):
            with pytest.raises(BlockedAddressError) as info:
                d.fetch(url, partial)
            assert "127.0.0.1" in str(info.value)
            assert "download.block_networks" in str(info.value)
            assert not info.value.retryable
    assert srv.requests == []  # refused before a byte was sent


def test_ipv4_mapped_ipv6_is_checked_as_ipv4(srv: FaultServer, partial: Path) -> None:
    nets = (ipaddress.ip_network("127.0.0.0/8"),)
    assert blocked_network("::ffff:127.0.0.1", nets) == nets[0]
    assert blocked_network("::ffff:10.0.0.1", nets) is None
    if not socket.has_ipv6:
        return
    srv.add("/x", b"x")
    with make(DownloadConfig(block_networks=nets)) as d:
        try:
            d.fetch(f"http://[::ffff:127.0.0.1]:{srv.port}/x", partial)
        except BlockedAddressError as exc:
            message = str(exc)
        except NetworkError:
            pytest.skip("no IPv6 socket to an IPv4-mapped address here")
        else:
            pytest.fail("an IPv4-mapped loopback address was not blocked")
    assert "127.0.0.1" in message


def test_redirect_to_blocked_address(srv: FaultServer, partial: Path) -> None:
    with FaultServer("127.0.0.2") as inner:
        inner.add("/secret", b"secret")
        srv.add("/go", redirect_to=inner.url("/secret"))
        blocked = DownloadConfig(block_networks=(ipaddress.ip_network("127.0.0.2/32"),))
        with make(blocked) as d, pytest.raises(BlockedAddressError, match=r"127\.0\.0\.2"):
            d.fetch(srv.url("/go"), partial)
        assert inner.requests == []
        assert len(srv.requests) == 1


def test_dns_rebinding_cannot_slip_through(
    srv: FaultServer,
    partial: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name that resolves to an allowed address first and a blocked one afterwards:
    the connection goes to the address that was checked, never to the second answer."""
    srv.add("/x", b"blocked server")
    with FaultServer(host="127.0.0.3") as allowed_srv:
        allowed_srv.add("/x", b"x")
        real = socket.getaddrinfo
        answers = iter(["127.0.0.3"])

        def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host == "rebind.test":  # first answer allowed, every later one blocked
                return real(next(answers, "127.0.0.1"), port, *args, **kwargs)
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        blocked = DownloadConfig(block_networks=(ipaddress.ip_network("127.0.0.1/32"),))
        with make(blocked) as d:
            url = f"http://rebind.test:{allowed_srv.port}/x"
            assert d.fetch(url, partial).sha256 == sha(b"x")
            assert len(allowed_srv.requests) == 1
            assert allowed_srv.requests[0].headers.get("Host") == f"rebind.test:{allowed_srv.port}"
            # now every answer is the blocked address: refused before connecting
            partial.unlink(missing_ok=True)
            with pytest.raises(BlockedAddressError, match=r"127\.0\.0\.1"):
                d.fetch(f"http://rebind.test:{srv.port}/x", partial)
    assert srv.requests == []


def test_mixed_answers_use_only_allowed_addresses(
    srv: FaultServer,
    partial: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several addresses, the first blocked: only an allowed one is ever dialled."""
    srv.add("/x", b"x")
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "multi.test":
            return real("127.0.0.1", port, *args, **kwargs) + real(
                "127.0.0.3", port, *args, **kwargs
            )
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    blocked = DownloadConfig(block_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    with make(blocked) as d, pytest.raises(NetworkError, match="refused"):
        d.fetch(f"http://multi.test:{srv.port}/x", partial)  # nobody listens on .3
    assert srv.requests == []


def test_empty_block_networks_allow_everything(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
) -> None:
    srv.add("/x", b"x")
    assert dl.fetch(srv.url("/x"), partial).size == 1


# --- redirects and URLs ------------------------------------------------------------


def test_redirects_followed(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/a", redirect_to="/b", redirect_status=301)
    srv.add("/b", redirect_to=srv.url("/final/file.iso"), redirect_status=307)
    srv.add("/final/file.iso", DATA)
    result = dl.fetch(srv.url("/a"), partial)
    assert result.url == srv.url("/final/file.iso")
    assert result.filename == "file.iso"
    assert result.sha256 == sha(DATA)
    assert all(r.header("Accept-Encoding") == "identity" for r in srv.requests)


def test_redirect_loop(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/a", redirect_to="/b")
    srv.add("/b", redirect_to="/a")
    with pytest.raises(BadUrlError, match="too many redirects"):
        dl.fetch(srv.url("/a"), partial)


def test_too_many_redirects(srv: FaultServer, partial: Path) -> None:
    for i in range(4):
        srv.add(f"/{i}", redirect_to=f"/{i + 1}")
    srv.add("/4", b"x")
    with make(DownloadConfig(block_networks=(), max_redirects=3)) as d:
        with pytest.raises(BadUrlError, match="too many redirects"):
            d.fetch(srv.url("/0"), partial)
        assert d.fetch(srv.url("/1"), partial).size == 1


def test_redirect_to_other_scheme(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/a", redirect_to="ftp://example.org/x")
    with pytest.raises(BadUrlError, match="ftp"):
        dl.fetch(srv.url("/a"), partial)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "file:///etc/passwd",
        "http://",
        "http:///path",
        "http://exa mple.org/",
        "http://example.org/\x00",
        "javascript:alert(1)",
        "example.org/file",
        "",
        "http://[::1/",
        "http://example.org:99999/",
    ],
)
def test_check_url_rejects(url: str, dl: Downloader, partial: Path) -> None:
    with pytest.raises(BadUrlError):
        check_url(url)
    with pytest.raises(BadUrlError):
        dl.fetch(url, partial)


def test_check_url_strips() -> None:
    assert check_url("  https://example.org/a?b=1 \n") == "https://example.org/a?b=1"
    assert check_url("HTTP://Example.org") == "HTTP://Example.org"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@host/p?q=1", "https://***@host/p?***"),
        ("https://host/p?q=1", "https://host/p?***"),
        ("https://user@host:8443/p", "https://***@host:8443/p"),
        ("https://host/p", "https://host/p"),
        ("https://host/p#frag", "https://host/p"),
        ("http://a@b@host/", "http://***@host/"),
        ("http://[::1/x?y", "http://[::1/x?***"),
        ("not a url", "not%20a%20url"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_never_raises() -> None:
    for garbage in ("\x00\x01", "http://u:p@[bad", "://", "?" * 10, "%%%"):
        out = redact_url(garbage)
        assert isinstance(out, str)
        assert "\x00" not in out


def test_credentials_never_in_errors(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    url = srv.url("/nope").replace("http://", "http://alice:hunter2@") + "?sig=abc"
    with pytest.raises(HttpStatusError) as info:
        dl.fetch(url, partial)
    assert "hunter2" not in str(info.value)
    assert "sig=abc" not in str(info.value)


# --- cancel and rate -------------------------------------------------------------


def test_cancel_mid_transfer_keeps_partial(srv: FaultServer, dl: Downloader, partial: Path) -> None:
    srv.add("/c", DATA, rate=4 * 1024 * 1024)
    cancel = threading.Event()

    def progress(t: Transfer) -> None:
        if t.bytes_done > 256 * 1024:
            cancel.set()

    with pytest.raises(CancelledError):
        dl.fetch(srv.url("/c"), partial, on_progress=progress, cancel=cancel)
    assert 0 < partial.stat().st_size < len(DATA)
    assert meta_path(partial).exists()
    cancel.clear()
    result = dl.fetch(srv.url("/c"), partial, cancel=cancel)
    assert result.resumed_from > 0
    assert result.sha256 == sha(DATA)


def test_cancel_interrupts_a_blocked_read(srv: FaultServer, partial: Path) -> None:
    cancel = threading.Event()

    def progress(t: Transfer) -> None:
        if t.bytes_done >= 1000:
            # the next read blocks on a silent server; cancel from another thread
            timer.start()

    timer = threading.Timer(0.2, cancel.set)
    res = srv.add("/stall", DATA, stall_after=1000, stall_seconds=60)
    try:
        # timeout_read above the stall: only the cancel can end the read before the
        # server gives up waiting
        with (
            make(DownloadConfig(block_networks=(), timeout_read=600)) as d,
            pytest.raises(CancelledError),
        ):
            d.fetch(srv.url("/stall"), partial, on_progress=progress, cancel=cancel)
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join()
    # fetch returned while the server was still stalling (it counts a stall that runs
    # out before it hangs up): the cancel cut the read
    assert res.stalls_done == 1 and res.stalls_run_out == 0
    assert partial.stat().st_size == 1000


def test_rate_limit_slows_down(srv: FaultServer, partial: Path) -> None:
    data = DATA[:300_000]
    srv.add("/r", data)
    began = time.monotonic()
    with make(DownloadConfig(block_networks=(), rate_limit=600_000)) as d:
        result = d.fetch(srv.url("/r"), partial)
    # 300 kB at 600 kB/s: about half a second; unthrottled it takes milliseconds
    assert time.monotonic() - began >= 0.35
    assert result.sha256 == sha(data)


# --- disk and name resolution ----------------------------------------------------


def test_free_space_rechecked_while_writing(
    srv: FaultServer,
    partial: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    big = bytes(40 * 1024 * 1024)
    srv.add("/big", big)
    calls: list[int] = []
    real = shutil.disk_usage

    def usage(path: Any) -> Any:
        calls.append(1)
        u = real(path)
        # plenty before the transfer, nothing left at the first re-check (32 MiB in)
        return u._replace(free=1 << 50 if len(calls) == 1 else 0)

    monkeypatch.setattr("dropfetch.fsutil.shutil.disk_usage", usage)
    with make(min_free_space=1) as d, pytest.raises(DiskFullError) as info:
        d.fetch(srv.url("/big"), partial)
    assert info.value.retryable
    assert len(calls) == 2
    assert 32 * 1024 * 1024 <= partial.stat().st_size < len(big)
    assert meta_path(partial).exists()  # resumable once space is back


def test_enospc_while_writing_is_disk_full(
    srv: FaultServer,
    dl: Downloader,
    partial: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    srv.add("/f", DATA)

    def write(_fd: int, _data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dropfetch.bodywriter.os.write", write)
    with pytest.raises(DiskFullError):
        dl.fetch(srv.url("/f"), partial)


def test_unknown_host_is_a_network_error(
    dl: Downloader,
    partial: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(NetworkError, match="could not be resolved") as info:
        dl.fetch("http://no-such-host.invalid/x", partial)
    assert info.value.retryable


def test_https_connections_are_guarded_too(dl: Downloader) -> None:
    from urllib3.connection import HTTPSConnection

    adapter: Any = dl.session.get_adapter("https://example.org/")
    pool_cls = adapter.poolmanager.pool_classes_by_scheme["https"]
    assert issubclass(pool_cls.ConnectionCls, HTTPSConnection)
    # urllib3 has no public hook: the guard replaces its private _new_conn
    assert pool_cls.ConnectionCls._new_conn is not HTTPSConnection._new_conn  # noqa: SLF001
