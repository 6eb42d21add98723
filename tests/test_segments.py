"""Segmented downloads (dropfetch.segments) against real fault servers."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dropfetch.config import DownloadConfig
from dropfetch.download import Downloader, Transfer
from dropfetch.errors import CancelledError
from dropfetch.resume import meta_path, read_meta
from dropfetch.segments import SLOTS, HostSlots, Segment, plan, range_problem
from faultserver import FaultServer, fault_server  # noqa: F401 - the fixture
from harness import wait_for

MIB = 1024 * 1024
CONFIG = DownloadConfig(
    block_networks=(), timeout_connect=5, timeout_read=10, segment_min_size=256 * 1024
)
DATA = os.urandom(4 * MIB + 1234)


@pytest.fixture
def dl() -> Iterator[Downloader]:
    d = Downloader(CONFIG)
    yield d
    d.close()


@pytest.fixture
def srv(fault_server: FaultServer) -> FaultServer:  # noqa: F811 - pytest fixture
    return fault_server


def ranged(srv: FaultServer, path: str) -> list[str]:
    return [r.header("Range") or "" for r in srv.requests_for(path) if r.header("Range")]


# --- the pure parts ------------------------------------------------------------------


def test_plan_splits_evenly_and_caps() -> None:
    segs = plan(10, 4, 1, 8)
    assert [(s.first, s.last) for s in segs] == [(0, 2), (3, 5), (6, 7), (8, 9)]
    assert len(plan(100, 8, 1, 3)) == 3  # max_connections_per_host
    assert len(plan(100, 8, 40, 8)) == 2  # segment_min_size
    assert len(plan(10, 8, 40, 8)) == 1


def test_range_problem() -> None:
    seg = Segment(100, 199, done=50)
    assert range_problem(206, "bytes 150-199/1000", "50", seg, 1000) is None
    assert "status 200" in (range_problem(200, None, "1000", seg, 1000) or "")
    assert range_problem(206, "bytes 151-199/1000", "49", seg, 1000) is not None
    assert range_problem(206, "bytes 150-199/1001", "50", seg, 1000) is not None
    assert range_problem(206, "bytes 150-199/1000", "49", seg, 1000) is not None
    assert range_problem(206, "bytes 150-199/1000", None, seg, 1000) is not None


# --- downloads -----------------------------------------------------------------------


def test_four_segments_byte_identical(srv: FaultServer, dl: Downloader, tmp_path: Path) -> None:
    res = srv.add("/f.bin", DATA, rate=2 * MIB)
    seen: list[Transfer] = []
    part = tmp_path / "f.part"
    result = dl.fetch(
        srv.url("/f.bin"), part, on_progress=seen.append, segments=4, algorithms=("sha512",)
    )
    assert part.read_bytes() == DATA
    assert result.sha256 == hashlib.sha256(DATA).hexdigest()
    assert result.digests["sha512"] == hashlib.sha512(DATA).hexdigest()
    asked = ranged(srv, "/f.bin")
    assert len(asked) == 3 and all(r.startswith("bytes=") and not r.endswith("-") for r in asked)
    for r in srv.requests_for("/f.bin"):
        if r.header("Range"):
            assert r.header("If-Range") == res.etag
    assert len(srv.requests_for("/f.bin")) == 4
    assert seen and all(t.bytes_total == len(DATA) for t in seen)
    done = [t.bytes_done for t in seen]
    assert done == sorted(done) and done[-1] == len(DATA)
    # one Transfer for all: before the end, more than one segment's bytes at once
    assert any(len(DATA) // 4 + 1 < n < len(DATA) for n in done)
    # segment 0 stops reading at its end: what the server sent past it is in flight only
    assert len(DATA) <= res.bytes_sent <= 1.1 * len(DATA)
    assert read_meta(meta_path(part)) is not None


@pytest.mark.parametrize(
    "behaviour",
    [
        {"validators": False},
        {"headers": {"ETag": 'W/"weak"'}},
        {"headers": {"Accept-Ranges": "none"}},
        {"chunked": True},
    ],
    ids=["no-etag", "weak-etag", "no-accept-ranges", "chunked"],
)
def test_one_stream_without_a_strong_validator(
    srv: FaultServer, dl: Downloader, tmp_path: Path, behaviour: dict[str, object]
) -> None:
    srv.add("/f.bin", DATA, **behaviour)
    part = tmp_path / "f.part"
    result = dl.fetch(srv.url("/f.bin"), part, segments=4)
    assert part.read_bytes() == DATA and result.sha256 == hashlib.sha256(DATA).hexdigest()
    assert len(srv.requests_for("/f.bin")) == 1


@pytest.mark.parametrize(
    "behaviour", [{"ignore_range": True}, {"wrong_content_range": True}], ids=["200", "wrong-cr"]
)
def test_bad_segment_answer_falls_back_from_the_start(
    srv: FaultServer, dl: Downloader, tmp_path: Path, behaviour: dict[str, object]
) -> None:
    res = srv.add("/f.bin", DATA, **behaviour)
    part = tmp_path / "f.part"
    result = dl.fetch(srv.url("/f.bin"), part, segments=4, algorithms=("sha512",))
    assert part.read_bytes() == DATA
    assert result.digests["sha512"] == hashlib.sha512(DATA).hexdigest()
    last = srv.requests_for("/f.bin")[-1]
    assert last.header("Range") is None  # the fallback: one stream from byte 0
    assert res.bytes_sent >= len(DATA)


def test_small_file_gets_one_stream(srv: FaultServer, dl: Downloader, tmp_path: Path) -> None:
    srv.add("/s.bin", b"x" * 1000)
    part = tmp_path / "s.part"
    dl.fetch(srv.url("/s.bin"), part, segments=4)
    assert part.read_bytes() == b"x" * 1000
    assert len(srv.requests_for("/s.bin")) == 1


def test_cancel_stops_every_segment(srv: FaultServer, dl: Downloader, tmp_path: Path) -> None:
    srv.add("/f.bin", DATA, rate=200_000)
    cancel = threading.Event()
    part = tmp_path / "f.part"

    def progress(t: Transfer) -> None:
        if t.bytes_done > 200_000:
            cancel.set()

    with pytest.raises(CancelledError):
        dl.fetch(srv.url("/f.bin"), part, on_progress=progress, cancel=cancel, segments=4)
    meta = read_meta(meta_path(part))
    assert meta is not None and len(meta.segments) == 4
    assert 0 < sum(s[2] for s in meta.segments) < len(DATA)
    mine = threading.current_thread().name + "-s"
    assert not [t for t in threading.enumerate() if t.name.startswith(mine)]


def test_resume_each_segment(srv: FaultServer, dl: Downloader, tmp_path: Path) -> None:
    res = srv.add("/f.bin", DATA, rate=400_000)
    cancel = threading.Event()
    part = tmp_path / "f.part"

    def progress(t: Transfer) -> None:
        if t.bytes_done > len(DATA) // 3:
            cancel.set()

    with pytest.raises(CancelledError):
        dl.fetch(srv.url("/f.bin"), part, on_progress=progress, cancel=cancel, segments=4)
    wait_for(lambda: res.bytes_sent > 0, message="bytes sent")
    res.rate = None
    result = dl.fetch(srv.url("/f.bin"), part, segments=4, algorithms=("sha512",))
    assert part.read_bytes() == DATA
    assert result.digests["sha512"] == hashlib.sha512(DATA).hexdigest()
    assert result.resumed_from > 0
    assert res.bytes_sent <= 1.1 * len(DATA), res.bytes_sent


# --- the options ---------------------------------------------------------------------


def test_config_keys_and_job_option() -> None:
    from dropfetch.config import ConfigError, config_from_mapping
    from dropfetch.errors import BadJobError
    from dropfetch.jobfile import parse_job

    d = config_from_mapping(
        {"download": {"segments": 4, "segment_min_size": "8MiB", "max_connections_per_host": 8}}
    ).download
    assert (d.segments, d.segment_min_size, d.max_connections_per_host) == (4, 8 * MIB, 8)
    assert DownloadConfig().segments == 1
    for bad in ({"segments": 0}, {"segments": 17}, {"segment_min_size": 0}):
        with pytest.raises(ConfigError) as info:
            config_from_mapping({"download": bad})
        assert next(iter(bad)) in str(info.value)
    assert parse_job(b"url: https://example.org/a.bin\nsegments: 4\n").segments == 4
    for value in ("0", "17", "two", "true"):
        with pytest.raises(BadJobError):
            parse_job(f"url: https://example.org/a.bin\nsegments: {value}\n".encode())


# --- through the daemon --------------------------------------------------------------

SEGMENTED = {"download": {"segments": 1, "segment_min_size": "256KiB"}}


def test_job_segments_with_a_sha512_checksum(srv: FaultServer, make_daemon) -> None:
    body = os.urandom(3 * MIB)
    srv.add("/big.bin", body, rate=1 * MIB)
    d = make_daemon(**SEGMENTED)
    want = hashlib.sha512(body).hexdigest()
    d.drop("big", f"url: {srv.url('/big.bin')}\nsegments: 4\nchecksum: sha512:{want}\n")
    sc = d.wait_status("big")
    assert sc["status"] == "ok", sc
    assert sc["archive"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert (d.outbox / "big" / "big.bin").read_bytes() == body
    assert len([r for r in srv.requests_for("/big.bin") if r.header("Range")]) == 3


def test_kill_9_resumes_each_segment(srv: FaultServer, make_daemon) -> None:
    body = os.urandom(6 * MIB)
    res = srv.add("/big.bin", body, rate=300_000)
    d = make_daemon(download={"segments": 4, "segment_min_size": "256KiB"})
    d.drop("big", srv.url("/big.bin"))
    meta = d.work / "partial"

    def saved() -> int:
        for p in meta.glob("*.meta") if meta.is_dir() else ():
            m = read_meta(p)
            if m is not None and m.segments:
                return sum(s[2] for s in m.segments)
        return 0

    wait_for(lambda: saved() > len(body) // 4, message="the segments under way", timeout=60)
    assert d.proc is not None
    d.kill()
    assert d.proc.returncode == -9
    before = len(srv.requests_for("/big.bin"))
    res.rate = None
    d.start()
    sc = d.wait_status("big")
    assert sc["status"] == "ok", sc
    after = srv.requests_for("/big.bin")[before:]
    assert after and all(r.header("If-Range") == res.etag for r in after)
    assert all(not (r.header("Range") or "").endswith("-") for r in after)  # closed ranges
    assert (d.outbox / "big" / "big.bin").read_bytes() == body
    assert sc["archive"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert res.bytes_sent <= 1.1 * len(body), (res.bytes_sent, len(body))


def test_host_slots() -> None:
    slots = HostSlots()
    assert slots.take("h", 4, 6) == 4
    assert slots.take("h", 4, 6) == 2
    assert slots.take("h", 4, 6) == 0  # more connections only while some are free
    assert slots.take("other", 3, 6) == 3
    slots.give("h", 6)
    assert slots.used("h") == 0 and slots.used("other") == 3


def test_a_download_waits_for_its_first_connection() -> None:
    """max_connections_per_host counts every connection: the first one is waited for
    (cancel ends the wait), given back when the block ends."""
    slots = HostSlots()
    cancel = threading.Event()
    inside = threading.Event()
    with slots.held("h", 1, cancel):
        assert slots.used("h") == 1

        def second() -> None:
            with slots.held("h", 1, threading.Event()):
                inside.set()

        t = threading.Thread(target=second)
        t.start()
        assert not inside.wait(0.3)  # (only a check that it is still waiting)
    t.join(30)
    assert inside.is_set() and slots.used("h") == 0
    with slots.held("h", 1, cancel):
        cancel.set()
        with pytest.raises(CancelledError), slots.held("h", 1, cancel):
            pass
    assert slots.used("h") == 0


def test_max_connections_per_host_holds_single_streams_too(
    srv: FaultServer, tmp_path: Path
) -> None:
    """Two one-stream downloads from one host with max_connections_per_host 1: the
    second request reaches the server only after the first download ended."""
    slow = os.urandom(600_000)
    srv.add("/a.bin", slow, rate=1_000_000)
    srv.add("/b.bin", b"b" * 1000)
    d = Downloader(replace(CONFIG, max_connections_per_host=1))
    ended: list[float] = []

    def first() -> None:
        d.fetch(srv.url("/a.bin"), tmp_path / "a.part")
        ended.append(time.time())

    try:
        t = threading.Thread(target=first)
        t.start()
        wait_for(lambda: srv.requests_for("/a.bin"), message="the first download started")
        d.fetch(srv.url("/b.bin"), tmp_path / "b.part")
        t.join(60)
    finally:
        d.close()
    assert (tmp_path / "a.part").read_bytes() == slow
    assert ended and srv.requests_for("/b.bin")[0].at >= ended[0] - 0.05


def test_connections_per_host_across_downloads(
    srv: FaultServer, dl: Downloader, tmp_path: Path
) -> None:
    srv.add("/f.bin", DATA)
    held = SLOTS.take("127.0.0.1", 2, CONFIG.max_connections_per_host)  # another job's
    try:
        dl.fetch(srv.url("/f.bin"), tmp_path / "f.part", segments=4)
    finally:
        SLOTS.give("127.0.0.1", held)
    assert (tmp_path / "f.part").read_bytes() == DATA
    assert len(srv.requests_for("/f.bin")) == CONFIG.max_connections_per_host - held
    assert SLOTS.used("127.0.0.1") == 0


def test_an_error_of_the_progress_hook_stops_every_segment(
    srv: FaultServer, dl: Downloader, tmp_path: Path
) -> None:
    srv.add("/f.bin", DATA, rate=200_000)

    def progress(t: Transfer) -> None:
        if t.bytes_done > 100_000:
            raise KeyError("the caller's own")

    with pytest.raises(KeyError):
        dl.fetch(srv.url("/f.bin"), tmp_path / "f.part", on_progress=progress, segments=4)
    mine = threading.current_thread().name + "-s"
    assert not [t for t in threading.enumerate() if t.name.startswith(mine)]


def test_submit_segments(tmp_path: Path) -> None:
    import subprocess
    import sys

    from dropfetch.jobfile import parse_job

    inbox = tmp_path / "inbox"
    base = [sys.executable, "-m", "dropfetch", "submit", "--inbox", str(inbox)]
    subprocess.run(
        [*base, "--name", "s", "--segments", "4", "https://example.org/a.iso"],
        capture_output=True,
        check=True,
    )
    assert parse_job((inbox / "s.url").read_bytes()).segments == 4
    bad = subprocess.run(
        [*base, "--segments", "40", "https://example.org/b.iso"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "segments" in bad.stderr
    assert not (inbox / "b.url").exists()


def test_a_dropped_segment_resumes_on_the_next_attempt(
    srv: FaultServer, dl: Downloader, tmp_path: Path
) -> None:
    from dropfetch.errors import NetworkError

    data = os.urandom(12 * MIB)
    res = srv.add("/f.bin", data, drop_after=300_000, drop_times=1, rate=2 * MIB)
    part = tmp_path / "f.part"
    with pytest.raises(NetworkError):
        dl.fetch(srv.url("/f.bin"), part, segments=4)
    meta = read_meta(meta_path(part))
    assert meta is not None and len(meta.segments) == 4
    res.rate = None
    result = dl.fetch(srv.url("/f.bin"), part, segments=4, algorithms=("sha512",))
    assert part.read_bytes() == data
    assert result.digests["sha512"] == hashlib.sha512(data).hexdigest()
    # sent twice: only what was in flight when the segments stopped
    assert res.bytes_sent <= 1.1 * len(data), res.bytes_sent


def test_segmented_archive_is_unpacked_after_the_download(srv: FaultServer, make_daemon) -> None:
    from archives import tar_bytes

    files = {"a.bin": os.urandom(2 * MIB), "b.txt": b"b"}
    body = tar_bytes(files, compression="gz")
    srv.add("/t.tar.gz", body, rate=2 * MIB)
    d = make_daemon(**SEGMENTED)
    d.drop("t", f"url: {srv.url('/t.tar.gz')}\nsegments: 4\n")
    sc = d.wait_status("t")
    assert sc["status"] == "ok", sc
    assert d.output_files("t") == ["a.bin", "b.txt"]
    assert (d.outbox / "t" / "a.bin").read_bytes() == files["a.bin"]
    assert len([r for r in srv.requests_for("/t.tar.gz") if r.header("Range")]) == 3


def test_segments_of_a_partial_file_that_is_gone_start_over(
    srv: FaultServer, dl: Downloader, tmp_path: Path
) -> None:
    res = srv.add("/f.bin", DATA, rate=400_000)
    cancel = threading.Event()
    part = tmp_path / "f.part"

    def progress(t: Transfer) -> None:
        if t.bytes_done > 200_000:
            cancel.set()

    with pytest.raises(CancelledError):
        dl.fetch(srv.url("/f.bin"), part, on_progress=progress, cancel=cancel, segments=4)
    res.rate = None
    part.unlink()  # the .meta still says which bytes are done
    assert read_meta(meta_path(part)) is not None
    result = dl.fetch(srv.url("/f.bin"), part, segments=4)
    assert part.read_bytes() == DATA and result.resumed_from == 0


def test_segments_share_the_daemons_rate_limit_total(srv: FaultServer, tmp_path: Path) -> None:
    """download.rate_limit_total holds for a segmented download too: its segments pay
    the one shared limiter (a lower bound on the time only: never a speed test)."""
    from dropfetch.ratelimit import RateLimiter

    data = os.urandom(2 * MIB)
    srv.add("/capped.bin", data)  # as fast as the machine can serve it
    cap = 1 * MIB
    limiter = RateLimiter(cap)
    d = Downloader(CONFIG, limiter=limiter)
    part = tmp_path / "capped.part"
    try:
        started = time.monotonic()
        d.fetch(srv.url("/capped.bin"), part, segments=4)
        took = time.monotonic() - started
    finally:
        d.close()
    assert part.read_bytes() == data
    assert len(ranged(srv, "/capped.bin")) == 3  # it was segmented
    assert took >= 0.8 * len(data) / cap - 1.0  # the burst the bucket starts with


def test_a_segmented_job_gets_no_bigger_share_of_rate_limit_total(
    srv: FaultServer, tmp_path: Path
) -> None:
    """Fair per job, not per connection: a 4-segment download and a one-stream one
    running at once under one shared cap get about the same bytes (a bound on
    fairness, never on speed)."""
    from dropfetch.ratelimit import RateLimiter

    data = os.urandom(3 * MIB)
    srv.add("/seg.bin", data)
    srv.add("/one.bin", data)
    limiter = RateLimiter(1 * MIB)
    # room for both at once (all their connections count: 4 + 1)
    d = Downloader(replace(CONFIG, max_connections_per_host=8), limiter=limiter)
    got: dict[str, list[tuple[float, int]]] = {"seg": [], "one": []}

    def run(name: str, segments: int) -> None:
        d.fetch(
            srv.url(f"/{name}.bin"),
            tmp_path / f"{name}.part",
            segments=segments,
            on_progress=lambda t: got[name].append((time.monotonic(), t.bytes_done)),
        )

    try:
        threads = [
            threading.Thread(target=run, args=("seg", 4)),
            threading.Thread(target=run, args=("one", 1)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        d.close()
    assert (tmp_path / "seg.part").read_bytes() == data == (tmp_path / "one.part").read_bytes()
    assert len(ranged(srv, "/seg.bin")) == 3  # it was segmented
    # while both ran: the bytes each had when the first one finished
    first_end = min(got["seg"][-1][0], got["one"][-1][0])

    def at(name: str) -> int:
        return max((n for when, n in got[name] if when <= first_end), default=0)

    seg, one = at("seg"), at("one")
    assert seg <= 2.5 * one and one <= 2.5 * seg, (seg, one)
