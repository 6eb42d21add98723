"""Writing one answer's body into a partial file.

:func:`write_body` streams the body to disk from the partial file's end on, hashing it
as it goes, counting bytes against ``download.max_size`` (headers are never trusted
alone), keeping to ``download.rate_limit`` and to the daemon's shared
``download.rate_limit_total`` (:class:`~dropfetch.ratelimit.RateLimiter`), rechecking
free space, reporting progress and giving up at once when the job is cancelled. Its
helpers: :class:`SpeedMeter` (the moving average of the speed), :class:`CancelWatcher`
(shuts the socket down on cancel, so a blocked read returns) and
:class:`BackgroundHasher` (hashing on a second thread for large bodies).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from dropfetch.config import DownloadConfig
from dropfetch.errors import CancelledError, NetworkError, TooLargeError, from_os_error
from dropfetch.fsutil import start_writeback, sync_download
from dropfetch.neterrors import read_error
from dropfetch.ratelimit import RateLimiter
from dropfetch.resume import Partial

__all__ = ["BackgroundHasher", "Body", "CancelWatcher", "SpeedMeter", "socket_of", "write_body"]

CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 16 * 1024
DISK_CHECK_EVERY = 32 * 1024 * 1024
# bodies larger than this are hashed on a second thread (see BackgroundHasher)
BACKGROUND_HASH_ABOVE = 8 * 1024 * 1024
BACKGROUND_QUEUE_CHUNKS = 4
SYNC_EVERY = 64 * 1024 * 1024
SPEED_WINDOW = 5.0  # seconds of history behind the speed
CANCEL_POLL = 0.05  # how often the cancel watcher looks at the events
WATCH_LINGER = 0.5  # seconds the cancel watcher waits for a next transfer before it ends


@dataclass(frozen=True, slots=True)
class Body:
    """One body to write: ``length`` bytes (None: until the server ends it), who may
    cancel it and who hears about it."""

    shown: str  # the redacted URL, for messages
    length: int | None
    cancel: threading.Event
    watch_cancel: bool  # shut the socket down on cancel (False: nobody cancels)
    on_chunk: Callable[[int, float | None], None] | None  # (bytes in the file, speed)
    check_space: Callable[[], None]  # raises DiskFullError when free space runs out
    limiter: RateLimiter | None = None  # download.rate_limit_total, shared by all transfers


def write_body(
    resp: requests.Response,
    partial: Partial,
    body: Body,
    config: DownloadConfig,
) -> int:
    """Stream the body into ``partial`` from offset ``partial.size``; return the size
    of the file. The file is fsynced; ``partial.hasher`` has seen every byte."""
    fd = _open_at(partial)
    try:
        copy = _Copy(config, partial, body, socket_of(resp))
        background = (
            BackgroundHasher(partial.hasher, fd)
            if body.length is None or body.length > BACKGROUND_HASH_ABOVE
            else None
        )
        with contextlib.ExitStack() as stack:
            if background is not None:
                stack.callback(background.close)
            stack.enter_context(copy.watcher)
            copy.run(
                resp.raw, fd, partial.hasher.update if background is None else background.update
            )
        if body.length is not None and copy.received < body.length:
            raise NetworkError(
                f"the connection to {body.shown} ended early: {copy.received} of "
                f"{body.length} bytes received (the next attempt resumes)"
            )
        sync_download(fd)
    finally:
        os.close(fd)
    _release(resp, copy.received)
    return copy.done


def _open_at(partial: Partial) -> int:
    try:
        fd = os.open(partial.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise from_os_error(exc, "opening the partial download") from None
    try:
        os.ftruncate(fd, partial.size)
        os.lseek(fd, partial.size, os.SEEK_SET)
    except OSError as exc:
        os.close(fd)
        raise from_os_error(exc, "preparing the partial download") from None
    return fd


def _release(resp: requests.Response, received: int) -> None:
    # back to the pool only when http.client saw the end of the answer: after a 206
    # that sent more than its Content-Range (chunked), the rest is still coming,
    # and the next request on that connection would read it as its answer
    # (Response.close(), by the caller, closes a connection not released here)
    length = resp.headers.get("Content-Length")
    framed = (
        "Transfer-Encoding" not in resp.headers
        and length is not None
        and length.isascii()
        and length.isdecimal()
        and int(length) == received
    )
    if resp.raw.closed or framed:  # (an empty body is not "closed" before a read)
        with contextlib.suppress(Exception):
            resp.raw.release_conn()


def socket_of(resp: requests.Response) -> socket.socket | None:
    conn = getattr(resp.raw, "connection", None)
    sock = getattr(conn, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


class _Copy:
    """The loop of :func:`write_body` and what it counts."""

    def __init__(
        self, config: DownloadConfig, partial: Partial, body: Body, sock: socket.socket | None
    ) -> None:
        self.config = config
        self.body = body
        self.chunk = CHUNK_SIZE
        if config.rate_limit is not None:
            self.chunk = max(MIN_CHUNK_SIZE, min(CHUNK_SIZE, config.rate_limit // 8))
        self.done = partial.size  # bytes in the file
        self.received = 0  # bytes of this body
        self.next_disk_check = DISK_CHECK_EVERY
        self.started = time.monotonic()
        self.meter = SpeedMeter()
        self.watcher = CancelWatcher(body.cancel, sock if body.watch_cancel else None)

    def cancelled(self) -> CancelledError:
        return CancelledError(f"download of {self.body.shown} cancelled")

    def run(self, raw: Any, fd: int, digest: Callable[[memoryview], object]) -> None:
        while (data := self._read(raw)) is not None:
            n = len(data)
            self.received += n
            self.done += n
            if self.done > self.config.max_size:
                raise TooLargeError(
                    f"{self.body.shown} sent more than download.max_size "
                    f"({self.config.max_size} bytes)"
                )
            digest(data)
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError as exc:
                raise from_os_error(exc, "writing the download") from None
            self._after_chunk(n)

    def _read(self, raw: Any) -> memoryview | None:
        """The next piece of the body; None at its end."""
        if self.body.cancel.is_set():
            raise self.cancelled()
        want = self.chunk
        grant = None if self.body.limiter is None else self.body.limiter.grant_size()
        if grant is not None:
            want = min(want, grant)  # small turns: fair between transfers
        if self.body.length is not None:
            want = min(want, self.body.length - self.received)
            if want <= 0:
                return None
        try:
            # read1: what has arrived (one socket read, up to 1 MiB, straight into a new
            # bytes object), so a stall or a cancel never strands received bytes in a
            # half-filled buffer. Raw bytes, no decoding.
            data = memoryview(raw.read1(want, decode_content=False))
        except Exception as exc:  # noqa: BLE001 - mapped to our errors
            if self.body.cancel.is_set():
                raise self.cancelled() from None
            raise read_error(exc, self.body.shown, self.config.timeout_read, self.done) from None
        if len(data) == 0:
            if self.body.cancel.is_set():
                raise self.cancelled()
            return None
        return data

    def _after_chunk(self, n: int) -> None:
        if self.received >= self.next_disk_check:
            self.next_disk_check += DISK_CHECK_EVERY
            self.body.check_space()
        now = time.monotonic()
        if self.body.on_chunk is not None:
            self.body.on_chunk(self.done, self.meter.add(now, self.done))
        wait = 0.0 if self.body.limiter is None else self.body.limiter.reserve(n)
        if self.config.rate_limit is not None:  # the stricter of the two limits wins
            wait = max(wait, self.received / self.config.rate_limit - (now - self.started))
        if wait > 0 and self.body.cancel.wait(wait):
            raise self.cancelled()


class SpeedMeter:
    """Average bytes/s over the last few seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float | None:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= SPEED_WINDOW:
            samples.popleft()
        t0, b0 = samples[0]
        span = now - t0
        if span < 0.1:
            return None
        return (done - b0) / span


class CancelWatcher:
    """Shuts the socket down when ``cancel`` is set, so a blocked read returns at once.

    Every transfer of the process is watched by one thread (:class:`_Watchers`), not
    one thread per transfer: a small download starts no thread of its own. Once
    ``__exit__`` has returned the socket is never touched again (it may be back in the
    connection pool, another job's by then)."""

    def __init__(self, cancel: threading.Event, sock: socket.socket | None) -> None:
        self._cancel = cancel
        self._sock = sock
        self._key: int | None = None

    def __enter__(self) -> CancelWatcher:
        if self._sock is not None:
            self._key = WATCHERS.add(self._cancel, self._sock)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._key is not None:
            WATCHERS.remove(self._key)
            self._key = None


class _Watchers:
    """The one ``dropfetch-cancel`` thread: it polls the cancel events of the watched
    transfers every ``CANCEL_POLL`` and ends after ``WATCH_LINGER`` seconds with none
    (the next transfer starts it again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._watched: dict[int, tuple[threading.Event, socket.socket]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def add(self, cancel: threading.Event, sock: socket.socket) -> int:
        with self._lock:
            key = self._next
            self._next += 1
            self._watched[key] = (cancel, sock)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dropfetch-cancel", daemon=True
                )
                self._thread.start()
            return key

    def remove(self, key: int) -> None:
        with self._lock:  # the thread shuts sockets down only while holding it
            self._watched.pop(key, None)

    def _run(self) -> None:
        idle_since: float | None = None
        with self._lock:
            while True:
                for key, (cancel, sock) in list(self._watched.items()):
                    if cancel.is_set():
                        del self._watched[key]
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                now = time.monotonic()
                if self._watched:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= WATCH_LINGER:
                    self._thread = None
                    return
                self._wake.wait(CANCEL_POLL)


WATCHERS = _Watchers()


class BackgroundHasher:
    """Hashes the body on a second thread and starts its write-back as it goes.

    hashlib releases the GIL, so on a multi-core machine reading the network and
    hashing overlap instead of taking turns; the write-back started every
    ``SYNC_EVERY`` bytes leaves little for the final fsync. Chunks are hashed in the
    order they arrive.
    """

    def __init__(self, hasher: Any, fd: int) -> None:
        self._hasher = hasher
        self._fd = os.dup(fd)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._room = threading.Semaphore(BACKGROUND_QUEUE_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="dropfetch-hash", daemon=True)
        self._thread.start()

    def update(self, data: memoryview) -> None:
        self._room.acquire()  # bounds the memory held by chunks not hashed yet
        self._queue.put(data)

    def _run(self) -> None:
        unsynced = 0
        while (data := self._queue.get()) is not None:
            self._hasher.update(data)
            self._room.release()
            unsynced += len(data)
            if unsynced >= SYNC_EVERY:
                unsynced = 0
                start_writeback(self._fd)  # errors, if any, come from the final fsync

    def close(self) -> None:
        """Wait until every chunk is hashed."""
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)
