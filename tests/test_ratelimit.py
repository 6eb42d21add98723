"""download.rate_limit_total: the shared token bucket (fake clock) and two jobs of a real
worker pool sharing it."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from archives import tar_bytes
from dropfetch.config import Config, ConfigError, DownloadConfig, config_from_mapping
from dropfetch.download import Downloader
from dropfetch.errors import CancelledError
from dropfetch.events import Event, JobFinished, Phase, PhaseEnded, Progress
from dropfetch.leases import LeaseManager
from dropfetch.lifecycle import Deadline
from dropfetch.pool import WorkerPool
from dropfetch.ratelimit import MAX_GRANT, MIN_GRANT, RateLimiter
from dropfetch.status import Status
from faultserver import FaultServer, fault_server  # noqa: F401 - the fixture
from harness import wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _share(limiter: RateLimiter, clock: FakeClock, consumers: int, seconds: float) -> list[int]:
    """Bytes each of ``consumers`` always-ready transfers gets in ``seconds``: each reads
    one grant as soon as its wait is over, pays, waits (a discrete-event simulation)."""
    start = clock.now
    ready = [start] * consumers
    got = [0] * consumers
    while True:
        i = min(range(consumers), key=lambda k: (ready[k], k))
        if ready[i] >= start + seconds:
            return got
        clock.now = ready[i]
        n = limiter.grant_size()
        assert n is not None
        got[i] += n
        ready[i] = clock.now + limiter.reserve(n)


def test_no_limit_never_waits() -> None:
    limiter = RateLimiter(None, clock=FakeClock())
    assert limiter.grant_size() is None
    assert limiter.reserve(10**9) == 0.0


def test_grants_are_a_tenth_of_a_second_within_bounds() -> None:
    assert RateLimiter(1_000_000).grant_size() == 100_000
    assert RateLimiter(1000).grant_size() == MIN_GRANT
    assert RateLimiter(10**10).grant_size() == MAX_GRANT


def test_payments_queue_up_first_in_first_out() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100_000, clock=clock)  # grant 16 KiB (the minimum)
    assert limiter.reserve(50_000) == pytest.approx(0.5)
    assert limiter.reserve(50_000) == pytest.approx(1.0)  # behind the first
    clock.now += 1.0
    assert limiter.reserve(100_000) == pytest.approx(1.0)  # the debt left: 0
    clock.now += 60.0  # idle: the bucket fills up to one grant, no more
    assert limiter.reserve(MIN_GRANT) == 0.0
    assert limiter.reserve(100_000) == pytest.approx(1.0)


@pytest.mark.parametrize("consumers", [1, 2, 3])
def test_consumers_share_the_rate_evenly(consumers: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(1_000_000, clock=clock)
    got = _share(limiter, clock, consumers, 10.0)
    grant = limiter.grant_size()
    assert grant is not None
    # together: the rate (plus at most one grant each, paid after the window)
    assert 10_000_000 <= sum(got) <= 10_000_000 + consumers * grant
    assert max(got) - min(got) <= grant  # turn by turn
    assert min(got) >= 10_000_000 // consumers - grant


def test_a_new_rate_applies_to_the_next_grants_and_keeps_the_debt_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1_000_000, clock=clock)
    assert limiter.reserve(500_000) == pytest.approx(0.5)
    limiter.set_rate(4_000_000)  # the debt of 0.5 s stays 0.5 s at the new rate
    assert limiter.rate == 4_000_000
    assert limiter.reserve(0) == pytest.approx(0.5)
    clock.now += 0.5
    got = _share(limiter, clock, 2, 5.0)
    assert 20_000_000 <= sum(got) <= 20_000_000 + 2 * 400_000
    limiter.set_rate(None)
    assert limiter.reserve(10**9) == 0.0
    limiter.set_rate(100_000)  # from no limit: no debt, no credit
    assert limiter.reserve(100_000) == pytest.approx(1.0)


def test_the_lock_is_free_while_transfers_wait() -> None:
    """Waiting happens outside the limiter: a thread that must wait does not hold up
    another thread's arithmetic (both return their waits at once)."""
    limiter = RateLimiter(1000)
    waits: list[float] = []
    threads = [
        threading.Thread(target=lambda: waits.append(limiter.reserve(10_000))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(waits) == 2 and max(waits) >= 19.0  # 20 kB at 1 kB/s, reserved, not slept


# --- configuration ----------------------------------------------------------------


def test_config_takes_a_size_per_second(tmp_path: Path) -> None:
    def total(value: Any) -> int | None:
        data = {"inbox": "in", "outbox": "out", "download": {"rate_limit_total": value}}
        return config_from_mapping(data, base=tmp_path).download.rate_limit_total

    assert total("10MiB") == 10 * 1024 * 1024
    assert total(500_000) == 500_000
    assert total(0) is None and total(None) is None
    with pytest.raises(ConfigError, match="rate_limit_total"):
        total("fast")


# --- two jobs of a real pool --------------------------------------------------------


def _config(tmp_path: Path, total: str) -> Config:
    data = {
        "inbox": "in",
        "outbox": "out",
        "workers": 2,
        "min_free_space": 0,
        "status": {"update_interval": 0.05},
        "download": {"block_networks": [], "rate_limit_total": total},
    }
    config = config_from_mapping(data, base=tmp_path)
    for d in (config.inbox, config.outbox, config.work / "leases"):
        d.mkdir(parents=True, exist_ok=True)
    return config


class _Watch:
    """Per job: (time, bytes done) of every download progress; finish times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: dict[str, list[tuple[float, int]]] = {}
        self.downloaded: dict[str, float] = {}
        self.finished: dict[str, JobFinished] = {}

    def __call__(self, event: Event) -> None:
        now = time.monotonic()
        with self.lock:
            if isinstance(event, Progress) and event.phase is Phase.DOWNLOAD:
                self.samples.setdefault(event.job_id, []).append((now, event.done))
            elif isinstance(event, PhaseEnded) and event.phase is Phase.DOWNLOAD:
                self.downloaded[event.job_id] = now
            elif isinstance(event, JobFinished):
                self.finished[event.job_id] = event

    def done_at(self, job_id: str, when: float) -> int:
        """Bytes of ``job_id`` done by ``when`` (its last sample before)."""
        with self.lock:
            return max((d for t, d in self.samples.get(job_id, []) if t <= when), default=0)


def test_two_jobs_share_the_daemons_cap_fairly(tmp_path: Path, fault_server: FaultServer) -> None:  # noqa: F811
    cap = 512 * 1024  # 2 MiB in all: about 4 s at the cap, milliseconds without it
    config = _config(tmp_path, "512KiB")
    bodies = {name: tar_bytes({"f.bin": os.urandom(1024 * 1024)}) for name in ("a", "b")}
    for name, body in bodies.items():
        fault_server.add(f"/{name}.tar", body)
        (config.inbox / f"{name}.url").write_text(fault_server.url(f"/{name}.tar") + "\n")
    pool = WorkerPool(config, LeaseManager(config.work / "leases", host_id="h", ttl=30))
    watch = _Watch()
    pool.events.subscribe(watch)
    began = time.monotonic()
    pool.start()
    try:
        pool.submit("a")
        pool.submit("b")
        wait_for(lambda: len(watch.finished) == 2, 120, message="both jobs to finish")
    finally:
        assert pool.stop(Deadline(30))
    for name in bodies:
        sidecar = watch.finished[name].sidecar
        assert sidecar is not None and sidecar.status is Status.OK
    total = sum(len(b) for b in bodies.values())
    # the two together never beat the cap (lower bound on time only)
    assert max(watch.downloaded.values()) - began >= total / cap * 0.8
    # fair: while both ran (from the later one's first bytes until the earlier one was
    # downloaded), neither got more than twice the other's bytes
    first, second = sorted(bodies, key=lambda n: watch.downloaded[n])
    both_from = min(t for t, _ in watch.samples[second])
    until = watch.downloaded[first]
    got_first = len(bodies[first]) - watch.done_at(first, both_from)
    got_second = watch.done_at(second, until)
    assert got_first > 0 and got_second > 0
    assert got_first <= 2 * got_second and got_second <= 2 * got_first


def test_sighup_changes_the_cap_of_running_downloads(
    tmp_path: Path,
    fault_server: FaultServer,  # noqa: F811
) -> None:
    """At 64 KiB/s the download would take two minutes; lifting the cap (``apply``)
    mid-download lets the running job finish well within the wait."""
    config = _config(tmp_path, "64KiB")
    fault_server.add("/big.tar", tar_bytes({"f.bin": os.urandom(8 * 1024 * 1024)}))
    (config.inbox / "big.url").write_text(fault_server.url("/big.tar") + "\n")
    pool = WorkerPool(config, LeaseManager(config.work / "leases", host_id="h", ttl=30))
    watch = _Watch()
    pool.events.subscribe(watch)
    pool.start()
    try:
        pool.submit("big")
        wait_for(lambda: watch.done_at("big", time.monotonic()) > 0, 60, message="progress")
        assert "big" not in watch.finished
        lifted = dataclasses.replace(
            config, download=dataclasses.replace(config.download, rate_limit_total=None)
        )
        pool.apply(lifted)
        assert pool.limiter.rate is None
        wait_for(lambda: "big" in watch.finished, 60, message="the job to finish")
    finally:
        assert pool.stop(Deadline(30))
    sidecar = watch.finished["big"].sidecar
    assert sidecar is not None and sidecar.status is Status.OK


def test_cancel_does_not_wait_out_the_shared_limit(
    tmp_path: Path,
    fault_server: FaultServer,  # noqa: F811
) -> None:
    """The bucket owes ten minutes; a cancel during the wait ends the download at once
    (the wait is on the cancel event), keeping the partial file."""
    fault_server.add("/slow", os.urandom(2 * 1024 * 1024))
    limiter = RateLimiter(16 * 1024)
    limiter.reserve(600 * 16 * 1024)  # other transfers' debt: ten minutes
    cancel = threading.Event()
    errors: list[BaseException] = []

    def fetch() -> None:
        config = DownloadConfig(block_networks=(), timeout_connect=5, timeout_read=5)
        with Downloader(config, limiter=limiter) as d:
            try:
                d.fetch(
                    fault_server.url("/slow"),
                    tmp_path / "slow.part",
                    on_progress=lambda _t: cancel.set(),
                    cancel=cancel,
                )
            except CancelledError as exc:
                errors.append(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the cancel waited for the limiter"
    assert len(errors) == 1 and cancel.is_set()
    assert (tmp_path / "slow.part").stat().st_size > 0


def test_sighup_lifts_the_cap_of_a_running_daemon(
    fault_server: FaultServer,  # noqa: F811
    make_daemon: Any,
) -> None:
    """End to end: 8 MiB at 32 KiB/s would take four minutes, longer than the wait; a
    SIGHUP that sets ``rate_limit_total: null`` lets the running download finish."""
    fault_server.add("/big.tar", tar_bytes({"f.bin": os.urandom(8 * 1024 * 1024)}))
    d = make_daemon(download={"rate_limit_total": "32KiB"})
    d.drop("big", fault_server.url("/big.tar"))

    def downloading() -> bool:
        sidecar = d.sidecar("big")
        return bool(sidecar and sidecar["status"] == "downloading" and sidecar["bytes_done"])

    wait_for(downloading, message="the capped download to run")
    d.config["download"]["rate_limit_total"] = None
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log(), message="the reload")
    assert d.wait_status("big")["status"] == "ok"
