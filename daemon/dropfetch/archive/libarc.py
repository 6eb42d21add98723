"""7z and RAR archives (and encrypted zips), decoded by libarchive (the ``libarchive-c``
binding over the system's libarchive); every entry is checked and written by
dropfetch's own output tree, as for tar and zip."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dropfetch.archive.formats import ArchiveFormat
from dropfetch.archive.tree import Output
from dropfetch.errors import UnsupportedArchiveError

__all__ = ["LibarchiveCannot", "extract_libarchive"]


class LibarchiveCannot(UnsupportedArchiveError):
    """libarchive cannot decode this archive (a solid RAR 4, an encrypted RAR or 7z), as
    found by a first pass over its headers, before anything was written: another
    decoder may (extract.py picks it)."""


def extract_libarchive(
    archive: Path, fmt: ArchiveFormat, out: Output, passwords: Sequence[str]
) -> None:
    """Extract the 7z, RAR or zip ``archive`` through ``out``, trying ``passwords`` in
    order on encrypted entries. (Being written in the libarchive lane.)"""
    del archive, out, passwords
    raise UnsupportedArchiveError(f"{fmt} archives are not unpacked yet")
