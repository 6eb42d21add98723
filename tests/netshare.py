"""The shared-filesystem test bed as a pytest fixture (see tests/netshare.sh).

``netshare`` (session scope) yields a :class:`NetShare`: one export directory on the
local disk, mounted twice over sshfs on loopback as ``host_a`` and ``host_b``, so two
"hosts" see one directory through a real network filesystem (and a third can use the
export directly). Each test takes a fresh subdirectory with :meth:`NetShare.area`.
Where FUSE (or installing sshfs) is not possible, every ``netshare`` test is skipped
with the reason, printed in pytest's short summary.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "netshare.sh"
SKIP_STATUS = 77


@dataclass(frozen=True)
class Area:
    """One test's directory, as each host sees it."""

    export: Path
    host_a: Path
    host_b: Path

    def views(self) -> tuple[Path, Path, Path]:
        return self.host_a, self.host_b, self.export


@dataclass
class NetShare:
    root: Path
    export: Path
    host_a: Path
    host_b: Path
    port: int

    def __post_init__(self) -> None:
        self._names = itertools.count(1)

    def area(self, name: str) -> Area:
        """A new, empty directory in the export, with its paths through both mounts."""
        sub = f"{name}-{next(self._names)}"
        (self.export / sub).mkdir()
        return Area(self.export / sub, self.host_a / sub, self.host_b / sub)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="session", name="netshare")
def netshare_fixture() -> Iterator[NetShare]:
    root = Path(tempfile.mkdtemp(prefix="dropfetch-netshare-"))
    up = _run("up", str(root))
    last = (up.stdout.strip().splitlines() or [""])[-1]
    if up.returncode == SKIP_STATUS:
        shutil.rmtree(root, ignore_errors=True)
        reason = last.removeprefix("SKIP ").strip() or "the sshfs test bed is unavailable"
        print(f"\nnetshare tests skipped: {reason}")
        pytest.skip(f"netshare: {reason}")
    if up.returncode != 0 or not last.startswith("OK "):
        _run("down", str(root))
        pytest.fail(f"the sshfs test bed did not come up:\n{up.stdout}\n{up.stderr}")
    try:
        yield NetShare(root=root, export=root / "export", host_a=root / "host-a",
                       host_b=root / "host-b", port=int(last.split()[1]))
    finally:
        down = _run("down", str(root))
        if down.returncode == 0:
            shutil.rmtree(root, ignore_errors=True)
