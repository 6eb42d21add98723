"""Extraction while downloading: a tar archive is unpacked from the growing partial file."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from dropfetch.config import ExtractConfig
from dropfetch.download import Transfer
from dropfetch.extract import ArchiveFormat, Growth, extract, sniff
from dropfetch.fsutil import remove_tree

__all__ = ["TarStream"]


_STREAMABLE = frozenset(
    {
        ArchiveFormat.TAR,
        ArchiveFormat.TAR_GZ,
        ArchiveFormat.TAR_BZ2,
        ArchiveFormat.TAR_XZ,
        ArchiveFormat.TAR_ZST,
    }
)
_SNIFF_AT = 64 * 1024  # bytes of the download needed to recognise a tar stream


class TarStream:
    """Extracts a tar archive in a thread while it is still being downloaded, so a job
    costs about max(download, extract) instead of their sum.

    It reads the growing partial file (resumed bytes first, then what arrives). If the
    download starts over (a 200 instead of a 206, a changed file), what it extracted is
    discarded and the complete file is extracted again afterwards. The sha256 check
    still gates the publish: the caller verifies the download before using the result.
    """

    def __init__(
        self,
        partial: Path,
        staging: Path,
        config: ExtractConfig,
        cancel: threading.Event,
        on_progress: Callable[[int, int], None],
    ) -> None:
        self.partial = partial
        self.staging = staging
        self.config = config
        self.cancel = cancel
        self.on_progress = on_progress
        try:
            self.start_size = partial.stat().st_size
        except FileNotFoundError:
            self.start_size = 0
        self.growth = Growth()
        self.growth.grew(self.start_size)
        self.fmt: ArchiveFormat | None = None
        self.files: list[str] = []
        self.error: BaseException | None = None
        self._last = self.start_size
        self._thread: threading.Thread | None = None

    def feed(self, t: Transfer) -> None:
        """From the download's progress callback."""
        if t.resumed_from < self.start_size or t.bytes_done < self._last:
            self.growth.abort("the download started over")
        self._last = t.bytes_done
        self.growth.grew(t.bytes_done, t.bytes_total)
        if self.fmt is None and t.bytes_done >= _SNIFF_AT and self.growth.aborted is None:
            self.fmt = sniff(self.partial)
            if self.fmt in _STREAMABLE:
                self._thread = threading.Thread(
                    target=self._run,
                    args=(self.fmt,),
                    daemon=True,
                    name=f"{threading.current_thread().name}-x",
                )
                self._thread.start()

    def _run(self, fmt: ArchiveFormat) -> None:
        try:
            self.files = extract(
                self.partial,
                self.staging,
                fmt=fmt,
                config=self.config,
                single_name="archive",
                cancel=self.cancel,
                on_progress=self.on_progress,
                growth=self.growth,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the worker thread
            self.error = exc

    def stop(self, why: str) -> None:
        """The download failed or was cancelled: end the extraction thread."""
        self.growth.abort(why)
        if self._thread is not None:
            self._thread.join()

    def result(self, fmt: ArchiveFormat) -> list[str] | None:
        """After a complete download: the streamed files, or None to extract afresh."""
        self.growth.finish()
        if self._thread is None:
            return None
        self._thread.join()
        if self.growth.aborted is not None or fmt is not self.fmt:
            remove_tree(self.staging)
            self.staging.mkdir(mode=0o755)
            return None
        if self.error is not None:
            raise self.error
        return self.files
