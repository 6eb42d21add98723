"""The output tree: the staging directory, and a model of everything written into it."""

# This module works on str paths with os-level calls (O_EXCL/O_NOFOLLOW, dir modes, links)
# on purpose: pathlib would hide which calls follow links.
# ruff: noqa: PTH102, PTH118, PTH211

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable

from dropfetch.archive.boundaries import raise_reading, raise_writing, writing
from dropfetch.archive.compression import CHUNK
from dropfetch.archive.members import (
    MAX_COMPONENT_BYTES,
    check_link_target,
    normalise_name,
    resolve_link,
)
from dropfetch.archive.source import Limits
from dropfetch.config import ExtractConfig
from dropfetch.errors import CancelledError, CorruptArchiveError, UnsafeArchiveError
from dropfetch.fsutil import display_name

__all__ = ["Output"]

logger = logging.getLogger(__name__)


def _pathconf(path: str, name: str, default: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):
        return default
    return value if value > 0 else default


class Output:
    """The staging directory, and a model of everything written into it.

    The model is exact because ``dest`` starts empty and only this object writes there:
    a path's parents are checked against it before anything is created.
    """

    def __init__(
        self, root: str, config: ExtractConfig, limits: Limits, cancel: threading.Event | None
    ) -> None:
        self.root = root
        self.config = config
        self.limits = limits
        self.cancel = cancel
        self.dirs: set[str] = {""}
        self.dir_meta: dict[str, tuple[int, float | None]] = {}
        self.files: set[str] = set()
        self.links: dict[str, str] = {}
        self.skipped_links: list[str] = []
        self.skipped: set[str] = set()  # paths of links left out (extract.symlinks: skip)
        self._root_bytes = len(os.fsencode(root))
        self._path_max = _pathconf(root, "PC_PATH_MAX", 4096)
        self._name_max = min(_pathconf(root, "PC_NAME_MAX", 255), MAX_COMPONENT_BYTES)
        self._umask = process_umask()

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _check_fits(self, rel: str) -> None:
        """Refuse a path the filesystem cannot hold under the staging directory, before
        anything of it is made (the kernel would say ENAMETOOLONG half-way)."""
        raw = os.fsencode(rel)
        length = self._root_bytes + 1 + len(raw)
        if length >= self._path_max:
            raise UnsafeArchiveError(
                f"unsafe member '{rel[:200]}...': its path is too long for the filesystem "
                f"({length} bytes once unpacked, the limit is {self._path_max - 1})"
            )
        if any(len(part) > self._name_max for part in raw.split(b"/")):
            raise UnsafeArchiveError(
                f"unsafe member '{rel[:200]}': a name in its path is longer than the "
                f"filesystem allows ({self._name_max} bytes)"
            )

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("extraction cancelled")

    def _make_parents(self, rel: str) -> None:
        """Check that ``rel`` fits, then make its missing parent directories. Walks up
        from the nearest parent: one set lookup per member however deep the tree."""
        self._check_fits(rel)
        missing: list[str] = []
        parent = rel.rpartition("/")[0]
        while parent not in self.dirs:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for parent in reversed(missing):
            if parent in self.files or parent in self.links:
                kind = "file" if parent in self.files else "link"
                raise UnsafeArchiveError(
                    f"unsafe member '{rel}': it would be written under '{parent}', "
                    f"which is a {kind} in the archive"
                )
            with writing(f"creating directory {parent}"):
                os.mkdir(self._path(parent), 0o755)
            self.dirs.add(parent)

    def _free_slot(self, rel: str, kind: str) -> None:
        """Make room for a new member; a file may be replaced, a dir or a link never."""
        if rel in self.links:
            raise UnsafeArchiveError(f"unsafe member '{rel}': it would replace a link")
        if rel in self.dirs:
            raise UnsafeArchiveError(f"unsafe member '{rel}': it would replace a directory")
        if rel in self.files:
            if kind == "directory":
                raise UnsafeArchiveError(
                    f"unsafe member '{rel}': a directory with the name of a file"
                )
            with writing(f"replacing {rel}"):
                os.unlink(self._path(rel))
            self.files.discard(rel)

    def add_dir(self, rel: str | None, mode: int, mtime: float | None) -> None:
        if rel is None:
            return
        if rel not in self.dirs:
            self._make_parents(rel)
            self._free_slot(rel, "directory")
            with writing(f"creating directory {rel}"):
                os.mkdir(self._path(rel), 0o755)
            self.dirs.add(rel)
        self.dir_meta[rel] = ((mode & 0o755) | 0o700, mtime)

    def add_file(
        self,
        rel: str | None,
        mode: int,
        mtime: float | None,
        read: Callable[[int], bytes],
        what: str,
        sparse: tuple[list[tuple[int, int]], int] | None = None,
    ) -> None:
        """Write a regular file from ``read``. With ``sparse`` (data segments as
        (offset, length), and the file's size), ``read`` gives the segments' bytes one
        after the other, and the rest of the file is holes."""
        if rel is None:
            raise UnsafeArchiveError("unsafe member './': a file in place of the output root")
        self._make_parents(rel)
        self._free_slot(rel, "file")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        final = (mode & 0o755) | 0o600
        with writing(f"creating {rel}"):
            fd = os.open(self._path(rel), flags, final)
        self.files.add(rel)
        try:
            if sparse is None:
                self._copy(fd, rel, read, what, None)
            else:
                self._copy_sparse(fd, rel, read, what, sparse)
            if final & self._umask:  # open's mode, less the umask, is not the final one
                with writing(f"writing {rel}"):
                    os.fchmod(fd, final)
            set_mtime(fd, mtime)
        finally:
            os.close(fd)

    def _copy_sparse(
        self,
        fd: int,
        rel: str,
        read: Callable[[int], bytes],
        what: str,
        sparse: tuple[list[tuple[int, int]], int],
    ) -> None:
        """Only the data segments are written, each at its offset; the holes stay holes
        (as GNU tar and bsdtar make them), and the size is set last."""
        segments, size = sparse
        self.limits.holes(size - sum(n for _, n in segments))
        for offset, numbytes in segments:
            if numbytes:
                with writing(f"writing {rel}"):
                    os.lseek(fd, offset, os.SEEK_SET)
                self._copy(fd, rel, read, what, numbytes)
        with writing(f"writing {rel}"):
            os.ftruncate(fd, size)

    def _copy(
        self, fd: int, rel: str, read: Callable[[int], bytes], what: str, count: int | None
    ) -> None:
        """Copy ``count`` bytes (all, for ``None``) from ``read`` to ``fd`` (no context
        manager per chunk: it costs more than a small file's write)."""
        left = count
        while left is None or left > 0:
            self.check_cancel()
            try:
                chunk = read(CHUNK if left is None else min(CHUNK, left))
            except Exception as exc:  # noqa: BLE001 - reading() says what it means
                raise_reading(exc, what)
            if not chunk:
                if left is not None:
                    raise CorruptArchiveError(
                        f"the archive is damaged or incomplete: the data of '{rel}' is cut "
                        "short; download it again or check the source"
                    )
                break
            if left is not None:
                left -= len(chunk)
            self.limits.wrote(len(chunk))
            write_all(fd, chunk, rel)

    def add_hardlink(self, rel: str | None, target: str, name: str) -> None:
        try:
            target_rel = normalise_name(target)
        except UnsafeArchiveError:
            raise UnsafeArchiveError(
                f"unsafe member '{name}': hard link to '{target}', outside the output"
            ) from None
        if rel is not None and target_rel is not None and target_rel not in self.files:
            # a hard link to a symbolic link (`cp -al`, rsnapshot trees): the same link
            # again, as tar and bsdtar make it, and as extract.symlinks allows
            if target_rel in self.links:
                self.add_symlink(rel, self.links[target_rel], name)
                return
            if target_rel in self.skipped:
                self.add_symlink(rel, "", name)  # left out like the link it copies
                return
        if rel is None or target_rel is None or target_rel not in self.files:
            raise UnsafeArchiveError(
                f"unsafe member '{name}': hard link to '{target}', which is not a file "
                "extracted before it from this archive"
            )
        if rel == target_rel:
            return
        self._make_parents(rel)
        self._free_slot(rel, "file")
        with writing(f"linking {rel}"):
            os.link(self._path(target_rel), self._path(rel), follow_symlinks=False)
        self.files.add(rel)

    def add_symlink(self, rel: str | None, target: str, name: str) -> None:
        mode = self.config.symlinks
        if mode == "fail":
            raise UnsafeArchiveError(
                f"unsafe member '{name}': symbolic links are not allowed (extract.symlinks: fail)"
            )
        if mode == "skip":
            self.skipped_links.append(name)
            if rel is not None:
                self.skipped.add(rel)
            return
        if rel is None:
            raise UnsafeArchiveError(f"unsafe member '{name}': a link in place of the root")
        check_link_target(name, target)
        self._make_parents(rel)
        self._free_slot(rel, "link")
        self.links[rel] = target

    def finish(self, label: str) -> None:
        """Make the links (each checked to stay inside), then set the directories' modes
        and times, deepest first."""
        for link in sorted(self.links):
            resolve_link(self.links, link)
        for link, target in sorted(self.links.items()):
            with writing(f"creating link {link}"):
                os.symlink(target, self._path(link))
        prefix = self.root.rstrip("/") + "/"
        for link, target in sorted(self.links.items()):
            real = os.path.realpath(self._path(link))
            if real != self.root and not real.startswith(prefix):
                raise UnsafeArchiveError(f"link {link} -> {target} points outside the output")
        for rel in sorted(self.dir_meta, key=lambda d: d.count("/"), reverse=True):
            mode, mtime = self.dir_meta[rel]
            with writing(f"setting the mode of {rel}"):
                fd = os.open(
                    self._path(rel), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                )
                try:
                    os.fchmod(fd, mode)
                    set_mtime(fd, mtime)
                finally:
                    os.close(fd)
        if self.skipped_links:
            logger.warning(
                "%s: left out %d symbolic links (extract.symlinks: skip): %s",
                label,
                len(self.skipped_links),
                display_name(", ".join(self.skipped_links[:20])),
            )


def write_all(fd: int, chunk: bytes, rel: str) -> None:
    """One ``os.write`` for the whole chunk, more only when the kernel took less."""
    try:
        written = os.write(fd, chunk)
        if written < len(chunk):
            view = memoryview(chunk)[written:]
            while view:
                view = view[os.write(fd, view) :]
    except OSError as exc:
        raise_writing(exc, f"writing {rel}")


def process_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only set it,
    which would race with other threads); every bit set when it cannot be read, so
    that every file gets its ``fchmod``."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


def set_mtime(fd: int, mtime: float | None) -> None:
    if mtime is None:
        return
    with contextlib.suppress(OSError, OverflowError, ValueError):
        os.utime(fd, (mtime, mtime))
