"""HTTP/1.1 request framing for the front end: a connection's input under deadlines,
the body framing a request's headers declare, and reading a body in that framing.

Slow clients (module constants; the tests lower them with monkeypatch): a connection
may stay silent between requests for ``IDLE_TIMEOUT`` seconds; from the first byte of a
request, its request line and headers must arrive within ``HEADER_TIMEOUT``, and a body
within ``BODY_TIMEOUT`` from when it is wanted (bodies are at most ``MAX_BODY`` bytes).
These are totals, not per-read timeouts: ``TimeoutError`` once one has passed.
"""

from __future__ import annotations

import math
import re
import socket
import sys
import time
from http import HTTPStatus

from dropfetch.httpanswers import Reject

__all__ = [
    "BODY_TIMEOUT",
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_BODY",
    "SEND_TIMEOUT",
    "Framing",
    "Input",
    "body_framing",
    "check_length",
    "read_body",
]

MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may stay silent between requests
HEADER_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its headers
BODY_TIMEOUT = 10.0  # seconds to receive a body once it is wanted (>= 6.5 KiB/s at MAX_BODY)
SEND_TIMEOUT = 30.0  # seconds to send one answer
_CHUNK_SIZE = re.compile(rb"^[0-9A-Fa-f]{1,8}$")

# A request's body as its headers declare it: None (no Content-Length nor
# Transfer-Encoding), a byte count, or "chunked"
Framing = int | str | None


class Input:
    """A connection's input with a total deadline (the socket's own timeout only bounds
    each recv): ``readline()`` and ``read()`` as the request handler uses them,
    ``TimeoutError`` once ``deadline`` (a ``time.monotonic()`` value) has passed."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._eof = False
        self.deadline = math.inf
        self.idle = True  # waiting for a request's first byte
        self.expired = False

    def next_request(self) -> None:
        """Wait ``IDLE_TIMEOUT`` for a request; from its first byte, ``HEADER_TIMEOUT``."""
        self.idle = not self._buf
        self.deadline = time.monotonic() + (IDLE_TIMEOUT if self.idle else HEADER_TIMEOUT)

    def want_body(self) -> None:
        """The body is wanted now: it has ``BODY_TIMEOUT`` in all."""
        self.deadline = time.monotonic() + BODY_TIMEOUT

    def _fill(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise TimeoutError("the client is too slow")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            self.expired = True
            raise
        finally:
            self._sock.settimeout(SEND_TIMEOUT)
        if not data:
            self._eof = True
        elif self.idle:
            self.idle = False
            self.deadline = time.monotonic() + HEADER_TIMEOUT
        self._buf += data

    def readline(self, limit: int = -1) -> bytes:
        limit = limit if limit >= 0 else sys.maxsize
        while True:
            end = self._buf.find(b"\n", 0, limit)
            if end >= 0 or len(self._buf) >= limit or self._eof:
                size = end + 1 if end >= 0 else min(limit, len(self._buf))
                data = bytes(self._buf[:size])
                del self._buf[:size]
                return data
            self._fill()

    def read(self, size: int) -> bytes:
        while len(self._buf) < size and not self._eof:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def close(self) -> None:
        self._buf.clear()


def body_framing(transfer: list[str], lengths: list[str]) -> Framing:
    """The framing that a request's ``Transfer-Encoding`` and ``Content-Length`` header
    values declare; :class:`Reject` (400, 501) for one that is not understood, which is
    answered before anything else, with the connection closed after it."""
    if transfer:
        if lengths:
            raise Reject(
                HTTPStatus.BAD_REQUEST,
                "a request cannot have both Transfer-Encoding and Content-Length",
            )
        codings = [c.strip().lower() for v in transfer for c in v.split(",") if c.strip()]
        if codings != ["chunked"]:
            raise Reject(
                HTTPStatus.NOT_IMPLEMENTED, "only the chunked transfer coding is understood"
            )
        return "chunked"
    return _content_length(lengths) if lengths else None


def _content_length(lengths: list[str]) -> int:
    """One length, however often it is repeated; digits only (no sign, no space inside)."""
    values = {v.strip() for value in lengths for v in value.split(",")}
    value = values.pop() if len(values) == 1 else ""
    if not (value.isascii() and value.isdigit()):
        raise Reject(HTTPStatus.BAD_REQUEST, "the Content-Length is not a number")
    return int(value)


def check_length(framing: Framing) -> None:
    """413 for a declared length over ``MAX_BODY`` (before ``100 Continue`` is sent)."""
    if isinstance(framing, int) and framing > MAX_BODY:
        raise Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")


def read_body(source: Input, framing: Framing) -> bytes:
    """The body of ``framing`` from ``source`` (at most ``MAX_BODY`` bytes: 413 beyond);
    400 for a body cut short or a malformed chunked one."""
    check_length(framing)
    if not framing:
        return b""
    if isinstance(framing, int):
        return _read_exactly(source, framing)
    return _read_chunked(source)


def _read_exactly(source: Input, size: int) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise Reject(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
    return data


def _read_chunked(source: Input) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = source.readline(1024)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not _CHUNK_SIZE.match(size_text):
            raise Reject(HTTPStatus.BAD_REQUEST, "a malformed chunked body")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > MAX_BODY:
            raise Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        parts.append(_read_exactly(source, size))
        if source.readline(3) not in (b"\r\n", b"\n"):
            raise Reject(HTTPStatus.BAD_REQUEST, "a malformed chunked body")
    _read_trailer(source)
    return b"".join(parts)


def _read_trailer(source: Input) -> None:
    for _ in range(64):  # trailer fields, up to the empty line
        line = source.readline(8192)
        if line in (b"\r\n", b"\n"):
            return
        if not line.endswith(b"\n"):
            break
    raise Reject(HTTPStatus.BAD_REQUEST, "a malformed chunked body (trailer)")
