"""The shared-filesystem test bed: one export directory mounted twice over sshfs.

``netshare`` (session scope) yields a :class:`NetShare`: one export directory on the
local disk, mounted twice as ``host_a`` and ``host_b``, so two "hosts" see one directory
through a real network filesystem (and a third can use the export directly). Each test
takes a fresh subdirectory with :meth:`NetShare.area`.

No sshd, no port, no keys, no service: each mount is an ``sshfs -o passive`` process
whose stdin and stdout are cross-connected by two pipes to a ``sftp-server`` process
(Debian ``openssh-sftp-server``), the program sshd would run for the sftp subsystem.
``make test`` installs sshfs, openssh-sftp-server and fuse3 (``make test-deps``); where
they or FUSE are missing, every ``netshare`` test is skipped with the reason, printed in
pytest's short summary. The bed is always taken down (both mounts unmounted, all four
processes ended), whatever the tests did.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")
# Caching like an NFS client's at its strictest: opening a file sees its current size
# and content (NFS's close-to-open consistency). sshfs is path based and does not
# revalidate on open; with FUSE's default attr_timeout=1 a reader could see another
# host's freshly replaced file cut at the old size. dir_cache=no: sshfs's own 20 s
# directory cache would hide the other mount's new files far longer than NFS does.
SSHFS_OPTIONS = "passive,dir_cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0"
MOUNT_WAIT = 60.0  # seconds for a mount to appear (a loaded machine is slow, never this slow)


class BedUnavailable(Exception):
    """The bed cannot be had on this machine (the message says why and what to do)."""


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
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def area(self, name: str) -> Area:
        """A new, empty directory in the export, with its paths through both mounts."""
        sub = f"{name}-{next(self._names)}"
        (self.export / sub).mkdir()
        return Area(self.export / sub, self.host_a / sub, self.host_b / sub)


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        return any(line.split()[1:2] == [str(path)] for line in f)


def missing_requirements() -> str | None:
    """Why the bed cannot be had here, or None."""
    if not Path("/dev/fuse").exists():
        return "FUSE is unavailable here: /dev/fuse does not exist"
    with open("/proc/filesystems", encoding="utf-8") as f:
        if not any(line.split()[-1:] == ["fuse"] for line in f):
            return "FUSE is unavailable here: the kernel has no fuse filesystem"
    missing = [
        pkg
        for pkg, ok in (
            ("sshfs", shutil.which("sshfs")),
            ("openssh-sftp-server", os.access(SFTP_SERVER, os.X_OK)),
            ("fuse3", _fusermount()),
        )
        if not ok
    ]
    if missing:
        return f"missing {', '.join(missing)}: `make test-deps` installs them"
    return None


def _fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


class _Mount:
    """One sshfs client talking sftp over two pipes to its own sftp-server."""

    def __init__(self, export: Path, mountpoint: Path, log: Path) -> None:
        self.mountpoint = mountpoint
        self._log = open(log, "ab")  # noqa: SIM115 - closed in close()
        to_server_r, to_server_w = os.pipe()
        to_client_r, to_client_w = os.pipe()
        try:
            self.server = subprocess.Popen(
                [str(SFTP_SERVER)],
                stdin=to_server_r,
                stdout=to_client_w,
                stderr=self._log,
                cwd=export,
            )
            self.client = subprocess.Popen(
                ["sshfs", "-f", "-o", SSHFS_OPTIONS, f":{export}", str(mountpoint)],
                stdin=to_client_r,
                stdout=to_server_w,
                stderr=self._log,
            )
        finally:
            # the children hold their ends; once one exits the other sees EOF
            for fd in (to_server_r, to_server_w, to_client_r, to_client_w):
                os.close(fd)

    def wait_mounted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not is_mounted(self.mountpoint):
            if self.client.poll() is not None:
                raise RuntimeError(f"sshfs exited ({self.client.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshfs did not mount {self.mountpoint} within {timeout} s")
            time.sleep(0.02)

    def close(self) -> None:
        """Unmount (lazily if busy), then end both processes; never raises."""
        tool = _fusermount()
        if tool and is_mounted(self.mountpoint):
            done = subprocess.run(
                [tool, "-u", str(self.mountpoint)], capture_output=True, check=False, timeout=60
            )
            if done.returncode != 0 and is_mounted(self.mountpoint):
                subprocess.run(
                    [tool, "-uz", str(self.mountpoint)],
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
        for proc in (self.client, self.server):
            try:
                proc.wait(10)  # sshfs exits once unmounted, sftp-server on EOF
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._log.close()

    def pids(self) -> list[int]:
        return [self.client.pid, self.server.pid]


@contextlib.contextmanager
def share_bed(root: Path) -> Iterator[tuple[NetShare, list[int]]]:
    """Bring the bed up in ``root`` (export, host-a, host-b); always take it down.

    Yields the share and the pids of its processes. Raises :class:`BedUnavailable`
    where the bed cannot be had here."""
    why = missing_requirements()
    if why:
        raise BedUnavailable(why)
    share = NetShare(
        root=root, export=root / "export", host_a=root / "host-a", host_b=root / "host-b"
    )
    for d in (share.export, share.host_a, share.host_b):
        d.mkdir(parents=True, exist_ok=True)
    mounts: list[_Mount] = []
    try:
        for mountpoint in (share.host_a, share.host_b):
            log = root / f"sshfs-{mountpoint.name}.log"
            mount = _Mount(share.export, mountpoint, log)
            mounts.append(mount)
            try:
                mount.wait_mounted(MOUNT_WAIT)
            except RuntimeError as exc:
                text = log.read_text(errors="replace")[-300:]
                if any(
                    w in text for w in ("/dev/fuse", "fuse device", "not permitted", "fusermount")
                ):
                    raise BedUnavailable(f"cannot mount FUSE here: {text.strip()}") from exc
                raise RuntimeError(f"{exc}: {text}") from exc
        yield share, [pid for m in mounts for pid in m.pids()]
    finally:
        for mount in reversed(mounts):
            mount.close()


@pytest.fixture(scope="session", name="netshare")
def netshare_fixture() -> Iterator[NetShare]:
    root = Path(tempfile.mkdtemp(prefix="dropfetch-netshare-"))
    try:
        with share_bed(root) as (share, _pids):
            yield share
    except BedUnavailable as exc:
        print(f"\nnetshare tests skipped: {exc}")
        pytest.skip(f"netshare: {exc}")
    finally:
        if not (is_mounted(root / "host-a") or is_mounted(root / "host-b")):
            shutil.rmtree(root, ignore_errors=True)
