"""Retry, backoff and mirrors: whether a failed try is tried again, when, and with which
of the job's URLs (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from dropfetch.config import DownloadConfig
from dropfetch.errors import DiskFullError, DropfetchError

__all__ = ["RetryAt", "Source", "next_source", "next_try", "plan_retry"]


@dataclass(frozen=True, slots=True)
class Source:
    """Which of a job's URLs its tries use: ``index`` 0 is the job's own URL, 1 its first
    mirror...; ``base`` is the count of the job's failed tries before this URL's first
    (attempts count per URL: each URL has ``max_attempts`` tries)."""

    index: int = 0
    base: int = 0


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again in ``delay`` seconds; ``attempt`` is the count of failed tries to record;
    ``source`` the URL of the next try."""

    delay: float
    attempt: int
    source: Source = Source()


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


def next_source(err: DropfetchError, *, source: Source, urls: int, counted: bool) -> int | None:
    """The index of the URL to try after ``source`` failed for good with ``err`` (its
    retries used up, or a final error), or None: the job fails.

    The next mirror, when there is one and the failure was the URL's: it happened while
    downloading (``counted``: not while unpacking), and is not a local one (``io_error``;
    ``disk_full`` waits, never fails) or one another URL cannot help with (the checksum
    file's, ``err.mirror_may_help``)."""
    if not counted or source.index + 1 >= urls or not err.mirror_may_help:
        return None
    if err.code == "io_error":
        return None
    return source.index + 1


def plan_retry(
    err: DropfetchError,
    *,
    attempt: int,
    counted: bool,
    config: DownloadConfig,
    draw: float,
    source: Source,
    urls: int,
) -> RetryAt | None:
    """:func:`next_try` for the URL in use (its own tries), then :func:`next_source`:
    the next mirror is tried at once, with tries of its own."""
    retry = next_try(err, attempt=attempt - source.base, counted=counted, config=config, draw=draw)
    if retry is not None:
        return RetryAt(retry.delay, retry.attempt + source.base, source)
    index = next_source(err, source=source, urls=urls, counted=counted)
    if index is None:
        return None
    return RetryAt(0.0, attempt, Source(index, base=attempt))
