"""HTTP connections reused across jobs: one worker's Downloader keeps its connections
to a host open between jobs; the job's own headers stay with the job, the SSRF guard
runs on every new connection, and a small download starts no thread of its own."""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropfetch import netguard
from dropfetch.config import DownloadConfig
from dropfetch.download import Downloader, Transfer
from dropfetch.errors import BlockedAddressError, CancelledError
from faultserver import FaultServer
from harness import wait_for

OPEN = DownloadConfig(block_networks=(), timeout_connect=5, timeout_read=30)
SMALL = os.urandom(20_000)


@pytest.fixture
def srv() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def _fetch(d: Downloader, url: str, path: Path, **kw: Any) -> None:
    d.fetch(url, path, cancel=threading.Event(), **kw)
    assert path.read_bytes() == SMALL
    path.unlink()


def test_jobs_to_one_host_share_a_connection(srv: FaultServer, tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d", "e"):
        srv.add(f"/{name}.tar.gz", SMALL)
    with Downloader(OPEN) as d:
        for name in ("a", "b", "c", "d", "e"):
            _fetch(d, srv.url(f"/{name}.tar.gz"), tmp_path / f"{name}.part")
    assert len(srv.requests) == 5
    assert srv.connections == 1  # keep-alive: one connection for the five jobs


def test_a_jobs_headers_are_not_sent_with_the_next_job(srv: FaultServer, tmp_path: Path) -> None:
    srv.add("/private", SMALL, require_headers={"Authorization": "Bearer job-a"})
    srv.add("/public", SMALL)
    with Downloader(OPEN) as d:
        _fetch(
            d,
            srv.url("/private"),
            tmp_path / "a.part",
            headers=(("Authorization", "Bearer job-a"), ("X-Job", "a")),
        )
        _fetch(d, srv.url("/public"), tmp_path / "b.part")
        _fetch(d, srv.url("/public"), tmp_path / "c.part", headers=(("X-Job", "c"),))
    assert srv.connections == 1  # the same connection carried all three
    first, second, third = srv.requests
    assert first.header("Authorization") == "Bearer job-a" and first.header("X-Job") == "a"
    assert second.header("Authorization") is None and second.header("X-Job") is None
    assert third.header("Authorization") is None and third.header("X-Job") == "c"


def test_the_guard_runs_on_each_new_connection_not_on_reused_ones(
    srv: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks: list[str] = []
    original = netguard.AddressGuard.pick

    def pick(self: netguard.AddressGuard, host: str, port: int) -> str:
        picks.append(host)
        return original(self, host, port)

    monkeypatch.setattr(netguard.AddressGuard, "pick", pick)
    srv.add("/f", SMALL)
    blocked = DownloadConfig(
        block_networks=(ipaddress.ip_network("127.0.0.2/32"),), timeout_connect=5
    )
    with FaultServer("127.0.0.2") as inner, Downloader(blocked) as d:
        inner.add("/f", SMALL)
        srv.add("/to-inner", redirect_to=inner.url("/f"))
        for name in ("a", "b", "c"):
            _fetch(d, srv.url("/f"), tmp_path / f"{name}.part")
        assert picks == ["127.0.0.1"]  # one connection, checked once
        # a new address over the same session: a new connection, checked, refused
        with pytest.raises(BlockedAddressError):
            d.fetch(inner.url("/f"), tmp_path / "x.part", cancel=threading.Event())
        _fetch(d, srv.url("/f"), tmp_path / "z.part")  # the pooled one still serves
        assert srv.connections == 1
        with pytest.raises(BlockedAddressError):  # also as a redirect hop
            d.fetch(srv.url("/to-inner"), tmp_path / "y.part", cancel=threading.Event())
        assert inner.connections == 0 and not inner.requests  # never contacted
    assert picks == ["127.0.0.1", "127.0.0.2", "127.0.0.2"]


def _named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def test_small_downloads_start_no_thread_each(srv: FaultServer, tmp_path: Path) -> None:
    srv.add("/f", SMALL)
    watchers: set[threading.Thread] = set()
    hashers: list[threading.Thread] = []

    def progress(t: Transfer) -> None:
        del t
        watchers.update(_named("dropfetch-cancel"))
        hashers.extend(_named("dropfetch-hash"))

    with Downloader(OPEN) as d:
        for name in ("a", "b", "c", "d"):
            _fetch(d, srv.url("/f"), tmp_path / f"{name}.part", on_progress=progress)
    assert len(watchers) == 1  # one cancel watcher served the four downloads
    assert not hashers  # a small body is hashed on the worker's own thread
    # the watcher ends on its own once no transfer needs it
    wait_for(lambda: not _named("dropfetch-cancel"), message="the cancel watcher to end")


def test_one_watcher_cancels_only_the_cancelled_transfer(srv: FaultServer, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    srv.add("/stall", data, stall_after=1000, stall_seconds=60, stall_times=2)
    stalled = [threading.Event(), threading.Event()]
    cancels = [threading.Event(), threading.Event()]
    outcome: list[BaseException | None] = [None, None]

    def job(i: int) -> None:
        def progress(t: Transfer) -> None:
            if t.bytes_done >= 1000:
                stalled[i].set()  # the next read blocks on the silent server

        try:
            with Downloader(OPEN) as d:
                d.fetch(
                    srv.url("/stall"),
                    tmp_path / f"{i}.part",
                    on_progress=progress,
                    cancel=cancels[i],
                )
        except BaseException as exc:  # noqa: BLE001 - looked at below
            outcome[i] = exc

    threads = [threading.Thread(target=job, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    try:
        for e in stalled:
            assert e.wait(30)
        cancels[0].set()
        threads[0].join(30)
        assert isinstance(outcome[0], CancelledError)
        assert threads[1].is_alive() and outcome[1] is None  # still waiting on its read
    finally:
        cancels[1].set()
        for t in threads:
            t.join(30)
    assert isinstance(outcome[1], CancelledError)


def test_a_checksum_file_and_its_download_share_a_connection(
    srv: FaultServer, tmp_path: Path
) -> None:
    srv.add("/SHA256SUMS", b"0" * 64 + b"  f.tar.gz\n")
    srv.add("/chunked-SUMS", b"0" * 64 + b"  f.tar.gz\n", chunked=True)
    srv.add("/f.tar.gz", SMALL)
    cancel = threading.Event()
    with Downloader(OPEN) as d:
        assert d.read_small(srv.url("/SHA256SUMS"), limit=4096, cancel=cancel).endswith(b"gz\n")
        assert d.read_small(srv.url("/chunked-SUMS"), limit=4096, cancel=cancel)
        _fetch(d, srv.url("/f.tar.gz"), tmp_path / "f.part")
    assert len(srv.requests) == 3
    assert srv.connections == 1
