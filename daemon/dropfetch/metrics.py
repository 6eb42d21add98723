"""Prometheus metrics, derived from the sidecar changes the daemon makes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dropfetch.status import Sidecar, Status, read_sidecars

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
        family = GaugeMetricFamily("dropfetch_jobs", "Jobs in the inbox by status",
                                   labels=["status"])
        for status, n in counts.items():
            family.add_metric([status], n)
        yield family


class Metrics:
    """This daemon's counters; fed by :meth:`observe` on every sidecar write."""

    def __init__(self, inbox: Path, *, recursive: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_JobsByStatus(inbox, recursive))
        r = self.registry
        self.bytes = Counter("dropfetch_downloaded_bytes", "Bytes downloaded", registry=r)
        self.download_seconds = Histogram("dropfetch_download_seconds",
                                          "Time spent downloading one job",
                                          buckets=_BUCKETS, registry=r)
        self.extract_seconds = Histogram("dropfetch_extract_seconds",
                                         "Time spent extracting one job",
                                         buckets=_BUCKETS, registry=r)
        self.retries = Counter("dropfetch_retries", "Retries scheduled", registry=r)
        self.failures = Counter("dropfetch_failures", "Jobs failed, by error code", ["code"],
                                registry=r)
        self.finished = Counter("dropfetch_finished_jobs", "Jobs finished, by status",
                                ["status"], registry=r)
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[Status, float, int]] = {}  # id -> (status, since, bytes)

    def observe(self, sc: Sidecar) -> None:
        now = time.monotonic()
        with self._lock:
            prev_status, since, prev_bytes = self._seen.get(sc.id, (None, now, 0))
            if sc.status is Status.DOWNLOADING:
                done = sc.bytes_done
                if prev_status is Status.DOWNLOADING and done >= prev_bytes:
                    self.bytes.inc(done - prev_bytes)
                elif prev_status is not Status.DOWNLOADING:
                    prev_bytes = done = sc.bytes_done
                self._seen[sc.id] = (sc.status, since if prev_status is sc.status else now, done)
            else:
                if prev_status is Status.DOWNLOADING:
                    total = (sc.archive or {}).get("size")
                    if isinstance(total, int) and total > prev_bytes and sc.status in (
                            Status.UNPACKING, Status.OK):
                        self.bytes.inc(total - prev_bytes)
                    self.download_seconds.observe(now - since)
                elif prev_status is Status.UNPACKING and sc.status is not Status.UNPACKING:
                    self.extract_seconds.observe(now - since)
                if sc.status is Status.WAITING and prev_status is not Status.WAITING:
                    self.retries.inc()
                if sc.status in (Status.OK, Status.FAILED):
                    self.finished.labels(str(sc.status)).inc()
                    if sc.status is Status.FAILED and sc.error:
                        self.failures.labels(sc.error.get("code", "unknown")).inc()
                    self._seen.pop(sc.id, None)
                elif sc.status is Status.DELETING:
                    self._seen.pop(sc.id, None)
                else:
                    keep = since if prev_status is sc.status else now
                    self._seen[sc.id] = (sc.status, keep, 0)
