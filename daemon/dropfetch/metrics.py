"""Prometheus metrics, derived from the pipeline's events."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dropfetch.events import (
    Event,
    JobFinished,
    JobStarted,
    Phase,
    PhaseEnded,
    PhaseStarted,
    Progress,
    StatusChanged,
)
from dropfetch.status import Status, read_sidecars

__all__ = ["Metrics"]

_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


class _JobsByStatus(Collector):
    """``dropfetch_jobs{status=...}``: read from the sidecars at scrape time, so every
    host of a shared inbox reports the same numbers."""

    def __init__(self, inbox: Path, recursive: bool) -> None:
        self.inbox = inbox
        self.recursive = recursive

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = dict.fromkeys((str(s) for s in Status), 0)
        for sc in read_sidecars(self.inbox, recursive=self.recursive):
            counts[str(sc.status)] += 1
        family = GaugeMetricFamily(
            "dropfetch_jobs", "Jobs in the inbox by status", labels=["status"]
        )
        for status, n in counts.items():
            family.add_metric([status], n)
        yield family


@dataclass(slots=True)
class _Job:
    """What the metrics remember of one job between its events."""

    downloaded: int = 0  # bytes of the download phase counted so far
    extracting: bool = False  # its unpack phase extracts an archive (not a plain file)
    waiting: bool = False  # its last run ended waiting for a retry, none started since


class Metrics:
    """This daemon's counters, fed by the pipeline's events (:meth:`on_event`).

    ``dropfetch_downloaded_bytes``: the bytes of each download phase's progress;
    ``dropfetch_download_seconds``/``dropfetch_extract_seconds``: each download phase,
    and each unpack phase that extracts an archive (a plain file is only renamed);
    ``dropfetch_retries``: each run that ends waiting for a retry after one that did not
    (a job that keeps waiting for disk space, never started again, counts once);
    ``dropfetch_finished_jobs``/``dropfetch_failures``: runs that end ok or failed.
    """

    def __init__(self, inbox: Path, *, recursive: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_JobsByStatus(inbox, recursive))
        r = self.registry
        self.bytes = Counter("dropfetch_downloaded_bytes", "Bytes downloaded", registry=r)
        self.download_seconds = Histogram(
            "dropfetch_download_seconds",
            "Time spent downloading one job",
            buckets=_BUCKETS,
            registry=r,
        )
        self.extract_seconds = Histogram(
            "dropfetch_extract_seconds",
            "Time spent extracting one job",
            buckets=_BUCKETS,
            registry=r,
        )
        self.retries = Counter("dropfetch_retries", "Retries scheduled", registry=r)
        self.failures = Counter(
            "dropfetch_failures", "Jobs failed, by error code", ["code"], registry=r
        )
        self.finished = Counter(
            "dropfetch_finished_jobs", "Jobs finished, by status", ["status"], registry=r
        )
        self._lock = threading.Lock()  # this object's own: never one of the pipeline
        self._jobs: dict[str, _Job] = {}

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = _Job()
        return job

    def on_event(self, event: Event) -> None:
        """An event of the pipeline (a subscriber of the daemon's :class:`EventBus`)."""
        with self._lock:
            if isinstance(event, JobStarted):
                self._job(event.job_id).waiting = False
            elif isinstance(event, PhaseStarted):
                self._phase_started(event)
            elif isinstance(event, Progress):
                self._progress(event)
            elif isinstance(event, StatusChanged):
                if event.sidecar.status is Status.UNPACKING:
                    self._job(event.sidecar.id).extracting = True
            elif isinstance(event, PhaseEnded):
                self._phase_ended(event)
            elif isinstance(event, JobFinished):
                self._finished(event)

    def _phase_started(self, event: PhaseStarted) -> None:
        job = self._job(event.job_id)
        if event.phase is Phase.DOWNLOAD:
            job.downloaded = 0
        elif event.phase is Phase.UNPACK:
            job.extracting = False

    def _progress(self, event: Progress) -> None:
        if event.phase is not Phase.DOWNLOAD:
            return
        job = self._job(event.job_id)
        # lower than before: the download started over from the beginning
        self.bytes.inc(event.done - job.downloaded if event.done >= job.downloaded else event.done)
        job.downloaded = event.done

    def _phase_ended(self, event: PhaseEnded) -> None:
        if event.phase is Phase.DOWNLOAD:
            self.download_seconds.observe(event.seconds)
        elif event.phase is Phase.UNPACK and self._job(event.job_id).extracting:
            self.extract_seconds.observe(event.seconds)

    def _finished(self, event: JobFinished) -> None:
        if event.status is Status.WAITING:
            job = self._job(event.job_id)
            if not job.waiting:
                self.retries.inc()
            job.waiting = True
            return
        self._jobs.pop(event.job_id, None)  # final, removed, or queued at a shutdown
        if event.status in (Status.OK, Status.FAILED):
            self.finished.labels(str(event.status)).inc()
            error = event.sidecar.error if event.sidecar is not None else None
            if event.status is Status.FAILED and error:
                self.failures.labels(error.get("code", "unknown")).inc()
