"""``GET /events`` (SPEC §9): a Server-Sent Events stream of sidecar changes, and the
session cookie (``POST /session``) that lets a browser's EventSource open it.

The pipeline publishes :class:`~dropfetch.events.StatusChanged` after each sidecar
write; :meth:`Broadcaster.on_event` (an :class:`~dropfetch.events.EventBus` subscriber)
only appends the sidecar to each stream's bounded queue, under that queue's own lock,
and never waits for a client. A stream whose client falls ``QUEUE_SIZE`` changes behind
loses them and gets one ``event: overflow`` (reload the list), then goes on with the
changes after it. Each stream writes, in its connection's thread: ``retry:``, then one
``data:`` line of sidecar JSON per change, and a comment line every ``HEARTBEAT``
seconds; it ends when the client goes away or the front end stops
(:meth:`Broadcaster.close`). At most ``MAX_STREAMS`` streams at once (they count among
the front end's connections): more are answered 503.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from dropfetch.events import Event, StatusChanged
from dropfetch.httpanswers import Reject, Reply, Request, json_line
from dropfetch.httpauth import cookie_header
from dropfetch.status import Sidecar

__all__ = [
    "HEARTBEAT",
    "MAX_STREAMS",
    "QUEUE_SIZE",
    "RETRY_MS",
    "Batch",
    "Broadcaster",
    "EventStream",
    "Subscription",
    "events",
    "open_session",
    "peer_gone",
]

MAX_STREAMS = 16  # event streams at once (of the front end's 64 connections)
QUEUE_SIZE = 1000  # changes a stream may fall behind before it loses them ("overflow")
HEARTBEAT = 15.0  # seconds between comment lines on a quiet stream
RETRY_MS = 3000  # how long an EventSource waits before it reconnects
_POLL = 1.0  # seconds between looks at whether the client is still there

OVERFLOW = b"event: overflow\ndata: reload the list\n\n"


@dataclass(slots=True)
class Batch:
    """What a stream has to write: the changes since the last batch, whether some were
    lost before them, whether the stream is to end."""

    sidecars: list[Sidecar] = field(default_factory=list)
    overflow: bool = False
    closed: bool = False


class Subscription:
    """One stream's bounded queue of sidecars."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._size = size
        self._items: deque[Sidecar] = deque()
        self._overflow = False
        self._closed = False
        self._ready = threading.Condition(threading.Lock())

    def offer(self, sc: Sidecar) -> None:
        """Queue ``sc``; with the queue full, drop what it holds and note the overflow."""
        with self._ready:
            if len(self._items) >= self._size:
                self._items.clear()
                self._overflow = True
            else:
                self._items.append(sc)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def take(self, timeout: float) -> Batch:
        """What is queued, waiting at most ``timeout`` seconds for something."""
        with self._ready:
            self._ready.wait_for(
                lambda: self._items or self._overflow or self._closed, max(timeout, 0)
            )
            batch = Batch(list(self._items), self._overflow, self._closed)
            self._items.clear()
            self._overflow = False
            return batch


class Broadcaster:
    """The streams open now, fed from the event bus."""

    def __init__(self, max_streams: int | None = None, queue_size: int | None = None) -> None:
        self._max = MAX_STREAMS if max_streams is None else max_streams
        self._queue_size = QUEUE_SIZE if queue_size is None else queue_size
        self._lock = threading.Condition(threading.Lock())
        self._streams: tuple[Subscription, ...] = ()
        self._closed = False

    def open(self) -> Subscription | None:
        """A new stream's queue; None when ``max_streams`` are open or after close()."""
        with self._lock:
            if self._closed or len(self._streams) >= self._max:
                return None
            sub = Subscription(self._queue_size)
            self._streams = (*self._streams, sub)
            return sub

    def release(self, sub: Subscription) -> None:
        with self._lock:
            self._streams = tuple(s for s in self._streams if s is not sub)
            self._lock.notify_all()

    def on_event(self, event: Event) -> None:
        """The bus subscriber: hands each written sidecar to every open stream."""
        if isinstance(event, StatusChanged):
            for sub in self._streams:  # a snapshot
                sub.offer(event.sidecar)

    @property
    def count(self) -> int:
        """How many streams are open."""
        return len(self._streams)

    def close(self, timeout: float) -> bool:
        """End every stream and refuse new ones; wait at most ``timeout`` seconds for
        the streams to be released. True if they were."""
        with self._lock:
            self._closed = True
            for sub in self._streams:
                sub.close()
            return self._lock.wait_for(lambda: not self._streams, max(timeout, 0))


class EventStream:
    """The body of one ``GET /events`` answer (a :class:`~dropfetch.httpanswers.Stream`)."""

    def __init__(
        self,
        broadcaster: Broadcaster,
        sub: Subscription,
        show: Callable[[Sidecar], object],
    ) -> None:
        self._broadcaster, self._sub, self._show = broadcaster, sub, show

    def run(self, write: Callable[[bytes], object], gone: Callable[[], bool]) -> None:
        """Write until the stream is closed or ``gone()`` (the client went away)."""
        write(b"retry: %d\n: dropfetch events\n\n" % RETRY_MS)
        beat = time.monotonic() + HEARTBEAT
        while True:
            batch = self._sub.take(min(_POLL, beat - time.monotonic()))
            if batch.closed:
                return
            out = [OVERFLOW] if batch.overflow else []
            out += [b"data: %s\n\n" % json_line(self._show(sc)).encode() for sc in batch.sidecars]
            if time.monotonic() >= beat:
                out.append(b": heartbeat\n\n")
            if out:
                write(b"".join(out))
                beat = time.monotonic() + HEARTBEAT
            elif gone():
                return

    def close(self) -> None:
        self._broadcaster.release(self._sub)


def peer_gone(sock: socket.socket) -> bool:
    """Whether the client of a stream has closed its side (what it sends is dropped)."""
    with contextlib.suppress(OSError):
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
        return False
    return True


def events(req: Request) -> Reply:
    """``GET /events``: 200 ``text/event-stream``; 503 when ``MAX_STREAMS`` are open."""
    broadcaster = req.front.broadcaster
    sub = broadcaster.open()
    if sub is None:
        raise Reject(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"{MAX_STREAMS} event streams are open already (or the daemon is stopping): "
            "try again in a moment",
            "busy",
            headers={"Retry-After": "5"},
        )
    return Reply(
        HTTPStatus.OK,
        EventStream(broadcaster, sub, req.front.view),
        content_type="text/event-stream; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def open_session(req: Request) -> Reply:
    """``POST /session`` (with the bearer token, like any route): 200, and the cookie
    that lets ``GET /events`` in without an ``Authorization`` header."""
    front = req.front
    return Reply(
        HTTPStatus.OK,
        {"cookie": "set" if front.token else "not needed (no token)", "events": "/events"},
        headers={"Set-Cookie": cookie_header(front.session_key, front.token)},
    )
