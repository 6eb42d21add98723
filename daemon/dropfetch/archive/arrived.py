"""What a download that is no archive holds, in plain words for an error message
(SPEC §8: a name that promises an archive, bytes that are none, usually a login or error
page). Pure: the first bytes of the file in, a phrase out."""

from __future__ import annotations

import html
import re

from dropfetch.names import shown

__all__ = ["HEAD_BYTES", "SHOWN_CHARS", "what_arrived"]

HEAD_BYTES = 4096  # how much of the file is looked at
SHOWN_CHARS = 80  # at most this much of the server's text is quoted

_MAGICS = (
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x7fELF", "an ELF program"),
)
_HTML_START = re.compile(rb"<(!doctype\s+html|html|head|title|body)[\s>/]", re.IGNORECASE)
_XML_START = re.compile(rb"<(\?xml|[a-z_][\w.:-]*[\s>/])", re.IGNORECASE)
_COMMENT = re.compile(rb"<!--.*?-->", re.DOTALL)
_XML_DECL = re.compile(rb"<\?xml[^>]*\?>")
_XML_DECL_TEXT = re.compile(r"^<\?xml[^>]*\?>\s*")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")
_BOM = b"\xef\xbb\xbf"
_JSON_VALUE_STARTS = (b'"', b"{", b"[", b"]", b"-", b"t", b"f", b"n")
_TEXT_RATIO = 0.9  # at least this share of printable characters makes text


def what_arrived(head: bytes, size: int | None = None) -> str:
    """What ``head``, the first :data:`HEAD_BYTES` of a file of ``size`` bytes (None:
    not known), is: ``an HTML page (title: 'Sign in')``, ``a JSON document ('{...}')``,
    ``an XML document (...)``, ``a text file ('Access denied')``, ``a PNG image``,
    ``an empty file``, ``N bytes of unrecognised data``. The server's text is escaped
    (:func:`dropfetch.names.shown`) and cut to :data:`SHOWN_CHARS` characters."""
    if not head:
        return "an empty file"
    for magic, what in _MAGICS:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    text = _as_text(head)
    if text is not None:
        return _what_text(head, text)
    if not any(head):
        return f"{_count(size)}, all zero" if size is not None else "zero bytes"
    return f"{_count(size)} of unrecognised data" if size is not None else "unrecognised data"


def _count(size: int) -> str:
    return "1 byte" if size == 1 else f"{size} bytes"


def _what_text(head: bytes, text: str) -> str:
    start = _start_of(head)
    body = text.lstrip("\ufeff").strip()
    if _is_html(start):
        title = _TITLE.search(text)
        name = _quoted(html.unescape(title.group(1))) if title else ""
        return f"an HTML page (title: {name})" if name else "an HTML page"
    if start.startswith(b"<svg") or (_XML_DECL.match(start) and b"<svg" in start):
        return "an SVG image"
    if _looks_json(start):
        return f"a JSON document ({_quoted(body)})"
    if _XML_START.match(start):
        return f"an XML document ({_quoted(_XML_DECL_TEXT.sub('', body, 1))})"
    return f"a text file ({_quoted(body)})" if body else "a text file of blank lines"


def _is_html(start: bytes) -> bool:
    """A page that starts (after an XML declaration, if any) with an HTML tag."""
    if _XML_DECL.match(start):
        start = _start_of(_XML_DECL.sub(b"", start, 1))
    return _HTML_START.match(start) is not None


def _start_of(head: bytes) -> bytes:
    """``head`` without its byte order mark, leading white space and comments."""
    head = head.removeprefix(_BOM).lstrip()
    while head.startswith(b"<!--"):
        m = _COMMENT.match(head)
        if m is None:
            return head
        head = head[m.end() :].lstrip()
    return head


def _looks_json(start: bytes) -> bool:
    """A JSON object or array: ``{`` then a string key or ``}``, ``[`` then a value."""
    rest = start[1:].lstrip()[:1]
    if start.startswith(b"{"):
        return rest in (b'"', b"}")
    return start.startswith(b"[") and (rest in _JSON_VALUE_STARTS or rest.isdigit())


def _as_text(head: bytes) -> str | None:
    """``head`` as text when it is mostly printable: UTF-8, else mostly ASCII (then read
    as Windows-1252, the usual other encoding of web pages); else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            ascii_ = sum(1 for b in head if 32 <= b < 127 or b in (9, 10, 13))
            return head.decode("cp1252", "replace") if ascii_ >= _TEXT_RATIO * len(head) else None
        text = head[: exc.start].decode("utf-8")  # a character cut at the end of the head
    return text if text and _printable(text) >= _TEXT_RATIO * len(text) else None


def _printable(text: str) -> int:
    return sum(1 for c in text if c.isprintable() or c in "\t\n\r\ufeff")


def _quoted(text: str) -> str:
    """``text`` on one line, escaped, cut to :data:`SHOWN_CHARS`, in single quotes; or
    the empty string for blank text."""
    one_line = _SPACES.sub(" ", text).strip()
    if not one_line:
        return ""
    pieces: list[str] = []
    length = 0
    for ch in one_line:
        piece = shown(ch)  # an escape is never cut in half
        if length + len(piece) > SHOWN_CHARS:
            return f"'{''.join(pieces).rstrip()} …'"
        pieces.append(piece)
        length += len(piece)
    return f"'{''.join(pieces)}'"
