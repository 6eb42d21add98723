"""Filesystem helpers: atomic writes, directory fsync, exchange rename, free space, fs
type."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import re
import shutil
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dropfetch.errors import DiskFullError, NotRegularFileError, from_os_error
from dropfetch.names import shown

__all__ = [
    "NETWORK_FS_TYPES",
    "atomic_write",
    "display_name",
    "filesystem_type",
    "fsync_dir",
    "is_abandoned_temp",
    "is_network_fs",
    "is_temporary_name",
    "publish_dir",
    "read_regular",
    "remove_tree",
    "require_free_space",
    "start_writeback",
    "temp_name",
]

# Network and FUSE filesystems: inotify never sees other hosts' writes there.
NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "afs",
        "beegfs",
        "davfs",
        "virtiofs",
        "ocfs2",
        "gfs2",
        "orangefs",
    }
)

_counter = itertools.count()
_HOST = socket.gethostname().replace("/", "_")
TEMP_MARK = ".dftmp."


_MAX_NAME = 255  # bytes of one file name (NAME_MAX)


def temp_name(target: Path) -> Path:
    """A unique temporary name next to ``target``: hidden, with host and pid in it.

    The target's name is cut when the whole would not fit a file name (a long job
    name with a long host name): only host, pid and counter make it unique.
    """
    tail = f"{TEMP_MARK}{_HOST}.{os.getpid()}.{next(_counter)}"
    room = _MAX_NAME - 1 - len(tail.encode("utf-8", "surrogateescape"))
    name = target.name
    if len(name.encode("utf-8", "surrogateescape")) > room:
        name = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore") or "x"
    return target.with_name(f".{name}{tail}")


# what temp_name() makes, and nothing else: ".{target}.dftmp.{host}.{pid}.{n}"
_TEMP_RE = re.compile(r"\.(?P<target>.+)\.dftmp\.(?P<host>.+)\.(?P<pid>[0-9]+)\.[0-9]+", re.DOTALL)


def _parse_temp(name: str) -> tuple[str, int] | None:
    """(host, pid) of a name made by :func:`temp_name`, else None."""
    found = _TEMP_RE.fullmatch(name)
    return None if found is None else (found["host"], int(found["pid"]))


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` has the exact form :func:`temp_name` gives (any host, any pid)."""
    return _parse_temp(name) is not None


def is_abandoned_temp(name: str) -> bool:
    """A temporary name (see :func:`temp_name`) of a process of this machine that is gone.

    Other hosts' temporary files are never abandoned from here: on a shared directory
    they may be in the middle of their write-then-rename.
    """
    found = _parse_temp(name)
    if found is None or found[0] != _HOST or found[1] == os.getpid():
        return False
    try:
        os.kill(found[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def display_name(name: str) -> str:
    """``name`` as it may leave the process (sidecars, status, HTTP, logs, messages):
    valid UTF-8 whatever its bytes. Bytes that are not UTF-8 (held as surrogate
    escapes, as ``os.fsdecode`` and tarfile give them) and C0 controls are written
    ``\\xNN``, as Python's backslashreplace does, the other characters of the
    control-character rule and lone surrogates ``\\uNNNN``; all else is unchanged
    (:func:`dropfetch.names.shown`)."""
    return shown(name)


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a plain file")


def read_regular(path: Path, limit: int) -> bytes:
    """The first ``limit + 1`` bytes (at most) of the regular file ``path``: a result
    longer than ``limit`` means the file is larger than that.

    Anything else (symbolic link, FIFO, socket, device, directory) raises
    :class:`NotRegularFileError` and is never opened: it is looked at with ``lstat``
    first, then opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked again with
    ``fstat`` (it may have been swapped meanwhile). A missing file raises
    ``FileNotFoundError``; other ``OSError``s pass through.
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"{path.name} is {_kind(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symbolic link since the lstat
            raise NotRegularFileError(
                f"{path.name} is a symbolic link, not a regular file"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"{path.name} is {_kind(st.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_open_for_writing(path: Path) -> bool:
    """Whether a process of this host that we may inspect has ``path`` open for writing
    (from ``/proc/PID/fd`` and ``fdinfo``). What inotify cannot tell: an open that
    happened before the watch began. Other users' processes are seen only as root;
    other hosts' never (a network filesystem relies on ``settle_time``)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    target = (st.st_dev, st.st_ino)
    try:
        with os.scandir("/proc") as entries:
            pids = [e.name for e in entries if e.name.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            with os.scandir(f"/proc/{pid}/fd") as fds:
                for fd in fds:
                    try:
                        fst = os.stat(fd.path)
                    except OSError:
                        continue
                    if (fst.st_dev, fst.st_ino) == target and _writes(pid, fd.name):
                        return True
        except OSError:  # gone, or not ours to look at
            continue
    return False


def _writes(pid: str, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    except (OSError, ValueError, IndexError):
        pass
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
                view = view[os.write(fd, view) :]
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


def sync_download(fd: int) -> None:
    """fsync a finished download's file (single stream or segments); an OSError is
    the domain error for "saving the download"."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise from_os_error(exc, "saving the download") from None


# A test hook, not a feature: DROPFETCH_TEST_NO_EXCHANGE=1 makes publish_dir use its
# fallback (as on NFS or sshfs, which have no RENAME_EXCHANGE) on any filesystem.
TEST_NO_EXCHANGE_ENV = "DROPFETCH_TEST_NO_EXCHANGE"


def publish_dir(
    staging: Path,
    target: Path,
    trash: Path,
    *,
    exchange: bool | None = None,
    sync_dir: Callable[[Path], None] = fsync_dir,
) -> None:
    """Move ``staging`` to ``target`` whole; an existing ``target`` is replaced; then
    ``sync_dir`` the outbox directory (the daemon's group commit shares that fsync).

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
        raise FileExistsError(
            errno.EEXIST, "a file, not an output directory, is in the way", str(target)
        )
    if st is not None:
        if exchange and _exchange(staging, target):
            old = staging  # the swap left the old output at the staging path
        else:
            os.rename(target, trash)
            os.rename(staging, target)
            old = trash
        sync_dir(target.parent)
        remove_tree(old)
        return
    os.rename(staging, target)
    sync_dir(target.parent)


def remove_tree(path: Path) -> None:
    """Remove a file, link or directory tree; missing is fine; never follows links.

    Iterative and relative to directory descriptors: any depth works, paths longer than
    PATH_MAX included, with at most two directories open at a time. A directory without
    read, search or write permission for its owner (from an archive) is made
    accessible first. Parts that vanish meanwhile are fine.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    path = Path(path)
    # O_PATH: the parent needs no read permission, as with path-based calls
    parent = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if stat.S_ISDIR(st.st_mode):
            _remove_dir_at(parent, path.name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.name, dir_fd=parent)
    finally:
        os.close(parent)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class _Level:
    """One directory on the way down: its name in its parent, its identity (to check
    the way back up through '..'), and its subdirectories still to remove."""

    name: str
    dev: int
    ino: int
    subdirs: list[str]


def _remove_dir_at(top: int, name: str) -> None:
    fd = _open_dir_at(top, name)
    if fd is None:
        return
    stack = [_new_level(fd, name)]
    try:
        while stack:
            level = stack[-1]
            if level.subdirs:
                sub = level.subdirs.pop()
                child = _open_dir_at(fd, sub)
                if child is not None:
                    os.close(fd)
                    fd = child
                    stack.append(_new_level(fd, sub))
                continue
            stack.pop()
            up = _parent_fd(fd, top, stack)
            os.close(fd)
            fd = up
            if fd == top:
                os.rmdir(level.name, dir_fd=top)  # the tree's own parent is left as it is
            else:
                _rmdir_at(fd, level.name)
    finally:
        if fd != top:
            os.close(fd)


def _new_level(fd: int, name: str) -> _Level:
    """Unlink every non-directory in the directory ``fd``; keep its subdirectories."""
    st = os.fstat(fd)
    with os.scandir(fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    subdirs = []
    for entry, is_dir in entries:
        if is_dir:
            subdirs.append(entry)
        else:
            _unlink_at(fd, entry)
    return _Level(name, st.st_dev, st.st_ino, subdirs)


def _parent_fd(fd: int, top: int, stack: list[_Level]) -> int:
    """The directory above ``fd``: ``top`` at the end, else '..' if it still is the
    directory we came from, else found again by name from ``top`` (it was moved)."""
    if not stack:
        return top
    up = os.open("..", _DIR_FLAGS, dir_fd=fd)
    st = os.fstat(up)
    if (st.st_dev, st.st_ino) == (stack[-1].dev, stack[-1].ino):
        return up
    os.close(up)
    at = top
    for level in stack:
        nxt = os.open(level.name, _DIR_FLAGS, dir_fd=at)
        if at != top:
            os.close(at)
        at = nxt
    return at


def _open_dir_at(parent: int, name: str) -> int | None:
    """Open a subdirectory without following a link; None if it is gone. A link or
    file that took its place is unlinked instead."""
    for attempt in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                _unlink_at(parent, name)
                return None
            if exc.errno not in (errno.EACCES, errno.EPERM) or attempt:
                raise
            _chmod_dir_at(parent, name)
    return None


def _chmod_dir_at(parent: int, name: str) -> None:
    """chmod 0700 a directory we may not read, without following a link: through an
    O_PATH descriptor (fchmod refuses those, /proc/self/fd does not)."""
    fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        os.chmod(f"/proc/self/fd/{fd}", 0o700)
    except FileNotFoundError:  # no /proc: by name (it was a directory a moment ago)
        os.chmod(name, 0o700, dir_fd=parent)
    finally:
        os.close(fd)


def _unlink_at(parent: int, name: str) -> None:
    _retry_writable(parent, lambda: os.unlink(name, dir_fd=parent))


def _rmdir_at(parent: int, name: str) -> None:
    _retry_writable(parent, lambda: os.rmdir(name, dir_fd=parent))


def _retry_writable(parent: int, op: Callable[[], None]) -> None:
    try:
        op()
    except FileNotFoundError:
        return
    except PermissionError:
        os.fchmod(parent, 0o700)  # a directory without write permission for its owner
        try:
            op()
        except FileNotFoundError:
            return


# --- free space ---------------------------------------------------------------------


def require_free_space(
    path: Path, *, keep_free: int, needed: int = 0, shown: str | None = None
) -> None:
    """Raise :class:`DiskFullError` unless the filesystem holding ``path`` has room for
    ``needed`` more bytes with ``keep_free`` bytes (``min_free_space``) still free after
    them; nothing is checked when ``keep_free`` is 0 or less.

    ``shown`` names the download the room is for (the message gives bytes: free, still
    needed, to keep free); without it this is the check before a download starts, on the
    outbox (the message gives MiB, and says the job waits for space). A failure to ask
    the filesystem is an :class:`IOFailureError` (or DiskFullError) from
    :func:`dropfetch.errors.from_os_error`.
    """
    if keep_free <= 0:
        return
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        raise from_os_error(exc, "checking free disk space") from None
    if free - needed >= keep_free:
        return
    if shown is None:
        raise DiskFullError(
            f"only {free // 2**20} MiB free on the outbox's filesystem, below "
            f"min_free_space ({keep_free // 2**20} MiB); waiting for space"
        )
    raise DiskFullError(
        f"not enough free disk space for {shown}: {free} bytes free, "
        f"{needed} more needed, and {keep_free} must stay free "
        "(min_free_space); free some space"
    )


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
                if (
                    real == mount_point
                    or real.startswith(mount_point.rstrip("/") + "/")
                    or mount_point == "/"
                ) and len(mount_point) >= len(best):
                    best, best_type = mount_point, right.split()[0]
        return best_type
    except OSError:
        return "unknown"


def is_network_fs(fstype: str) -> bool:
    return fstype in NETWORK_FS_TYPES or fstype == "fuse" or fstype.startswith("fuse.")
