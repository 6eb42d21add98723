"""``lsar -j``'s listing of a RAR archive, read into the entries dropfetch writes
(pure: no process, no file). What ``unar -o -`` sends for them is :func:`in_stream`."""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from dropfetch.errors import ArchiveLimitsError, CorruptArchiveError, UnsafeArchiveError

__all__ = ["Entry", "Listing", "ListingReader", "parse_listing"]

Kind = Literal["dir", "file", "symlink", "hardlink"]
MAX_HELD = 16 * 1024 * 1024  # bytes of one member's lines, or of the lines around them

# lsar repeats a solid RAR 4's whole part list in every entry (ListingReader skips it
# unparsed when it can): these keys are dropped as they are parsed
_DROPPED = frozenset({"XADSolidObject", "XADNextSolidEntry", "XADFirstSolidEntry"})
_SPECIAL = {
    "XADIsCharacterDevice": "a character device",
    "XADIsBlockDevice": "a block device",
    "XADIsFIFO": "a FIFO",
    "XADIsResourceFork": "a resource fork",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One member as the listing claims it (``size``: its data, or a link's target)."""

    index: int
    name: str
    kind: Kind
    size: int
    mode: int
    mtime: float | None
    target: str | None  # a link's destination, when the listing gives it
    encrypted: bool
    crc: int | None = None  # the CRC-32 of its data, checked as it is written
    blake2: bytes | None = None  # or its BLAKE2sp digest
    opaque: bool = False  # a CRC-32 only lsar -t can check (keyed by the password)

    @property
    def in_stream(self) -> bool:
        """Whether ``unar -o -`` sends bytes for it: a file's data, and a RAR 4 symbolic
        link's target (its data; RAR 5 lists the target, and sends nothing)."""
        return self.kind == "file" or (self.kind == "symlink" and self.target is None)


@dataclass(frozen=True, slots=True)
class Listing:
    entries: list[Entry]
    solid: bool
    rar5: bool = False  # RAR 5 checks a password before decoding; RAR 4 cannot

    @property
    def encrypted(self) -> bool:
        return any(e.encrypted for e in self.entries)

    @property
    def needs_test(self) -> bool:
        """Whether some data can only be checked by ``lsar -t`` (``unar -o -`` checks
        nothing: it sends a member that fails its checksum as it is)."""
        return any(e.opaque for e in self.entries if e.in_stream)


def parse_listing(data: bytes, max_entries: int = 1 << 62) -> Listing:
    """The entries of all of ``lsar -j``'s output ``data`` (see :class:`ListingReader`)."""
    reader = ListingReader(max_entries)
    reader.feed(data)
    return reader.listing()


_SOLID_OPEN = re.compile(rb'( *)"XADSolidObject": \[\Z')
_ENTRY_OPEN = b"    {"
_ENTRY_CLOSE = (b"    }", b"    },")


class ListingReader:
    """``lsar -j``'s output, fed as it comes: each member is parsed as soon as its lines
    are in, so memory holds the entries, not the text. lsar repeats a solid RAR 4's
    whole part list in every member (its output grows with the square of the members):
    those lists are skipped by their lines, unparsed. lsar pretty-prints with two
    spaces an indent, and a JSON string holds no line break, so a line is a key only
    where lsar put one; output in another shape is parsed whole, as JSON."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._pending = b""
        self._member: list[bytes] | None = None  # the lines of the member being read
        self._skeleton: list[bytes] = []  # every line outside the members
        self._skip: bytes | None = None  # the line that ends the part list skipped
        self._held = 0
        self.entries: list[Entry] = []

    def feed(self, chunk: bytes) -> None:
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line)
        if len(self._pending) > MAX_HELD:
            raise ArchiveLimitsError(f"lsar's listing has a line over {MAX_HELD} bytes")

    def _line(self, line: bytes) -> None:
        if self._skip is not None:
            if line.rstrip(b",") == self._skip:
                self._keep(self._skip[:-1] + b'"XADSolidObject": 0' + line[len(self._skip) :])
                self._skip = None
            return
        if opened := _SOLID_OPEN.match(line):
            self._skip = opened.group(1) + b"]"
        elif self._member is None and line == _ENTRY_OPEN:
            self._member = [line]
        elif self._member is not None and line in _ENTRY_CLOSE:
            self._member.append(b"    }")
            self._add(b"\n".join(self._member))
            self._member, self._held = None, 0
        else:
            self._keep(line)

    def _keep(self, line: bytes) -> None:
        self._held += len(line)
        if self._held > MAX_HELD:
            raise ArchiveLimitsError(
                f"lsar's listing holds a member or a header over {MAX_HELD} bytes: the "
                "archive is not unpacked"
            )
        (self._skeleton if self._member is None else self._member).append(line)

    def _add(self, text: bytes) -> None:
        self.entries.append(_entry(_json(text)))
        if len(self.entries) > self._max_entries:
            raise ArchiveLimitsError(
                f"the archive has more than {self._max_entries} members (extract.max_files); "
                "raise the limit if this archive is trusted"
            )

    def listing(self) -> Listing:
        """The listing, once all of lsar's output was fed. Raises
        :class:`CorruptArchiveError` for a listing that is not one, or that says lsar
        could not read the archive to its end (``lsarError``), and
        :class:`UnsafeArchiveError` for a device, a FIFO or a resource fork."""
        self.feed(b"\n")
        if self._member is not None or self._skip is not None:
            raise _unlisted()
        doc = _json(b"\n".join(self._skeleton))
        contents = doc.get("lsarContents")
        if not isinstance(contents, list):
            raise _unlisted()
        for raw in contents:  # lsar's output in another shape
            self.entries.append(_entry(raw))
        if doc.get("lsarError"):
            raise CorruptArchiveError(
                f"the archive is damaged or incomplete: lsar stopped listing it (error "
                f"{doc['lsarError']!r}); download it again or check the source"
            )
        entries = sorted(self.entries, key=lambda e: e.index)
        props = doc.get("lsarProperties")
        solid = isinstance(props, dict) and bool(props.get("XADIsSolid"))
        return Listing(entries, solid, doc.get("lsarFormatName") == "RAR 5")


def _json(text: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(text.decode("utf-8", "surrogateescape"), object_hook=_drop_solid)
    except ValueError:
        raise _unlisted() from None
    if not isinstance(doc, dict):
        raise _unlisted()
    return doc


def _unlisted() -> CorruptArchiveError:
    return CorruptArchiveError(
        "the archive is damaged or incomplete: lsar could not list it; download it again "
        "or check the source"
    )


def _drop_solid(obj: dict[str, Any]) -> dict[str, Any]:
    for key in _DROPPED & obj.keys():
        del obj[key]
    return obj


def _entry(raw: Any) -> Entry:
    if not isinstance(raw, dict) or not isinstance(raw.get("XADFileName"), str):
        raise CorruptArchiveError("the archive is damaged: lsar lists a member without a name")
    name: str = raw["XADFileName"]
    for key, what in _SPECIAL.items():
        if raw.get(key):
            raise UnsafeArchiveError(f"unsafe member '{name}': {what} is not allowed")
    perms = _number(raw, "XADPosixPermissions", -1)
    kind = _kind(raw, name, perms)
    target = raw.get("XADLinkDestination")
    crc = _crc(raw)
    if kind == "hardlink" and not isinstance(target, str):
        raise UnsafeArchiveError(f"unsafe member '{name}': a hard link without a target")
    return Entry(
        index=_number(raw, "XADIndex", 0),
        name=name,
        kind=kind,
        size=_number(raw, "XADFileSize", 0),
        mode=(perms & 0o7777) if perms >= 0 else (0o755 if kind == "dir" else 0o644),
        mtime=_mtime(raw.get("XADLastModificationDate")),
        target=target if isinstance(target, str) else None,
        encrypted=bool(raw.get("XADIsEncrypted")),
        crc=crc,
        blake2=_blake2(raw),
        opaque=crc is None and "RAR5CRC32" in raw,
    )


def _blake2(raw: dict[str, Any]) -> bytes | None:
    """The BLAKE2sp digest in clear (lsar gives its bytes as characters U+0000-U+00FF);
    lsar -t cannot check one ("Unknown"), nor can anyone check a keyed one."""
    value = raw.get("RAR5BLAKE2spHash")
    if raw.get("RAR5ChecksumsAreEncrypted") or not isinstance(value, str):
        return None
    try:
        digest = value.encode("latin-1")
    except UnicodeError:
        return None
    return digest if len(digest) == 32 else None


def _crc(raw: dict[str, Any]) -> int | None:
    """The CRC-32 of the member's data, when the listing gives it in clear (RAR 5 may
    store it keyed by the password: RAR5ChecksumsAreEncrypted)."""
    if raw.get("RAR5ChecksumsAreEncrypted"):
        return None
    for key in ("RARCRC32", "RAR5CRC32"):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32:
            return value
    return None


_RAR5_FILE_COPY = 5


def _kind(raw: dict[str, Any], name: str, perms: int) -> Kind:
    if raw.get("XADIsDirectory"):
        return "dir"
    if raw.get("XADIsLink"):
        # a RAR 5 file copy (redirection 5, `rar -oi`) is the same bytes as its target:
        # a hard link to it (lsar calls it a link, and unar makes it a symbolic one)
        copy = raw.get("RAR5RedirectionType") == _RAR5_FILE_COPY
        return "hardlink" if raw.get("XADIsHardLink") or copy else "symlink"
    fmt = stat.S_IFMT(perms) if perms >= 0 else 0
    if fmt in (0, stat.S_IFREG):
        return "file"
    if fmt == stat.S_IFDIR:
        return "dir"
    raise UnsafeArchiveError(
        f"unsafe member '{name}': a special file (mode {perms:o}) is not allowed"
    )


def _number(raw: dict[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or (value < 0 and value != default):
        raise CorruptArchiveError(f"the archive is damaged: lsar lists {key} = {value!r}")
    return value


def _mtime(text: Any) -> float | None:
    """lsar's ``2011-06-12 12:53:32 +0000``."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        return None
