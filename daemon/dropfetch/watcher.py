"""Watching the inbox: watchdog events plus periodic rescans (the events only speed
things up; the rescans make correctness independent of them).

The watcher reports job ids ("NAME", or "SUB/NAME" with ``recursive``) to a callback
meaning "look at this job": a job file became ready, changed, or was removed, or a
sidecar is left without its job file. It never decides what to do with a job.
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
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from dropfetch.config import Config
from dropfetch.fsutil import filesystem_type, is_network_fs
from dropfetch.jobfile import JOB_SUFFIX, SIDECAR_SUFFIX, is_job_file

__all__ = ["Watcher", "choose_observer"]

logger = logging.getLogger(__name__)

Signature = tuple[int, int, int]  # size, mtime_ns, inode


def choose_observer(config: Config) -> tuple[str, str]:
    """("inotify" | "polling", why) for ``config.observer`` and the inbox's filesystem."""
    if config.observer != "auto":
        return config.observer, "set by the observer option"
    fstype = filesystem_type(config.inbox)
    if is_network_fs(fstype):
        return "polling", f"the inbox is on {fstype}, where inotify misses other hosts' writes"
    return "inotify", f"the inbox is on {fstype}, a local filesystem"


_EVENTS = [FileMovedEvent, DirMovedEvent, FileClosedEvent, FileDeletedEvent, FileCreatedEvent,
           FileModifiedEvent, DirCreatedEvent]


class _Handler(FileSystemEventHandler):
    """Filters events and hands paths on; does nothing else (runs on watchdog's thread)."""

    def __init__(self, watcher: Watcher) -> None:
        self._w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            self._w.seen(os.fsdecode(event.src_path), ready=True)
            self._w.seen(os.fsdecode(event.dest_path), ready=True)
        elif isinstance(event, FileClosedEvent | FileDeletedEvent):
            self._w.seen(os.fsdecode(event.src_path), ready=True)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
            self._w.seen(os.fsdecode(event.src_path), ready=False)
        elif isinstance(event, DirCreatedEvent):
            self._w.wake()


class Watcher:
    """Observer + settle tracking + rescans for one inbox."""

    def __init__(self, config: Config, report: Callable[[str], None]) -> None:
        self.config = config
        self._report = report
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Signature, float]] = {}  # id -> (sig, unchanged since)
        self._known: dict[str, Signature | None] = {}  # last reported signature per id
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

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._stop_observer()
        if self._thread is not None:
            self._thread.join(timeout=5)

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
        """An event about ``path``: report at once if ``ready``, else after settling."""
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
        with self._lock:
            if sig is not None and self._known.get(job_id) == sig:
                self._pending.pop(job_id, None)
                return
        if ready or sig is None or self.config.settle_time <= 0:
            with self._lock:
                self._pending.pop(job_id, None)
            self._send(job_id, sig)
            return
        with self._lock:
            old = self._pending.get(job_id)
            if old is None or old[0] != sig:
                self._pending[job_id] = (sig, time.monotonic())
        self._wake.set()

    def _signature(self, job_id: str) -> Signature | None:
        try:
            st = os.stat(self.config.inbox / (job_id + JOB_SUFFIX))
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns, st.st_ino

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
            if now - since >= self.config.settle_time:
                with self._lock:
                    self._pending.pop(job_id, None)
                self._send(job_id, sig)

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
