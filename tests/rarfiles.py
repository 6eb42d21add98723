"""Real RAR archives: the test files of rarfile's source release on PyPI (made by WinRAR
and rar 2.x-6.x), unpacked by `make test` into the venv (the Makefile's RAR_FIXTURES)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(sys.prefix) / "fixtures" / "rarfile"


def rar_file(name: str) -> Path:
    """The real RAR archive ``name`` (e.g. ``rar3-solid.rar``); fails when the fixtures
    were not fetched, saying how to fetch them."""
    path = ROOT / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: `make test` (or `make {ROOT}/.done`) downloads rarfile's "
            "source release from PyPI and unpacks its test archives there"
        )
    return path
