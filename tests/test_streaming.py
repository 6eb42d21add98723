"""Extraction of an archive that is still being written (streaming, issue 6)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from archives import tar_bytes
from dropfetch.config import ExtractConfig
from dropfetch.errors import CancelledError, CorruptArchiveError
from dropfetch.extract import ArchiveFormat, Growth, extract

FILES = {f"d{i}/f{j}.bin": os.urandom(20_000 + i * j) for i in range(5) for j in range(8)}


def _writer(path: Path, data: bytes, growth: Growth, *, chunk: int = 7_000,
            stop_at: int | None = None, restart: bool = False) -> threading.Thread:
    def run() -> None:
        with open(path, "wb") as f:
            for pos in range(0, len(data), chunk):
                if stop_at is not None and pos >= stop_at:
                    if restart:
                        f.truncate(0)
                        growth.grew(0)
                    return
                f.write(data[pos:pos + chunk])
                f.flush()
                growth.grew(pos + len(data[pos:pos + chunk]))
                time.sleep(0.002)
        growth.finish()

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize(("compression", "fmt"), [("gz", ArchiveFormat.TAR_GZ),
                                                   ("zst", ArchiveFormat.TAR_ZST),
                                                   ("", ArchiveFormat.TAR)])
def test_extract_while_the_file_grows(tmp_path, compression, fmt):
    data = tar_bytes(FILES, compression=compression)
    archive, dest = tmp_path / "a.part", tmp_path / "out"
    dest.mkdir()
    archive.touch()
    growth = Growth(expected_size=len(data))
    progress: list[tuple[int, int]] = []
    writer = _writer(archive, data, growth)
    files = extract(archive, dest, fmt=fmt, config=ExtractConfig(), single_name="x",
                    growth=growth, on_progress=lambda d, t: progress.append((d, t)))
    writer.join()
    assert files == sorted(FILES)
    for name, content in FILES.items():
        assert (dest / name).read_bytes() == content
    assert progress[-1] == (len(data), len(data))


def test_truncated_download_then_finish_is_corrupt(tmp_path):
    data = tar_bytes(FILES, compression="gz")
    archive, dest = tmp_path / "a.part", tmp_path / "out"
    dest.mkdir()
    archive.touch()
    growth = Growth()
    writer = _writer(archive, data, growth, stop_at=len(data) // 2)
    writer.join()
    growth.finish()  # the "download" claims to be done early: the stream is cut
    with pytest.raises(CorruptArchiveError):
        extract(archive, dest, fmt=ArchiveFormat.TAR_GZ, config=ExtractConfig(),
                single_name="x", growth=growth)


def test_download_that_starts_over_aborts_the_extraction(tmp_path):
    data = tar_bytes(FILES, compression="gz")
    archive, dest = tmp_path / "a.part", tmp_path / "out"
    dest.mkdir()
    archive.touch()
    growth = Growth()
    writer = _writer(archive, data, growth, stop_at=len(data) // 2, restart=True)
    with pytest.raises(CancelledError, match="started over"):
        extract(archive, dest, fmt=ArchiveFormat.TAR_GZ, config=ExtractConfig(),
                single_name="x", growth=growth)
    writer.join()


def test_cancel_while_waiting_for_bytes(tmp_path):
    archive, dest = tmp_path / "a.part", tmp_path / "out"
    dest.mkdir()
    archive.write_bytes(tar_bytes(FILES, compression="gz")[:1000])
    growth, cancel = Growth(), threading.Event()
    growth.grew(1000)
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(CancelledError):
        extract(archive, dest, fmt=ArchiveFormat.TAR_GZ, config=ExtractConfig(),
                single_name="x", growth=growth, cancel=cancel)
