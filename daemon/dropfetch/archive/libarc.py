"""7z and RAR archives (and encrypted zips), decoded by libarchive (the ``libarchive-c``
binding over the system's libarchive); every entry is checked and written by
dropfetch's own output tree, as for tar and zip.

libarchive only decodes: names, links, types and limits are dropfetch's (``members``,
``tree``). A first pass over the headers, before anything is written, finds what
libarchive cannot do (:class:`LibarchiveCannot`: another decoder takes over); the
second reads the archive through the caller's :class:`~dropfetch.archive.source.Source`
(progress, cancellation).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dropfetch.archive.compression import CHUNK
from dropfetch.archive.formats import ArchiveFormat
from dropfetch.archive.members import normalise_name, unsafe_type
from dropfetch.archive.rar5 import RAR5_MAGIC, scan_rar5
from dropfetch.archive.tree import Output
from dropfetch.errors import (
    CorruptArchiveError,
    DropfetchError,
    EncryptedArchiveError,
    UnsupportedArchiveError,
    from_os_error,
)
from dropfetch.passwords import encrypted

__all__ = ["LibarchiveCannot", "extract_libarchive", "libarchive_error"]

_FORMATS = {
    ArchiveFormat.SEVEN_Z: ("7zip",),
    ArchiveFormat.RAR: ("rar", "rar5"),
    ArchiveFormat.ZIP: ("zip",),
}
_IFMT = 0o170000
_IFREG, _IFDIR, _IFLNK = 0o100000, 0o040000, 0o120000
_IFIFO = 0o010000
_SPECIAL = {
    0o020000: "a character device",
    0o060000: "a block device",
    _IFIFO: "a FIFO",
    0o140000: "a socket",
}
_ARCHIVE_EOF = 1
_ARCHIVE_WARN = -20
_ARCHIVE_FATAL = -30
# what libarchive says when it cannot do an archive another decoder can
_CANNOT = (
    ("solid archive support unavailable", "it is a solid RAR 4 archive"),
    ("encryption support unavailable", "it is an encrypted RAR archive"),
    ("Encryption is not supported", "it is an encrypted RAR archive"),
    ("header is encrypted", "its headers are encrypted"),
    ("content is encrypted", "its content is encrypted"),
)
_INSTALL = "install libarchive (Debian: apt-get install libarchive13)"


class LibarchiveCannot(UnsupportedArchiveError):
    """libarchive cannot decode this archive (a solid RAR 4, an encrypted RAR or 7z), as
    found by a first pass over its headers, before anything was written: another
    decoder may (extract.py picks it)."""


def extract_libarchive(
    archive: Path,
    fmt: ArchiveFormat,
    out: Output,
    passwords: Sequence[str],
    *,
    source: IO[bytes] | None = None,
    unnamed: str = "",
) -> None:
    """Extract the 7z, RAR or zip ``archive`` through ``out``, trying ``passwords`` in
    order on encrypted entries. ``source``, when given, is ``archive`` opened for
    reading (extract.py's Source: progress and cancellation); else it is opened here.
    ``unnamed`` is the name of an entry stored without one (``7zz a -si``: 7-Zip names
    it after the archive).

    Raises :class:`LibarchiveCannot` before anything is written when libarchive cannot
    decode the archive; :class:`UnsupportedArchiveError` when libarchive is missing.
    """
    lib = _library(fmt)
    try:
        plain = open(archive, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise from_os_error(exc, "opening the archive") from exc
    with plain, _utf8_names():
        _check_headers(lib, plain, fmt, passwords)
        plain.seek(0)
        stream = source if source is not None else plain
        with _Reader(lib, stream, fmt, passwords) as reader:
            reader.extract(out, unnamed)


_LC_CTYPE_MASK = 1 << 0  # glibc: 1 << LC_CTYPE, which is 0


@contextlib.contextmanager
def _utf8_names() -> Iterator[None]:
    """libarchive converts the names it reads (UTF-16 in 7z and RAR) to the locale's
    charset, and gives up under LC_ALL=C: this thread reads in C.UTF-8 whatever the
    process's locale (uselocale is per thread; Python itself writes names as UTF-8)."""
    try:
        libc = ctypes.CDLL(None)
        newlocale, uselocale, freelocale = libc.newlocale, libc.uselocale, libc.freelocale
    except (OSError, AttributeError):
        yield
        return
    newlocale.restype = uselocale.restype = ctypes.c_void_p
    newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
    uselocale.argtypes = freelocale.argtypes = [ctypes.c_void_p]
    utf8 = newlocale(_LC_CTYPE_MASK, b"C.UTF-8", None)
    if not utf8:
        yield
        return
    before = uselocale(utf8)
    try:
        yield
    finally:
        uselocale(before)
        freelocale(utf8)


def _library(fmt: ArchiveFormat) -> Any:
    """The libarchive binding, imported on first use; a clear message when the system's
    library is missing (libarchive-c finds it by ctypes, or $LIBARCHIVE)."""
    try:
        import libarchive.ffi
    except (ImportError, OSError, AttributeError) as exc:
        raise UnsupportedArchiveError(
            f"{fmt} archives are unpacked by the system's libarchive, which is not "
            f"available ({type(exc).__name__}: {exc}); {_INSTALL}, or use extract: false "
            "to get the archive as it is"
        ) from None
    if not hasattr(libarchive.ffi, "entry_is_data_encrypted"):
        libarchive.ffi.ffi("entry_is_data_encrypted", [ctypes.c_void_p], ctypes.c_int)
    return libarchive


def _check_headers(lib: Any, f: IO[bytes], fmt: ArchiveFormat, passwords: Sequence[str]) -> None:
    """The first pass: every header read, no data; raises :class:`LibarchiveCannot`
    for what libarchive cannot decode, and a RAR 5 archive cut short (libarchive stops
    at a cut header without a word) as damaged."""
    rar5 = None
    if fmt is ArchiveFormat.RAR and f.read(len(RAR5_MAGIC)) == RAR5_MAGIC:
        rar5 = scan_rar5(f)
        if rar5.encrypted:
            raise LibarchiveCannot(_cannot_message(fmt, "it is an encrypted RAR archive"))
        if rar5.copies:  # libarchive 3.6 (bsdtar too) would write the copies empty
            raise LibarchiveCannot(_cannot_message(fmt, "it stores files as copies of others"))
        if rar5.split:
            raise UnsupportedArchiveError(
                "the rar archive is one volume of a multi-volume set (name.part1.rar, "
                "name.part2.rar, ...); dropfetch downloads one URL and cannot join the other "
                "volumes: offer the whole archive in one file, or use extract: false to get "
                "this volume as it is"
            )
    f.seek(0)
    with _Reader(lib, f, fmt, passwords) as reader:
        for entry in reader.entries():
            if fmt is not ArchiveFormat.ZIP and entry.encrypted:
                raise LibarchiveCannot(_cannot_message(fmt, "its content is encrypted"))
    if rar5 is not None and not rar5.ended:
        raise CorruptArchiveError(
            "the rar archive is incomplete: it ends before its end-of-archive block (a "
            "download cut short?); download it again or check the source"
        )


def _cannot_message(fmt: ArchiveFormat, why: str) -> str:
    return f"libarchive cannot unpack this {fmt} archive: {why}"


def libarchive_error(message: str | None, fmt: ArchiveFormat, passwords: int) -> DropfetchError:
    """The domain error for libarchive's ``message`` (its error string) about a ``fmt``
    archive read with ``passwords`` passwords (pure). No password is ever in it."""
    text = (message or "").strip().rstrip(".")
    lower = text.lower()
    for needle, why in _CANNOT:
        if needle.lower() in lower:
            return LibarchiveCannot(_cannot_message(fmt, why))
    if "passphrase" in lower or "decryption" in lower:
        return _password_error(fmt, passwords)
    if "unsupported" in lower or "not supported" in lower:
        return UnsupportedArchiveError(
            f"the {fmt} archive uses something libarchive cannot unpack ({text}); ask the "
            "source for another format, or use extract: false to get the archive as it is"
        )
    detail = f" ({text})" if text else ""
    return CorruptArchiveError(
        f"the {fmt} archive is damaged or incomplete{detail}; download it again or check the source"
    )


def _password_error(fmt: ArchiveFormat, passwords: int) -> EncryptedArchiveError:
    return encrypted(f"the {fmt} archive", tried=passwords)


@dataclass(frozen=True, slots=True)
class _Entry:
    """What libarchive says of an entry's header."""

    name: str | None  # None: libarchive could not convert it to this locale
    kind: int  # the S_IFMT bits
    perm: int
    mtime: float | None
    hardlink: str | None
    symlink: str | None
    encrypted: bool
    warned: bool  # libarchive warned of the header (a name it could not convert)

    @classmethod
    def of(cls, ffi: Any, p: Any, *, warned: bool) -> _Entry:
        return cls(
            name=_text(ffi.entry_pathname_w(p), ffi.entry_pathname(p)),
            kind=ffi.entry_filetype(p) & _IFMT,
            perm=ffi.entry_perm(p),
            mtime=(
                ffi.entry_mtime(p) + ffi.entry_mtime_nsec(p) / 1e9
                if ffi.entry_mtime_is_set(p)
                else None
            ),
            hardlink=_text(ffi.entry_hardlink_w(p), ffi.entry_hardlink(p)),
            symlink=_text(ffi.entry_symlink_w(p), ffi.entry_symlink(p)),
            encrypted=bool(ffi.entry_is_data_encrypted(p)),
            warned=warned,
        )


def _text(wide: str | None, raw: bytes | None) -> str | None:
    """A name as libarchive gives it: wide (decoded) if it can, else its bytes."""
    if wide is not None:
        return wide
    return os.fsdecode(raw) if raw is not None else None


class _Reader:
    """One libarchive read of ``stream`` through callbacks: reads (each a call of
    ``readinto``) and seeks. An exception in a callback (cancellation, an I/O error)
    is kept and raised again once libarchive gives up."""

    def __init__(
        self, lib: Any, stream: IO[bytes], fmt: ArchiveFormat, passwords: Sequence[str]
    ) -> None:
        self._lib = lib
        self._ffi = lib.ffi
        self._stream = stream
        self._fmt = fmt
        self._passwords = passwords
        self._in = ctypes.create_string_buffer(CHUNK)  # libarchive reads the archive here
        self._out = ctypes.create_string_buffer(CHUNK)  # and decodes an entry's data here
        self._error: BaseException | None = None
        self._p: Any = None
        # libarchive keeps pointers to these: they live as long as the reader
        self._read_cb = self._ffi.READ_CALLBACK(self._read)
        self._seek_cb = self._ffi.SEEK_CALLBACK(self._seek)

    def __enter__(self) -> _Reader:
        ffi = self._ffi
        self._p = ffi.read_new()
        try:
            with self.failing():
                for name in _FORMATS[self._fmt]:
                    ffi.get_read_format_function(name)(self._p)
                for password in self._passwords:
                    ffi.read_add_passphrase(self._p, password.encode("utf-8", "surrogateescape"))
                ffi.read_set_seek_callback(self._p, self._seek_cb)
                ffi.read_open(self._p, None, ffi.NO_OPEN_CB, self._read_cb, ffi.NO_CLOSE_CB)
        except BaseException:
            ffi.read_free(self._p)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._ffi.read_free(self._p)

    def _read(self, _archive: Any, _context: Any, ptrptr: Any) -> int:
        try:
            # read() and one memmove: a slice assignment into a ctypes array goes byte
            # by byte (28 ms a MiB)
            data = self._stream.read(len(self._in))
        except BaseException as exc:  # noqa: BLE001 - raised again by failing()
            self._error = exc
            return _ARCHIVE_FATAL
        ctypes.memmove(self._in, data, len(data))
        ctypes.cast(ptrptr, ctypes.POINTER(ctypes.c_void_p))[0] = ctypes.addressof(self._in)
        return len(data)

    def _seek(self, _archive: Any, _context: Any, offset: int, whence: int) -> int:
        try:
            return self._stream.seek(offset, whence)
        except BaseException as exc:  # noqa: BLE001 - raised again by failing()
            self._error = exc
            return _ARCHIVE_FATAL

    @contextlib.contextmanager
    def failing(self) -> Iterator[None]:
        """libarchive's errors as domain errors, a callback's own exception first."""
        try:
            yield
        except self._lib.ArchiveError as exc:
            if self._error is not None:
                raise self._error from None
            raise libarchive_error(exc.msg, self._fmt, len(self._passwords)) from None

    def entries(self) -> Iterator[_Entry]:
        """The entries, one at a time (each valid until the next)."""
        ffi = self._ffi
        entry_p = ffi.entry_new()
        try:
            while True:
                with self.failing():
                    got = ffi.read_next_header2(self._p, entry_p)
                if got == _ARCHIVE_EOF:
                    return
                yield _Entry.of(ffi, entry_p, warned=got == _ARCHIVE_WARN)
        finally:
            ffi.entry_free(entry_p)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the current entry's data (b"" at its end)."""
        with self.failing():
            got = self._ffi.read_data(self._p, self._out, min(n, CHUNK))
        if got == _ARCHIVE_WARN:  # a damaged member (a CRC that does not match): not its end
            raw = self._ffi.error_string(self._p)
            text = raw.decode("utf-8", "replace") if raw else "its data is damaged"
            raise CorruptArchiveError(
                f"the {self._fmt} archive is damaged ({text.strip().rstrip('.')}); download "
                "it again or check the source"
            )
        return ctypes.string_at(self._out, got) if got > 0 else b""

    def extract(self, out: Output, unnamed: str) -> None:
        for entry in self.entries():
            out.check_cancel()
            out.limits.member()
            self._member(entry, self._name(entry, unnamed), out)

    def _name(self, entry: _Entry, unnamed: str) -> str:
        if entry.name is not None:
            return entry.name
        if entry.warned:
            raise UnsupportedArchiveError(
                f"the name of a member of the {self._fmt} archive cannot be read in this "
                "locale: run the daemon with a UTF-8 locale (LANG=C.UTF-8)"
            )
        if not unnamed:
            raise CorruptArchiveError(f"the {self._fmt} archive has a member without a name")
        return unnamed

    def _member(self, entry: _Entry, name: str, out: Output) -> None:
        rel = normalise_name(name, backslash_is_separator=self._fmt is ArchiveFormat.ZIP)
        kind, perm, mtime = entry.kind, entry.perm, entry.mtime
        if entry.hardlink is not None:
            out.add_hardlink(rel, entry.hardlink, name)
        elif kind == _IFDIR:
            out.add_dir(rel, perm, mtime)  # no data to read (libarchive-c's get_blocks raises)
        elif kind == _IFLNK:
            out.add_symlink(rel, entry.symlink or "", name)
        elif kind == _IFREG or (kind == _IFIFO and self._fmt is not ArchiveFormat.RAR):
            # a FIFO in a 7z or zip is the data read from one (`7zz a -si`, `zip -FI`):
            # a regular file of that data, as `7zz x` and unzip write it
            out.add_file(rel, perm, mtime, self.read, f"reading {name}")
        else:
            raise unsafe_type(name, _SPECIAL.get(kind, f"of unknown type {kind:o}"))
