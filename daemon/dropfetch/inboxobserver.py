"""The inotify observer of the inbox, without the daemon's own sidecar writes.

Every sidecar write is a temporary file (created, opened, written, closed) renamed onto
``NAME.status.json``: six inotify events, each of which watchdog carries through three
threads (its inotify reader, the emitter, the observer) before the handler sees it, and
the intake thread then looks at it once more. Of all that only a sidecar that goes away
means something (``settle.SettleTracker.sidecar_changed``: removed or renamed away).

watchdog's own filters come too late or cannot say it: ``schedule(event_filter=...)``
picks event classes (the inotify mask, already narrowed by ``intake.EVENT_TYPES``), not
names; a pattern handler's ignore patterns are checked on the observer thread, after
the other two. So the inbox's watch group drops those events where watchdog receives
them from the kernel (:func:`own_write`, pure), before anything else is built for them.
Should watchdog's internals change, :func:`inbox_observer` falls back to its plain
inotify observer (every event gets through, as before); ``tests/test_watcher_units.py``
checks that this one is in use.
"""

from __future__ import annotations

import logging
import os

from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyEvent

from dropfetch.fsutil import TEMP_MARK

__all__ = ["inbox_observer", "own_write"]

logger = logging.getLogger(__name__)

_SIDECAR = b".status.json"
_SIDECAR_TEMP = _SIDECAR + TEMP_MARK.encode()  # ".NAME.status.json.dftmp.HOST.PID.N"
_IN_MOVED_FROM = 0x40
_IN_DELETE = 0x200
_GONE = _IN_MOVED_FROM | _IN_DELETE


def own_write(name: bytes, mask: int) -> bool:
    """Whether an inotify event (entry ``name``, event ``mask``) is one the intake can do
    without: anything about a sidecar's temporary file, and about a sidecar anything
    but its removal or a rename away."""
    if name.endswith(_SIDECAR):
        return not mask & _GONE
    return name.startswith(b".") and _SIDECAR_TEMP in name


class _Group(InotifyWatchGroup):
    """The inbox's watch group: drops :func:`own_write` events as they arrive."""

    def on_event(self, event: InotifyEvent) -> None:
        if not own_write(event.name, event.mask):
            super().on_event(event)


class _Emitter(InotifyEmitter):
    """watchdog's inotify emitter with the inbox's watch group."""

    def on_thread_start(self) -> None:
        try:
            self._inotify = _Group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )
        except (AttributeError, TypeError):  # another watchdog: its own group, every event
            logger.info("this watchdog's watch group is not the one expected; unfiltered")
            super().on_thread_start()


def inbox_observer(*, timeout: float) -> InotifyObserver:
    """watchdog's inotify observer whose watches drop :func:`own_write` events; the
    plain one if this watchdog is not built the way ``_Emitter`` expects."""
    observer = InotifyObserver(timeout=timeout)
    if getattr(observer, "_emitter_class", None) is InotifyEmitter and callable(
        getattr(InotifyWatchGroup, "on_event", None)
    ):
        observer._emitter_class = _Emitter  # noqa: SLF001 - see the module's docstring
    else:
        logger.info("this watchdog is not the one expected; the inbox sees every event")
    return observer
