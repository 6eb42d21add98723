"""What an endpoint of the HTTP front end gets and gives: the :class:`Request`, a
:class:`Reply` (or a :class:`Stream` for ``GET /events``), a :class:`Reject` for every
answer other than success, and the JSON every answer body is written in
(:func:`json_bytes`, :func:`json_line`)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dropfetch.fsutil import display_name

if TYPE_CHECKING:
    from dropfetch.config import Config
    from dropfetch.httpevents import Broadcaster
    from dropfetch.httpwire import Framing
    from dropfetch.metrics import Metrics
    from dropfetch.status import Sidecar

__all__ = [
    "Endpoint",
    "Front",
    "Reject",
    "Reply",
    "Request",
    "Stream",
    "error_body",
    "json_bytes",
    "json_line",
]


class Front(Protocol):
    """What the endpoints use of the front end."""

    config: Config
    metrics: Metrics
    token: str | None
    session_key: bytes
    broadcaster: Broadcaster

    def view(self, sc: Sidecar) -> dict[str, Any]: ...

    def all_sidecars(self) -> list[Sidecar]: ...


@dataclass(frozen=True, slots=True)
class Request:
    """One request as an endpoint sees it: ``job_id`` from the path (None if it has
    none), the query string (after ``?``, as sent), and the body, read only when an
    endpoint calls ``read_body``."""

    front: Front
    job_id: str | None
    framing: Framing
    read_body: Callable[[], bytes]
    query: str = ""

    @property
    def inbox(self) -> Path:
        return self.front.config.inbox


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: ``body`` is a JSON value, bytes sent as they are, or a
    :class:`Stream`."""

    status: int
    body: Any
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Stream(Protocol):
    """A reply whose body is written as it comes (``Connection: close`` frames it):
    ``run`` writes with ``write`` until it is done, ``gone()`` says the client went
    away, or ``write`` raises ``OSError``; ``close`` is called in every case."""

    def run(self, write: Callable[[bytes], object], gone: Callable[[], bool]) -> None: ...

    def close(self) -> None: ...


Endpoint = Callable[[Request], Reply]


class Reject(Exception):
    """An answer other than success (a JSON error), raised from anywhere below the
    dispatcher: framing, routing, endpoints."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def error_body(message: str, code: str | None = None) -> dict[str, str]:
    """Every error answer's body: ``{"error": "...", "code": ...}`` (the code if any)."""
    body = {"error": message}
    if code:
        body["code"] = code
    return body


def json_bytes(value: Any) -> bytes:
    """``value`` as indented JSON in valid UTF-8; never raises for data read from disk.

    Strings are shown as :func:`~dropfetch.fsutil.display_name` shows them (bytes that
    were not UTF-8 as ``\\xNN``, the sidecars' own form), NaN and infinities become
    null, and anything JSON has no type for becomes its ``str()``.
    """
    text = json.dumps(_clean(value), ensure_ascii=False, allow_nan=False, indent=2, default=str)
    return (text + "\n").encode("utf-8")


def json_line(value: Any) -> str:
    """``value`` as :func:`json_bytes` shows it, on one line (for a ``data:`` line)."""
    return json.dumps(_clean(value), ensure_ascii=False, allow_nan=False, default=str)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return display_name(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_clean(k) if isinstance(k, str) else k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
