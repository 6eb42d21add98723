"""Decompression of the single-stream formats (gzip, bzip2, xz, zstd), each failing on
a stream cut short. gzip inflates with ISA-L (python-isal) when it is installed, else
with the standard library's zlib; :func:`stream_reader` decompresses on its own thread
for the formats where that is faster."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import threading
from collections.abc import Callable
from typing import IO, Any, cast

import zstandard

from dropfetch.archive.readahead import ReadAhead
from dropfetch.errors import CorruptArchiveError

__all__ = ["CHUNK", "READ_AHEAD", "decompressor", "gzip_reader", "stream_reader"]

CHUNK = 1024 * 1024
READ_AHEAD = frozenset({"bz2", "xz", "zst"})
"""The compressions that :func:`stream_reader` decompresses on a thread of their own
(measured: faster for xz and zstd, even for bzip2; not for gzip, which ISA-L inflates
faster than the queue's hand-over costs)."""


def decompressor(compression: str, raw: IO[bytes]) -> IO[bytes]:
    """A reader of the decompressed data of ``raw``; ``compression`` is ``gz``, ``bz2``,
    ``xz`` or ``zst`` (an :class:`~dropfetch.archive.formats.ArchiveFormat` value)."""
    opener = _OPENERS.get(compression)
    if opener is None:
        raise ValueError(f"not a compression: {compression}")
    return opener(raw)


def stream_reader(compression: str, raw: IO[bytes]) -> IO[bytes]:
    """:func:`decompressor`, read ahead on a thread of its own for :data:`READ_AHEAD`
    (named after the calling thread, ``-z``); closing it ends that thread."""
    inner = decompressor(compression, raw)
    if compression not in READ_AHEAD:
        return inner
    name = f"{threading.current_thread().name}-z"
    return cast(IO[bytes], ReadAhead(inner, CHUNK, name))


def gzip_reader() -> type[gzip.GzipFile]:
    """ISA-L's GzipFile (the same multi-member, zero-padding and CRC rules, inflating
    about 2.5 times as fast), or the standard library's when python-isal is missing."""
    try:
        from isal import igzip  # optional: looked up at each open
    except ImportError:
        return gzip.GzipFile
    return igzip.IGzipFile


class _ZstdStream(io.RawIOBase):
    """zstd decompression that fails on a stream cut short: python-zstandard's reader
    takes the end of its input for the end of the data, even in the middle of a frame."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._frames = _ZstdFrames(raw)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], self._frames), read_size=CHUNK, read_across_frames=True, closefd=False
        )

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
                self._block(int.from_bytes(data[i : i + 3], "little"))  # the common case
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
                    "the archive is damaged: the data after a zstd frame is not zstd"
                )
            if len(h) < 5:
                return
            fhd = h[4]
            single = fhd >> 5 & 1
            size = 5 + (not single) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]
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
                "download it again or check the source"
            )


_OPENERS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    "gz": lambda raw: cast(IO[bytes], gzip_reader()(fileobj=raw, mode="rb")),
    "bz2": lambda raw: cast(IO[bytes], bz2.BZ2File(raw, mode="rb")),
    "xz": lambda raw: cast(IO[bytes], lzma.LZMAFile(raw, mode="rb")),  # noqa: SIM115
    "zst": lambda raw: cast(IO[bytes], _ZstdStream(raw)),
}
