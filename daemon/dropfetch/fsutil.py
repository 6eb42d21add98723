"""Filesystem helpers: atomic writes, directory fsync, exchange rename, fs type."""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import shutil
import socket
import stat
from pathlib import Path

__all__ = [
    "NETWORK_FS_TYPES",
    "atomic_write",
    "filesystem_type",
    "fsync_dir",
    "is_abandoned_temp",
    "is_network_fs",
    "is_temporary_name",
    "publish_dir",
    "remove_tree",
    "start_writeback",
    "temp_name",
]

# Network and FUSE filesystems: inotify never sees other hosts' writes there.
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "ceph", "glusterfs",
    "lustre", "gpfs", "afs", "beegfs", "davfs", "virtiofs", "ocfs2", "gfs2", "orangefs",
})

_counter = itertools.count()
_HOST = socket.gethostname().replace("/", "_")
TEMP_MARK = ".dftmp."


def temp_name(target: Path) -> Path:
    """A unique temporary name next to ``target``: hidden, with host and pid in it."""
    return target.with_name(f".{target.name}{TEMP_MARK}{_HOST}.{os.getpid()}.{next(_counter)}")


def is_temporary_name(name: str) -> bool:
    return TEMP_MARK in name


def is_abandoned_temp(name: str) -> bool:
    """A temporary name (see :func:`temp_name`) of a process of this machine that is gone.

    Other hosts' temporary files are never abandoned from here: on a shared directory
    they may be in the middle of their write-then-rename.
    """
    _, mark, rest = name.partition(TEMP_MARK)
    if not mark:
        return False
    parts = rest.rsplit(".", 2)
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it is durable; ignored where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, sync: bool = True, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so a reader sees the old or the new file, never a mix.

    Temporary file in the same directory, fsync (``sync``), close (NFS reports errors
    there), ``os.replace``, fsync the directory (``durable``: the rename survives a
    power loss). Readers never see a partial file whatever the flags; they only
    decide what a power loss may take back.
    """
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


# --- publishing ---------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False if unsupported."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages to disk without waiting and without a
    journal commit (Linux ``sync_file_range``): a later fsync has little left to do,
    and, unlike an fdatasync, other files' dirty data is not flushed along with it."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


# A test hook, not a feature: DROPFETCH_TEST_NO_EXCHANGE=1 makes publish_dir use its
# fallback (as on NFS or sshfs, which have no RENAME_EXCHANGE) on any filesystem.
TEST_NO_EXCHANGE_ENV = "DROPFETCH_TEST_NO_EXCHANGE"


def publish_dir(staging: Path, target: Path, trash: Path, *,
                exchange: bool | None = None) -> None:
    """Move ``staging`` to ``target`` whole; an existing ``target`` is replaced.

    The old output is swapped out atomically where the filesystem supports
    RENAME_EXCHANGE (``exchange``: None, unless the test hook says otherwise), else
    renamed aside to ``trash`` (same filesystem) first; the old tree is then removed.
    A reader never sees a mix.

    Fencing (the worker's staging token): ``staging`` and ``trash`` are inside one
    directory that another host may rename away. The first rename of each way has a
    path inside it (the exchange's source; the fallback's destination ``trash``), so
    once that directory is gone nothing here moves ``target``: ENOENT instead.
    """
    if exchange is None:
        exchange = os.environ.get(TEST_NO_EXCHANGE_ENV) != "1"
    try:
        st: os.stat_result | None = target.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        # an output is always a directory: a file there is somebody else's (a kept archive)
        raise FileExistsError(errno.EEXIST, "a file, not an output directory, is in the way",
                              str(target))
    if st is not None:
        if exchange and _exchange(staging, target):
            old = staging  # the swap left the old output at the staging path
        else:
            os.rename(target, trash)
            os.rename(staging, target)
            old = trash
        fsync_dir(target.parent)
        remove_tree(old)
        return
    os.rename(staging, target)
    fsync_dir(target.parent)


def remove_tree(path: Path) -> None:
    """Remove a file, link or directory tree; missing is fine; never follows links."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=False, onerror=_rm_onerror)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _rm_onerror(func: object, path: str, exc_info: object) -> None:
    # a directory without write permission for its owner (from an archive): fix and retry
    try:
        parent = os.path.dirname(path)
        os.chmod(parent, 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


# --- filesystem type ----------------------------------------------------------------

def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/self/mountinfo)."""
    try:
        real = os.path.realpath(path)
        best, best_type = "", "unknown"
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount_point = fields[4].encode().decode("unicode_escape")
                if (real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                        or mount_point == "/") and len(mount_point) >= len(best):
                    best, best_type = mount_point, right.split()[0]
        return best_type
    except OSError:
        return "unknown"


def is_network_fs(fstype: str) -> bool:
    return fstype in NETWORK_FS_TYPES or fstype == "fuse" or fstype.startswith("fuse.")
