"""``lsar -j``'s listing of a RAR archive, read into the entries dropfetch writes
(pure: no process, no file). What ``unar -o -`` sends for them is :func:`in_stream`."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from dropfetch.errors import CorruptArchiveError, UnsafeArchiveError

__all__ = ["Entry", "Listing", "parse_listing"]

Kind = Literal["dir", "file", "symlink", "hardlink"]

# lsar repeats a solid RAR 4's whole part list in every entry: these keys are dropped as
# they are parsed, so the entries kept stay small
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

    @property
    def encrypted(self) -> bool:
        return any(e.encrypted for e in self.entries)

    @property
    def needs_test(self) -> bool:
        """Whether some data can only be checked by ``lsar -t`` (``unar -o -`` checks
        nothing: it sends a member that fails its checksum as it is)."""
        return any(e.opaque for e in self.entries if e.in_stream)


def parse_listing(data: bytes) -> Listing:
    """The entries of ``lsar -j``'s output, in the archive's order. Raises
    :class:`CorruptArchiveError` for a listing that is not one, or that says lsar could
    not read the archive to its end (``lsarError``), and :class:`UnsafeArchiveError`
    for a device, a FIFO or a resource fork."""
    try:
        doc = json.loads(data.decode("utf-8", "surrogateescape"), object_hook=_drop_solid)
        contents = doc["lsarContents"]
    except (ValueError, KeyError, TypeError):
        raise CorruptArchiveError(
            "the archive is damaged or incomplete: lsar could not list it; download it "
            "again or check the source"
        ) from None
    if doc.get("lsarError"):
        raise CorruptArchiveError(
            f"the archive is damaged or incomplete: lsar stopped listing it (error "
            f"{doc['lsarError']!r}); download it again or check the source"
        )
    entries = sorted((_entry(raw) for raw in contents), key=lambda e: e.index)
    props = doc.get("lsarProperties") or {}
    return Listing(entries, bool(props.get("XADIsSolid")))


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


def _kind(raw: dict[str, Any], name: str, perms: int) -> Kind:
    if raw.get("XADIsDirectory"):
        return "dir"
    if raw.get("XADIsLink"):
        return "hardlink" if raw.get("XADIsHardLink") else "symlink"
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
