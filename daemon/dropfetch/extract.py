"""Format sniffing and safe extraction into a staging directory (SPEC §8).

Safety does not rest on :mod:`tarfile` or :mod:`zipfile` filters (this Python has known
bypasses of them): every member name, type, link and size is checked here, and files are
written by this module only, into a tree whose every directory it created itself.
Symbolic links are made last, after every regular file, so nothing is ever written
through a link.
"""

# This module works on str paths with os-level calls (O_EXCL/O_NOFOLLOW, dir modes, links)
# on purpose: pathlib would hide which calls follow links.
# ruff: noqa: PTH102, PTH118, PTH208, PTH211

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import itertools
import logging
import lzma
import os
import re
import stat
import struct
import tarfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from dropfetch.config import ExtractConfig
from dropfetch.errors import (
    ArchiveLimitsError,
    CancelledError,
    CorruptArchiveError,
    DropfetchError,
    EncryptedArchiveError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
    from_os_error,
)
from dropfetch.fsutil import display_name

__all__ = ["ArchiveFormat", "Growth", "extract", "single_file_name", "sniff"]

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
RATIO_GRACE = 64 * 1024 * 1024  # max_ratio is checked once more than this was written
MAX_NAME_BYTES = 4096
MAX_COMPONENT_BYTES = 255
MAX_LINK_TARGET = 4096  # PATH_MAX: a target must be shorter
MAX_LINK_FOLLOWS = 40  # as Linux's MAXSYMLINKS
EXT_HEADER_LIMIT = 1024 * 1024  # pax / GNU long-name headers larger than this are refused
MAX_HEADER_CHAIN = 32  # extended headers in a row before one member (real tools: 1 to 3)
# Decompressed tar bytes that produce no output (headers, padding) allowed on top of what
# was written: bounds what tarfile may buffer for a hostile header.
OVERHEAD_BASE = 64 * 1024 * 1024
OVERHEAD_PER_MEMBER = 4096
PROGRESS_STEP = 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_RE = re.compile(rb"^BZh[1-9](1AY&SY|\x17rE8P\x90)")
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_SPAN_MAGIC = b"PK\x07\x08"  # first bytes of a split zip (`zip -s`), even of one part
_EOCD_MAGIC = b"PK\x05\x06"
_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR_MAGIC = b"PK\x06\x07"
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # magic, disk of the zip64 record, its offset, parts
_CENTRAL_MAGIC = b"PK\x01\x02"
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TAR_SUFFIXES = (".tar", ".tgz", ".taz", ".tbz", ".tbz2", ".tb2", ".txz", ".tzst", ".tar.gz",
                 ".tar.z", ".tar.bz2", ".tar.xz", ".tar.zst")
_COMPRESSED_SUFFIXES = {
    "gz": (".gz", ".gzip", ".z"),
    "bz2": (".bz2", ".bzip2", ".bz"),
    "xz": (".xz", ".lzma"),
    "zst": (".zst", ".zstd"),
}


class ArchiveFormat(StrEnum):
    """What a downloaded file is; the values are the sidecar's ``archive.format``."""

    ZIP = "zip"
    TAR = "tar"
    TAR_GZ = "tar.gz"
    TAR_BZ2 = "tar.bz2"
    TAR_XZ = "tar.xz"
    TAR_ZST = "tar.zst"
    GZ = "gz"
    BZ2 = "bz2"
    XZ = "xz"
    ZST = "zst"
    FILE = "file"

    @property
    def is_archive(self) -> bool:
        """A tar (compressed or not) or a zip: extracts to a tree."""
        return self in _ARCHIVES

    @property
    def is_compressed_single(self) -> bool:
        """One compressed file: decompresses to one file."""
        return self in _SINGLES


_ARCHIVES = frozenset({
    ArchiveFormat.ZIP, ArchiveFormat.TAR, ArchiveFormat.TAR_GZ, ArchiveFormat.TAR_BZ2,
    ArchiveFormat.TAR_XZ, ArchiveFormat.TAR_ZST,
})
_SINGLES = frozenset({ArchiveFormat.GZ, ArchiveFormat.BZ2, ArchiveFormat.XZ, ArchiveFormat.ZST})
_TAR_OF = {
    ArchiveFormat.GZ: ArchiveFormat.TAR_GZ,
    ArchiveFormat.BZ2: ArchiveFormat.TAR_BZ2,
    ArchiveFormat.XZ: ArchiveFormat.TAR_XZ,
    ArchiveFormat.ZST: ArchiveFormat.TAR_ZST,
}
_COMPRESSION_OF = {
    ArchiveFormat.TAR_GZ: ArchiveFormat.GZ,
    ArchiveFormat.TAR_BZ2: ArchiveFormat.BZ2,
    ArchiveFormat.TAR_XZ: ArchiveFormat.XZ,
    ArchiveFormat.TAR_ZST: ArchiveFormat.ZST,
}


# --- sniffing ------------------------------------------------------------------------

def sniff(path: Path, *, name: str | None = None) -> ArchiveFormat:
    """The format of ``path`` from its bytes, not its name.

    A compressed stream whose first decompressed block is a tar header is ``tar.X``,
    else the single-file ``X`` (also when the compressed data is broken: extraction then
    fails with ``corrupt_archive``). Anything unrecognised is ``FILE``.

    ``name``, the name the file is delivered under, decides only what the bytes cannot:
    an empty tar has no header at all (zero bytes, or end-of-archive zero blocks), so
    such content, compressed or not, is an empty tar when ``name`` says tar
    (``.tar``, ``.tgz``, ``.tar.gz``, ...). A file that ends in a zip after other data
    (a self-extracting stub) is a zip, as for unzip, bsdtar and 7z, unless ``name``
    says it is something else: ``setup.exe`` or a Python zipapp ``tool.pyz`` (a shebang
    line, then a zip) is delivered as the program it is.
    """
    tar_named = name is not None and name.lower().endswith(_TAR_SUFFIXES)
    with open(path, "rb") as f:
        head = f.read(4096)
        compression = _compression_of(head)
        if compression is None:
            if head.startswith(_ZIP_MAGICS):
                return ArchiveFormat.ZIP
            if is_tar_header(head[:512]) or (tar_named and _is_tar_end(head)):
                return ArchiveFormat.TAR
            if head.startswith(_ZIP_SPAN_MAGIC) or (
                    (name is None or name.lower().endswith(".zip")) and _zip_end(f)):
                return ArchiveFormat.ZIP
            return ArchiveFormat.FILE
        f.seek(0)
        block = b""
        try:
            with _decompressor(compression, cast(IO[bytes], f)) as stream:
                while len(block) < 512:
                    more = stream.read(512 - len(block))
                    if not more:
                        break
                    block += more
        except Exception:  # noqa: BLE001 - broken data: the magic still says what it is
            return compression
        if is_tar_header(block) or (tar_named and _is_tar_end(block)):
            return _TAR_OF[compression]
        return compression


def _zip_end(f: IO[bytes]) -> int | None:
    """How many parts the zip that ends ``f`` is the last of (1: a whole zip), from its
    end-of-central-directory record; None when there is none.

    This is how unzip, bsdtar and zipfile find a zip with data before it (a
    self-extracting stub): the record ends the file, after its comment, right behind the
    central directory.
    """
    size = f.seek(0, os.SEEK_END)
    start = max(0, size - (0xFFFF + _EOCD.size))
    f.seek(start)
    tail = f.read()
    pos = tail.rfind(_EOCD_MAGIC)
    while pos >= 0:
        if pos + _EOCD.size <= len(tail):
            (_sig, disk, cd_disk, on_disk, total, cd_size, cd_offset,
             comment) = _EOCD.unpack_from(tail, pos)
            end = start + pos
            if pos + _EOCD.size + comment == len(tail):
                locator = tail[max(0, pos - _ZIP64_LOCATOR.size):pos]
                if len(locator) == _ZIP64_LOCATOR.size and locator.startswith(
                        _ZIP64_LOCATOR_MAGIC):
                    # zip64: the fields above may all be 0xFFFF; the locator counts parts
                    return max(1, int(_ZIP64_LOCATOR.unpack(locator)[3]))
                if total and cd_offset + cd_size <= end and _read_at(
                        f, end - cd_size, 4) == _CENTRAL_MAGIC:
                    return disk + 1 if disk or cd_disk or on_disk != total else 1
        pos = tail.rfind(_EOCD_MAGIC, 0, pos)
    return None


def _read_at(f: IO[bytes], offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _is_tar_end(head: bytes) -> bool:
    """Nothing at all, or a first block of zeros: what an empty tar holds (GNU tar
    writes 10240 zero bytes, bsdtar 1024)."""
    return not head or (len(head) >= 512 and not any(head[:512]))


def _compression_of(head: bytes) -> ArchiveFormat | None:
    if head.startswith(_GZIP_MAGIC):
        return ArchiveFormat.GZ
    if _BZ2_RE.match(head):
        return ArchiveFormat.BZ2
    if head.startswith(_XZ_MAGIC):
        return ArchiveFormat.XZ
    if head.startswith(_ZSTD_MAGIC):
        return ArchiveFormat.ZST
    return None


def is_tar_header(block: bytes) -> bool:
    """True for a 512-byte block that is a tar header: ustar magic or a valid checksum."""
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    if block[0] == 0:
        return False
    field = block[148:156].replace(b"\x00", b" ").strip()
    if not field or not all(48 <= c <= 55 for c in field):
        return False
    stored = int(field, 8)
    unsigned = 256 + sum(block[:148]) + sum(block[156:512])
    signed = 256 + sum(struct.unpack("148b", block[:148])) + sum(
        struct.unpack("356b", block[156:512]))
    return stored in (unsigned, signed)


def single_file_name(url_filename: str | None, fmt: ArchiveFormat, fallback: str) -> str:
    """Name of the file a single-file compressed download decompresses to.

    The URL's file name without its compression suffix (``notes.txt.gz`` ->
    ``notes.txt``), else ``fallback`` (the job name). Always a bare, safe name.
    """
    if url_filename and fmt.is_compressed_single:
        name = url_filename
        lower = name.lower()
        for suffix in _COMPRESSED_SUFFIXES[fmt.value]:
            if lower.endswith(suffix):
                name = name[: -len(suffix)]
                break
        if _is_bare_name(name):
            return name
    return fallback


def _is_bare_name(name: str) -> bool:
    return (
        bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
        and not _CONTROL_RE.search(name)
        and len(os.fsencode(name)) <= MAX_COMPONENT_BYTES
    )


# --- names and link targets ----------------------------------------------------------

def normalise_name(name: str, *, backslash_is_separator: bool = False) -> str | None:
    """The member's path relative to the output, '/'-separated; ``None`` for the root.

    Raises :class:`UnsafeArchiveError` for absolute names, drive letters, ``..``
    components, control characters and names too long for a filesystem.
    """
    if _CONTROL_RE.search(name):
        raise UnsafeArchiveError(f"unsafe member '{name}': control characters in its name")
    shown = name
    if backslash_is_separator:
        name = name.replace("\\", "/")
    if name.startswith(("/", "\\")) or _DRIVE_RE.match(name):
        raise UnsafeArchiveError(f"unsafe member '{shown}': absolute path")
    try:
        raw = os.fsencode(name)
    except UnicodeError:
        raise UnsafeArchiveError(f"unsafe member '{shown}': undecodable name") from None
    if len(raw) > MAX_NAME_BYTES:
        raise UnsafeArchiveError(f"unsafe member '{shown[:80]}'...: name too long")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        # A '..' hidden behind Windows separators is refused too, in case the output is
        # later read through a share.
        if part == ".." or ".." in part.split("\\"):
            raise UnsafeArchiveError(f"unsafe member '{shown}': '..' in its path")
        if len(os.fsencode(part)) > MAX_COMPONENT_BYTES:
            raise UnsafeArchiveError(f"unsafe member '{shown[:80]}': a path component too long")
        parts.append(part)
    return "/".join(parts) if parts else None


# --- reading and writing boundaries --------------------------------------------------

@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Any failure while decoding the archive means it is damaged."""
    try:
        yield
    except DropfetchError:
        raise
    except Exception as exc:  # hostile input can break any parser
        detail = str(exc) or type(exc).__name__
        raise CorruptArchiveError(
            f"the archive is damaged or incomplete: {detail} (while {what}); "
            "download it again or check the source") from exc


@contextlib.contextmanager
def _writing(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # what the checks before could not foresee
            raise UnsafeArchiveError(
                f"unsafe archive: a name too long for the filesystem while {what}") from exc
        raise from_os_error(exc, what) from exc


def _pathconf(path: str, name: str, default: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):
        return default
    return value if value > 0 else default


class Growth:
    """Tells a reader of an archive that is still being downloaded when it has grown.

    The downloader calls :meth:`grew` after each write and :meth:`finish` at the end
    (or :meth:`abort`); :func:`extract` with ``growth=`` reads the file as it grows, so
    extraction runs while the download is still going. Bytes that are in the file are
    final (the download only appends); a file that shrinks means the download started
    over, and the extraction is aborted.
    """

    def __init__(self, expected_size: int | None = None) -> None:
        self.expected_size = expected_size
        self._cond = threading.Condition()
        self._size = 0
        self._final = False
        self._aborted: str | None = None

    def grew(self, size: int, expected_size: int | None = None) -> None:
        with self._cond:
            if size < self._size:
                self._aborted = "the download started over"
            self._size = size
            if expected_size is not None:
                self.expected_size = expected_size
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._final = True
            self._cond.notify_all()

    def abort(self, why: str) -> None:
        with self._cond:
            self._aborted = why
            self._cond.notify_all()

    @property
    def aborted(self) -> str | None:
        return self._aborted

    def wait(self, have: int, cancel: threading.Event | None) -> bool:
        """Block until the file is longer than ``have`` bytes (True) or complete (False)."""
        with self._cond:
            while True:
                if self._aborted is not None:
                    raise CancelledError(f"extraction stopped: {self._aborted}")
                if cancel is not None and cancel.is_set():
                    raise CancelledError("extraction cancelled")
                if self._size > have:
                    return True
                if self._final:
                    return False
                self._cond.wait(0.5)


class _Source(io.RawIOBase):
    """The archive file: counts bytes read, reports progress, honours cancellation."""

    def __init__(self, f: IO[bytes], size: int, cancel: threading.Event | None,
                 on_progress: Callable[[int, int], None] | None,
                 growth: Growth | None = None) -> None:
        super().__init__()
        self._f = f
        self._size = size
        self._cancel = cancel
        self._on_progress = on_progress
        self._reported = -PROGRESS_STEP
        self._growth = growth

    @property
    def size(self) -> int:
        """The archive's size: final, or (while it grows) the larger of what is
        announced and what has been read."""
        if self._growth is None:
            return self._size
        return max(self._growth.expected_size or 0, self._f.tell(), 1)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b: Any) -> int:
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError("extraction cancelled")
        try:
            data = self._f.read(len(b))
            while not data and self._growth is not None and self._growth.wait(
                    self._f.tell(), self._cancel):
                data = self._f.read(len(b))
        except OSError as exc:
            raise from_os_error(exc, "reading the archive") from exc
        n = len(data)
        b[:n] = data
        self.report()
        return n

    def report(self) -> None:
        if self._on_progress is None:
            return
        pos = self._f.tell()
        if pos - self._reported >= PROGRESS_STEP:
            self._reported = pos
            self._on_progress(min(pos, self.size), self.size)

    def done(self) -> None:
        """The whole archive is consumed (tar's trailing padding may go unread)."""
        if self._on_progress is not None:
            self._on_progress(self.size, self.size)


class _Limits:
    """Counts what is really written and seen against ``extract.*``."""

    def __init__(self, config: ExtractConfig, source: _Source) -> None:
        self.config = config
        self._source = source
        self.written = 0  # bytes really written
        self.apparent = 0  # and the holes of sparse files
        self.members = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.config.max_files:
            raise ArchiveLimitsError(
                f"the archive has more than {self.config.max_files} members "
                "(extract.max_files); raise the limit if this archive is trusted")

    @property
    def archive_size(self) -> int:
        return max(self._source.size, 1)

    def wrote(self, n: int) -> None:
        self.written += n
        self.apparent += n
        self._check_total()
        if self.written > RATIO_GRACE and (
                self.written / self.archive_size > self.config.max_ratio):
            raise ArchiveLimitsError(
                f"the archive unpacks to more than {self.config.max_ratio:g} times its "
                f"size ({self.archive_size} bytes; extract.max_ratio): a decompression "
                "bomb, or raise the limit if this archive is trusted")

    def holes(self, n: int) -> None:
        """The holes of a sparse file: nothing written (max_ratio ignores them), but a
        copy by a tool that does not keep holes writes them: max_total_size counts them."""
        self.apparent += n
        self._check_total()

    def _check_total(self) -> None:
        if self.apparent > self.config.max_total_size:
            raise ArchiveLimitsError(
                f"the archive unpacks to more than {self.config.max_total_size} bytes "
                "(extract.max_total_size, counting the holes of sparse files); raise the "
                "limit if this archive is trusted")


class _TarInput(io.RawIOBase):
    """Decompressed tar stream: bounds the bytes that produce no output."""

    def __init__(self, inner: IO[bytes], limits: _Limits) -> None:
        super().__init__()
        self._inner = inner
        self._limits = limits
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        with _reading("decompressing"):
            data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.consumed += n
        allowance = OVERHEAD_BASE + OVERHEAD_PER_MEMBER * self._limits.members
        if self.consumed - self._limits.written > allowance:
            raise ArchiveLimitsError(
                "the archive holds too much data that unpacks to nothing (huge headers "
                "or padding): refused")
        return n


class _TarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers too large to hold in memory, and damaged
    headers that tarfile would take for the end of the archive; reads GNU headers as GNU
    tar does."""

    _EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                 tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Any:
        obj = super().frombuf(buf, encoding, errors)
        # In a GNU header (magic "ustar  \0") bytes 345-499 are atime, ctime and sparse
        # data, never a ustar name prefix: GNU tar's incremental mode fills them, and
        # tarfile would glue the atime digits in front of every name.
        if buf[257:265] == tarfile.GNU_MAGIC and buf[345] and obj.type not in tarfile.GNU_TYPES:
            name = bytes(buf[0:100]).split(b"\0", 1)[0].decode(encoding, errors)
            obj.name = name.rstrip("/") if obj.isdir() else name
        return obj

    @classmethod
    def fromtarfile(cls, tarfile: tarfile.TarFile) -> Any:
        # After the first member tarfile ends the archive silently at a header with a bad
        # checksum or cut short; GNU tar reports both. A zero block, or the end of the
        # data at a block boundary, is the end (as for GNU tar and bsdtar).
        try:
            return super().fromtarfile(tarfile)
        except (_InvalidHeaderError, _TruncatedHeaderError) as exc:
            raise CorruptArchiveError(
                f"the archive is damaged or incomplete: {exc} at byte "
                f"{cast(Any, tarfile).offset} of the tar stream; download it again or check "
                "the source") from None

    def _proc_member(self, tarfile: tarfile.TarFile) -> Any:
        if self.type not in self._EXTENDED:
            return getattr(super(), "_proc_member")(tarfile)  # noqa: B009 - private in typeshed
        if self.size > EXT_HEADER_LIMIT:
            raise ArchiveLimitsError(
                f"the archive has an extended header of {self.size} bytes: refused")
        # tarfile reads the header after an extended one by recursing: bound the chain
        chain = getattr(tarfile, "_dropfetch_chain", 0) + 1
        if chain > MAX_HEADER_CHAIN:
            raise ArchiveLimitsError(
                f"the archive has more than {MAX_HEADER_CHAIN} extended headers in a row "
                "(pax or GNU long-name headers before one member): refused")
        setattr(tarfile, "_dropfetch_chain", chain)  # noqa: B010 - a mark on tarfile's object
        try:
            return getattr(super(), "_proc_member")(tarfile)  # noqa: B009
        finally:
            setattr(tarfile, "_dropfetch_chain", chain - 1)  # noqa: B010

    def _apply_pax_info(self, pax_headers: dict[str, str], encoding: str,
                        errors: str) -> None:
        getattr(super(), "_apply_pax_info")(pax_headers, encoding, errors)  # noqa: B009
        # GNU tar writes a 'path' too (GNUSparseFile.N/...) when a sparse file's name is
        # not ASCII; tarfile lets it win over the real name, depending on record order
        if "GNU.sparse.name" in pax_headers:
            self.path = pax_headers["GNU.sparse.name"]


_InvalidHeaderError = cast(type[Exception], getattr(tarfile, "InvalidHeaderError"))  # noqa: B009
_TruncatedHeaderError = cast(type[Exception], getattr(tarfile, "TruncatedHeaderError"))  # noqa: B009


def _decompressor(fmt: ArchiveFormat, raw: IO[bytes]) -> IO[bytes]:
    if fmt is ArchiveFormat.GZ:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if fmt is ArchiveFormat.BZ2:
        return cast(IO[bytes], bz2.BZ2File(raw, mode="rb"))
    if fmt is ArchiveFormat.XZ:
        return cast(IO[bytes], lzma.LZMAFile(raw, mode="rb"))
    if fmt is ArchiveFormat.ZST:
        return cast(IO[bytes], _ZstdStream(raw))
    raise ValueError(f"not a compression: {fmt}")


class _ZstdStream(io.RawIOBase):
    """zstd decompression that fails on a stream cut short: python-zstandard's reader
    takes the end of its input for the end of the data, even in the middle of a frame."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._frames = _ZstdFrames(raw)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], self._frames), read_size=CHUNK, read_across_frames=True,
            closefd=False)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        data: bytes = self._reader.read(size)
        if not data:
            self._frames.finish()
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n


_ZSTD_FRAME = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # the low 4 bits are free


class _ZstdFrames:
    """Follows the frame and block headers of a zstd stream as its bytes go by."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._head = bytearray()  # the header being read
        self._skip = 0  # bytes of a block or skippable frame still to go by
        self._state = "frame"  # frame, block or checksum: what the next header is
        self._checksum = False

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        i = 0
        while i < len(data):
            if self._skip:
                k = min(self._skip, len(data) - i)
                self._skip -= k
                i += k
                continue
            if self._state == "block" and not self._head and len(data) - i >= 3:
                self._block(int.from_bytes(data[i:i + 3], "little"))  # the common case
                i += 3
                continue
            self._head.append(data[i])
            i += 1
            self._parse()
        return data

    def _parse(self) -> None:
        h = self._head
        if self._state == "frame":
            if len(h) < 4:
                return
            magic = int.from_bytes(h[:4], "little")
            if magic & ~0xF == _ZSTD_SKIPPABLE:
                if len(h) == 8:
                    self._skip = int.from_bytes(h[4:8], "little")
                    h.clear()
                return
            if magic != _ZSTD_FRAME:
                raise CorruptArchiveError(
                    "the archive is damaged: the data after a zstd frame is not zstd")
            if len(h) < 5:
                return
            fhd = h[4]
            single = fhd >> 5 & 1
            size = (5 + (not single) + (0, 1, 2, 4)[fhd & 3]
                    + (single, 2, 4, 8)[fhd >> 6])
            if len(h) == size:
                self._checksum = bool(fhd & 4)
                self._state = "block"
                h.clear()
        elif self._state == "block":
            if len(h) == 3:
                self._block(int.from_bytes(h, "little"))
                h.clear()
        elif len(h) == 4:
            self._state = "frame"
            h.clear()

    def _block(self, header: int) -> None:
        self._skip = 1 if header >> 1 & 3 == 1 else header >> 3  # RLE: one byte
        if header & 1:  # the frame's last block
            self._state = "checksum" if self._checksum else "frame"

    def finish(self) -> None:
        """The decompressor saw the end: the input must end between two frames."""
        while self.read(CHUNK):
            pass
        if self._state != "frame" or self._head or self._skip:
            raise CorruptArchiveError(
                "the archive is damaged or incomplete: the zstd stream is cut short; "
                "download it again or check the source")


# --- the output tree -----------------------------------------------------------------

class _Output:
    """The staging directory, and a model of everything written into it.

    The model is exact because ``dest`` starts empty and only this object writes there:
    a path's parents are checked against it before anything is created.
    """

    def __init__(self, root: str, config: ExtractConfig, limits: _Limits,
                 cancel: threading.Event | None) -> None:
        self.root = root
        self.config = config
        self.limits = limits
        self.cancel = cancel
        self.dirs: set[str] = {""}
        self.dir_meta: dict[str, tuple[int, float | None]] = {}
        self.files: set[str] = set()
        self.links: dict[str, str] = {}
        self.skipped_links: list[str] = []
        self.skipped: set[str] = set()  # paths of links left out (extract.symlinks: skip)
        self._root_bytes = len(os.fsencode(root))
        self._path_max = _pathconf(root, "PC_PATH_MAX", 4096)
        self._name_max = min(_pathconf(root, "PC_NAME_MAX", 255), MAX_COMPONENT_BYTES)

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _check_fits(self, rel: str) -> None:
        """Refuse a path the filesystem cannot hold under the staging directory, before
        anything of it is made (the kernel would say ENAMETOOLONG half-way)."""
        raw = os.fsencode(rel)
        length = self._root_bytes + 1 + len(raw)
        if length >= self._path_max:
            raise UnsafeArchiveError(
                f"unsafe member '{rel[:200]}...': its path is too long for the filesystem "
                f"({length} bytes once unpacked, the limit is {self._path_max - 1})")
        if any(len(part) > self._name_max for part in raw.split(b"/")):
            raise UnsafeArchiveError(
                f"unsafe member '{rel[:200]}': a name in its path is longer than the "
                f"filesystem allows ({self._name_max} bytes)")

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("extraction cancelled")

    def _make_parents(self, rel: str) -> None:
        """Check that ``rel`` fits, then make its missing parent directories. Walks up
        from the nearest parent: one set lookup per member however deep the tree."""
        self._check_fits(rel)
        missing: list[str] = []
        parent = rel.rpartition("/")[0]
        while parent not in self.dirs:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for parent in reversed(missing):
            if parent in self.files or parent in self.links:
                kind = "file" if parent in self.files else "link"
                raise UnsafeArchiveError(
                    f"unsafe member '{rel}': it would be written under '{parent}', "
                    f"which is a {kind} in the archive")
            with _writing(f"creating directory {parent}"):
                os.mkdir(self._path(parent), 0o755)
            self.dirs.add(parent)

    def _free_slot(self, rel: str, kind: str) -> None:
        """Make room for a new member; a file may be replaced, a dir or a link never."""
        if rel in self.links:
            raise UnsafeArchiveError(f"unsafe member '{rel}': it would replace a link")
        if rel in self.dirs:
            raise UnsafeArchiveError(f"unsafe member '{rel}': it would replace a directory")
        if rel in self.files:
            if kind == "directory":
                raise UnsafeArchiveError(
                    f"unsafe member '{rel}': a directory with the name of a file")
            with _writing(f"replacing {rel}"):
                os.unlink(self._path(rel))
            self.files.discard(rel)

    def add_dir(self, rel: str | None, mode: int, mtime: float | None) -> None:
        if rel is None:
            return
        if rel not in self.dirs:
            self._make_parents(rel)
            self._free_slot(rel, "directory")
            with _writing(f"creating directory {rel}"):
                os.mkdir(self._path(rel), 0o755)
            self.dirs.add(rel)
        self.dir_meta[rel] = ((mode & 0o755) | 0o700, mtime)

    def add_file(self, rel: str | None, mode: int, mtime: float | None,
                 read: Callable[[int], bytes], what: str,
                 sparse: tuple[list[tuple[int, int]], int] | None = None) -> None:
        """Write a regular file from ``read``. With ``sparse`` (data segments as
        (offset, length), and the file's size), ``read`` gives the segments' bytes one
        after the other, and the rest of the file is holes."""
        if rel is None:
            raise UnsafeArchiveError("unsafe member './': a file in place of the output root")
        self._make_parents(rel)
        self._free_slot(rel, "file")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with _writing(f"creating {rel}"):
            fd = os.open(self._path(rel), flags, 0o600)
        self.files.add(rel)
        try:
            if sparse is None:
                self._copy(fd, rel, read, what, None)
            else:
                # Only the data segments are written, each at its offset; the holes
                # stay holes (as GNU tar and bsdtar make them), and the size is set last
                segments, size = sparse
                self.limits.holes(size - sum(n for _, n in segments))
                for offset, numbytes in segments:
                    if numbytes:
                        with _writing(f"writing {rel}"):
                            os.lseek(fd, offset, os.SEEK_SET)
                        self._copy(fd, rel, read, what, numbytes)
                with _writing(f"writing {rel}"):
                    os.ftruncate(fd, size)
            with _writing(f"writing {rel}"):
                os.fchmod(fd, (mode & 0o755) | 0o600)
            _set_mtime(fd, mtime)
        finally:
            os.close(fd)

    def _copy(self, fd: int, rel: str, read: Callable[[int], bytes], what: str,
              count: int | None) -> None:
        """Copy ``count`` bytes (all, for ``None``) from ``read`` to ``fd``."""
        left = count
        while left is None or left > 0:
            self._check_cancel()
            with _reading(what):
                chunk = read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                if left is not None:
                    raise CorruptArchiveError(
                        f"the archive is damaged or incomplete: the data of '{rel}' is cut "
                        "short; download it again or check the source")
                break
            if left is not None:
                left -= len(chunk)
            self.limits.wrote(len(chunk))
            with _writing(f"writing {rel}"):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]

    def add_hardlink(self, rel: str | None, target: str, name: str) -> None:
        try:
            target_rel = normalise_name(target)
        except UnsafeArchiveError:
            raise UnsafeArchiveError(
                f"unsafe member '{name}': hard link to '{target}', outside the output") from None
        if rel is not None and target_rel is not None and target_rel not in self.files:
            # a hard link to a symbolic link (`cp -al`, rsnapshot trees): the same link
            # again, as tar and bsdtar make it, and as extract.symlinks allows
            if target_rel in self.links:
                self.add_symlink(rel, self.links[target_rel], name)
                return
            if target_rel in self.skipped:
                self.add_symlink(rel, "", name)  # left out like the link it copies
                return
        if rel is None or target_rel is None or target_rel not in self.files:
            raise UnsafeArchiveError(
                f"unsafe member '{name}': hard link to '{target}', which is not a file "
                "extracted before it from this archive")
        if rel == target_rel:
            return
        self._make_parents(rel)
        self._free_slot(rel, "file")
        with _writing(f"linking {rel}"):
            os.link(self._path(target_rel), self._path(rel), follow_symlinks=False)
        self.files.add(rel)

    def add_symlink(self, rel: str | None, target: str, name: str) -> None:
        mode = self.config.symlinks
        if mode == "fail":
            raise UnsafeArchiveError(
                f"unsafe member '{name}': symbolic links are not allowed (extract.symlinks: "
                "fail)")
        if mode == "skip":
            self.skipped_links.append(name)
            if rel is not None:
                self.skipped.add(rel)
            return
        if rel is None:
            raise UnsafeArchiveError(f"unsafe member '{name}': a link in place of the root")
        size = len(target.encode("utf-8", "surrogateescape"))
        if size >= MAX_LINK_TARGET:
            raise UnsafeArchiveError(
                f"unsafe member '{name}': its link target is too long ({size} bytes; a "
                f"filesystem allows {MAX_LINK_TARGET - 1})")
        if (not target or _CONTROL_RE.search(target) or target.startswith(("/", "\\"))
                or _DRIVE_RE.match(target)):
            raise UnsafeArchiveError(f"link {name} -> {target} points outside the output")
        self._make_parents(rel)
        self._free_slot(rel, "link")
        self.links[rel] = target

    def _resolve(self, link: str) -> list[str]:
        """Where ``link`` leads in the final tree; raises if it leaves the output at any
        step. Missing components are walked lexically, which covers more than the kernel
        would ever reach.

        A link met again while its own target is still being resolved (``self ->
        self``, ``a -> b`` with ``b -> a``) is a loop: each link resolves from its own
        directory, so the walk would repeat itself for ever; the kernel says ELOOP on
        any system and such a link leads nowhere (unzip, bsdtar and 7z keep it). The walk
        then goes on past it as past a missing directory, which is also what
        ``os.path.realpath`` does with a loop: a loop followed by '..' past the root
        (``a -> b/../..`` with ``b -> a``) fails, so no resolver that reads the rest of
        the path lexically is led outside either.
        """
        stack = link.split("/")[:-1]
        done = object()  # marks the end of a link's target in ``todo``
        todo: deque[str | tuple[object, str]] = deque(self.links[link].split("/"))
        todo.append((done, link))
        resolving = {link}
        follows = 1
        while todo:
            part = todo.popleft()
            if isinstance(part, tuple):
                resolving.discard(part[1])
                continue
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise UnsafeArchiveError(
                        f"link {link} -> {self.links[link]} points outside the output")
                stack.pop()
                continue
            candidate = "/".join([*stack, part])
            target = self.links.get(candidate)
            if target is None:
                stack.append(part)
                continue
            if candidate in resolving:
                stack.append(part)  # a loop: walked on lexically (see above)
                continue
            follows += 1
            if follows > MAX_LINK_FOLLOWS:
                raise UnsafeArchiveError(
                    f"link {link} -> {self.links[link]}: too many levels of links")
            resolving.add(candidate)
            todo.appendleft((done, candidate))
            todo.extendleft(reversed(target.split("/")))
        return stack

    def finish(self, label: str) -> None:
        for link in sorted(self.links):
            self._resolve(link)
        for link, target in sorted(self.links.items()):
            with _writing(f"creating link {link}"):
                os.symlink(target, self._path(link))
        prefix = self.root.rstrip("/") + "/"
        for link, target in sorted(self.links.items()):
            real = os.path.realpath(self._path(link))
            if real != self.root and not real.startswith(prefix):
                raise UnsafeArchiveError(f"link {link} -> {target} points outside the output")
        for rel in sorted(self.dir_meta, key=lambda d: d.count("/"), reverse=True):
            mode, mtime = self.dir_meta[rel]
            with _writing(f"setting the mode of {rel}"):
                fd = os.open(self._path(rel), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                             | os.O_CLOEXEC)
                try:
                    os.fchmod(fd, mode)
                    _set_mtime(fd, mtime)
                finally:
                    os.close(fd)
        if self.skipped_links:
            logger.warning("%s: left out %d symbolic links (extract.symlinks: skip): %s",
                           label, len(self.skipped_links),
                           display_name(", ".join(self.skipped_links[:20])))


def _set_mtime(fd: int, mtime: float | None) -> None:
    if mtime is None:
        return
    with contextlib.suppress(OSError, OverflowError, ValueError):
        os.utime(fd, (mtime, mtime))


# --- extraction ----------------------------------------------------------------------

def extract(
    archive: Path,
    dest: Path,
    *,
    fmt: ArchiveFormat,
    config: ExtractConfig,
    single_name: str,
    cancel: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    growth: Growth | None = None,
) -> list[str]:
    """Extract ``archive`` into the existing empty directory ``dest``.

    With ``growth``, ``archive`` is a file still being downloaded: it is read as it
    grows (tar formats and single compressed files; zip needs its directory at the end).

    Returns the regular files written (links excluded), relative to ``dest``,
    '/'-separated, sorted, as ``os.fsdecode`` names them (bytes that are not UTF-8 are
    surrogate escapes: show them with :func:`dropfetch.fsutil.display_name`). A single
    compressed file is written to ``dest/single_name``.
    Raises :class:`CorruptArchiveError`, :class:`UnsafeArchiveError`,
    :class:`ArchiveLimitsError`, :class:`EncryptedArchiveError`,
    :class:`UnsupportedArchiveError`, :class:`DiskFullError`,
    :class:`IOFailureError` or :class:`CancelledError`; what was written to ``dest``
    before the error is left for the caller to remove.
    """
    if fmt is ArchiveFormat.FILE:
        raise ValueError("extract() is never called for a plain file")
    if not _is_bare_name(single_name):
        raise ValueError(f"single_name must be a bare file name, got {single_name!r}")
    root = os.path.realpath(dest)
    if not os.path.isdir(root) or os.listdir(root):
        raise ValueError(f"{dest} must be an existing empty directory")
    try:
        f = open(archive, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise from_os_error(exc, "opening the archive") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        if growth is not None and fmt is ArchiveFormat.ZIP:
            raise ValueError("a zip cannot be extracted while it grows")
        source = _Source(f, size, cancel, on_progress, growth)
        buffered = io.BufferedReader(source, CHUNK)
        limits = _Limits(config, source)
        out = _Output(root, config, limits, cancel)
        started = time.monotonic()
        if fmt is ArchiveFormat.ZIP:
            _check_not_split(f)
            _extract_zip(cast(IO[bytes], buffered), out)
        elif fmt.is_archive:
            _extract_tar(cast(IO[bytes], buffered), fmt, out)
        else:
            _extract_single(cast(IO[bytes], buffered), fmt, out, single_name)
        out.finish(dest.name)
        source.done()
    logger.debug("%s: extracted %d files, %d bytes in %.1f s", dest.name, len(out.files),
                 limits.written, time.monotonic() - started)
    return sorted(out.files)


def _extract_single(raw: IO[bytes], fmt: ArchiveFormat, out: _Output, name: str) -> None:
    out.limits.member()
    with _reading("opening the compressed file"):
        stream = _decompressor(fmt, raw)
    with stream:
        out.add_file(name, 0o644, None, stream.read, "decompressing")


def _extract_tar(raw: IO[bytes], fmt: ArchiveFormat, out: _Output) -> None:
    compression = _COMPRESSION_OF.get(fmt)
    with _reading("opening the compressed stream"):
        inner = _decompressor(compression, raw) if compression else raw
    with inner:
        tar_input = io.BufferedReader(_TarInput(inner, out.limits), tarfile.RECORDSIZE)
        with _reading("reading the first tar header"):
            if not tar_input.peek(1):
                return  # a tar of zero blocks (bsdtar, GNU tar and SPEC §8: empty, not damaged)
            tf = tarfile.open(fileobj=cast(IO[bytes], tar_input), mode="r|",  # noqa: SIM115
                              tarinfo=_TarInfo, errorlevel=2)
        with tf:
            while True:
                out._check_cancel()
                with _reading("reading a tar header"):
                    member = tf.next()
                if member is None:
                    break
                cast(Any, tf).members.clear()  # stream mode never looks back; keep memory flat
                out.limits.member()
                _tar_member(tf, member, out)
            # Read the stream to its end, as tar does: the checksum of gzip, xz and zstd
            # is at the end, and a download cut after the last member is incomplete too.
            with _reading("reading the end of the archive"):
                while tar_input.read(CHUNK):
                    pass


_TAR_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.GNUTYPE_SPARSE)
_GNUTYPE_DUMPDIR = b"D"
_GNUTYPE_VOLHDR = b"V"


def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, out: _Output) -> None:
    if member.type == _GNUTYPE_VOLHDR:
        return  # a volume label (`tar -V`): no file, `tar -xf` makes nothing of it
    name = member.name
    rel = normalise_name(name)
    kind = member.type
    mtime = float(member.mtime) if isinstance(member.mtime, int | float) else None
    if kind in _TAR_FILE_TYPES:
        if name.endswith("/"):
            # tar and bsdtar take it for a directory and read its data as headers
            raise CorruptArchiveError(
                f"the archive is damaged: {name!r} is a file with a directory's name")
        if member.sparse is not None:
            _check_sparse(tf, member)
            # the stored data is the segments one after the other, from offset_data on
            # (where tarfile's stream stands after the headers and any 1.0 map)
            stream = cast(Any, tf).fileobj
            with _reading(f"reading {name}"):
                stream.seek(member.offset_data)
            segments = cast(list[tuple[int, int]], member.sparse)
            out.add_file(rel, member.mode, mtime, stream.read, f"reading {name}",
                         sparse=(segments, member.size))
            return
        with _reading(f"reading {name}"):
            data = tf.extractfile(member)
        if data is None:
            raise CorruptArchiveError(f"the archive is damaged: no data for '{name}'")
        out.add_file(rel, member.mode, mtime, data.read, f"reading {name}")
    elif kind in (tarfile.DIRTYPE, _GNUTYPE_DUMPDIR):
        # a dumpdir (GNU tar --listed-incremental) is a directory whose data lists what
        # the directory held; `tar -xf` without --incremental makes the directory only
        out.add_dir(rel, member.mode, mtime)
    elif kind == tarfile.SYMTYPE:
        out.add_symlink(rel, member.linkname, name)
    elif kind == tarfile.LNKTYPE:
        out.add_hardlink(rel, member.linkname, name)
    else:
        described = {
            tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
            tarfile.FIFOTYPE: "a FIFO", tarfile.CONTTYPE: "a contiguous file",
        }.get(kind, f"of unknown type {kind!r}")
        raise UnsafeArchiveError(f"unsafe member '{name}': {described} is not allowed")


def _check_sparse(tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    """A GNU sparse map must fit the file and account for exactly the data stored (tar
    and bsdtar read a map that does not as plain data; tarfile would drop the data)."""
    chunks = cast(list[tuple[int, int]], member.sparse or [])
    if member.size < 0:
        raise CorruptArchiveError(
            f"the archive is damaged: the sparse file {member.name!r} has a negative size")
    end = 0
    for offset, numbytes in chunks:
        if numbytes == 0 and 0 <= offset <= member.size:
            continue  # GNU tar ends its maps with (size, 0) and pads them with (0, 0)
        if offset < end or numbytes < 0 or offset + numbytes > member.size:
            raise CorruptArchiveError(
                f"the archive is damaged: the sparse map of {member.name!r} does not fit it")
        end = offset + numbytes
    stored = sum(n for _, n in chunks)
    span = cast(Any, tf).offset - member.offset_data
    if span != -(-stored // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE:
        raise CorruptArchiveError(
            f"the archive is damaged: the sparse map of {member.name!r} does not match its "
            "data")


# --- zip -----------------------------------------------------------------------------

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_ZIP_DECODABLE = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                            zipfile.ZIP_LZMA})
_ZIP_AES = 99  # WinZip AES: an encryption, written as a compression method
_ZIP_METHODS = {
    1: "Shrink", 2: "Reduce", 3: "Reduce", 4: "Reduce", 5: "Reduce", 6: "Implode",
    7: "Tokenize", 9: "Deflate64", 10: "PKWARE DCL Implode", 16: "IBM z/OS CMPSC",
    18: "IBM TERSE", 19: "IBM LZ77", 20: "Zstandard", 93: "Zstandard", 94: "MP3", 95: "XZ",
    96: "JPEG", 97: "WavPack", 98: "PPMd",
}
_ENCRYPTED = ("a password is needed to unpack it, and dropfetch does not decrypt zip "
              "archives: download an unencrypted one, or use extract: false to get the "
              "archive as it is")


def _zip_name(info: zipfile.ZipInfo) -> tuple[bytes, str]:
    """An entry's name as stored (bytes), and as it is unpacked.

    With the UTF-8 flag (bit 11): UTF-8. Without it: UTF-8 when the bytes are valid
    UTF-8 (Info-ZIP zip on Linux writes names so; unzip, bsdtar and 7-Zip read them
    so); else, from a Unix zip, the bytes as they are (what those three tools do);
    else cp437, the zip specification's default (zips from DOS and Windows).
    """
    if info.flag_bits & 0x800:
        return info.orig_filename.encode("utf-8", "surrogateescape"), info.orig_filename
    raw = info.orig_filename.encode("cp437")  # zipfile read the bytes as cp437: exact
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return raw, os.fsdecode(raw) if info.create_system == 3 else info.orig_filename


def _extract_zip(raw: IO[bytes], out: _Output) -> None:
    with _reading("reading the zip directory"):
        try:
            zf = zipfile.ZipFile(raw)
        except UnicodeDecodeError as exc:  # bsdtar sets the flag on any name, valid or not
            bad = exc.object[exc.start:exc.start + 1].hex()
            raise CorruptArchiveError(
                f"the zip says its names are UTF-8, but the name of an entry is not (byte "
                f"0x{bad} in {bytes(exc.object)[:100]!r}); unzip may still read it, or use "
                "extract: false to get the archive as it is") from exc
    with zf:
        with _reading("reading the zip directory"):
            infos = zf.infolist()
        if len(infos) > out.config.max_files:
            raise ArchiveLimitsError(
                f"the archive has more than {out.config.max_files} members "
                "(extract.max_files); raise the limit if this archive is trusted")
        with _reading("checking the zip entries"):
            _check_zip_layout(raw, infos, out.limits.archive_size)
        for info in infos:
            out._check_cancel()
            out.limits.member()
            _zip_member(zf, info, out)


def _check_not_split(f: IO[bytes]) -> None:
    """The last part of a split zip (`zip -s`: name.z01, name.z02, ..., name.zip) holds
    the directory of entries that are in the other parts: zipfile would read the wrong
    bytes. A one-part split (`zip -s` of a small tree) is a whole zip."""
    with _reading("reading the zip directory"):
        parts = _zip_end(f)
        first = _read_at(f, 0, len(_ZIP_SPAN_MAGIC)) == _ZIP_SPAN_MAGIC
        f.seek(0)
    if parts is None and first:
        part = "the first part"  # no directory at its end: more parts follow
    elif parts is not None and parts > 1:
        part = f"the last part (part {parts})"
    else:
        return  # a whole zip, or zipfile says what is wrong
    raise UnsupportedArchiveError(
        f"the archive is {part} of a split zip archive (zip -s: parts named .z01, .z02, "
        "... and .zip); dropfetch downloads one URL and cannot join the other parts: join "
        "them (zip -s 0 split.zip --out whole.zip) and offer the whole archive, or use "
        "extract: false to get this part as it is")


def _check_zip_layout(raw: IO[bytes], infos: list[zipfile.ZipInfo], size: int) -> None:
    """Encryption, local headers agreeing with the directory, no overlapping entries."""
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        raw_name, name = _zip_name(info)
        if info.flag_bits & 0x41 or info.compress_type == _ZIP_AES:
            raise EncryptedArchiveError(f"the archive is encrypted ('{name}'): {_ENCRYPTED}")
        if info.compress_type not in _ZIP_DECODABLE:
            method = _ZIP_METHODS.get(info.compress_type, "an unknown one")
            raise UnsupportedArchiveError(
                f"the zip entry '{name}' is compressed with the method {method} (zip method "
                f"{info.compress_type}), which dropfetch cannot unpack; ask the source for "
                "another format (zip with Deflate, tar.gz, ...), or use extract: false to "
                "get the archive as it is")
        raw.seek(info.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size:
            raise CorruptArchiveError(
                f"the archive is damaged or incomplete: entry '{name}' is truncated")
        (sig, _version, flags, method, _t, _d, crc, csize, usize, nlen,
         xlen) = _LOCAL_HEADER.unpack(header)
        if sig != b"PK\x03\x04":
            raise CorruptArchiveError(
                f"the archive is damaged: no local header for '{name}'")
        if flags & 0x41:
            raise EncryptedArchiveError(f"the archive is encrypted ('{name}'): {_ENCRYPTED}")
        if method != info.compress_type:
            raise CorruptArchiveError(
                f"the archive is damaged: entry '{name}' has two compression methods")
        local_name = raw.read(nlen)
        if local_name != raw_name:
            raise CorruptArchiveError(
                f"the archive is damaged: the directory and the entry disagree on the name "
                f"'{name}'")
        if not flags & 0x08 and csize != 0xFFFFFFFF and (
                csize != info.compress_size or usize != info.file_size or crc != info.CRC):
            raise CorruptArchiveError(
                f"the archive is damaged: the directory and the entry '{name}' disagree on "
                "its size or checksum")
        start = info.header_offset
        end = start + _LOCAL_HEADER.size + nlen + xlen + info.compress_size
        if end > size:
            raise CorruptArchiveError(
                f"the archive is damaged or incomplete: entry '{name}' runs past its end")
        spans.append((start, end, name))
    spans.sort()
    for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
        if s2 < e1:
            raise UnsafeArchiveError(
                f"unsafe archive: entries '{n1}' and '{n2}' overlap (a zip bomb)")


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: _Output) -> None:
    name = _zip_name(info)[1]
    rel = normalise_name(name, backslash_is_separator=True)
    unix = info.create_system == 3
    st_mode = info.external_attr >> 16 if unix else 0
    ftype = stat.S_IFMT(st_mode)
    perms = stat.S_IMODE(st_mode)
    mtime: float | None
    try:
        mtime = time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        mtime = None
    is_dir = name.endswith(("/", "\\")) or ftype == stat.S_IFDIR
    if ftype == stat.S_IFLNK and not is_dir:
        with _reading(f"reading {name}"), zf.open(info) as f:
            target_bytes = f.read(MAX_LINK_TARGET + 1)
        if len(target_bytes) > MAX_LINK_TARGET:
            raise UnsafeArchiveError(f"unsafe member '{name}': link target too long")
        target = target_bytes.decode("utf-8", "surrogateescape")
        out.add_symlink(rel, target, name)
    elif is_dir:
        out.add_dir(rel, perms if st_mode else 0o755, mtime)
    else:
        # any other type (a FIFO: `zip` of standard input writes 0o010600; a device or
        # socket) is the data it holds, written as a regular file, as unzip does: no
        # device or FIFO is ever made. A stored mode of 0 is kept (masked like tar's);
        # only no mode at all is 0644
        with _reading(f"reading {name}"):
            f = zf.open(info)
        with f:
            out.add_file(rel, perms if st_mode else 0o644, mtime, f.read, f"reading {name}")
