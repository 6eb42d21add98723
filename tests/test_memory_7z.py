"""Issue 14: the peak RSS of extracting a 1 GiB solid 7z stays under 100 MB.

The archive is real text (standard-library modules, 1 GiB in 256 files) in one LZMA2
solid block made by 7zz, built once per session; the extraction runs in a fresh
process (``extract_peak_rss``) whose ``VmHWM`` is the figure.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from archives7z import extract_peak_rss, solid_7z_of_text

GIB = 1 << 30
LIMIT_MB = 100

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("7zz") is None, reason="7zz (Debian 7zip) is not installed"),
]


@pytest.fixture(scope="session")
def solid_7z(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    archive = tmp_path_factory.mktemp("solid7z") / "text.7z"
    count = solid_7z_of_text(archive, GIB)
    return archive, count


def test_peak_rss_extracting_a_1gib_solid_7z(solid_7z: tuple[Path, int], tmp_path: Path) -> None:
    archive, count = solid_7z
    assert archive.stat().st_size < GIB // 20
    listing = subprocess.run(
        ["7zz", "l", str(archive)], capture_output=True, text=True, check=True
    ).stdout
    assert "Solid = +" in listing and "Blocks = 1\n" in listing, listing
    dest = tmp_path / "out"
    result = extract_peak_rss(archive, dest)
    assert result["files"] == count
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) == GIB
    assert result["vmhwm_kib"] * 1024 / 1e6 <= LIMIT_MB, result
    shutil.rmtree(dest)  # 1 GiB: not left for pytest's basetemp rotation
