"""RAR archives that libarchive cannot decode (solid RAR 4, encrypted RAR), decoded by
The Unarchiver's ``lsar``/``unar`` (Debian ``unar``); every entry is checked and written
by dropfetch's own output tree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dropfetch.archive.libarc import LibarchiveCannot
from dropfetch.archive.tree import Output

__all__ = ["extract_unar"]


def extract_unar(
    archive: Path, out: Output, passwords: Sequence[str], cannot: LibarchiveCannot
) -> None:
    """Extract the RAR ``archive`` through ``out`` (being written in the rar lane)."""
    del archive, out, passwords
    raise cannot
