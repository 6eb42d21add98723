"""The job queue: job ids due now or at a time, each at most once, by class and priority."""

from __future__ import annotations

import heapq
import itertools
import threading
import time

from dropfetch.jobfile import PRIORITIES

__all__ = ["JobQueue"]

_RANK = {p: i for i, p in enumerate(PRIORITIES)}
_NORMAL = _RANK["normal"]

Entry = tuple[float, int, str]  # due, sequence (first in, first out), id


class JobQueue:
    """Job ids due now or at a time; an id is in the queue at most once.

    Of the entries that are due, ``urgent`` ones (a look at a lease that can go stale, a
    dead lease of this very host) go first, so a takeover never waits behind a backlog
    (a rescan of thousands of jobs); then ``high``, ``normal`` and ``low`` priority
    jobs, each first in, first out (by due time). An id put twice keeps the earlier due
    time, and stays urgent if either put was.

    A job's priority is remembered by id (:meth:`prioritise`, or ``put(priority=...)``),
    so every later put of it (a retry, a look again) keeps it; only ids whose priority
    is not ``normal`` are remembered.
    """

    def __init__(self) -> None:
        # one heap per (urgent, rank): urgent ranks first, then the others
        self._heaps: dict[tuple[bool, int], list[Entry]] = {
            (urgent, rank): [] for urgent in (True, False) for rank in range(len(PRIORITIES))
        }
        self._due: dict[str, tuple[float, bool, int]] = {}
        self._priority: dict[str, int] = {}  # id -> rank, only ids that are not normal
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def prioritise(self, job_id: str, priority: str) -> None:
        """Remember ``job_id``'s priority; a queued entry moves to it at once."""
        rank = _RANK[priority]
        with self._cond:
            if rank == self._priority.get(job_id, _NORMAL):
                return
            if rank == _NORMAL:
                del self._priority[job_id]
            else:
                self._priority[job_id] = rank
            old = self._due.get(job_id)
            if old is not None:
                self._push(job_id, old[0], old[1], rank)

    def put(
        self, job_id: str, *, delay: float = 0.0, urgent: bool = False, priority: str | None = None
    ) -> None:
        if priority is not None:
            self.prioritise(job_id, priority)
        due = time.monotonic() + delay
        with self._cond:
            rank = self._priority.get(job_id, _NORMAL)
            old = self._due.get(job_id)
            if old is not None:
                if old[0] <= due and (old[1] or not urgent):
                    return
                due, urgent = min(due, old[0]), urgent or old[1]
            self._push(job_id, due, urgent, rank)

    def _push(self, job_id: str, due: float, urgent: bool, rank: int) -> None:
        """The entry of ``job_id`` (the lock held); an earlier one is superseded."""
        self._due[job_id] = (due, urgent, rank)
        heapq.heappush(self._heaps[urgent, rank], (due, next(self._seq), job_id))
        self._cond.notify()

    def _top(self, key: tuple[bool, int]) -> float | None:
        heap = self._heaps[key]
        while heap and self._due.get(heap[0][2]) != (heap[0][0], *key):
            heapq.heappop(heap)  # superseded entry
        return heap[0][0] if heap else None

    def get(self, timeout: float) -> str | None:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                wait = end - now
                for key in self._heaps:  # urgent first, then by rank
                    top = self._top(key)
                    if top is None:
                        continue
                    if top <= now:
                        _, _, job_id = heapq.heappop(self._heaps[key])
                        del self._due[job_id]
                        return job_id
                    wait = min(wait, top - now)
                if wait <= 0:
                    return None
                self._cond.wait(wait)

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)
