"""Format sniffing and safe extraction into a staging directory (SPEC §8).

Safety does not rest on :mod:`tarfile` or :mod:`zipfile` filters (this Python has known
bypasses of them): every member name, type, link and size is checked by
:mod:`dropfetch.archive` (``members``: names and link targets; ``tar`` and ``zip``: each
member), and files are written by its output tree (``tree``) only, into a tree whose
every directory it created itself. Symbolic links are made last, after every regular
file, so nothing is ever written through a link.
"""

# This module works on str paths with os-level calls on purpose (see archive.tree).
# ruff: noqa: PTH208

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, cast

from dropfetch.archive.boundaries import reading
from dropfetch.archive.compression import CHUNK, decompressor
from dropfetch.archive.formats import ArchiveFormat, single_file_name, sniff
from dropfetch.archive.libarc import LibarchiveCannot, extract_libarchive
from dropfetch.archive.sevenzip import extract_py7zr
from dropfetch.archive.source import Growth, Limits, Source
from dropfetch.archive.tar import extract_tar
from dropfetch.archive.tree import Output
from dropfetch.archive.unar import extract_unar
from dropfetch.archive.zip import check_not_split, extract_zip
from dropfetch.config import ExtractConfig
from dropfetch.errors import from_os_error

__all__ = ["ArchiveFormat", "Growth", "extract", "single_file_name", "sniff"]

logger = logging.getLogger(__name__)


def extract(
    archive: Path,
    dest: Path,
    *,
    fmt: ArchiveFormat,
    config: ExtractConfig,
    single_name: str,
    cancel: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    growth: Growth | None = None,
    passwords: Sequence[str] = (),
) -> list[str]:
    """Extract ``archive`` into the existing empty directory ``dest``.

    With ``growth``, ``archive`` is a file still being downloaded: it is read as it
    grows (tar formats and single compressed files; zip needs its directory at the end).
    ``passwords`` are tried in order on an encrypted archive; none is ever shown.

    Returns the regular files written (links excluded), relative to ``dest``,
    '/'-separated, sorted, as ``os.fsdecode`` names them (bytes that are not UTF-8 are
    surrogate escapes: show them with :func:`dropfetch.fsutil.display_name`). A single
    compressed file is written to ``dest/single_name``.
    Raises :class:`CorruptArchiveError`, :class:`UnsafeArchiveError`,
    :class:`ArchiveLimitsError`, :class:`EncryptedArchiveError`,
    :class:`UnsupportedArchiveError`, :class:`DiskFullError`,
    :class:`IOFailureError` or :class:`CancelledError`; what was written to ``dest``
    before the error is left for the caller to remove.
    """
    root = _check_call(dest, fmt, single_name, growth)
    try:
        f = open(archive, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise from_os_error(exc, "opening the archive") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        source = Source(f, size, cancel, on_progress, growth)
        buffered = io.BufferedReader(source, CHUNK)
        limits = Limits(config, source)
        out = Output(root, config, limits, cancel)
        started = time.monotonic()
        if fmt in (ArchiveFormat.SEVEN_Z, ArchiveFormat.RAR):
            _extract_7z_rar(archive, source, fmt, out, passwords, single_name)
        elif fmt is ArchiveFormat.ZIP:
            check_not_split(f)
            extract_zip(cast(IO[bytes], buffered), out)
        elif fmt.is_archive:
            extract_tar(cast(IO[bytes], buffered), fmt, out)
        else:
            _extract_single(cast(IO[bytes], buffered), fmt, out, single_name)
        out.finish(dest.name)
        source.done()
    logger.debug(
        "%s: extracted %d files, %d bytes in %.1f s",
        dest.name,
        len(out.files),
        limits.written,
        time.monotonic() - started,
    )
    return sorted(out.files)


def _check_call(dest: Path, fmt: ArchiveFormat, single_name: str, growth: Growth | None) -> str:
    """The real path of ``dest``; raises ValueError for a call that is a bug."""
    if fmt is ArchiveFormat.FILE:
        raise ValueError("extract() is never called for a plain file")
    if growth is not None and fmt in (ArchiveFormat.ZIP, ArchiveFormat.SEVEN_Z, ArchiveFormat.RAR):
        raise ValueError(f"a {fmt} cannot be extracted while it grows")
    if not single_name or "/" in single_name or single_name in (".", ".."):
        raise ValueError(f"single_name must be a bare file name, got {single_name!r}")
    root = os.path.realpath(dest)
    if not os.path.isdir(root) or os.listdir(root):
        raise ValueError(f"{dest} must be an existing empty directory")
    return root


def _extract_7z_rar(
    archive: Path,
    source: Source,
    fmt: ArchiveFormat,
    out: Output,
    passwords: Sequence[str],
    single_name: str,
) -> None:
    """libarchive, else the decoder that can (it says so before writing anything)."""
    try:
        extract_libarchive(
            archive, fmt, out, passwords, source=cast(IO[bytes], source), unnamed=single_name
        )
    except LibarchiveCannot as cannot:
        if fmt is ArchiveFormat.RAR:
            extract_unar(archive, out, passwords, cannot)
        else:
            extract_py7zr(archive, out, passwords, cannot)


def _extract_single(raw: IO[bytes], fmt: ArchiveFormat, out: Output, name: str) -> None:
    out.limits.member()
    with reading("opening the compressed file"):
        stream = decompressor(fmt, raw)
    with stream:
        out.add_file(name, 0o644, None, stream.read, "decompressing")
