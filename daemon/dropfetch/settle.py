"""When a job file is ready to report, and when a job id must be looked at again.

The rules (the watcher's module docstring has the why): a job file renamed into place,
removed, or closed after writing is reported at once; one created or changed otherwise
once unchanged for ``settle_time``; with inotify, never while something has it open
(IN_OPEN without its close yet), and /proc is asked before settling whether a writer
opened it before the watch began. A removed sidecar is reported too (a retry, or a
finished purge). An unchanged file is not reported twice by settling or rescans.

Everything here runs on the watcher's intake thread alone: no locks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from dropfetch.fsutil import is_open_for_writing
from dropfetch.intake import Entry, Kind
from dropfetch.jobfile import SIDECAR_SUFFIX
from dropfetch.jobpaths import find_job_files, job_file

__all__ = ["OPEN_NOTICE_SECONDS", "OpenFiles", "SettleTracker", "Signature"]

logger = logging.getLogger(__name__)

Signature = tuple[int, ...]  # size, mtime_ns, ctime_ns, inode of each job file of an id
# after this long open, the log says once that a job file waits for its writer
OPEN_NOTICE_SECONDS = 60.0


class OpenFiles:
    """inotify only: the job files something has open (opens not closed yet), since when."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[int, float]] = {}  # id -> (count, since)
        self._noticed: set[str] = set()  # ids whose long open was logged

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._open

    def opened(self, job_id: str, now: float) -> None:
        count, since = self._open.get(job_id, (0, now))
        self._open[job_id] = (count + 1, since)

    def assume_open(self, job_id: str, now: float) -> None:
        """A writer seen in /proc, whose IN_OPEN came before the watch."""
        self._open.setdefault(job_id, (1, now))

    def closed(self, job_id: str, *, wrote: bool) -> None:
        """A close after writing clears the count, so a count left wrong by lost events
        is mended by a ``touch``."""
        count, since = self._open.pop(job_id, (0, 0.0))
        if not wrote and count > 1:
            self._open[job_id] = (count - 1, since)
        else:
            self._noticed.discard(job_id)

    def forget(self, job_id: str) -> None:
        """The file was removed: whoever had it open has the old one."""
        self._open.pop(job_id, None)
        self._noticed.discard(job_id)

    def keep_only(self, job_ids: set[str]) -> None:
        for job_id in [j for j in self._open if j not in job_ids]:
            self.forget(job_id)

    def notice(self, job_id: str, now: float) -> float | None:
        """Seconds it has been open, the first time that is OPEN_NOTICE_SECONDS or more;
        else None."""
        since = self._open.get(job_id, (0, now))[1]
        if now - since < OPEN_NOTICE_SECONDS or job_id in self._noticed:
            return None
        self._noticed.add(job_id)
        return now - since


class SettleTracker:
    """Turns what the intake thread learns about job ids into calls of ``report``."""

    def __init__(
        self, inbox: Path, report: Callable[[str], None], *, settle_time: float, watch_opens: bool
    ) -> None:
        self.inbox = inbox
        self.settle_time = settle_time  # the watcher's apply() may change it
        self._report = report
        self._watch_opens = watch_opens  # inotify: opens are seen, /proc is asked
        self._pending: dict[str, tuple[Signature, float]] = {}  # id -> (sig, unchanged since)
        self._known: dict[str, Signature | None] = {}  # last reported signature per id
        self._requests: set[tuple[str, str]] = set()  # request files of the last rescan
        self.open_files = OpenFiles()

    def busy(self) -> bool:
        """Whether some job file is waiting to settle."""
        return bool(self._pending)

    def take(self, kind: Kind, job_id: str, *, entry: Entry = Entry.JOB) -> None:
        """An event about ``job_id``'s job file (or its sidecar or a request file)."""
        if entry is Entry.REQUEST:
            if kind in (Kind.READY, Kind.CHANGED):
                self.request_changed(job_id)
        elif entry is Entry.SIDECAR:
            if kind in (Kind.READY, Kind.CHANGED):
                self.sidecar_changed(job_id)
        elif kind is Kind.READY:
            self.ready(job_id)
        elif kind is Kind.CHANGED:
            self.changed(job_id)
        elif kind is Kind.OPENED:
            self.open_files.opened(job_id, time.monotonic())
        else:
            self.open_files.closed(job_id, wrote=kind is Kind.CLOSED)
            if kind is Kind.CLOSED:
                self.ready(job_id)

    def ready(self, job_id: str) -> None:
        """Renamed, removed, or closed after writing: reported at once, even if it looks
        unchanged."""
        sig = self._signature(job_id)
        self._pending.pop(job_id, None)
        if sig is None:
            self.open_files.forget(job_id)
        self._send(job_id, sig, force=True)

    def changed(self, job_id: str) -> None:
        """Created or changed (or seen by a rescan): reported once settled."""
        sig = self._signature(job_id)
        if sig is not None and self._known.get(job_id) == sig:
            self._pending.pop(job_id, None)
            return
        if sig is None or (self.settle_time <= 0 and job_id not in self.open_files):
            self._pending.pop(job_id, None)
            self._send(job_id, sig)
            return
        old = self._pending.get(job_id)
        if old is None or old[0] != sig:
            self._pending[job_id] = (sig, time.monotonic())

    def request_changed(self, job_id: str) -> None:
        """A pause, resume or retry request: look at the job at once, unless its job
        file is still settling (its run sees the request when it is reported)."""
        if job_id not in self._pending and job_id not in self.open_files:
            self._send(job_id, self._signature(job_id), force=True)

    def sidecar_changed(self, job_id: str) -> None:
        """A removed sidecar means "retry" (or a purge finished): look again."""
        if not os.path.lexists(self.inbox / (job_id + SIDECAR_SUFFIX)):
            self._send(job_id, self._signature(job_id), force=True)

    def scanned(
        self, jobs: set[str], sidecars: set[str], requests: set[tuple[str, str]] | None = None
    ) -> None:
        """What a rescan found: every job file settles; a sidecar without its job file
        is reported, and so is a job whose request files (``(id, path)``) differ from
        the last rescan's (an event missed); ids whose job file and sidecar are both
        gone are forgotten."""
        for job_id in sorted(jobs):
            self.changed(job_id)
        for job_id in sorted(sidecars - jobs):
            self._send(job_id, None)
        if requests is not None:
            for job_id in sorted({r[0] for r in requests ^ self._requests}):
                self.request_changed(job_id)
            self._requests = requests
        for job_id in [j for j in self._known if j not in jobs and j not in sidecars]:
            del self._known[job_id]
        self.open_files.keep_only(jobs)

    def settle(self) -> None:
        """Report what has been unchanged for ``settle_time`` and is not open."""
        now = time.monotonic()
        for job_id, (sig, since) in list(self._pending.items()):
            current = self._signature(job_id)
            if current != sig:
                self._changed_meanwhile(job_id, current, now)
            elif job_id in self.open_files:
                self._notice_open(job_id, now)  # taken when closed, never while open
            elif now - since >= self.settle_time and not self._opened_unseen(job_id, now):
                del self._pending[job_id]
                self._send(job_id, sig)

    def _changed_meanwhile(self, job_id: str, current: Signature | None, now: float) -> None:
        if current is None:
            del self._pending[job_id]
            self._send(job_id, None)
        else:
            self._pending[job_id] = (current, now)

    def _opened_unseen(self, job_id: str, now: float) -> bool:
        """inotify: a file opened for writing before the watch began (a writer that was
        already typing when the daemon started) sent no IN_OPEN; ask /proc once before
        taking it, and from then on wait for its IN_CLOSE_WRITE like any other."""
        if not self._watch_opens or not is_open_for_writing(self._job_path(job_id)):
            return False
        self.open_files.assume_open(job_id, now)
        return True

    def _notice_open(self, job_id: str, now: float) -> None:
        seconds = self.open_files.notice(job_id, now)
        if seconds is not None:
            logger.info(
                "%s: the job file has been open for %.0f s; it is taken once its "
                "writer closes it (touch it if nothing is writing it)",
                job_id,
                seconds,
            )

    def _job_path(self, job_id: str) -> Path:
        return job_file(self.inbox, job_id)

    def _signature(self, job_id: str) -> Signature | None:
        """Size, times and inode of each of the job's files (``find_job_files``: a
        second one, a name conflict, is a change too)."""
        sig: list[int] = []
        for path in find_job_files(self.inbox, job_id):
            try:
                st = os.lstat(path)  # the entry, not a target
            except OSError:
                continue
            sig += (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        return tuple(sig) or None

    def _send(self, job_id: str, sig: Signature | None, *, force: bool = False) -> None:
        if not force and job_id in self._known and self._known[job_id] == sig:
            return
        self._known[job_id] = sig
        try:
            self._report(job_id)
        except Exception:
            # a bug on the other side must not end the intake thread: the next rescan
            # reports the job again
            logger.exception("%s: handing the job on failed", job_id)
            self._known.pop(job_id, None)
