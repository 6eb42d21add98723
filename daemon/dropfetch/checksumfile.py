"""``checksum_url``: a checksum file and the download's entry in it.

:func:`find_checksum` (pure) reads the formats that tools write: GNU coreutils
(``HEX  name``, ``HEX *name``, a leading ``\\`` for escaped names), BSD and ``--tag``
style (``SHA256 (name) = HEX``), ``sha256 -r`` (``HEX name``), and one bare digest.
Comments (``#``), blank lines and lines of neither form (a PGP signature's) are
skipped; Windows line ends and a BOM are fine. The algorithm is the BSD tag, else the
checksum file's name's (``SHA512SUMS``, ``x.md5``), else the digest's length.
:func:`fetch_checksum` brings the file with the job's :class:`Downloader` (the same URL
policy, SSRF guard and redirects), at most :data:`MAX_CHECKSUM_FILE` bytes.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from dropfetch.checksums import ALGORITHMS, Checksum
from dropfetch.errors import CancelledError, ChecksumMismatchError, DropfetchError, fragment

if TYPE_CHECKING:
    from dropfetch.download import Downloader
    from dropfetch.jobfile import JobSpec

__all__ = ["MAX_CHECKSUM_FILE", "fetch_checksum", "find_checksum", "job_checksums", "url_leaf"]

MAX_CHECKSUM_FILE = 1024 * 1024
_BSD = re.compile(r"(\\?)([A-Za-z0-9-]+) ?\((.*)\) ?= ?([0-9A-Fa-f]+)")
_GNU = re.compile(r"(\\?)([0-9A-Fa-f]{32,}) [ *]?(.*)")
_BARE = re.compile(r"[0-9A-Fa-f]{32,}")
_TAGS = {"sha256": "sha256", "sha512": "sha512", "sha1": "sha1", "md5": "md5"}
_TAGS |= {"blake2b": "blake2b", "blake2b-512": "blake2b"}
# what a checksum file's name says, looked for in this order
_HINTS = (
    ("sha512", "sha512"),
    ("sha256", "sha256"),
    ("sha1", "sha1"),
    ("md5", "md5"),
    ("blake2b", "blake2b"),
    ("b2sum", "blake2b"),
    (".b2", "blake2b"),
)
_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
_Entry = tuple[str | None, str, str]  # (BSD tag or None, name, hex)
_UNESCAPE = {"\\\\": "\\", "\\n": "\n", "\\r": "\r"}


def url_leaf(url: str) -> str:
    """The URL's last path segment, percent-decoded ('' for none)."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def find_checksum(text: str, *, name: str, source: str) -> Checksum:
    """The entry for ``name`` in the checksum file ``text``, whose own name is
    ``source``; ``checksum_mismatch`` when it has none (or an unusable one)."""
    lines = _significant(text)
    if len(lines) == 1 and _BARE.fullmatch(lines[0].strip()):
        return _checksum(None, lines[0].strip(), source, name)
    entries = _entries_for(name, [e for e in map(_entry, lines) if e is not None])
    if len({(e[0], e[2].lower()) for e in entries}) > 1:
        raise ChecksumMismatchError(
            f"the checksum file {fragment(source)} has different entries for "
            f"{fragment(name)}; nothing was downloaded"
        )
    if not entries:
        raise ChecksumMismatchError(
            f"the checksum file {fragment(source)} has no entry for {fragment(name)} (the "
            "name the download is delivered under: the filename option, else the URL's "
            "last part); nothing was downloaded"
        )
    tag, _, digest = entries[0]
    return _checksum(tag, digest, source, name)


def _entries_for(name: str, found: list[_Entry]) -> list[_Entry]:
    """The entries of ``name`` (``./name`` too); else those of ``dir/name``."""
    exact = [e for e in found if _plain(e[1]) == name]
    return exact or [e for e in found if _plain(e[1]).rsplit("/", 1)[-1] == name]


def _significant(text: str) -> list[str]:
    """The lines that may be entries: no blank ones, no comments."""
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    return [line for line in lines if not line.lstrip().startswith("#")]


def _entry(line: str) -> _Entry | None:
    """(BSD tag or None, name, hex) of one line, or None for another kind of line."""
    line = line.rstrip("\r")
    m = _BSD.fullmatch(line)
    if m is not None:
        escaped, tag, entry, digest = m.groups()
        return tag, _unescaped(entry) if escaped else entry, digest
    m = _GNU.fullmatch(line)
    if m is not None:
        escaped, digest, entry = m.groups()
        return None, _unescaped(entry) if escaped else entry, digest
    return None


def _unescaped(name: str) -> str:
    """A name that coreutils escaped (the line starts with ``\\``)."""
    return re.sub(r"\\[\\nr]", lambda m: _UNESCAPE[m.group(0)], name)


def _plain(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _checksum(tag: str | None, digest: str, source: str, name: str) -> Checksum:
    """The entry's algorithm (by tag, the file's name, the digest's length) and digest."""
    if tag is not None:
        algo = _TAGS.get(tag.lower())
        why = f"its tag {fragment(tag)}"
    else:
        lower = source.lower()
        algo = next((a for hint, a in _HINTS if hint in lower), None)
        why = f"its name {fragment(source)}"
        if algo is None:
            algo, why = _BY_LENGTH.get(len(digest)), f"a digest of {len(digest)} digits"
    if algo is None:
        raise ChecksumMismatchError(
            f"the checksum file's entry for {fragment(name)} is of an algorithm dropfetch "
            f"does not know ({why}); it knows {', '.join(ALGORITHMS)}"
        )
    if len(digest) != ALGORITHMS[algo][1]:
        raise ChecksumMismatchError(
            f"the checksum file's entry for {fragment(name)} has {len(digest)} digits, but "
            f"{why} says {algo}, which has {ALGORITHMS[algo][1]}"
        )
    return Checksum(algo, digest.lower())


def fetch_checksum(
    downloader: Downloader, url: str, *, name: str, cancel: threading.Event
) -> Checksum:
    """The entry for ``name`` in the checksum file at ``url``. A file that cannot be
    fetched fails with the download's own error (``http_404``...), said to be the
    checksum file's."""
    if not name:
        raise ChecksumMismatchError(
            "the job's URL has no file name to look for in the checksum file; "
            "give the filename option"
        )
    try:
        data = downloader.read_small(url, limit=MAX_CHECKSUM_FILE, cancel=cancel)
    except CancelledError:
        raise
    except DropfetchError as err:
        err.message = f"the checksum file (checksum_url): {err.message}"
        err.args = (err.message,)
        raise
    text = data.decode("utf-8", "surrogateescape")
    return find_checksum(text, name=name, source=url_leaf(url) or "checksum_url")


def job_checksums(
    spec: JobSpec, downloader: Downloader, cancel: threading.Event
) -> tuple[Checksum, ...]:
    """What the job's download must match: ``sha256``, ``checksum`` and the entry of its
    ``checksum_url`` file (fetched now) for the name the file is delivered under."""
    if spec.checksum_url is None:
        return spec.checksums
    name = spec.filename or url_leaf(spec.url)
    try:
        entry = fetch_checksum(downloader, spec.checksum_url, name=name, cancel=cancel)
    except DropfetchError as err:
        err.mirror_may_help = False  # every URL of the job has this checksum file
        raise
    return tuple(dict.fromkeys((*spec.checksums, entry)))
