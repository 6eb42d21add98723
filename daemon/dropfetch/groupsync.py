"""Group commit: one fsync of a directory for the renames of many jobs in it.

A final status (and a publish) is durable once the directory holding its rename has
been fsynced. Workers that finish at the same time share that fsync: a caller returns
once an fsync of the directory that *began after its call* has ended, so its rename is
covered; the callers that arrive while one fsync runs are all covered by the next one.
Nothing waits on purpose (no timer): the batch is whatever arrived during the fsync
before, which is when the work of many jobs piles up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dropfetch.fsutil import fsync_dir

__all__ = ["GROUP", "GroupSync"]


@dataclass(slots=True)
class _Dir:
    """One directory's tickets: handed out, covered by a finished fsync, running."""

    issued: int = 0
    covered: int = 0
    running: bool = False


class GroupSync:
    """fsync directories on behalf of many threads (see the module's docstring)."""

    def __init__(self, fsync: Callable[[Path], None] = fsync_dir) -> None:
        self._fsync = fsync
        self._cond = threading.Condition()
        self._dirs: dict[Path, _Dir] = {}

    def sync(self, directory: Path) -> None:
        """Return once ``directory``'s entries as they are now are on disk; an error of
        the fsync this caller ran is raised (the others' callers run their own)."""
        with self._cond:
            state = self._dirs.setdefault(directory, _Dir())
            state.issued += 1
            ticket = state.issued
            while state.covered < ticket:
                if state.running:
                    self._cond.wait()
                else:
                    self._lead(directory, state)

    def waiting(self, directory: Path) -> int:
        """How many callers wait for ``directory`` now (tests watch it)."""
        with self._cond:
            state = self._dirs.get(directory)
            return 0 if state is None else state.issued - state.covered

    def _lead(self, directory: Path, state: _Dir) -> None:
        """Run one fsync for every ticket issued so far (called with the lock held)."""
        state.running = True
        covers = state.issued  # every rename before this fsync began
        self._cond.release()
        try:
            self._fsync(directory)
        finally:
            self._cond.acquire()
            state.running = False
            self._cond.notify_all()
        state.covered = max(state.covered, covers)


GROUP = GroupSync()  # the process's one: every worker's final statuses and publishes
