"""What a job run works with: its configuration snapshot and the pool's shared parts."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dropfetch.config import Config
from dropfetch.events import EventBus, JobFinished, Phase, PhaseEnded, PhaseStarted, StatusChanged
from dropfetch.jobpaths import JobPaths, job_paths
from dropfetch.jobqueue import JobQueue
from dropfetch.leases import Lease, LeaseManager
from dropfetch.status import Sidecar, Status, StatusBoard

__all__ = ["JobContext", "NameLocks"]

logger = logging.getLogger(__name__)


class NameLocks:
    """Locks by outbox name, so that publishes touching the same names (an output, a
    kept archive, the category directory above them) run one at a time while the
    others run side by side. The table's own lock is held only to find the locks, never
    while a file is touched; a name's locks are taken in sorted order (no deadlock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[threading.Lock, int]] = {}  # name -> (lock, users)

    @contextlib.contextmanager
    def hold(self, names: Iterable[str]) -> Iterator[None]:
        keys = sorted(set(names))
        with self._lock:
            locks = []
            for key in keys:
                lock, users = self._held.get(key, (None, 0))
                lock = lock or threading.Lock()
                self._held[key] = (lock, users + 1)
                locks.append(lock)
        taken: list[threading.Lock] = []
        try:
            for lock in locks:
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()
            with self._lock:
                for key in keys:
                    lock, users = self._held[key]
                    if users == 1:
                        del self._held[key]
                    else:
                        self._held[key] = (lock, users - 1)

    def users(self, name: str) -> int:
        """How many publishes hold or wait for ``name``."""
        with self._lock:
            return self._held.get(name, (None, 0))[1]


@dataclass(frozen=True, slots=True)
class JobContext:
    """``config`` is the configuration the run started with: a SIGHUP during the run
    reaches the next run, never this one. The rest is the pool's, shared by all runs."""

    config: Config
    leases: LeaseManager
    queue: JobQueue
    events: EventBus
    publish_locks: NameLocks  # owner check and publish, one job at a time per outbox name

    def paths(self, job_id: str) -> JobPaths:
        return job_paths(self.config, job_id)

    def board(
        self, paths: JobPaths, sidecar: Sidecar, previous: Status | None, lease: Lease
    ) -> StatusBoard:
        return StatusBoard(
            paths.sidecar,
            sidecar,
            previous=previous,
            interval=self.config.status.update_interval,
            fence=lease.check,
            on_change=lambda sc: self.events.publish(StatusChanged(sc)),
        )

    def finished(self, job_id: str, sidecar: Sidecar | None) -> None:
        self.events.publish(
            JobFinished(
                job_id,
                None if sidecar is None else sidecar.status,
                None if sidecar is None else sidecar.copy(),
            )
        )

    @contextlib.contextmanager
    def phase(self, job_id: str, phase: Phase) -> Iterator[None]:
        self.events.publish(PhaseStarted(job_id, phase))
        start = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.events.publish(PhaseEnded(job_id, phase, time.monotonic() - start, ok))

    def look_again(self, job_id: str) -> None:
        """The job's lease is (or may be) another host's: look again, before the rest of
        the queue, as soon as that lease could be stale (the new holder may die too)."""
        delay = self.leases.look_again_in(job_id)
        logger.debug("%s: the lease is another holder's; looking again in %.2f s", job_id, delay)
        self.queue.put(job_id, delay=delay, urgent=True)

    def inbox_present(self, job_id: str) -> bool:
        """False (and the job looked at again later) when the inbox itself is gone: an
        unmounted share is not a removed job, and no sidecar can be written meanwhile."""
        if self.config.inbox.is_dir():
            return True
        logger.warning("%s: the inbox %s is gone; the job waits for it", job_id, self.config.inbox)
        self.queue.put(job_id, delay=self.config.rescan_interval)
        return False
