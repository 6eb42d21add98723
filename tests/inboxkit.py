"""Helpers for the inbox tests (issue 10): every kind of entry that is not a regular
file, a secret-looking string, and a guard against calls that block."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import pytest

SECRET = "ghp_" + "Zq9xK2mW7vB4nR8tY1uE5oP3aS6dF0gH" * 4  # 132 characters, looks like a token
CTRL = "\x1b[31m\x07\x08\r"


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a daemon thread; fail (instead of hanging) if it blocks."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(_outcome(fn)), daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"blocked for more than {seconds} s")
    kind, value = out[0]
    if kind == "raise":
        raise value
    return value


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "return", fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        return "raise", exc


def make_entries(root: Path) -> dict[str, str]:
    """One of every kind of non-regular entry under ``root``: name -> expected words."""
    root.mkdir(parents=True, exist_ok=True)
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text(SECRET + "\n")
    os.mkfifo(outside / "fifo")
    kinds = {}
    os.mkfifo(root / "fifo")
    kinds["fifo"] = "is a FIFO, not a regular file"
    os.mknod(root / "sock", 0o600 | stat.S_IFSOCK)
    kinds["sock"] = "is a socket, not a regular file"
    (root / "dir").mkdir()
    kinds["dir"] = "is a directory, not a regular file"
    for name, target in (
        ("link", outside / "secret.txt"),
        ("linkfifo", outside / "fifo"),
        ("dangling", outside / "missing"),
        ("linkdir", outside),
    ):
        os.symlink(target, root / name)
        kinds[name] = "is a symbolic link, not a regular file"
    if os.geteuid() == 0:
        os.mknod(root / "chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
        kinds["chr"] = "is a character device, not a regular file"
        os.mknod(root / "blk", 0o600 | stat.S_IFBLK, os.makedev(240, 0))  # no such device
        kinds["blk"] = "is a block device, not a regular file"
    return kinds


def longest_shared(a: str, b: str) -> int:
    m = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return m.size
