"""Watching the inbox: watchdog events plus periodic rescans (the events only speed
things up; the rescans make correctness independent of them).

The watcher reports job ids ("NAME", or "SUB/NAME" with ``recursive``) to a callback
meaning "look at this job": a job file became ready, changed, or was removed, or a
sidecar is left without its job file. It never decides what to do with a job.

When is a job file ready? Renamed into place: at once. Closed after writing (inotify's
IN_CLOSE_WRITE): at once. Otherwise (created by a move from outside the inbox, or a
link, or seen by a rescan or the polling observer) once unchanged for ``settle_time``.
With inotify, a job file that something has open (IN_OPEN without its close yet) is
never taken by settling or by a rescan: a person typing into ``cat > x.url`` may pause
for minutes. Such a file is taken when closed; if it stays open, it waits (a line in the
log says so once), and a ``touch`` of the file (which closes after writing) takes it.
A writer that opened the file before the watch began sent no IN_OPEN: before a file is
taken by settling, /proc is asked whether a process of this host has it open for
writing (:func:`dropfetch.fsutil.is_open_for_writing`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from dropfetch.config import Config
from dropfetch.fsutil import filesystem_type, is_network_fs, is_open_for_writing
from dropfetch.jobfile import JOB_SUFFIX, SIDECAR_SUFFIX, is_job_file
from dropfetch.lifecycle import Deadline

__all__ = ["Watcher", "choose_observer"]

logger = logging.getLogger(__name__)

Signature = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
# after this long open, the log says once that a job file waits for its writer
OPEN_NOTICE_SECONDS = 60.0


def choose_observer(config: Config) -> tuple[str, str]:
    """("inotify" | "polling", why) for ``config.observer`` and the inbox's filesystem."""
    if config.observer != "auto":
        return config.observer, "set by the observer option"
    fstype = filesystem_type(config.inbox)
    if is_network_fs(fstype):
        return "polling", f"the inbox is on {fstype}, where inotify misses other hosts' writes"
    return "inotify", f"the inbox is on {fstype}, a local filesystem"


_EVENTS = [FileMovedEvent, DirMovedEvent, FileClosedEvent, FileDeletedEvent, FileCreatedEvent,
           FileModifiedEvent, DirCreatedEvent, FileOpenedEvent, FileClosedNoWriteEvent]


class _Handler(FileSystemEventHandler):
    """Filters events and hands paths on; does nothing else (runs on watchdog's thread)."""

    def __init__(self, watcher: Watcher) -> None:
        self._w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            self._w.seen(src, ready=True)
            self._w.seen(os.fsdecode(event.dest_path), ready=True)
        elif isinstance(event, FileOpenedEvent):
            self._w.opened(src)
        elif isinstance(event, FileClosedEvent | FileClosedNoWriteEvent):
            self._w.closed(src, wrote=isinstance(event, FileClosedEvent))
        elif isinstance(event, FileDeletedEvent):
            self._w.seen(src, ready=True)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
            self._w.seen(src, ready=False)
        elif isinstance(event, DirCreatedEvent):
            self._w.wake()


class Watcher:
    """Observer + settle tracking + rescans for one inbox."""

    name = "watcher"

    def __init__(self, config: Config, report: Callable[[str], None]) -> None:
        self.config = config
        self._report = report
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Signature, float]] = {}  # id -> (sig, unchanged since)
        self._known: dict[str, Signature | None] = {}  # last reported signature per id
        # inotify only: job files something has open (opens not closed yet), since when
        self._open: dict[str, tuple[int, float]] = {}
        self._noticed: set[str] = set()  # ids whose long open was logged
        self._observer: InotifyObserver | PollingObserver | None = None
        self._thread: threading.Thread | None = None
        self.kind, self.why = choose_observer(config)
        self.paused = False
        self.last_scan = 0.0
        self.rescans = 0  # completed rescans, paused ones included

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        logger.info("watching %s with the %s observer: %s", self.config.inbox, self.kind, self.why)
        self._start_observer()
        self._thread = threading.Thread(target=self._loop, name="dropfetch-watcher", daemon=True)
        self._thread.start()

    def stop(self, deadline: Deadline) -> bool:
        self._stop.set()
        self._wake.set()
        self._stop_observer()
        return self._thread is None or deadline.join([self._thread])

    def apply(self, config: Config) -> None:
        self.config = config
        self.wake()

    def healthy(self) -> bool:
        observer_ok = self._observer is not None and self._observer.is_alive()
        return (self._thread is not None and self._thread.is_alive()
                and (observer_ok or self.paused))

    def wake(self) -> None:
        self._wake.set()

    def forget(self, job_id: str) -> None:
        """Forget what was reported for ``job_id`` so the next scan reports it again."""
        with self._lock:
            self._known.pop(job_id, None)

    def _start_observer(self) -> None:
        observer: InotifyObserver | PollingObserver
        if self.kind == "polling":
            observer = PollingObserver(timeout=self.config.poll_interval)
        else:
            observer = InotifyObserver(timeout=0.5)
        # only the events the handler uses: inotify then does not even report the
        # opens, reads and closes-without-write of the daemon's own job file reads
        observer.schedule(_Handler(self), str(self.config.inbox), recursive=self.config.recursive,
                          event_filter=_EVENTS)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    # -- events -------------------------------------------------------------------

    def _job_id(self, path: str) -> tuple[str, bool] | None:
        """(id, is_sidecar) for a job file or sidecar path in the inbox, else None."""
        try:
            rel = Path(path).relative_to(self.config.inbox)
        except ValueError:
            return None
        parts = rel.parts
        if not parts or len(parts) > (2 if self.config.recursive else 1):
            return None
        if len(parts) == 2 and parts[0].startswith("."):
            return None
        name = parts[-1]
        prefix = f"{parts[0]}/" if len(parts) == 2 else ""
        if is_job_file(name):
            return prefix + name[: -len(JOB_SUFFIX)], False
        if name.endswith(SIDECAR_SUFFIX) and not name.startswith("."):
            return prefix + name[: -len(SIDECAR_SUFFIX)], True
        return None

    def seen(self, path: str, *, ready: bool) -> None:
        """An event about ``path``: report at once if ``ready`` (renamed, removed, closed
        after writing: reported even if it looks unchanged), else after settling."""
        found = self._job_id(path)
        if found is None:
            return
        job_id, is_sidecar = found
        if is_sidecar:
            # a removed sidecar means "retry" (or a purge finished): look again
            if not os.path.lexists(path):
                self._send(job_id, self._signature(job_id), force=True)
            return
        sig = self._signature(job_id)
        if ready:
            with self._lock:
                self._pending.pop(job_id, None)
                if sig is None:  # removed: whoever had it open has the old file
                    self._open.pop(job_id, None)
            self._send(job_id, sig, force=True)
            return
        with self._lock:
            if sig is not None and self._known.get(job_id) == sig:
                self._pending.pop(job_id, None)
                return
        if sig is None or (self.config.settle_time <= 0 and not self._is_open(job_id)):
            with self._lock:
                self._pending.pop(job_id, None)
            self._send(job_id, sig)
            return
        with self._lock:
            old = self._pending.get(job_id)
            if old is None or old[0] != sig:
                self._pending[job_id] = (sig, time.monotonic())
        self._wake.set()

    def opened(self, path: str) -> None:
        """IN_OPEN of a job file: it is not taken by settling until closed."""
        found = self._job_id(path)
        if found is None or found[1]:
            return
        with self._lock:
            count, since = self._open.get(found[0], (0, time.monotonic()))
            self._open[found[0]] = (count + 1, since)

    def closed(self, path: str, *, wrote: bool) -> None:
        """IN_CLOSE_WRITE (``wrote``) or IN_CLOSE_NOWRITE of a job file. A close after
        writing makes it ready at once; it also clears the open count, so a count left
        wrong by lost events is mended by a ``touch``."""
        found = self._job_id(path)
        if found is None or found[1]:
            return
        job_id = found[0]
        with self._lock:
            count, since = self._open.pop(job_id, (0, 0.0))
            if not wrote and count > 1:
                self._open[job_id] = (count - 1, since)
            still_open = job_id in self._open
            if not still_open:
                self._noticed.discard(job_id)
        if wrote:
            self.seen(path, ready=True)
        elif not still_open:
            self._wake.set()  # a settle that waited for this close may be due

    def _is_open(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._open

    def _signature(self, job_id: str) -> Signature | None:
        try:
            st = os.lstat(self.config.inbox / (job_id + JOB_SUFFIX))  # the entry, not a target
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino

    def _send(self, job_id: str, sig: Signature | None, *, force: bool = False) -> None:
        with self._lock:
            if not force and job_id in self._known and self._known[job_id] == sig:
                return
            self._known[job_id] = sig
        self._report(job_id)

    # -- the loop: settle checks and rescans ---------------------------------------

    def _loop(self) -> None:
        next_scan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_scan:
                self._rescan()
                self.rescans += 1
                # an observable "the daemon has looked": tests wait for it instead of sleeping
                logger.debug("rescan %d done", self.rescans)
                next_scan = now + self.config.rescan_interval
            self._settle()
            with self._lock:
                busy = bool(self._pending)
            tick = min(0.1, self.config.settle_time / 4) if busy else next_scan - now
            self._wake.wait(timeout=max(0.01, min(tick, next_scan - time.monotonic())))
            self._wake.clear()

    def _settle(self) -> None:
        now = time.monotonic()
        with self._lock:
            items = list(self._pending.items())
        for job_id, (sig, since) in items:
            current = self._signature(job_id)
            if current != sig:
                with self._lock:
                    if current is None:
                        self._pending.pop(job_id, None)
                    else:
                        self._pending[job_id] = (current, now)
                if current is None:
                    self._send(job_id, None)
                continue
            if self._is_open(job_id):
                self._notice_open(job_id, now)
                continue  # taken when closed (IN_CLOSE_WRITE), never while open
            if now - since >= self.config.settle_time and self._opened_unseen(job_id, now):
                continue
            if now - since >= self.config.settle_time:
                with self._lock:
                    self._pending.pop(job_id, None)
                self._send(job_id, sig)

    def _opened_unseen(self, job_id: str, now: float) -> bool:
        """inotify: a file opened for writing before the watch began (a writer that was
        already typing when the daemon started) sent no IN_OPEN; ask /proc once before
        taking it, and from then on wait for its IN_CLOSE_WRITE like any other."""
        if self.kind != "inotify" or not is_open_for_writing(
                self.config.inbox / (job_id + JOB_SUFFIX)):
            return False
        with self._lock:
            self._open.setdefault(job_id, (1, now))
        return True

    def _notice_open(self, job_id: str, now: float) -> None:
        with self._lock:
            since = self._open.get(job_id, (0, now))[1]
            if now - since < OPEN_NOTICE_SECONDS or job_id in self._noticed:
                return
            self._noticed.add(job_id)
        logger.info("%s: the job file has been open for %.0f s; it is taken once its writer "
                    "closes it (touch it if nothing is writing it)", job_id, now - since)

    def _rescan(self) -> None:
        inbox = self.config.inbox
        if not inbox.is_dir():
            if not self.paused:
                logger.error("the inbox %s is gone (unmounted share?); pausing until it is back",
                             inbox)
                self.paused = True
                self._stop_observer()
            return
        if self.paused or self._observer is None or not self._observer.is_alive():
            if self.paused:
                logger.warning("the inbox %s is back; resuming", inbox)
            self.paused = False
            self._stop_observer()
            try:
                self._start_observer()
            except OSError as exc:
                logger.error("cannot watch %s (%s); relying on rescans", inbox, exc)
        self.last_scan = time.monotonic()
        jobs: set[str] = set()
        sidecars: set[str] = set()
        for path in self._entries():
            found = self._job_id(path)
            if found is not None:
                (sidecars if found[1] else jobs).add(found[0])
        for job_id in sorted(jobs):
            self.seen(str(inbox / (job_id + JOB_SUFFIX)), ready=False)
        for job_id in sorted(sidecars - jobs):
            self._send(job_id, None)
        # ids reported earlier whose job file and sidecar are both gone: forget them
        with self._lock:
            for job_id in [j for j in self._known if j not in jobs and j not in sidecars]:
                del self._known[job_id]
            for job_id in [j for j in self._open if j not in jobs]:
                del self._open[job_id]

    def _entries(self) -> Iterator[str]:
        try:
            with os.scandir(self.config.inbox) as it:
                for entry in it:
                    yield entry.path
                    if (self.config.recursive and not entry.name.startswith(".")
                            and entry.is_dir(follow_symlinks=False)):
                        try:
                            with os.scandir(entry.path) as sub:
                                yield from (e.path for e in sub)
                        except OSError:
                            continue
        except OSError as exc:
            logger.warning("cannot list the inbox %s: %s", self.config.inbox, exc)
