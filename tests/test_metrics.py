"""Metrics fed by synthetic pipeline events (issue 11), read back from the registry."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dropfetch.events import (
    EventBus,
    JobFinished,
    JobStarted,
    Phase,
    PhaseEnded,
    PhaseStarted,
    Progress,
    StatusChanged,
)
from dropfetch.metrics import Metrics
from dropfetch.status import Sidecar, Status


def _sc(job_id: str, status: Status, code: str | None = None) -> Sidecar:
    error = {"code": code, "message": "m"} if code else None
    return Sidecar(id=job_id, job=f"{job_id}.url", job_sha256="0" * 64, status=status, error=error)


@pytest.fixture
def metrics(tmp_path: Path) -> Metrics:
    (tmp_path / "in").mkdir()
    return Metrics(tmp_path / "in")


def value(m: Metrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def _download(m: Metrics, job_id: str, *chunks: int, seconds: float = 2.0) -> None:
    m.on_event(PhaseStarted(job_id, Phase.DOWNLOAD))
    for done in chunks:
        m.on_event(Progress(job_id, Phase.DOWNLOAD, done, chunks[-1], None))
    m.on_event(PhaseEnded(job_id, Phase.DOWNLOAD, seconds, True))


def test_a_job_that_downloads_extracts_and_ends_ok(metrics):
    m = metrics
    m.on_event(JobStarted("a", 1))
    _download(m, "a", 100, 250, 1000, seconds=3.0)
    m.on_event(PhaseStarted("a", Phase.UNPACK))
    m.on_event(StatusChanged(_sc("a", Status.UNPACKING)))
    m.on_event(Progress("a", Phase.UNPACK, 5000, 9000, None))  # not downloaded bytes
    m.on_event(PhaseEnded("a", Phase.UNPACK, 0.7, True))
    m.on_event(JobFinished("a", Status.OK, _sc("a", Status.OK)))
    assert value(m, "dropfetch_downloaded_bytes_total") == 1000
    assert value(m, "dropfetch_download_seconds_count") == 1
    assert value(m, "dropfetch_download_seconds_sum") == 3.0
    assert value(m, "dropfetch_extract_seconds_count") == 1
    assert value(m, "dropfetch_extract_seconds_sum") == pytest.approx(0.7)
    assert value(m, "dropfetch_finished_jobs_total", status="ok") == 1
    assert value(m, "dropfetch_retries_total") == 0


def test_a_plain_file_is_not_an_extraction(metrics):
    m = metrics
    m.on_event(JobStarted("f", 1))
    _download(m, "f", 10)
    m.on_event(PhaseStarted("f", Phase.UNPACK))  # a rename into staging
    m.on_event(PhaseEnded("f", Phase.UNPACK, 0.01, True))
    m.on_event(JobFinished("f", Status.OK, _sc("f", Status.OK)))
    assert value(m, "dropfetch_extract_seconds_count") == 0
    assert value(m, "dropfetch_download_seconds_count") == 1


def test_a_download_that_starts_over_counts_the_new_bytes(metrics):
    m = metrics
    m.on_event(JobStarted("r", 1))
    # 600 bytes, then the server ignored the range: from 0 again, to 1000
    _download(m, "r", 300, 600, 200, 1000)
    assert value(m, "dropfetch_downloaded_bytes_total") == 600 + 1000


def test_failures_by_code_and_retries(metrics):
    m = metrics
    m.on_event(JobStarted("x", 1))
    _download(m, "x", 10)
    m.on_event(JobFinished("x", Status.WAITING, _sc("x", Status.WAITING, "http_503")))
    assert value(m, "dropfetch_retries_total") == 1
    m.on_event(JobStarted("x", 2))
    _download(m, "x", 20)
    m.on_event(JobFinished("x", Status.FAILED, _sc("x", Status.FAILED, "http_404")))
    assert value(m, "dropfetch_retries_total") == 1
    assert value(m, "dropfetch_failures_total", code="http_404") == 1
    assert value(m, "dropfetch_finished_jobs_total", status="failed") == 1
    assert value(m, "dropfetch_download_seconds_count") == 2


def test_waiting_again_without_a_new_start_is_one_retry(metrics):
    """Waiting for disk space: each look ends waiting again before the job starts."""
    m = metrics
    for _ in range(3):
        m.on_event(JobFinished("d", Status.WAITING, _sc("d", Status.WAITING, "disk_full")))
    assert value(m, "dropfetch_retries_total") == 1
    m.on_event(JobStarted("d", 1))
    m.on_event(JobFinished("d", Status.WAITING, _sc("d", Status.WAITING, "http_503")))
    assert value(m, "dropfetch_retries_total") == 2


def test_shutdown_checkpoint_and_removal_are_not_finished_jobs(metrics):
    m = metrics
    m.on_event(JobStarted("q", 1))
    m.on_event(JobFinished("q", Status.QUEUED, _sc("q", Status.QUEUED)))
    m.on_event(JobFinished("gone", None, None))
    assert value(m, "dropfetch_finished_jobs_total", status="ok") == 0
    assert value(m, "dropfetch_finished_jobs_total", status="failed") == 0
    assert value(m, "dropfetch_retries_total") == 0


def test_metrics_subscribe_to_a_bus(metrics):
    bus = EventBus()
    bus.subscribe(metrics.on_event)
    bus.publish(JobStarted("b", 1))
    bus.publish(PhaseStarted("b", Phase.DOWNLOAD))
    bus.publish(Progress("b", Phase.DOWNLOAD, 42, None, None))
    assert value(metrics, "dropfetch_downloaded_bytes_total") == 42


def test_jobs_by_status_is_read_from_the_sidecars(metrics, tmp_path):
    (tmp_path / "in" / "a.url").write_text("https://example.org/a\n")
    (tmp_path / "in" / "a.status.json").write_bytes(_sc("a", Status.OK).to_json())
    assert value(metrics, "dropfetch_jobs", status="ok") == 1
    assert value(metrics, "dropfetch_jobs", status="failed") == 0


def test_status_line_counts_follow_finished_jobs():
    from dropfetch.daemon import JobCounts

    counts = JobCounts()
    bus = EventBus()
    bus.subscribe(counts.on_event)
    threads = [
        threading.Thread(
            target=lambda i=i: bus.publish(
                JobFinished(f"j{i}", Status.OK if i % 3 else Status.FAILED, _sc(f"j{i}", Status.OK))
            )
        )
        for i in range(30)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    bus.publish(JobFinished("w", Status.WAITING, _sc("w", Status.WAITING)))
    bus.publish(JobFinished("gone", None, None))
    assert counts.get() == (20, 10)
