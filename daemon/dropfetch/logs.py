"""Log records that no input can forge: one record per line, every value escaped.

Job names, URLs, member names, server text and exception messages all reach log lines.
The formatters here escape the whole message once, so no call site has to: a CR, LF,
any other character of the control-character rule (:data:`dropfetch.names.CONTROL`: C0
and C1 controls, DEL, U+2028/U+2029, the bidirectional controls) and lone surrogates
are written as ``\\n``, ``\\r``, ``\\t``, ``\\xNN`` (a C0 control or DEL)
or ``\\uNNNN`` (any other character); a byte that was not valid UTF-8 in a file name (a
surrogate escape) is shown as ``\\xNN`` (``\\xff``), and a backslash as ``\\\\``: the
escaped text reads back without ambiguity, ``\\xNN`` always being the byte NN.

Text records are ``TIME LEVEL LOGGER: MESSAGE``; a traceback follows on continuation
lines that start with :data:`CONTINUATION`, escaped the same way. JSON records are one
object per line, valid UTF-8.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from dropfetch import names

__all__ = ["CONTINUATION", "TEXT_FORMAT", "JsonFormatter", "TextFormatter", "escape"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTINUATION = "  | "


def escape(text: str) -> str:
    """``text`` on one line of printable text (see the module docstring): the shared
    escaping of :func:`dropfetch.names.shown`, in its reversible form."""
    return names.shown(text, reversible=True)


def _message(record: logging.LogRecord) -> str:
    """The record's message, escaped; a call with the wrong arguments is shown, not
    turned into logging's own multi-line error report."""
    try:
        text = record.getMessage()
    except (TypeError, ValueError, KeyError):
        text = f"{record.msg!r} % {record.args!r} (a log call with the wrong arguments)"
    return escape(text)


def _lines(text: str) -> list[str]:
    return [escape(line) for line in text.rstrip("\n").split("\n")]


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, escaped; tracebacks on continuation lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = _message(record)
        record.asctime = self.formatTime(record, self.datefmt)
        saved = record.name
        record.name = escape(saved)
        try:
            out = self.formatMessage(record)
        finally:
            record.name = saved
        for extra in _extras(self, record):
            out += "".join("\n" + CONTINUATION + line for line in _lines(extra))
        return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, job, event (and exception).

    ``ensure_ascii`` writes non-ASCII text as ``\\uNNNN`` escapes, for a stream that
    cannot encode it as UTF-8.
    """

    def __init__(self, *, ensure_ascii: bool = False) -> None:
        super().__init__()
        self.ensure_ascii = ensure_ascii
        self.converter = time.gmtime  # the "Z" in the time

    def format(self, record: logging.LogRecord) -> str:
        args = record.args if isinstance(record.args, tuple) else ()
        job = (
            args[0]
            if isinstance(record.msg, str) and record.msg.startswith("%s:") and args
            else None
        )
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": escape(record.name),
            "job": None if job is None else escape(str(job)),
            "event": _message(record),
        }
        extras = _extras(self, record)
        if extras:
            out["exception"] = "\n".join(line for extra in extras for line in _lines(extra))
        return json.dumps(out, ensure_ascii=self.ensure_ascii)


def _extras(formatter: logging.Formatter, record: logging.LogRecord) -> list[str]:
    """The record's traceback and stack, as text (not yet escaped)."""
    out = []
    if record.exc_info:
        out.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        out.append(record.exc_text)
    if record.stack_info:
        out.append(formatter.formatStack(record.stack_info))
    return out
