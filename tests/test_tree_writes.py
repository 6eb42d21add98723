"""The output tree's cheap paths keep its guarantees: a file's final mode whatever the
umask (open's mode, fchmod only when the umask took bits), the umask read without
changing it, a member's data cut short."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropfetch.archive.tree import process_umask
from dropfetch.config import ExtractConfig
from dropfetch.errors import CorruptArchiveError
from dropfetch.extract import extract, sniff


def _tar(path: Path, members: list[tuple[str, int, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, mode, data in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.size = len(data)
            info.mtime = 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o777])
def test_process_umask_reads_the_umask(mask: int) -> None:
    os.umask(mask)
    assert process_umask() == mask
    assert os.umask(mask) == mask  # unchanged by the read


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o000])
def test_file_modes_are_final_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    archive = _tar(
        tmp_path / "a.tar",
        [("x", 0o755, b"run"), ("r", 0o644, b"read"), ("p", 0o600, b""), ("w", 0o777, b"w")],
    )
    dest = tmp_path / "out"
    dest.mkdir()
    os.umask(mask)
    files = extract(archive, dest, fmt=sniff(archive), config=ExtractConfig(), single_name="z")
    assert files == ["p", "r", "w", "x"]
    modes = {n: stat.S_IMODE((dest / n).stat().st_mode) for n in files}
    assert modes == {"x": 0o755, "r": 0o644, "p": 0o600, "w": 0o755}
    assert (dest / "x").read_bytes() == b"run"
    assert (dest / "r").stat().st_mtime == 1_600_000_000


def test_member_data_cut_short_is_damage(tmp_path: Path) -> None:
    whole = _tar(tmp_path / "a.tar", [("a", 0o644, b"1" * 5000), ("b", 0o644, b"2" * 3000)])
    raw = whole.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[: 512 + 2048])  # a's header and part of its data
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(CorruptArchiveError, match="cut short"):
        extract(cut, dest, fmt=sniff(cut), config=ExtractConfig(), single_name="z")
