"""Retry and backoff: whether a failed try is tried again, and when (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from dropfetch.config import DownloadConfig
from dropfetch.errors import DiskFullError, DropfetchError

__all__ = ["RetryAt", "next_try"]


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again in ``delay`` seconds; ``attempt`` is the count of failed tries to record."""

    delay: float
    attempt: int


def next_try(
    err: DropfetchError, *, attempt: int, counted: bool, config: DownloadConfig, draw: float
) -> RetryAt | None:
    """The retry of a try that failed with ``err``, or None to give up (``failed``).

    ``attempt`` is the job's attempt count, which counts this try when ``counted`` (it
    failed while downloading). Waiting for disk space is never a failed attempt: a
    ``disk_full`` try is not counted, and is always tried again. The delay grows
    exponentially from ``backoff_initial`` up to ``backoff_max``, times a jitter of
    0.5 to 1 from ``draw`` (in [0, 1], e.g. ``random.random()``: hosts and jobs do not
    retry in step); a server's Retry-After raises it, up to ``backoff_max``.
    """
    disk_full = isinstance(err, DiskFullError)
    if disk_full and counted:
        attempt -= 1
    if not err.retryable or (attempt >= config.max_attempts and not disk_full):
        return None
    delay = min(config.backoff_max, config.backoff_initial * 2 ** max(0, attempt - 1))
    delay *= 0.5 + 0.5 * draw
    if err.retry_after is not None:
        delay = max(delay, min(err.retry_after, config.backoff_max))
    return RetryAt(delay=delay, attempt=attempt)
