"""Zip archives: the directory checked against the entries, then each entry written
through the output tree."""

from __future__ import annotations

import itertools
import os
import stat
import struct
import time
import zipfile
from typing import IO

from dropfetch.archive.boundaries import reading
from dropfetch.archive.formats import read_at, zip_end
from dropfetch.archive.members import MAX_LINK_TARGET, normalise_name
from dropfetch.archive.tree import Output
from dropfetch.errors import (
    ArchiveLimitsError,
    CorruptArchiveError,
    EncryptedArchiveError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
)
from dropfetch.passwords import PASSWORD_NEEDED

__all__ = ["EncryptedZip", "check_not_split", "extract_zip"]

_ZIP_SPAN_MAGIC = b"PK\x07\x08"  # first bytes of a split zip (`zip -s`), even of one part
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_ZIP_DECODABLE = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_ZIP_AES = 99  # WinZip AES: an encryption, written as a compression method
_ZIP_METHODS = {
    1: "Shrink",
    2: "Reduce",
    3: "Reduce",
    4: "Reduce",
    5: "Reduce",
    6: "Implode",
    7: "Tokenize",
    9: "Deflate64",
    10: "PKWARE DCL Implode",
    16: "IBM z/OS CMPSC",
    18: "IBM TERSE",
    19: "IBM LZ77",
    20: "Zstandard",
    93: "Zstandard",
    94: "MP3",
    95: "XZ",
    96: "JPEG",
    97: "WavPack",
    98: "PPMd",
}


class EncryptedZip(EncryptedArchiveError):
    """An encrypted entry, found by the checks before anything is written: extract.py
    hands the zip to libarchive when there are passwords to try."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the archive is encrypted ('{name}'): {PASSWORD_NEEDED}")


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


def extract_zip(raw: IO[bytes], out: Output) -> None:
    with reading("reading the zip directory"):
        try:
            zf = zipfile.ZipFile(raw)
        except UnicodeDecodeError as exc:  # bsdtar sets the flag on any name, valid or not
            bad = exc.object[exc.start : exc.start + 1].hex()
            raise CorruptArchiveError(
                f"the zip says its names are UTF-8, but the name of an entry is not (byte "
                f"0x{bad} in {bytes(exc.object)[:100]!r}); unzip may still read it, or use "
                "extract: false to get the archive as it is"
            ) from exc
    with zf:
        with reading("reading the zip directory"):
            infos = zf.infolist()
        if len(infos) > out.config.max_files:
            raise ArchiveLimitsError(
                f"the archive has more than {out.config.max_files} members "
                "(extract.max_files); raise the limit if this archive is trusted"
            )
        with reading("checking the zip entries"):
            _check_zip_layout(raw, infos, out.limits.archive_size)
        for info in infos:
            out.check_cancel()
            out.limits.member()
            _zip_member(zf, info, out)


def check_not_split(f: IO[bytes]) -> None:
    """The last part of a split zip (`zip -s`: name.z01, name.z02, ..., name.zip) holds
    the directory of entries that are in the other parts: zipfile would read the wrong
    bytes. A one-part split (`zip -s` of a small tree) is a whole zip."""
    with reading("reading the zip directory"):
        parts = zip_end(f)
        first = read_at(f, 0, len(_ZIP_SPAN_MAGIC)) == _ZIP_SPAN_MAGIC
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
        "extract: false to get this part as it is"
    )


def _check_zip_layout(raw: IO[bytes], infos: list[zipfile.ZipInfo], size: int) -> None:
    """Encryption, local headers agreeing with the directory, no overlapping entries."""
    for info in infos:
        if _encrypted_link(info):
            raise UnsupportedArchiveError(
                f"the zip holds an encrypted symbolic link ('{_zip_name(info)[1]}'): "
                "libarchive, which decrypts zip archives for dropfetch, reads a link's "
                "target undecrypted; unzip can unpack it, or use extract: false to get the "
                "archive as it is"
            )
    spans = sorted(_check_entry(raw, info, size) for info in infos)
    for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
        if s2 < e1:
            raise UnsafeArchiveError(
                f"unsafe archive: entries '{n1}' and '{n2}' overlap (a zip bomb)"
            )


def _encrypted_link(info: zipfile.ZipInfo) -> bool:
    encrypted = info.flag_bits & 0x41 or info.compress_type == _ZIP_AES
    return bool(encrypted) and info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _check_entry(raw: IO[bytes], info: zipfile.ZipInfo, size: int) -> tuple[int, int, str]:
    """One entry checked as the directory describes it, then against its local header;
    its span in the archive (start, end, name)."""
    raw_name, name = _zip_name(info)
    if info.flag_bits & 0x41 or info.compress_type == _ZIP_AES:
        raise EncryptedZip(name)
    if info.compress_type not in _ZIP_DECODABLE:
        method = _ZIP_METHODS.get(info.compress_type, "an unknown one")
        raise UnsupportedArchiveError(
            f"the zip entry '{name}' is compressed with the method {method} (zip method "
            f"{info.compress_type}), which dropfetch cannot unpack; ask the source for "
            "another format (zip with Deflate, tar.gz, ...), or use extract: false to "
            "get the archive as it is"
        )
    start = info.header_offset
    end = start + _check_local_header(raw, info, raw_name, name) + info.compress_size
    if end > size:
        raise CorruptArchiveError(
            f"the archive is damaged or incomplete: entry '{name}' runs past its end"
        )
    return start, end, name


def _check_local_header(raw: IO[bytes], info: zipfile.ZipInfo, raw_name: bytes, name: str) -> int:
    """The entry's local header agrees with the directory; its length (name and extra
    field included)."""
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size:
        raise CorruptArchiveError(
            f"the archive is damaged or incomplete: entry '{name}' is truncated"
        )
    (sig, _version, flags, method, _t, _d, crc, csize, usize, nlen, xlen) = _LOCAL_HEADER.unpack(
        header
    )
    if sig != b"PK\x03\x04":
        raise CorruptArchiveError(f"the archive is damaged: no local header for '{name}'")
    if flags & 0x41:
        raise EncryptedZip(name)
    if method != info.compress_type:
        raise CorruptArchiveError(
            f"the archive is damaged: entry '{name}' has two compression methods"
        )
    if raw.read(nlen) != raw_name:
        raise CorruptArchiveError(
            f"the archive is damaged: the directory and the entry disagree on the name '{name}'"
        )
    # sizes and checksum are in the header unless a data descriptor (0x08) or zip64 has them
    if (
        not flags & 0x08
        and csize != 0xFFFFFFFF
        and ((csize, usize, crc) != (info.compress_size, info.file_size, info.CRC))
    ):
        raise CorruptArchiveError(
            f"the archive is damaged: the directory and the entry '{name}' disagree on "
            "its size or checksum"
        )
    return _LOCAL_HEADER.size + int(nlen) + int(xlen)


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Output) -> None:
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
        with reading(f"reading {name}"), zf.open(info) as f:
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
        with reading(f"reading {name}"):
            f = zf.open(info)
        with f:
            out.add_file(rel, perms if st_mode else 0o644, mtime, f.read, f"reading {name}")
