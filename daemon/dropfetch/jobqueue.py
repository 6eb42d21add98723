"""The job queue: job ids due now or at a time, each at most once."""

from __future__ import annotations

import heapq
import itertools
import threading
import time

__all__ = ["JobQueue"]


class JobQueue:
    """Job ids due now or at a time; an id is in the queue at most once.

    ``urgent`` entries (a look at a lease that can go stale, a dead lease of this very
    host) are taken before every other due entry, so a takeover never waits behind a
    backlog (a rescan of thousands of jobs). An id put twice keeps the earlier due
    time, and stays urgent if either put was.
    """

    def __init__(self) -> None:
        self._heaps: tuple[list[tuple[float, int, str]], list[tuple[float, int, str]]] = ([], [])
        self._due: dict[str, tuple[float, bool]] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def put(self, job_id: str, *, delay: float = 0.0, urgent: bool = False) -> None:
        due = time.monotonic() + delay
        with self._cond:
            old = self._due.get(job_id)
            if old is not None:
                if old[0] <= due and (old[1] or not urgent):
                    return
                due, urgent = min(due, old[0]), urgent or old[1]
            self._due[job_id] = (due, urgent)
            heapq.heappush(self._heaps[urgent], (due, next(self._seq), job_id))
            self._cond.notify()

    def _top(self, urgent: bool) -> float | None:
        heap = self._heaps[urgent]
        while heap and self._due.get(heap[0][2]) != (heap[0][0], urgent):
            heapq.heappop(heap)  # superseded entry
        return heap[0][0] if heap else None

    def get(self, timeout: float) -> str | None:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                wait = end - now
                for urgent in (True, False):
                    top = self._top(urgent)
                    if top is None:
                        continue
                    if top <= now:
                        _, _, job_id = heapq.heappop(self._heaps[urgent])
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
