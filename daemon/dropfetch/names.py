"""Name policy: which names dropfetch uses as they are, and the staging-name format.

One rule for control characters (:data:`CONTROL`): C0 and C1 controls, DEL, and the
format characters that reorder or break a line of text (the bidirectional controls,
U+2028/U+2029). A name holding one is never used as a file name dropfetch picks
(a server's name, a job name); how a name is *shown* (sidecars, logs) is
:func:`dropfetch.fsutil.display_name` and :func:`dropfetch.logs.escape`, which escape
the same characters.
"""

from __future__ import annotations

import re

__all__ = ["CONTROL", "MAX_NAME_BYTES", "has_control", "parse_staging_name", "safe_name",
           "staging_name"]

CONTROL = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_CONTROL_RE = re.compile(f"[{CONTROL}]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_NAME_BYTES = 255  # one file name (NAME_MAX)


def has_control(text: str) -> bool:
    """Whether ``text`` holds a character of the control-character rule."""
    return _CONTROL_RE.search(text) is not None


def safe_name(name: str | None) -> str | None:
    """``name`` (stripped) if it can be used as a bare file name as it is, else None:
    not empty, not hidden, not ``.``/``..``, no ``/`` or ``\\``, no control character
    (:data:`CONTROL`), only printable characters and spaces (no zero-width or
    private-use ones either), no byte that is not UTF-8, at most 255 bytes."""
    if name is None:
        return None
    name = name.strip()
    if (not name or name.startswith(".") or "/" in name or "\\" in name
            or has_control(name) or _LONE_SURROGATE.search(name)
            or not all(c == " " or c.isprintable() for c in name)
            or len(name.encode("utf-8")) > MAX_NAME_BYTES):
        return None
    return name


def staging_name(key: str, host_key: str, pid: int, stamp: int) -> str:
    """``KEY@HOST@PID@STAMP``: the name of one attempt's staging directory. ``key`` and
    ``host_key`` are :func:`dropfetch.leases.lease_key` values: neither holds an ``@``."""
    return f"{key}@{host_key}@{pid}@{stamp}"


def parse_staging_name(name: str) -> tuple[str, str, int] | None:
    """(key, host key, pid) of a :func:`staging_name`, else None."""
    parts = name.split("@")
    if len(parts) != 4 or not parts[0] or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])
