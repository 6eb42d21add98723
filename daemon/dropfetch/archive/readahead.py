"""Decompression on its own thread, as ``xz -d | tar -x`` gets for free: a reader thread
fills a bounded queue of chunks that the archive parser takes from (the decompressors
in C release the GIL, so both cores work)."""

from __future__ import annotations

import io
import queue
import threading
from typing import IO, Any

__all__ = ["DEPTH", "ReadAhead"]

DEPTH = 4  # chunks decompressed ahead of the parser
_POLL = 0.5  # how often a reader thread blocked on a full queue looks for a stop


class ReadAhead(io.RawIOBase):
    """The bytes of ``inner``, read ``chunk`` at a time on the thread ``name``.

    An error of ``inner`` (a damaged stream, a cancel seen by the source) is raised to
    the consumer when it reaches it. :meth:`close` stops the thread and joins it: it has
    ended when ``close`` returns (a read of ``inner`` under way is finished first).
    """

    def __init__(self, inner: IO[bytes], chunk: int, name: str) -> None:
        super().__init__()
        self._inner = inner
        self._chunk = chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(DEPTH)
        self._stop = threading.Event()
        self._buf = memoryview(b"")
        self._end: BaseException | None = None  # the error, or None after the last chunk
        self._ended = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._inner.read(self._chunk)
                if not self._put(data) or not data:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
            except queue.Full:
                continue
            return True
        return False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self._buf:
            if self._ended:
                if self._end is not None:
                    raise self._end
                return 0
            item = self._queue.get()
            if isinstance(item, BaseException) or not item:
                self._ended = True
                self._end = item if isinstance(item, BaseException) else None
                return self.readinto(b)
            self._buf = memoryview(item)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if self.closed:
            return
        self._stop.set()
        while self.thread.is_alive():
            try:  # make room for a put under way, then wait for the thread
                self._queue.get_nowait()
            except queue.Empty:
                self.thread.join(_POLL)
        self._buf = memoryview(b"")
        try:
            self._inner.close()
        finally:
            super().close()
