"""Segmented downloads: parallel closed ``Range`` requests into one preallocated file.

:class:`Segmented` runs when the first answer (a 200 for the whole file, segment 0)
has a length, a strong ETag and ``Accept-Ranges: bytes``: the partial file is
preallocated, N-1 more connections ask ``Range: bytes=a-b`` with ``If-Range: ETAG``
and each writes at its own offset. A segment's answer must be a 206 with exactly the
range asked (:func:`range_problem`), else :class:`Fallback` sends the whole download
back to one stream from byte 0 (two versions are never spliced). The ``.meta`` records
each segment's range and bytes done (about every second), so a restart continues each
segment where it was. The digests are computed from disk once every segment is done.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import requests

from dropfetch.bodywriter import CHUNK_SIZE, CancelWatcher, SpeedMeter, socket_of
from dropfetch.config import DownloadConfig
from dropfetch.errors import CancelledError, DropfetchError, NetworkError, from_os_error
from dropfetch.fsutil import sync_download
from dropfetch.neterrors import read_error
from dropfetch.ratelimit import RateLimiter
from dropfetch.resume import Meta, Partial, hash_file, parse_content_range, write_meta

__all__ = [
    "SLOTS",
    "Fallback",
    "HostSlots",
    "Segment",
    "Segmented",
    "plan",
    "range_problem",
    "splittable",
]

META_EVERY = 1.0  # seconds between two writes of the segments' progress
TICK = 0.1  # how often the coordinating thread reports progress and looks at cancel

Opener = Callable[[Mapping[str, str]], tuple[requests.Response, str]]


class HostSlots:
    """The daemon's connections per host, across jobs: at most
    ``download.max_connections_per_host``. A download waits for its first one
    (:meth:`held`); a segmented one takes what more is free (:meth:`take`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._used: dict[str, int] = {}

    @contextlib.contextmanager
    def held(self, host: str, cap: int, cancel: threading.Event) -> Iterator[None]:
        """One connection to ``host`` for the ``with`` block, waiting while ``cap`` are
        in use; CancelledError when ``cancel`` is set before one is free."""
        with self._cond:
            while self._used.get(host, 0) >= cap:
                if cancel.is_set():
                    break
                self._cond.wait(0.2)
            if cancel.is_set():
                raise CancelledError("download cancelled before it started")
            self._used[host] = self._used.get(host, 0) + 1
        try:
            yield
        finally:
            self.give(host, 1)

    def take(self, host: str, wanted: int, cap: int) -> int:
        """Up to ``wanted`` more connections to ``host`` (0 when none is free); give
        them back."""
        with self._cond:
            used = self._used.get(host, 0)
            granted = max(0, min(wanted, cap - used))
            if granted:
                self._used[host] = used + granted
            return granted

    def give(self, host: str, count: int) -> None:
        with self._cond:
            left = self._used.get(host, 0) - count
            if left > 0:
                self._used[host] = left
            else:
                self._used.pop(host, None)
            self._cond.notify_all()

    def used(self, host: str) -> int:
        with self._cond:
            return self._used.get(host, 0)


SLOTS = HostSlots()  # the daemon's


class Fallback(Exception):
    """The server does not serve the segments as asked: one stream from the start."""


@dataclass(slots=True)
class Segment:
    """Bytes ``first..last`` of the file; ``done`` of them are on disk."""

    first: int
    last: int
    done: int = 0

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def left(self) -> int:
        return self.size - self.done


def plan(total: int, wanted: int, min_size: int, max_connections: int) -> list[Segment]:
    """``total`` bytes in at most ``wanted`` (and ``max_connections``) segments, none
    smaller than ``min_size`` (pure); one segment when the file is too small."""
    count = max(1, min(wanted, max_connections, total // max(1, min_size)))
    step, extra = divmod(total, count)
    out, first = [], 0
    for i in range(count):
        size = step + (1 if i < extra else 0)
        out.append(Segment(first, first + size - 1))
        first += size
    return out


def splittable(resp: requests.Response, total: int | None) -> str | None:
    """The strong ETag that lets the answer ``resp`` (to a GET of the whole file) be
    fetched in segments; None when it cannot be (no length, weak or no ETag, no
    ``Accept-Ranges: bytes``)."""
    etag = resp.headers.get("ETag")
    ranges = resp.headers.get("Accept-Ranges", "")
    if resp.status_code != 200 or not total or not etag or etag.startswith("W/"):
        return None
    if "Transfer-Encoding" in resp.headers or ranges.strip().lower() != "bytes":
        return None
    return etag


def range_problem(
    status: int, content_range: str | None, length: str | None, seg: Segment, total: int
) -> str | None:
    """Why an answer to ``Range: bytes=FIRST-LAST`` of ``seg``'s rest cannot be written
    at its offset (pure); None when it is exactly the range asked."""
    first = seg.first + seg.done
    if status != 206:
        return f"status {status} to a Range request"
    got = parse_content_range(content_range)
    if got is None or (got.first, got.last, got.total) != (first, seg.last, total):
        return f"Content-Range {content_range!r:.80} for bytes {first}-{seg.last}/{total}"
    if length is None or not length.isdecimal() or int(length) != seg.last - first + 1:
        return f"Content-Length {length!r:.40} for {seg.last - first + 1} bytes"
    return None


@dataclass(frozen=True, slots=True)
class Job:
    """What a segmented download needs from its :class:`Downloader` call."""

    open_range: Opener  # a GET through the downloader's own door (headers, guard, redirects)
    config: DownloadConfig
    cancel: threading.Event
    on_progress: Callable[[int, int, float | None, int], None] | None  # done, total, speed, from
    shown: str
    limiter: RateLimiter | None = None  # download.rate_limit_total, shared by all transfers


class Segmented:
    """One segmented download into ``partial`` (a file of ``meta.total`` bytes)."""

    def __init__(
        self,
        job: Job,
        partial: Partial,
        meta: Meta,
        segments: list[Segment],
        connections: int | None = None,
    ) -> None:
        self.job = job
        # at most this many segments at once (the host's slots); None: all of them
        self.room = threading.Semaphore(connections or len(segments))
        self.partial = partial
        self.meta = meta
        self.total = meta.total or 0
        self.segments = segments
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # the job's segments pay the shared limiter one at a time: one turn per job,
        # not per connection, so a segmented job gets no bigger share of the daemon's cap
        self.paying = threading.Lock()
        self.error: BaseException | None = None
        self.final_url: str | None = None
        self.disposition: str | None = None

    def run(self, first: requests.Response | None) -> str | None:
        """Every segment onto disk, then the digests; ``first`` is the open answer for
        segment 0 (None: resumed, every segment asks). Returns the final URL of a
        segment request (None: none was needed). Raises :class:`Fallback` or a
        :class:`DropfetchError` (the ``.meta`` then says where each segment is)."""
        fd = self._open_file()
        try:
            threads = [
                threading.Thread(
                    target=self._segment,
                    args=(fd, seg, first if i == 0 else None),
                    name=f"{threading.current_thread().name}-s{i}",
                    daemon=True,
                )
                for i, seg in enumerate(self.segments)
                if seg.left > 0
            ]
            for t in threads:
                t.start()
            self._coordinate(threads)
            if self.error is not None:
                raise self.error
            sync_download(fd)
        finally:
            os.close(fd)
        self.partial.hasher = self.partial.hasher.fresh()
        self.partial.size = hash_file(self.partial.path, self.partial.hasher, self.job.cancel)
        return self.final_url

    def _open_file(self) -> int:
        try:
            fd = os.open(self.partial.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise from_os_error(exc, "opening the partial download") from None
        try:
            if os.fstat(fd).st_size != self.total:
                os.ftruncate(fd, self.total)
                with contextlib.suppress(OSError, AttributeError):
                    os.posix_fallocate(fd, 0, self.total)
        except OSError as exc:
            os.close(fd)
            raise from_os_error(exc, "preparing the partial download") from None
        self._save()
        return fd

    def _coordinate(self, threads: list[threading.Thread]) -> None:
        """Report the sum, save the progress, stop every segment on cancel or error."""
        meter = SpeedMeter()
        resumed = self._done()
        saved = time.monotonic()
        try:
            while any(t.is_alive() for t in threads):
                if self.job.cancel.wait(TICK):
                    self._fail(CancelledError(f"download of {self.job.shown} cancelled"))
                now = time.monotonic()
                if now - saved >= META_EVERY:
                    saved = now
                    self._save()
                done = self._done()
                if self.job.on_progress is not None and not self.stop.is_set():
                    self.job.on_progress(done, self.total, meter.add(now, done), resumed)
            if self.job.on_progress is not None and self.error is None:
                self.job.on_progress(self._done(), self.total, None, resumed)  # the sum, at last
        except BaseException as exc:  # e.g. the caller's progress hook: stop every segment
            self._fail(exc)
            raise
        finally:
            for t in threads:
                t.join()
            self._save()

    def _done(self) -> int:
        with self.lock:
            return sum(s.done for s in self.segments)

    def _save(self) -> None:
        with self.lock:
            parts = tuple((s.first, s.last, s.done) for s in self.segments)
        write_meta(self.partial.meta_path, replace(self.meta, segments=parts))

    def _fail(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
        self.stop.set()

    def _segment(self, fd: int, seg: Segment, resp: requests.Response | None) -> None:
        while not self.room.acquire(timeout=TICK):  # a connection of the host's
            if self.stop.is_set():
                return
        try:
            if resp is None:
                resp = self._ask(seg)
            try:
                with CancelWatcher(self.stop, socket_of(resp)):
                    self._copy(resp, fd, seg)
            finally:
                resp.close()
        except (DropfetchError, Fallback) as exc:
            self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - a segment's failure fails the download
            self._fail(NetworkError(f"a segment of {self.job.shown} failed ({type(exc).__name__})"))
        finally:
            self.room.release()

    def _ask(self, seg: Segment) -> requests.Response:
        headers = {
            "Accept-Encoding": "identity",
            "Range": f"bytes={seg.first + seg.done}-{seg.last}",
            "If-Range": self.meta.etag or "",
        }
        resp, final_url = self.job.open_range(headers)
        problem = range_problem(
            resp.status_code,
            resp.headers.get("Content-Range"),
            None if "Transfer-Encoding" in resp.headers else resp.headers.get("Content-Length"),
            seg,
            self.total,
        )
        if problem is not None:
            resp.close()
            raise Fallback(problem)
        with self.lock:
            if self.final_url is None:
                self.final_url = final_url
                self.disposition = resp.headers.get("Content-Disposition")
        return resp

    def _chunk_size(self, share: int | None) -> int:
        """Bytes per read: smaller under a rate limit (the job's share, the shared
        limiter's grant), so that waits stay short and turns fair."""
        chunk = CHUNK_SIZE if share is None else max(16 * 1024, min(CHUNK_SIZE, share // 8))
        grant = None if self.job.limiter is None else self.job.limiter.grant_size()
        return chunk if grant is None else min(chunk, grant)

    def _pay_shared(self, n: int) -> None:
        """Pay ``n`` bytes to the daemon's limiter (``rate_limit_total``), and wait."""
        limiter = self.job.limiter
        if limiter is None:
            return
        with self.paying:
            if self.stop.is_set():
                raise CancelledError(f"download of {self.job.shown} stopped")
            wait = limiter.reserve(n)
            if wait > 0 and self.stop.wait(wait):
                raise CancelledError(f"download of {self.job.shown} stopped")

    def _copy(self, resp: requests.Response, fd: int, seg: Segment) -> None:
        rate = self.job.config.rate_limit
        share = None if rate is None else max(1, rate // len(self.segments))
        chunk = self._chunk_size(share)
        began, received = time.monotonic(), 0
        while seg.left > 0:
            if self.stop.is_set():
                raise CancelledError(f"download of {self.job.shown} stopped")
            try:
                data = resp.raw.read1(min(chunk, seg.left), decode_content=False)
            except Exception as exc:  # noqa: BLE001 - mapped to our errors
                if self.stop.is_set():
                    raise CancelledError(f"download of {self.job.shown} stopped") from None
                raise read_error(exc, self.job.shown, self.job.config.timeout_read, 0) from None
            if not data:
                raise NetworkError(
                    f"the connection to {self.job.shown} ended early: a segment has "
                    f"{seg.left} bytes to go (the next attempt resumes it)"
                )
            _pwrite_all(fd, data, seg.first + seg.done)
            with self.lock:
                seg.done += len(data)
            received += len(data)
            self._pay_shared(len(data))
            if share is not None:  # the job's own rate_limit, split between its segments
                ahead = received / share - (time.monotonic() - began)
                if ahead > 0 and self.stop.wait(ahead):
                    raise CancelledError(f"download of {self.job.shown} stopped")


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as exc:
        raise from_os_error(exc, "writing the download") from None
