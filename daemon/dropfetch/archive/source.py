"""The archive being read: its bytes (as they grow while the download runs), progress,
cancellation, and the ``extract.*`` limits on what it unpacks to."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import IO, Any

from dropfetch.config import ExtractConfig
from dropfetch.errors import ArchiveLimitsError, CancelledError, from_os_error

__all__ = ["Growth", "Limits", "Source"]

RATIO_GRACE = 64 * 1024 * 1024  # max_ratio is checked once more than this was written
PROGRESS_STEP = 1024 * 1024


class Growth:
    """Tells a reader of an archive that is still being downloaded when it has grown.

    The downloader calls :meth:`grew` after each write and :meth:`finish` at the end
    (or :meth:`abort`); :func:`extract` with ``growth=`` reads the file as it grows, so
    extraction runs while the download is still going. Bytes that are in the file are
    final (the download only appends); a file that shrinks means the download started
    over, and the extraction is aborted.
    """

    def __init__(self, expected_size: int | None = None) -> None:
        self.expected_size = expected_size
        self._cond = threading.Condition()
        self._size = 0
        self._final = False
        self._aborted: str | None = None

    def grew(self, size: int, expected_size: int | None = None) -> None:
        with self._cond:
            if size < self._size:
                self._aborted = "the download started over"
            self._size = size
            if expected_size is not None:
                self.expected_size = expected_size
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._final = True
            self._cond.notify_all()

    def abort(self, why: str) -> None:
        with self._cond:
            self._aborted = why
            self._cond.notify_all()

    @property
    def aborted(self) -> str | None:
        return self._aborted

    def wait(self, have: int, cancel: threading.Event | None) -> bool:
        """Block until the file is longer than ``have`` bytes (True) or complete (False)."""
        with self._cond:
            while True:
                if self._aborted is not None:
                    raise CancelledError(f"extraction stopped: {self._aborted}")
                if cancel is not None and cancel.is_set():
                    raise CancelledError("extraction cancelled")
                if self._size > have:
                    return True
                if self._final:
                    return False
                self._cond.wait(0.5)


class Source(io.RawIOBase):
    """The archive file: counts bytes read, reports progress, honours cancellation."""

    def __init__(
        self,
        f: IO[bytes],
        size: int,
        cancel: threading.Event | None,
        on_progress: Callable[[int, int], None] | None,
        growth: Growth | None = None,
    ) -> None:
        super().__init__()
        self._f = f
        self._size = size
        self._cancel = cancel
        self._on_progress = on_progress
        self._reported = -PROGRESS_STEP
        self._growth = growth

    @property
    def size(self) -> int:
        """The archive's size: final, or (while it grows) the larger of what is
        announced and what has been read."""
        if self._growth is None:
            return self._size
        return max(self._growth.expected_size or 0, self._f.tell(), 1)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b: Any) -> int:
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError("extraction cancelled")
        try:
            data = self._f.read(len(b))
            while (
                not data
                and self._growth is not None
                and self._growth.wait(self._f.tell(), self._cancel)
            ):
                data = self._f.read(len(b))
        except OSError as exc:
            raise from_os_error(exc, "reading the archive") from exc
        n = len(data)
        b[:n] = data
        self.report()
        return n

    def report(self) -> None:
        if self._on_progress is None:
            return
        pos = self._f.tell()
        if pos - self._reported >= PROGRESS_STEP:
            self._reported = pos
            self._on_progress(min(pos, self.size), self.size)

    def done(self) -> None:
        """The whole archive is consumed (tar's trailing padding may go unread)."""
        if self._on_progress is not None:
            self._on_progress(self.size, self.size)


class Limits:
    """Counts what is really written and seen against ``extract.*``."""

    def __init__(self, config: ExtractConfig, source: Source) -> None:
        self.config = config
        self._source = source
        self.written = 0  # bytes really written
        self.apparent = 0  # and the holes of sparse files
        self.members = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.config.max_files:
            raise ArchiveLimitsError(
                f"the archive has more than {self.config.max_files} members "
                "(extract.max_files); raise the limit if this archive is trusted"
            )

    @property
    def archive_size(self) -> int:
        return max(self._source.size, 1)

    def wrote(self, n: int) -> None:
        self.written += n
        self.apparent += n
        self._check_total()
        if self.written > RATIO_GRACE and (
            self.written / self.archive_size > self.config.max_ratio
        ):
            raise ArchiveLimitsError(
                f"the archive unpacks to more than {self.config.max_ratio:g} times its "
                f"size ({self.archive_size} bytes; extract.max_ratio): a decompression "
                "bomb, or raise the limit if this archive is trusted"
            )

    def holes(self, n: int) -> None:
        """The holes of a sparse file: nothing written (max_ratio ignores them), but a
        copy by a tool that does not keep holes writes them: max_total_size counts them."""
        self.apparent += n
        self._check_total()

    def _check_total(self) -> None:
        if self.apparent > self.config.max_total_size:
            raise ArchiveLimitsError(
                f"the archive unpacks to more than {self.config.max_total_size} bytes "
                "(extract.max_total_size, counting the holes of sparse files); raise the "
                "limit if this archive is trusted"
            )
