"""What a downloaded file is: its format from its bytes (SPEC §8), and the name a
single compressed file is delivered under."""

from __future__ import annotations

import os
import re
import struct
from enum import StrEnum
from pathlib import Path
from typing import IO, cast

from dropfetch.archive.compression import decompressor
from dropfetch.names import safe_name

__all__ = ["ArchiveFormat", "is_tar_header", "read_at", "single_file_name", "sniff", "zip_end"]

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_SPAN_MAGIC = b"PK\x07\x08"  # first bytes of a split zip (`zip -s`), even of one part
_EOCD_MAGIC = b"PK\x05\x06"
_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR_MAGIC = b"PK\x06\x07"
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # magic, disk of the zip64 record, its offset, parts
_CENTRAL_MAGIC = b"PK\x01\x02"
_TAR_SUFFIXES = (
    ".tar",
    ".tgz",
    ".taz",
    ".tbz",
    ".tbz2",
    ".tb2",
    ".txz",
    ".tzst",
    ".tar.gz",
    ".tar.z",
    ".tar.bz2",
    ".tar.xz",
    ".tar.zst",
)
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
    SEVEN_Z = "7z"
    RAR = "rar"  # v4 (1.5-4.x) and v5
    FILE = "file"

    @property
    def is_archive(self) -> bool:
        """A tar (compressed or not), a zip, a 7z or a RAR: extracts to a tree."""
        return self in _ARCHIVES

    @property
    def is_compressed_single(self) -> bool:
        """One compressed file: decompresses to one file."""
        return self in _SINGLES

    @property
    def compression(self) -> ArchiveFormat | None:
        """The compression of a compressed tar (``tar.gz`` -> ``gz``), else None."""
        return _COMPRESSION_OF.get(self)


_ARCHIVES = frozenset(
    {
        ArchiveFormat.ZIP,
        ArchiveFormat.TAR,
        ArchiveFormat.TAR_GZ,
        ArchiveFormat.TAR_BZ2,
        ArchiveFormat.TAR_XZ,
        ArchiveFormat.TAR_ZST,
        ArchiveFormat.SEVEN_Z,
        ArchiveFormat.RAR,
    }
)
_SINGLES = frozenset({ArchiveFormat.GZ, ArchiveFormat.BZ2, ArchiveFormat.XZ, ArchiveFormat.ZST})
_COMPRESSION_MAGICS = (
    (re.compile(rb"\x1f\x8b"), ArchiveFormat.GZ),
    (re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)"), ArchiveFormat.BZ2),
    (re.compile(rb"\xfd7zXZ\x00"), ArchiveFormat.XZ),
    (re.compile(rb"\x28\xb5\x2f\xfd"), ArchiveFormat.ZST),
)
# 7z signature; RAR 1.5-4.x ("Rar!\x1a\x07\x00") and RAR 5 ("Rar!\x1a\x07\x01\x00")
_LIBARCHIVE_MAGICS = (
    (b"7z\xbc\xaf\x27\x1c", ArchiveFormat.SEVEN_Z),
    (b"Rar!\x1a\x07\x00", ArchiveFormat.RAR),
    (b"Rar!\x1a\x07\x01\x00", ArchiveFormat.RAR),
)
_TAR_OF = {
    ArchiveFormat.GZ: ArchiveFormat.TAR_GZ,
    ArchiveFormat.BZ2: ArchiveFormat.TAR_BZ2,
    ArchiveFormat.XZ: ArchiveFormat.TAR_XZ,
    ArchiveFormat.ZST: ArchiveFormat.TAR_ZST,
}
_COMPRESSION_OF = {tar: single for single, tar in _TAR_OF.items()}


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
            return _sniff_uncompressed(f, head, name, tar_named=tar_named)
        f.seek(0)
        try:
            block = _first_block(decompressor(compression, cast(IO[bytes], f)))
        except Exception:  # noqa: BLE001 - broken data: the magic still says what it is
            return compression
        if is_tar_header(block) or (tar_named and _is_tar_end(block)):
            return _TAR_OF[compression]
        return compression


def _sniff_uncompressed(
    f: IO[bytes], head: bytes, name: str | None, *, tar_named: bool
) -> ArchiveFormat:
    if head.startswith(_ZIP_MAGICS):
        return ArchiveFormat.ZIP
    for magic, fmt in _LIBARCHIVE_MAGICS:
        if head.startswith(magic):
            return fmt
    if is_tar_header(head[:512]) or (tar_named and _is_tar_end(head)):
        return ArchiveFormat.TAR
    if head.startswith(_ZIP_SPAN_MAGIC) or (
        (name is None or name.lower().endswith(".zip")) and zip_end(f)
    ):
        return ArchiveFormat.ZIP
    return ArchiveFormat.FILE


def _first_block(stream: IO[bytes]) -> bytes:
    """Up to the first 512 decompressed bytes: where a tar header would be."""
    block = b""
    with stream:
        while len(block) < 512:
            more = stream.read(512 - len(block))
            if not more:
                break
            block += more
    return block


def zip_end(f: IO[bytes]) -> int | None:
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
            (_sig, disk, cd_disk, on_disk, total, cd_size, cd_offset, comment) = _EOCD.unpack_from(
                tail, pos
            )
            end = start + pos
            if pos + _EOCD.size + comment == len(tail):
                locator = tail[max(0, pos - _ZIP64_LOCATOR.size) : pos]
                if len(locator) == _ZIP64_LOCATOR.size and locator.startswith(_ZIP64_LOCATOR_MAGIC):
                    # zip64: the fields above may all be 0xFFFF; the locator counts parts
                    return max(1, int(_ZIP64_LOCATOR.unpack(locator)[3]))
                if (
                    total
                    and cd_offset + cd_size <= end
                    and read_at(f, end - cd_size, 4) == _CENTRAL_MAGIC
                ):
                    return disk + 1 if disk or cd_disk or on_disk != total else 1
        pos = tail.rfind(_EOCD_MAGIC, 0, pos)
    return None


def read_at(f: IO[bytes], offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _is_tar_end(head: bytes) -> bool:
    """Nothing at all, or a first block of zeros: what an empty tar holds (GNU tar
    writes 10240 zero bytes, bsdtar 1024)."""
    return not head or (len(head) >= 512 and not any(head[:512]))


def _compression_of(head: bytes) -> ArchiveFormat | None:
    return next((fmt for magic, fmt in _COMPRESSION_MAGICS if magic.match(head)), None)


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
    signed = (
        256 + sum(struct.unpack("148b", block[:148])) + sum(struct.unpack("356b", block[156:512]))
    )
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
        shown = safe_name(name)
        if shown is not None:
            return shown
    return fallback
