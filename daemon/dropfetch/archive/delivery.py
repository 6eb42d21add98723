"""What a download is delivered as: the format of its bytes, weighed against the name it
is delivered under (SPEC §6, §8).

- ``extract: auto``: a document or package (:data:`DOCUMENT_SUFFIXES`: a ``.docx`` or a
  ``.jar`` is a zip) is delivered as it is; a name that promises an archive
  (:data:`ARCHIVE_SUFFIXES`) with bytes that are none (an HTML login page, a JSON
  error) fails with ``corrupt_archive`` saying what arrived; anything else goes by its
  bytes.
- ``extract: true``: the bytes must be an archive (or one compressed file), whatever
  the name says.

The single-compressed suffixes (``.gz``, ``.bz2``, ``.xz``, ``.zst``) promise nothing
(SPEC §8 leaves them out of the list): a ``notes.txt.gz`` whose bytes are plain text
(a server that keeps or serves such files decompressed) is delivered as the file it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from dropfetch.archive.arrived import HEAD_BYTES, what_arrived
from dropfetch.archive.compression import decompressor
from dropfetch.archive.formats import ArchiveFormat, sniff
from dropfetch.errors import CorruptArchiveError, from_os_error

__all__ = [
    "ARCHIVE_SUFFIXES",
    "DOCUMENT_SUFFIXES",
    "decide",
    "delivery_format",
    "is_document_name",
    "promised_archive",
    "refusal",
]

DOCUMENT_SUFFIXES = (
    *(".docx", ".docm", ".xlsx", ".xlsm", ".pptx"),  # Office Open XML
    *(".odt", ".ods", ".odp", ".odg", ".epub"),  # OpenDocument, EPUB
    *(".jar", ".war", ".ear", ".apk", ".aab", ".ipa"),  # Java, Android, iOS
    *(".whl", ".egg", ".nupkg", ".vsix", ".xpi", ".crx"),  # packages and extensions
    *(".kmz", ".3mf", ".appx", ".msix"),
)
# the suffix -> the archive it promises, as messages name it (longest suffixes first)
ARCHIVE_SUFFIXES = {
    ".tar.gz": "tar.gz",
    ".tar.bz2": "tar.bz2",
    ".tar.xz": "tar.xz",
    ".tar.zst": "tar.zst",
    ".tgz": "tar.gz",
    ".tbz2": "tar.bz2",
    ".txz": "tar.xz",
    ".tzst": "tar.zst",
    ".tar": "tar",
    ".zip": "zip",
    ".7z": "7z",
    ".rar": "RAR",
}
_COMPRESSIONS = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "zst": "zstd"}


def is_document_name(name: str | None) -> bool:
    """Whether ``name`` ends, in any case, in a document or package suffix."""
    return name is not None and name.lower().endswith(DOCUMENT_SUFFIXES)


def promised_archive(name: str | None) -> str | None:
    """The archive ``name`` promises by its suffix, in any case (``x.TGZ`` -> ``tar.gz``),
    else None."""
    lower = (name or "").lower()
    return next((kind for suffix, kind in ARCHIVE_SUFFIXES.items() if lower.endswith(suffix)), None)


def decide(fmt: ArchiveFormat, name: str | None, *, forced: bool) -> ArchiveFormat | None:
    """What a download whose bytes are ``fmt``, delivered under ``name``, is unpacked as:
    ``fmt``, or ``FILE`` (delivered as it is); None when it must fail (``corrupt_archive``):
    no archive under an archive's name, or under ``extract: true`` (``forced``)."""
    promised = promised_archive(name)
    if fmt is ArchiveFormat.FILE:
        return None if forced or promised else fmt
    if not forced and is_document_name(name):
        return ArchiveFormat.FILE
    if fmt.is_compressed_single and promised:
        return None  # e.g. a gzip-compressed page under a .tar.gz name: no tar in it
    return fmt


def delivery_format(path: Path, name: str | None, *, forced: bool) -> ArchiveFormat:
    """The format ``path`` (delivered under ``name``) is unpacked as (see :func:`decide`);
    raises :class:`CorruptArchiveError` saying what arrived when it is no archive."""
    fmt = sniff(path, name=name)
    decided = decide(fmt, name, forced=forced)
    if decided is None:
        raise CorruptArchiveError(refusal(_described(path, fmt), promised_archive(name)))
    return decided


def refusal(what: str, promised: str | None) -> str:
    """The message of a download that is ``what`` (:func:`what_arrived`), where the name
    promised a ``promised`` archive (None: ``extract: true`` asked for one)."""
    if "HTML page" in what:
        hint = ": usually a login or error page; check the URL"
    elif any(kind in what for kind in ("JSON document", "XML document", "text file")):
        hint = ": usually an error message; check the URL"
    else:
        hint = "; check the URL"
    if promised is None:
        return f"extract: true, but the download is {what}, not an archive{hint}"
    return f"the server sent {what}, not a {promised} archive{hint}"


def _described(path: Path, fmt: ArchiveFormat) -> str:
    """What ``path`` holds: its own first bytes, or a compressed file's decompressed ones."""
    try:
        with open(path, "rb") as f:
            if not fmt.is_compressed_single:
                return what_arrived(f.read(HEAD_BYTES), os.fstat(f.fileno()).st_size)
            head, broken = _decompressed_head(fmt, f)
    except OSError as exc:
        raise from_os_error(exc, "reading the download") from exc
    label = _COMPRESSIONS[fmt.value]
    if broken and not head:
        return f"{label} data that does not decompress (damaged or cut short)"
    return f"{label} data that decompresses to {what_arrived(head)}"


def _decompressed_head(fmt: ArchiveFormat, f: IO[bytes]) -> tuple[bytes, bool]:
    """Up to :data:`HEAD_BYTES` decompressed bytes, and whether decompressing failed."""
    head = b""
    try:
        with decompressor(fmt.value, f) as stream:
            while len(head) < HEAD_BYTES:
                more = stream.read(HEAD_BYTES - len(head))
                if not more:
                    break
                head += more
    except Exception:  # noqa: BLE001 - damaged data: the message says so
        return head, True
    return head, False
