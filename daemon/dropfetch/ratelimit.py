"""``download.rate_limit_total``: one token bucket shared by every running transfer.

A transfer reads at most :meth:`RateLimiter.grant_size` bytes, then pays for what it
read with :meth:`RateLimiter.reserve`, which returns how long to wait before the next
read. The bucket may go into debt: each payment waits behind the payments made before
it, so waiting transfers are served first in, first out, one small grant at a time,
and two or three transfers share the rate evenly. The lock is held only for the
arithmetic; the caller sleeps (on its cancel event) outside it.

A new rate (SIGHUP, :meth:`RateLimiter.set_rate`) keeps the time the bucket's debt
takes to clear, so running transfers follow it within one round of grants.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["GRANT_SECONDS", "MAX_GRANT", "MIN_GRANT", "RateLimiter"]

GRANT_SECONDS = 0.1  # one grant is this much of the rate: small turns, fair sharing
MIN_GRANT = 16 * 1024
MAX_GRANT = 1024 * 1024


class RateLimiter:
    """Bytes per second for all transfers together; ``rate`` None means no limit."""

    def __init__(self, rate: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = rate
        self._tokens = 0.0  # bytes that may go now; negative: debt
        self._last = clock()

    @property
    def rate(self) -> int | None:
        return self._rate

    def _burst(self, rate: int) -> float:
        return float(max(MIN_GRANT, min(MAX_GRANT, rate * GRANT_SECONDS)))

    def grant_size(self) -> int | None:
        """The most one read should take before paying; None without a limit."""
        rate = self._rate
        return None if rate is None else int(self._burst(rate))

    def _refill(self, now: float) -> None:
        """(the lock held)"""
        rate = self._rate
        if rate is not None:
            elapsed = max(0.0, now - self._last)
            self._tokens = min(self._burst(rate), self._tokens + elapsed * rate)
        self._last = now

    def reserve(self, n: int) -> float:
        """Pay for ``n`` bytes read; the seconds to wait before reading more."""
        with self._lock:
            rate = self._rate
            if rate is None:
                return 0.0
            self._refill(self._clock())
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / rate

    def set_rate(self, rate: int | None) -> None:
        """A new limit (None: none); the current debt keeps its time to clear."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            old = self._rate
            if rate is None or old is None:
                self._tokens = 0.0
            elif rate != old:
                self._tokens = min(self._burst(rate), self._tokens * rate / old)
            self._rate = rate
