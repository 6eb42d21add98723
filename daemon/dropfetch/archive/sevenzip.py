"""7z archives that libarchive cannot decode (encrypted ones: AES-256, headers included),
decoded by py7zr; every entry is checked from the listing before anything is written,
then written by dropfetch's own output tree.

py7zr only decodes here: its extraction (which writes files, or hands them to a writer
factory under names it renames and sanitises itself) is never used. The entries are
read in archive order, each folder (a solid block) through its own py7zr decompressor,
``CHUNK`` bytes at a time: memory stays bounded by the block size and the LZMA
dictionary, whatever the archive unpacks to.
"""

from __future__ import annotations

import contextlib
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import py7zr
from py7zr.compressor import SupportedMethods
from py7zr.exceptions import PasswordRequired, UnsupportedCompressionMethodError

from dropfetch.archive.boundaries import reading
from dropfetch.archive.libarc import LibarchiveCannot
from dropfetch.archive.members import MAX_LINK_TARGET, normalise_name
from dropfetch.archive.tree import Output
from dropfetch.errors import (
    ArchiveLimitsError,
    CorruptArchiveError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
    from_os_error,
)
from dropfetch.passwords import encrypted

__all__ = ["extract_py7zr"]

PROBE = 1024 * 1024  # bytes of the first encrypted block decoded to try a password
_BLOCK = 64 * 1024  # compressed bytes py7zr reads at a time


def extract_py7zr(
    archive: Path,
    out: Output,
    passwords: Sequence[str],
    cannot: LibarchiveCannot,
    *,
    source: IO[bytes] | None = None,
) -> None:
    """Extract the 7z ``archive`` through ``out``, trying ``passwords`` in order; its
    data is read through ``source`` when given (extract's reader: unpack progress).

    Raises :class:`EncryptedArchiveError` (:func:`dropfetch.passwords.encrypted`: no
    password given, or none opens it), ``cannot`` again when py7zr cannot decode the
    archive's methods either, or the errors of :class:`Output`.
    """
    try:
        f = archive.open("rb")  # the headers (at the end of a 7z) are read from here
    except OSError as exc:
        raise from_os_error(exc, "opening the archive") from exc
    with f, _decoding(cannot):
        szf = _open_archive(f, passwords)
        with szf:
            entries = [_entry(info) for info in szf.files]
            if len(entries) > out.config.max_files:
                raise ArchiveLimitsError(
                    f"the archive has more than {out.config.max_files} members "
                    "(extract.max_files); raise the limit if this archive is trusted"
                )
            blocks = _Blocks(szf, f if source is None else source)  # the data, in order
            for entry in entries:
                out.check_cancel()
                out.limits.member()
                _write(entry, blocks, out)
            blocks.finish()


@contextlib.contextmanager
def _decoding(cannot: LibarchiveCannot) -> Iterator[None]:
    """A method py7zr cannot decode either is the first decoder's refusal, with why."""
    try:
        with reading("reading the 7z archive"):
            yield
    except CorruptArchiveError as exc:
        if isinstance(exc.__cause__, UnsupportedCompressionMethodError):
            raise UnsupportedArchiveError(
                f"{cannot.message}; py7zr cannot decode it either ({exc.__cause__.args[-1]})"
            ) from None
        raise


def _open_archive(f: IO[bytes], passwords: Sequence[str]) -> py7zr.SevenZipFile:
    """The archive opened with the first password that opens it, or none if it needs none."""
    szf = _try_open(f, None)
    if szf is not None and not _encrypted_blocks(szf):
        return szf
    if szf is not None:
        szf.close()
    if not passwords:
        raise encrypted("the 7z archive", tried=0)
    headers_encrypted = szf is None
    for password in passwords:
        szf = _try_open(f, password)
        if szf is None:
            continue
        if headers_encrypted or _probe(szf, f):  # a decrypted header: its CRC matched
            return szf
        szf.close()
    raise encrypted("the 7z archive", tried=len(passwords))


def _try_open(f: IO[bytes], password: str | None) -> py7zr.SevenZipFile | None:
    """The archive with its headers read; ``None`` when they are encrypted and
    ``password`` (``None``: none given) does not decrypt them."""
    f.seek(0)
    try:
        return py7zr.SevenZipFile(f, password=password, blocksize=_BLOCK)
    except PasswordRequired:
        return None
    except UnsupportedCompressionMethodError:
        raise
    except Exception:
        # a wrong key decrypts the header to garbage: an LZMA error, a bad CRC, ...
        # (the encrypted bytes' own CRC was checked before: a damaged archive said so)
        if password is None:
            raise
        return None


def _folders(szf: py7zr.SevenZipFile) -> list[Any]:
    streams = szf.header.main_streams
    return [] if streams is None else list(streams.unpackinfo.folders)


def _encrypted_blocks(szf: py7zr.SevenZipFile) -> bool:
    return any(SupportedMethods.needs_password(folder.coders) for folder in _folders(szf))


def _probe(szf: py7zr.SevenZipFile, f: IO[bytes]) -> bool:
    """Whether the password ``szf`` was opened with decodes the first encrypted block's
    first :data:`PROBE` bytes (the whole block: its CRC too)."""
    blocks = _Blocks(szf, f)
    for folder in _folders(szf):
        if SupportedMethods.needs_password(folder.coders):
            try:
                dec = blocks.start(folder)
                size = min(PROBE, folder.get_unpack_size())
                while size > 0:
                    chunk = blocks.decode(dec, min(size, _BLOCK))
                    size -= len(chunk)
                blocks.finish()
            except UnsupportedCompressionMethodError:
                raise
            except Exception:  # noqa: BLE001 - a wrong key breaks a decoder anywhere
                return False
            return True
    return True


@dataclass(frozen=True)
class _Entry:
    """One entry of the listing, checked: what it becomes and where."""

    name: str
    rel: str | None
    kind: str  # "dir", "file" or "link"
    mode: int | None
    mtime: float | None
    info: Any  # py7zr's ArchiveFile: its block, size and CRC


def _entry(info: Any) -> _Entry:
    """An entry checked from the listing alone, before anything is written."""
    name = str(info.filename)
    rel = normalise_name(name, backslash_is_separator=True)
    fmt = info.st_fmt
    if info.is_directory:
        kind = "dir"
        if not info.emptystream:
            raise CorruptArchiveError(f"the archive is damaged: directory '{name}' has data")
    elif info.is_symlink or info.is_junction:
        kind = "link"
        if info.uncompressed >= MAX_LINK_TARGET:
            raise UnsafeArchiveError(f"unsafe member '{name}': link target too long")
    elif fmt is not None and fmt not in (stat.S_IFREG, 0):
        what = "a device" if fmt in (stat.S_IFCHR, stat.S_IFBLK) else "a FIFO or socket"
        raise UnsafeArchiveError(f"unsafe member '{name}': {what} is not allowed")
    else:
        kind = "file"
    mtime: float | None = None
    with contextlib.suppress(OverflowError, ValueError, TypeError, AttributeError):
        mtime = float(info.lastwritetime.totimestamp())
    return _Entry(name, rel, kind, info.posix_mode, mtime, info)


def _write(entry: _Entry, blocks: _Blocks, out: Output) -> None:
    read, check = blocks.reader(entry)
    if entry.kind == "dir":
        out.add_dir(entry.rel, 0o755 if entry.mode is None else entry.mode, entry.mtime)
    elif entry.kind == "link":
        with reading(f"reading {entry.name}"):
            target = b"".join(iter(lambda: read(_BLOCK), b""))
            check()
        out.add_symlink(entry.rel, target.decode("utf-8", "surrogateescape"), entry.name)
    else:
        mode = 0o644 if entry.mode is None else entry.mode
        out.add_file(entry.rel, mode, entry.mtime, read, f"reading {entry.name}")
        with reading(f"reading {entry.name}"):
            check()


class _Blocks:
    """The archive's folders (solid blocks), decoded in order, one decompressor each."""

    def __init__(self, szf: py7zr.SevenZipFile, f: IO[bytes]) -> None:
        self._f = f
        streams = szf.header.main_streams
        base = szf.afterheader
        positions = [] if streams is None else streams.packinfo.packpositions
        self._spans = {
            id(folder): (base + positions[i], base + positions[i + 1])
            for i, folder in enumerate(_folders(szf))
        }
        self._folder: Any = None
        self._dec: Any = None
        self._end = 0

    def start(self, folder: Any) -> Any:
        """The decompressor of ``folder``, from its start unless it is the current one."""
        if folder is not self._folder:
            self.finish()
            start, self._end = self._spans[id(folder)]
            self._f.seek(start)
            self._dec = folder.get_decompressor(self._end - start, reset=True)
            self._folder = folder
        return self._dec

    def decode(self, dec: Any, size: int) -> bytes:
        """At most ``size`` bytes, and at least one."""
        while True:
            pos = self._f.tell()
            chunk: bytes = dec.decompress(self._f, size)
            if chunk:
                return chunk
            if self._f.tell() == pos:
                raise CorruptArchiveError(
                    "the archive is damaged or incomplete: a block's data is cut short; "
                    "download it again or check the source"
                )

    def finish(self) -> None:
        """The current block's CRC, once all of it was read."""
        dec, self._dec, self._folder = self._dec, None, None
        ended = dec is not None and self._f.tell() >= self._end and dec.crc is not None
        if ended and not dec.check_crc():
            raise CorruptArchiveError("the archive is damaged: a block's CRC does not match")

    def reader(self, entry: _Entry) -> tuple[Callable[[int], bytes], Callable[[], None]]:
        """The entry's data as a read function, and the check of its CRC once read."""
        info = entry.info
        left, crc = (0 if info.emptystream else int(info.uncompressed)), 0
        dec = None if info.emptystream else self.start(info.folder)

        def read(n: int) -> bytes:
            nonlocal left, crc
            if left <= 0:
                return b""
            chunk = self.decode(dec, min(n, left))
            left -= len(chunk)
            crc = zlib.crc32(chunk, crc)
            return chunk

        def check() -> None:
            while read(_BLOCK):  # what add_file left (nothing: it reads to the end)
                pass
            if info.crc32 is not None and crc != info.crc32:
                raise CorruptArchiveError(
                    f"the archive is damaged: the CRC of '{entry.name}' does not match"
                )

        return read, check
