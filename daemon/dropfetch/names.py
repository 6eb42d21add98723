"""Name policy: which names dropfetch uses as they are, and the staging-name format.

One rule for control characters (:data:`CONTROL`): C0 and C1 controls, DEL, and the
format characters that reorder or break a line of text (the bidirectional controls,
U+2028/U+2029). A name holding one is never used as a file name dropfetch picks
(a server's name, a job name), and a job name or an archive member holding one is
refused.

How any text is *shown* (sidecars, status, HTTP, logs) is one mechanism,
:func:`shown`: each character of the rule, each lone surrogate and each byte that was
not UTF-8 (a surrogate escape of ``os.fsdecode``) is written as an escape; all else is
unchanged. A C0 control or DEL is ``\\xNN`` (one byte in UTF-8 too), an undecodable
byte ``\\xNN`` (the byte NN), any other character ``\\uNNNN``. Two forms:

- names (:func:`dropfetch.fsutil.display_name`, ``reversible=False``): a backslash
  in a name stays as it is (``caf\\z.txt``): readable, not always reversible;
- logs (:func:`dropfetch.logs.escape`, ``reversible=True``): also ``\\\\`` for a
  backslash and ``\\n``, ``\\r``, ``\\t``: the text reads back exactly.
"""

from __future__ import annotations

import re

__all__ = [
    "CONTROL",
    "MAX_NAME_BYTES",
    "has_control",
    "parse_staging_name",
    "safe_name",
    "shown",
    "staging_name",
]

CONTROL = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_CONTROL_RE = re.compile(f"[{CONTROL}]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_NAME_BYTES = 255  # one file name (NAME_MAX)


def has_control(text: str) -> bool:
    """Whether ``text`` holds a character of the control-character rule."""
    return _CONTROL_RE.search(text) is not None


_SHOWN_RE = re.compile(f"[{CONTROL}\ud800-\udfff]")
_REVERSIBLE_RE = re.compile(f"[\\\\{CONTROL}\ud800-\udfff]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogate escape of one undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    # \xNN is always the byte NN (a C0 control is one byte in UTF-8 too), \uNNNN a character
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def _named(m: re.Match[str]) -> str:
    ch = m.group()
    return _NAMED.get(ch) or _escaped(ch)


def shown(text: str, *, reversible: bool = False) -> str:
    """``text`` as valid UTF-8 on one line, its control characters, lone surrogates and
    undecodable bytes escaped (see the module docstring for the two forms)."""
    if reversible:
        return _REVERSIBLE_RE.sub(_named, text)
    return _SHOWN_RE.sub(lambda m: _escaped(m.group()), text)


def safe_name(name: str | None) -> str | None:
    """``name`` (stripped) if it can be used as a bare file name as it is, else None:
    not empty, not hidden, not ``.``/``..``, no ``/`` or ``\\``, no control character
    (:data:`CONTROL`), only printable characters and spaces (no zero-width or
    private-use ones either), no byte that is not UTF-8, at most 255 bytes."""
    if name is None:
        return None
    name = name.strip()
    if (
        not name
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or has_control(name)
        or _LONE_SURROGATE.search(name)
        or not all(c == " " or c.isprintable() for c in name)
        or len(name.encode("utf-8")) > MAX_NAME_BYTES
    ):
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
