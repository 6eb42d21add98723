"""The link files that desktops make when a link is dragged into a folder (SPEC §6):
macOS ``.webloc`` (a property list), freedesktop ``.desktop`` (``Type=Link``) and the
Windows Internet Shortcut ``.url`` (ANSI code page, ``[InternetShortcut.W]`` in UTF-7).
Pure code: bytes or text in, the URL out, :class:`BadJobError` with a plain message."""

from __future__ import annotations

import plistlib
import struct
import xml.parsers.expat
from collections.abc import Iterator

from dropfetch.errors import BadJobError

__all__ = ["desktop_url", "is_shortcut_start", "shortcut_url", "webloc_url"]

# what a broken or hostile property list may raise from plistlib (binary: offsets and
# counts past the end, cycles; XML: expat errors, entity declarations)
_PLIST_ERRORS = (
    plistlib.InvalidFileException,
    xml.parsers.expat.ExpatError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    MemoryError,
    struct.error,
    UnicodeError,
)
_DESKTOP_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def webloc_url(data: bytes) -> str:
    """The ``URL`` of a macOS ``.webloc``: an XML or binary property list holding a
    dictionary (plistlib refuses XML entity declarations)."""
    try:
        doc = plistlib.loads(data)
    except _PLIST_ERRORS:
        raise BadJobError(
            "the .webloc file is not a valid property list; drag the link from the browser again"
        ) from None
    if not isinstance(doc, dict):
        raise BadJobError("the .webloc file holds no dictionary with a URL key")
    url = doc.get("URL")
    if not isinstance(url, str) or not url.strip():
        raise BadJobError("the .webloc file has no URL key with the link's address")
    return url


def desktop_url(text: str) -> str:
    """The ``URL=`` of a freedesktop ``[Desktop Entry]`` of ``Type=Link``; a localized
    ``URL[xx]=`` only when there is no plain one. Any other type (an ``Application``)
    is refused: a job file is never executed."""
    entries = _ini_section(text.splitlines(), "Desktop Entry", case=True)
    if entries is None:
        raise BadJobError("the .desktop file has no [Desktop Entry] group")
    kind = entries.get("Type")
    if kind != "Link":
        shown = "no Type=" if kind is None else f"Type={kind[:20]}"
        raise BadJobError(
            f"the .desktop file is not a link ({shown}); only Type=Link entries are jobs, "
            "nothing is ever run"
        )
    url = entries.get("URL")
    if url is None:
        url = next((v for k, v in sorted(entries.items()) if k.startswith("URL[")), None)
    if url is None or not url.strip():
        raise BadJobError("the .desktop link has no URL= line")
    return _desktop_unescape(url)


def _desktop_unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            out.append(_DESKTOP_ESCAPES.get(nxt, "\\" + nxt))
        else:
            out.append(c)
    return "".join(out)


def is_shortcut_start(line: str) -> bool:
    """Whether the first significant line of a ``.url`` starts an INI file."""
    return line.startswith("[") and line.endswith("]")


def shortcut_url(data: bytes, text: str | None) -> str:
    """The URL of a Windows Internet Shortcut: ``[InternetShortcut.W]``'s ``URL=`` in
    UTF-7 (Windows writes it for a URL that the ANSI code page cannot hold) wins over
    ``[InternetShortcut]``'s; ``text`` is the UTF-8 text, None when the file is not
    UTF-8 (then it is read in the ANSI code page, cp1252)."""
    if text is None:
        text = data.decode("cp1252", "replace")
    lines = text.splitlines()
    wide = _ini_section(lines, "internetshortcut.w", case=False)
    if wide is not None and wide.get("url", "").strip():
        try:
            return wide["url"].strip().encode("ascii").decode("utf-7")
        except UnicodeError:
            raise BadJobError(
                "the URL= line of the [InternetShortcut.W] section is not valid UTF-7"
            ) from None
    ansi = _ini_section(lines, "internetshortcut", case=False)
    if ansi is None or not ansi.get("url", "").strip():
        raise BadJobError(
            "the Internet Shortcut has no URL= line in its [InternetShortcut] section"
        )
    return ansi["url"].strip()


def _ini_section(lines: list[str], name: str, *, case: bool) -> dict[str, str] | None:
    """The keys of the ``[name]`` section (the first value of a repeated key), names
    lower-cased unless ``case``; None when there is no such section."""
    found: dict[str, str] | None = None
    for section, key, value in _ini_items(lines):
        if section is None or (section if case else section.lower()) != name:
            continue
        found = {} if found is None else found
        if key:
            found.setdefault(key if case else key.lower(), value)
    return found


def _ini_items(lines: list[str]) -> Iterator[tuple[str | None, str, str]]:
    """(section, key, value) of each ``key=value`` line, and (section, "", "") of each
    section header; comments (``#``, ``;``) and blank lines skipped."""
    section: str | None = None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if is_shortcut_start(line):
            section = line[1:-1].strip()
            yield section, "", ""
        elif "=" in line:
            key, _, value = line.partition("=")
            yield section, key.strip(), value.strip()
