"""From the inbox to job ids: the watchdog handler's event queue, the mapping of a path
to a job id, and the listing a rescan makes.

The handler runs on watchdog's observer thread and only appends ``(kind, path)`` to a
queue and wakes the watcher's intake thread: it never touches the filesystem or the
worker pool, so a burst of events can neither be lost nor hold the observer up. The
intake thread drains the queue and does every stat, settle check and report.
"""

from __future__ import annotations

import enum
import logging
import os
from collections import deque
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

from dropfetch.jobfile import REQUEST_SUFFIXES, SIDECAR_SUFFIX, split_job_file

__all__ = ["EVENT_TYPES", "Entry", "EventQueue", "Kind", "job_id", "scan", "scan_all"]

logger = logging.getLogger(__name__)


class Kind(enum.Enum):
    """What an event says about a path."""

    READY = "ready"  # renamed in or away, removed: look at it at once
    CHANGED = "changed"  # created or modified: look at it once it has settled
    OPENED = "opened"  # IN_OPEN (inotify only)
    CLOSED = "closed"  # IN_CLOSE_WRITE: ready at once
    CLOSED_NOWRITE = "closed-nowrite"  # IN_CLOSE_NOWRITE


_KINDS: dict[type[FileSystemEvent], Kind] = {
    FileDeletedEvent: Kind.READY,
    FileCreatedEvent: Kind.CHANGED,
    FileModifiedEvent: Kind.CHANGED,
    FileOpenedEvent: Kind.OPENED,
    FileClosedEvent: Kind.CLOSED,
    FileClosedNoWriteEvent: Kind.CLOSED_NOWRITE,
}
# only the events the queue uses: inotify then does not even report the opens, reads
# and closes-without-write of the daemon's own job file reads
EVENT_TYPES: list[type[FileSystemEvent]] = [FileMovedEvent, DirMovedEvent, DirCreatedEvent, *_KINDS]


class Entry(enum.Enum):
    """What an inbox entry is to its job."""

    JOB = "job"  # NAME.url, NAME.webloc, NAME.desktop (any case)
    SIDECAR = "sidecar"  # NAME.status.json
    REQUEST = "request"  # NAME.pause, NAME.retry (dropfetch pause / retry)


Event = tuple[Kind, str]


class EventQueue(FileSystemEventHandler):
    """The watchdog handler: appends ``(kind, path)`` and wakes the intake thread."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._items: deque[Event] = deque()  # appends and pops are thread-safe
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            self._items.append((Kind.READY, src))
            self._items.append((Kind.READY, os.fsdecode(event.dest_path)))
        elif type(event) in _KINDS:
            self._items.append((_KINDS[type(event)], src))
        # a new directory (recursive inboxes) only wakes the intake thread
        self._wake()

    def drain(self) -> list[Event]:
        """The events queued so far, oldest first; a path's repeated CHANGED events
        count once (they are hints: the intake thread stats the path when it looks)."""
        out: list[Event] = []
        changed: set[str] = set()
        for _ in range(len(self._items)):
            kind, path = self._items.popleft()
            if kind is Kind.CHANGED:
                if path in changed:
                    continue
                changed.add(path)
            out.append((kind, path))
        return out


def job_id(inbox: Path, path: str, *, recursive: bool) -> tuple[str, Entry] | None:
    """(id, entry) for a job file, sidecar or request file ``path`` in ``inbox`` ("NAME",
    or "SUB/NAME" one level down when ``recursive``), else None."""
    try:
        parts = Path(path).relative_to(inbox).parts
    except ValueError:
        return None
    if not parts or len(parts) > (2 if recursive else 1):
        return None
    if len(parts) == 2 and parts[0].startswith("."):
        return None
    prefix = f"{parts[0]}/" if len(parts) == 2 else ""
    found = _bare_id(parts[-1])
    return None if found is None else (prefix + found[0], found[1])


def _bare_id(name: str) -> tuple[str, Entry] | None:
    job = split_job_file(name)
    if job is not None:
        return job[0], Entry.JOB
    if name.startswith("."):
        return None  # hidden, and every temporary name
    if name.endswith(SIDECAR_SUFFIX):
        return name[: -len(SIDECAR_SUFFIX)], Entry.SIDECAR
    for suffix in REQUEST_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], Entry.REQUEST
    return None


def scan(inbox: Path, *, recursive: bool) -> tuple[set[str], set[str]]:
    """(job ids, sidecar ids) of what is in ``inbox`` now."""
    jobs, sidecars, _ = scan_all(inbox, recursive=recursive)
    return jobs, sidecars


def scan_all(inbox: Path, *, recursive: bool) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """(job ids, sidecar ids, (job id, path) of each request file) in ``inbox`` now:
    a rescan compares the request files with its last ones (a missed event)."""
    found: dict[Entry, set[str]] = {Entry.JOB: set(), Entry.SIDECAR: set()}
    requests: set[tuple[str, str]] = set()
    for path in _entries(inbox, recursive=recursive):
        hit = job_id(inbox, path, recursive=recursive)
        if hit is None:
            continue
        if hit[1] is Entry.REQUEST:
            requests.add((hit[0], path))
        else:
            found[hit[1]].add(hit[0])
    return found[Entry.JOB], found[Entry.SIDECAR], requests


def _entries(inbox: Path, *, recursive: bool) -> Iterator[str]:
    try:
        with os.scandir(inbox) as it:
            for entry in it:
                yield entry.path
                if (
                    recursive
                    and not entry.name.startswith(".")
                    and entry.is_dir(follow_symlinks=False)
                ):
                    yield from _subdir(entry.path)
    except OSError as exc:
        logger.warning("cannot list the inbox %s: %s", inbox, exc)


def _subdir(path: str) -> Iterator[str]:
    try:
        with os.scandir(path) as sub:
            yield from (e.path for e in sub)
    except OSError:
        return
