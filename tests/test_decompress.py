"""archive/compression.py and archive/readahead.py: ISA-L's gzip with the zlib fallback,
and decompression on a thread of its own (real data, real threads)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
import tarfile
import threading
from pathlib import Path
from typing import IO, cast

import pytest
import zstandard

from dropfetch.archive import compression
from dropfetch.archive.compression import CHUNK, decompressor, gzip_reader, stream_reader
from dropfetch.archive.readahead import DEPTH, ReadAhead
from dropfetch.config import ExtractConfig
from dropfetch.errors import ArchiveLimitsError, CancelledError, CorruptArchiveError
from dropfetch.extract import ArchiveFormat, Growth, extract
from harness import wait_for

COMPRESS = {
    "gz": lambda b: gzip.compress(b, 6),
    "bz2": bz2.compress,
    "xz": lambda b: lzma.compress(b, preset=0),
    "zst": lambda b: zstandard.ZstdCompressor().compress(b),
}


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _files() -> dict[str, bytes]:
    """A few MiB of text-like data in files large and small: several chunks."""
    line = b"".join(b"line %d of some text that compresses\n" % i for i in range(2000))
    return {f"d/f{i}.txt": line * (1 + i % 3) for i in range(20)}


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("-z")]


def _extract(tmp_path: Path, data: bytes, fmt: ArchiveFormat, **kw: object) -> dict[str, bytes]:
    tmp_path.mkdir(exist_ok=True)
    archive = tmp_path / "a.bin"
    archive.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir()
    extract(archive, dest, fmt=fmt, config=ExtractConfig(), single_name="x", **kw)  # type: ignore[arg-type]
    return {
        str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()
    }


# --- gzip: ISA-L, and zlib when python-isal is missing ---------------------------------


@pytest.fixture(params=["isal", "zlib"])
def gzip_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "zlib":
        monkeypatch.setitem(sys.modules, "isal", None)  # `from isal import igzip` fails
    return str(request.param)


def test_gzip_reader_is_isal_unless_it_is_missing(gzip_impl: str) -> None:
    reader = gzip_reader()
    if gzip_impl == "zlib":
        assert reader is gzip.GzipFile
    else:
        assert reader is not gzip.GzipFile
        assert reader.__module__ == "isal.igzip"
    stream = decompressor("gz", io.BytesIO(gzip.compress(b"abc")))
    assert isinstance(stream, reader)
    assert stream.read() == b"abc"


def test_multi_member_gzip_with_zero_padding(tmp_path: Path, gzip_impl: str) -> None:
    files = _files()
    raw = _tar(files)
    half = len(raw) // 2 // 512 * 512
    data = gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + b"\0" * 3000
    assert _extract(tmp_path, data, ArchiveFormat.TAR_GZ) == files, gzip_impl


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d + b"garbage after the stream",
        lambda d: d[:-3],  # cut short
        lambda d: d[:-8] + bytes(4) + d[-4:],  # CRC
        lambda d: d[:200] + bytes(b ^ 0x55 for b in d[200:400]) + d[400:],
    ],
    ids=["trailing-garbage", "truncated", "crc", "corrupt"],
)
def test_damaged_gzip_is_corrupt(tmp_path: Path, gzip_impl: str, damage: object) -> None:
    data = damage(gzip.compress(_tar(_files())))  # type: ignore[operator]
    with pytest.raises(CorruptArchiveError):
        _extract(tmp_path, data, ArchiveFormat.TAR_GZ)
    assert not _read_ahead_threads(), gzip_impl


def test_single_gz_file_either_way(tmp_path: Path, gzip_impl: str) -> None:
    body = os.urandom(3 * CHUNK + 17)
    data = gzip.compress(body) + gzip.compress(b"tail")
    assert _extract(tmp_path, data, ArchiveFormat.GZ) == {"x": body + b"tail"}, gzip_impl


# --- the read-ahead thread --------------------------------------------------------------


@pytest.mark.parametrize("comp", sorted(COMPRESS))
def test_read_ahead_gives_the_same_bytes_and_ends(comp: str) -> None:
    body = b"".join(_files().values())
    stream = stream_reader(comp, io.BytesIO(COMPRESS[comp](body)))
    assert isinstance(stream, ReadAhead) == (comp in compression.READ_AHEAD)
    got = bytearray()
    while chunk := stream.read(100_000):  # reads that straddle the chunks
        got += chunk
    assert bytes(got) == body
    assert stream.read(10) == b""
    stream.close()
    assert not _read_ahead_threads()


def test_read_ahead_raises_the_decompressors_error_after_the_good_chunks() -> None:
    body = b"".join(_files().values())
    data = lzma.compress(body, preset=0)
    bad = data[: len(data) // 2] + bytes(b ^ 0xFF for b in data[len(data) // 2 :])
    stream = ReadAhead(lzma.LZMAFile(io.BytesIO(bad)), CHUNK, "test-z")  # noqa: SIM115
    got = bytearray()

    def read_all() -> None:
        while chunk := stream.read(CHUNK):
            got.extend(chunk)

    with pytest.raises(lzma.LZMAError):
        read_all()
    assert body.startswith(got)
    with pytest.raises(lzma.LZMAError):  # and again: the stream stays broken
        stream.read(1)
    stream.close()
    assert not stream.thread.is_alive()


class _Endless(io.RawIOBase):
    """Zeros without end; counts the reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        b[:] = bytes(len(b))
        return len(b)


def test_read_ahead_is_bounded_and_close_ends_a_blocked_thread() -> None:
    inner = _Endless()
    stream = ReadAhead(cast(IO[bytes], inner), 4096, "test-z")
    assert stream.read(10) == bytes(10)
    # the queue fills and the reader thread blocks on it: DEPTH chunks ahead, one more held
    wait_for(lambda: inner.reads >= DEPTH + 2, message="the queue full")
    assert inner.reads <= DEPTH + 3
    stream.close()
    assert not stream.thread.is_alive()
    assert inner.closed


def test_errors_and_cancel_reach_extract_and_no_thread_is_left(tmp_path: Path) -> None:
    data = COMPRESS["xz"](_tar(_files()))
    with pytest.raises(CorruptArchiveError):
        _extract(tmp_path / "a", data[: len(data) // 2], ArchiveFormat.TAR_XZ)
    assert not _read_ahead_threads()
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done < total:
            cancel.set()  # on the first report, in the middle of the archive

    big = COMPRESS["zst"](_tar({f"f{i}": os.urandom(CHUNK) for i in range(8)}))
    with pytest.raises(CancelledError):
        _extract(tmp_path / "b", big, ArchiveFormat.TAR_ZST, cancel=cancel, on_progress=progress)
    assert not _read_ahead_threads()


@pytest.mark.parametrize("fmt", [f for f in ArchiveFormat if f.compression is not None])
def test_every_compressed_tar_extracts_with_its_read_ahead(
    tmp_path: Path, fmt: ArchiveFormat
) -> None:
    files = _files()
    assert fmt.compression is not None
    data = COMPRESS[fmt.compression.value](_tar(files))
    assert _extract(tmp_path, data, fmt) == files
    assert not _read_ahead_threads()


def test_a_limit_hit_while_the_archive_grows_leaves_no_thread(tmp_path: Path) -> None:
    """The parser stops (max_files) while the reader thread waits for the download to
    grow: the extraction ends with the limit's error once the download moves on."""
    data = COMPRESS["zst"](_tar({f"f{i}": os.urandom(CHUNK // 2) for i in range(8)}))
    archive = tmp_path / "a.bin"
    archive.write_bytes(data[: len(data) // 2])
    growth = Growth(expected_size=len(data))
    growth.grew(len(data) // 2)
    dest = tmp_path / "out"
    dest.mkdir()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            extract(
                archive,
                dest,
                fmt=ArchiveFormat.TAR_ZST,
                single_name="x",
                config=ExtractConfig(max_files=1),
                growth=growth,
            )
        except BaseException as exc:  # noqa: BLE001 - looked at below
            errors.append(exc)

    t = threading.Thread(target=run, name="test-x")
    t.start()
    wait_for((dest / "f0").exists, message="the first member written")
    growth.abort("the download failed")
    t.join(60)
    assert not t.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ArchiveLimitsError)
    assert not _read_ahead_threads()
