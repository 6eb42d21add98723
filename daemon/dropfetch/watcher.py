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

Threads: watchdog's observer thread only queues events (:mod:`dropfetch.intake`); the
watcher's intake thread drains them and does every stat, settle check
(:mod:`dropfetch.settle`), rescan and report. When the inbox goes away (an unmounted
share) the watcher pauses and resumes once it is back.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from dropfetch.config import Config
from dropfetch.fsutil import filesystem_type, is_network_fs
from dropfetch.inboxobserver import inbox_observer
from dropfetch.intake import EVENT_TYPES, EventQueue, job_id, scan_all
from dropfetch.lifecycle import Deadline
from dropfetch.settle import SettleTracker

__all__ = ["Watcher", "choose_observer"]

logger = logging.getLogger(__name__)

Observer = InotifyObserver | PollingObserver
OBSERVER_JOIN = 5.0  # seconds, for an observer being replaced


def choose_observer(config: Config) -> tuple[str, str]:
    """("inotify" | "polling", why) for ``config.observer`` and the inbox's filesystem."""
    if config.observer != "auto":
        return config.observer, "set by the observer option"
    fstype = filesystem_type(config.inbox)
    if is_network_fs(fstype):
        return "polling", f"the inbox is on {fstype}, where inotify misses other hosts' writes"
    return "inotify", f"the inbox is on {fstype}, a local filesystem"


class Watcher:
    """The component: the observer, the intake thread, rescans, pause and resume."""

    name = "watcher"

    def __init__(self, config: Config, report: Callable[[str], None]) -> None:
        self.config = config  # changed by the intake thread only
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._events = EventQueue(self._wake.set)
        self.kind, self.why = choose_observer(config)
        self._tracker = SettleTracker(
            config.inbox, report, settle_time=config.settle_time, watch_opens=self.kind == "inotify"
        )
        self._observer: Observer | None = None
        self._thread: threading.Thread | None = None
        self._new_config: Config | None = None  # from apply(), for the intake thread
        self._scan_started = 0.0
        self._next_scan = 0.0  # the first rescan comes at once
        self.paused = False
        self.rescans = 0  # completed rescans, paused ones included

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        logger.info("watching %s with the %s observer: %s", self.config.inbox, self.kind, self.why)
        self._start_observer()
        self._thread = threading.Thread(target=self._loop, name="dropfetch-watcher", daemon=True)
        self._thread.start()

    def stop(self, deadline: Deadline) -> bool:
        """The intake thread first, then the observer (the intake thread may restart it
        until it has ended); a stuck intake thread leaves both behind."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and not deadline.join([self._thread]):
            return False
        return self._stop_observer(deadline.left())

    def apply(self, config: Config) -> None:
        """SIGHUP: ``settle_time``, ``rescan_interval`` and ``poll_interval`` take effect
        (on the intake thread); ``inbox``, ``recursive`` and ``observer`` need a restart
        and keep their old values."""
        self._new_config = config
        self._wake.set()

    def healthy(self) -> bool:
        observer = self._observer
        observer_ok = observer is not None and observer.is_alive()
        thread = self._thread
        return thread is not None and thread.is_alive() and (observer_ok or self.paused)

    @property
    def observer(self) -> Observer | None:
        """The running observer (replaced on resume or a new ``poll_interval``)."""
        return self._observer

    def _start_observer(self) -> None:
        observer: Observer
        if self.kind == "polling":
            observer = PollingObserver(timeout=self.config.poll_interval)
        else:
            observer = inbox_observer(timeout=0.5)
        observer.schedule(
            self._events,
            str(self.config.inbox),
            recursive=self.config.recursive,
            event_filter=EVENT_TYPES,
        )
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _stop_observer(self, timeout: float = OBSERVER_JOIN) -> bool:
        """Stop the observer; True if it ended within ``timeout``."""
        observer, self._observer = self._observer, None
        if observer is None:
            return True
        observer.stop()
        observer.join(timeout=timeout)
        return not observer.is_alive()

    def _restart_observer(self) -> None:
        self._stop_observer()
        try:
            self._start_observer()
        except OSError as exc:
            logger.error("cannot watch %s (%s); relying on rescans", self.config.inbox, exc)

    # -- the intake thread ---------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before draining: an event queued from now on wakes us
            self._take_config()
            for kind, path in self._events.drain():
                found = job_id(self.config.inbox, path, recursive=self.config.recursive)
                if found is not None:
                    self._tracker.take(kind, found[0], entry=found[1])
            now = time.monotonic()
            if now >= self._next_scan:
                self._scan(now)
            self._tracker.settle()
            self._wake.wait(timeout=self._tick())

    def _tick(self) -> float:
        until_scan = self._next_scan - time.monotonic()
        if self._tracker.busy():
            return max(0.01, min(0.1, self.config.settle_time / 4, until_scan))
        return max(0.01, until_scan)

    def _take_config(self) -> None:
        new, self._new_config = self._new_config, None
        if new is None:
            return
        old = self.config
        self.config = dataclasses.replace(
            new, inbox=old.inbox, recursive=old.recursive, observer=old.observer
        )
        self._tracker.settle_time = new.settle_time
        # from the last rescan with the new interval, not after the old one expires
        self._next_scan = self._scan_started + new.rescan_interval
        if self.kind == "polling" and new.poll_interval != old.poll_interval and not self.paused:
            logger.info("polling %s every %s s now", old.inbox, new.poll_interval)
            self._restart_observer()
            self._next_scan = 0.0  # a rescan covers what changed while no observer ran

    def _scan(self, now: float) -> None:
        self._scan_started = now
        if self._inbox_present():
            self._tracker.scanned(*scan_all(self.config.inbox, recursive=self.config.recursive))
        self.rescans += 1
        # an observable "the daemon has looked": tests wait for it instead of sleeping
        logger.debug("rescan %d done", self.rescans)
        self._next_scan = now + self.config.rescan_interval

    def _inbox_present(self) -> bool:
        """Pause (stop the observer) when the inbox is gone; resume when it is back. A
        dead observer is restarted."""
        inbox = self.config.inbox
        if not inbox.is_dir():
            if not self.paused:
                logger.error(
                    "the inbox %s is gone (unmounted share?); pausing until it is back", inbox
                )
                self.paused = True
                self._stop_observer()
            return False
        if self.paused or self._observer is None or not self._observer.is_alive():
            if self.paused:
                logger.warning("the inbox %s is back; resuming", inbox)
            self.paused = False
            self._restart_observer()
        return True
