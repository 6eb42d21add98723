"""What the HTTP front end answers: a :class:`Reply`, a :class:`Reject` for every answer
other than success, and the JSON every answer body is written in (:func:`json_bytes`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dropfetch.fsutil import display_name

__all__ = ["Reject", "Reply", "error_body", "json_bytes"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: ``body`` is a JSON value, or bytes sent as they are."""

    status: int
    body: Any
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


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
