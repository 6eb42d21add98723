"""The block headers of a RAR 5 archive, walked without decoding anything: libarchive
3.6 does not see that a RAR 5 file's data is encrypted (it fails on its first block
with a misleading "Unsupported block header size"), so its files' encryption records
are looked for here first."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO

__all__ = ["RAR5_MAGIC", "Rar5Scan", "scan_rar5"]

RAR5_MAGIC = b"Rar!\x1a\x07\x01\x00"
_FILE_HEADER = 2
_END_OF_ARCHIVE = 5
_EXTRA_AREA = 0x0001
_DATA_AREA = 0x0002
_SPLIT = 0x0008 | 0x0010  # the data continues from the previous volume, or in the next
_FILE_ENCRYPTION = 0x01  # the type of a file's extra record that says it is encrypted
_MAX_HEADER = 2 * 1024 * 1024  # RAR 5 limits a header to 2 MiB


def _vint(buf: bytes, pos: int) -> tuple[int, int]:
    """A RAR 5 variable-length integer at ``pos``: (value, position after it); a value
    cut short by the end of ``buf`` raises ValueError."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("a number cut short")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return value, pos


def _encrypted_extra(header: bytes, extra_size: int) -> bool:
    """True when the extra area (the last ``extra_size`` bytes of ``header``) holds an
    encryption record."""
    pos = len(header) - extra_size
    while 0 <= pos < len(header):
        size, body = _vint(header, pos)
        kind = _vint(header, body)[0]
        if kind == _FILE_ENCRYPTION:
            return True
        pos = body + size
    return False


@dataclass(frozen=True, slots=True)
class Rar5Scan:
    encrypted: bool  # a file's data is encrypted
    ended: bool  # the end-of-archive block was reached: the archive is whole
    split: bool = False  # a file continues in another volume (name.partN.rar)


def _block(f: IO[bytes], pos: int) -> tuple[int, int, int, bytes, int]:
    """The block at ``pos``: its type, flags, extra area size, header, and where the next
    block starts. ValueError when it does not parse."""
    f.seek(pos + 4)  # past the header's CRC32
    header_size, start = _vint(f.read(16), 0)
    if not 0 < header_size <= _MAX_HEADER:
        raise ValueError("a header size out of bounds")
    f.seek(pos + 4 + start)
    header = f.read(header_size)
    kind, at = _vint(header, 0)
    flags, at = _vint(header, at)
    extra_size, at = _vint(header, at) if flags & _EXTRA_AREA else (0, at)
    data_size = _vint(header, at)[0] if flags & _DATA_AREA else 0
    return kind, flags, extra_size, header, pos + 4 + start + header_size + data_size


def scan_rar5(f: IO[bytes]) -> Rar5Scan:
    """Walk the block headers of the RAR 5 archive ``f`` (from its start). Headers that
    do not parse end the walk (not ended): libarchive then says what is wrong, or the
    archive is cut short (libarchive and bsdtar stop there without a word)."""
    size = f.seek(0, os.SEEK_END)
    pos = len(RAR5_MAGIC)
    try:
        while pos < size:
            kind, flags, extra_size, header, pos = _block(f, pos)
            if kind == _END_OF_ARCHIVE:
                return Rar5Scan(encrypted=False, ended=True)
            if kind != _FILE_HEADER:
                continue
            if flags & _SPLIT:
                return Rar5Scan(encrypted=False, ended=False, split=True)
            if extra_size and _encrypted_extra(header, extra_size):
                return Rar5Scan(encrypted=True, ended=False)
    except ValueError:
        pass
    return Rar5Scan(encrypted=False, ended=False)
