"""Job status: the states, the transition table, the sidecar and its one door (SPEC §7)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from dropfetch.errors import DropfetchError, NotRegularFileError
from dropfetch.fsutil import atomic_write, display_name, read_regular
from dropfetch.groupsync import GROUP
from dropfetch.jobfile import SIDECAR_SUFFIX
from dropfetch.testhooks import hook_point

__all__ = [
    "FINAL",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "Sidecar",
    "Status",
    "StatusBoard",
    "TransitionError",
    "read_sidecar",
    "read_sidecars",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# far more than a sidecar with extract.max_files entries needs; a bigger file is not ours
MAX_SIDECAR_BYTES = 256 * 1024 * 1024


class Status(StrEnum):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    UNPACKING = "unpacking"
    OK = "ok"
    WAITING = "waiting"
    FAILED = "failed"
    DELETING = "deleting"
    PAUSED = "paused"


S = Status
FINAL = frozenset({S.OK, S.FAILED})
_ACTIVE = {S.QUEUED, S.DOWNLOADING, S.UNPACKING, S.WAITING}

# Allowed moves. ``None`` is "no sidecar yet" (WAITING from there: the disk was full
# before the first attempt; PAUSED: paused before it ever ran). Every state may go to
# DELETING. PAUSED comes from every unfinished state (an unpack is stopped and done
# again on resume, from the kept download) and goes on to a new try, or a wait or a
# failure found before that try downloads (a full disk, a bad job file), or stays
# paused for a new version of the job file.
TRANSITIONS: dict[Status | None, frozenset[Status]] = {
    None: frozenset({S.QUEUED, S.DOWNLOADING, S.WAITING, S.FAILED, S.PAUSED}),
    S.QUEUED: frozenset(_ACTIVE | FINAL | {S.PAUSED}),
    S.WAITING: frozenset(_ACTIVE | FINAL | {S.PAUSED}),
    S.DOWNLOADING: frozenset(_ACTIVE | FINAL | {S.PAUSED}),
    S.UNPACKING: frozenset({S.UNPACKING, S.QUEUED, S.WAITING, S.PAUSED, *FINAL}),
    S.PAUSED: frozenset({S.QUEUED, S.DOWNLOADING, S.WAITING, S.FAILED, S.PAUSED}),
    S.OK: frozenset({S.QUEUED, S.PAUSED}),  # a new version of the job file
    S.FAILED: frozenset({S.QUEUED, S.PAUSED}),
    S.DELETING: frozenset({S.DELETING}),
}


def now_iso(ts: float | None = None) -> str:
    t = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class Sidecar:
    """The content of ``NAME.status.json``, field for field."""

    id: str
    job: str
    job_sha256: str
    url: str | None = None
    status: Status = S.QUEUED
    progress: int | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    speed: float | None = None
    eta: float | None = None
    attempt: int = 0
    next_attempt_at: str | None = None
    host: str | None = None
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    finished: str | None = None
    archive: dict[str, Any] | None = None
    output: str | None = None
    files: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    schema: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"schema": self.schema}
        data.update({k: v for k, v in dataclasses.asdict(self).items() if k != "schema"})
        data["status"] = str(self.status)
        data = _printable(data)
        data["files"] = sorted(data["files"])  # sorted as they are shown
        return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Sidecar:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["status"] = Status(kwargs.get("status", "queued"))
        return cls(**kwargs)

    def copy(self) -> Sidecar:
        """A copy that later changes to this one do not reach."""
        sc = self
        return dataclasses.replace(
            sc,
            files=list(sc.files),
            archive=None if sc.archive is None else dict(sc.archive),
            error=None if sc.error is None else dict(sc.error),
        )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL


def _printable(value: Any) -> Any:
    """Every string made valid UTF-8 (names that are not: see ``display_name``)."""
    if isinstance(value, str):
        return display_name(value)
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


def read_sidecar(path: Path, *, attempts: int = 3) -> Sidecar | None:
    """The sidecar at ``path``, or None if missing or unreadable.

    Only a regular file is read (see :func:`dropfetch.fsutil.read_regular`): a FIFO,
    a symbolic link or a device under a sidecar's name is logged and skipped, never
    opened. Sidecars are replaced atomically, so a read that does not parse is
    retried: a network filesystem with attribute caching can hand out the new file's
    bytes cut to the old file's size for a moment.
    """
    for attempt in range(attempts):
        try:
            raw = read_regular(path, MAX_SIDECAR_BYTES)
            if len(raw) > MAX_SIDECAR_BYTES:
                logger.warning(
                    "%s: ignoring a sidecar larger than %d MiB", path.name, MAX_SIDECAR_BYTES >> 20
                )
                return None
            return Sidecar.from_json(raw)
        except FileNotFoundError:
            return None
        except NotRegularFileError as exc:
            logger.warning("%s; ignored (remove it)", exc.message)
            return None
        except (OSError, ValueError, TypeError) as exc:
            if attempt + 1 == attempts:
                logger.warning("%s: ignoring an unreadable sidecar: %s", path.name, exc)
                return None
            threading.Event().wait(0.05 * (attempt + 1))
    return None


def read_sidecars(inbox: Path, *, recursive: bool = False) -> list[Sidecar]:
    """Every readable sidecar in ``inbox`` (and, with ``recursive``, one level below),
    sorted by path. Hidden and temporary names are skipped, and so, quietly, is
    anything that is not a regular file (the daemon logs those when it meets them)."""
    paths = sorted(_sidecar_entries(inbox))
    if recursive:
        for sub in sorted(_entries(inbox, dirs=True)):
            paths += sorted(_sidecar_entries(sub))
    found = (read_sidecar(p) for p in paths)
    return [sc for sc in found if sc is not None]


def _entries(directory: Path, *, dirs: bool) -> list[Path]:
    try:
        with os.scandir(directory) as it:
            return [
                Path(e.path)
                for e in it
                if not e.name.startswith(".")
                and (e.is_dir(follow_symlinks=False) if dirs else e.is_file(follow_symlinks=False))
            ]
    except OSError:
        return []


def _sidecar_entries(directory: Path) -> list[Path]:
    return [p for p in _entries(directory, dirs=False) if p.name.endswith(SIDECAR_SUFFIX)]


class TransitionError(RuntimeError):
    """A status change the table does not allow: a bug, never user input."""


class StatusBoard:
    """The one door for a job's status: checks the transition, then writes the sidecar.

    ``previous`` is the status of the sidecar on disk (None: there is none yet).
    ``fence`` is called before every write; it raises (LeaseLostError) when this host
    no longer holds the job's lease, so a host that lost a job never writes for it.
    Progress updates are throttled to one write per ``interval`` seconds.
    """

    def __init__(
        self,
        path: Path,
        sidecar: Sidecar,
        *,
        previous: Status | None,
        interval: float,
        fence: Callable[[], None] | None = None,
        on_change: Callable[[Sidecar], None] | None = None,
        dir_sync: Callable[[Path], None] = GROUP.sync,
    ) -> None:
        self.path = path
        self.sidecar = sidecar
        self._interval = interval
        self._current = previous  # the status on disk; None: no sidecar yet
        self._on_disk = previous is not None  # a sidecar file exists
        self._fence = fence
        self._on_change = on_change
        self._dir_sync = dir_sync  # a final status's directory fsync (group commit)
        self._last_write = 0.0
        self._lock = threading.Lock()

    # -- the intents: one per step of a job, each a move the table must allow --------

    def requeued(self) -> None:
        """Back to the queue before a new try (a new version of a finished job, or a
        try that died while unpacking)."""
        self._move(S.QUEUED)

    def job_url(self, url: str) -> None:
        """The job's URL (redacted), written with the next status."""
        with self._lock:
            self.sidecar.url = url

    def downloading(self) -> int:
        """A new try starts downloading; returns its number (1 for the first)."""
        attempt = self.sidecar.attempt + 1
        self._move(
            S.DOWNLOADING, attempt=attempt, error=None, progress=0, bytes_done=0, bytes_total=None
        )
        return attempt

    def downloaded(self, *, size: int, sha256: str) -> None:
        """The download is complete and verified; written with the next status."""
        with self._lock:
            self.sidecar.archive = {"format": None, "size": size, "sha256": sha256}

    def unpacking(self, *, fmt: str, size: int, sha256: str) -> None:
        self._move(
            S.UNPACKING,
            progress=0,
            bytes_done=0,
            bytes_total=size,
            speed=None,
            eta=None,
            archive={"format": fmt, "size": size, "sha256": sha256},
        )

    def succeeded(self, *, output: str, files: list[str], archive: dict[str, Any]) -> None:
        self._move(S.OK, output=output, files=files, archive=archive, progress=100, error=None)

    def retry_at(self, delay: float, error: DropfetchError, *, attempt: int) -> None:
        """The try failed; the next one is due in ``delay`` seconds. ``attempt`` is the
        count of failed tries (see :func:`dropfetch.retry.next_try`)."""
        self._move(
            S.WAITING,
            attempt=attempt,
            next_attempt_at=now_iso(time.time() + delay),
            error={"code": error.code, "message": error.message},
        )

    def fail(self, error: DropfetchError) -> None:
        self._move(
            S.FAILED,
            error={"code": error.code, "message": error.message},
            progress=self.sidecar.progress,
            files=[],
        )

    def checkpoint(self) -> None:
        """Stopped for shutdown: queued again; the try cut short is not a failed one."""
        self._move(S.QUEUED, attempt=max(0, self.sidecar.attempt - 1))

    def paused(self, *, cut_short: bool) -> None:
        """Paused (``dropfetch pause``): the figures stay as they were. A try
        ``cut_short`` by it is not a failed one (``attempt`` counts failed tries)."""
        self._move(S.PAUSED, attempt=max(0, self.sidecar.attempt - cut_short))

    def deleting(self) -> None:
        self._move(S.DELETING)

    def _move(self, status: Status, **fields: Any) -> None:
        """Move to ``status`` (checked), update ``fields``, write the sidecar now."""
        with self._lock:
            current = self._current
            if status not in TRANSITIONS[current] and status is not S.DELETING:
                raise TransitionError(f"{self.sidecar.id}: {current} -> {status} is not allowed")
            self._current = status
            self.sidecar.status = status
            if status is not S.WAITING:
                self.sidecar.next_attempt_at = None
            if status in FINAL:
                self.sidecar.finished = now_iso()
                self.sidecar.speed = self.sidecar.eta = None
            elif status in (S.QUEUED, S.WAITING, S.PAUSED):
                self.sidecar.finished = None
                self.sidecar.speed = self.sidecar.eta = None
            for key, value in fields.items():
                setattr(self.sidecar, key, value)
            written = self._write()
        self._changed(written)

    def progress(self, *, done: int, total: int | None, speed: float | None) -> None:
        """Record progress of the current phase; written at most every ``interval`` s."""
        with self._lock:
            sc = self.sidecar
            sc.bytes_done, sc.bytes_total, sc.speed = done, total, speed
            sc.progress = min(100, done * 100 // total) if total else None
            sc.eta = round((total - done) / speed, 1) if total and speed and speed > 0 else None
            if time.monotonic() - self._last_write < self._interval:
                return
            written = self._write()
        self._changed(written)

    def _changed(self, written: Sidecar) -> None:
        """Tell the subscriber, outside the lock, what was written."""
        if self._on_change is not None:
            self._on_change(written)

    def _write(self) -> Sidecar:
        """Write the sidecar (under the lock); returns a copy of what was written."""
        if self._fence is not None:
            self._fence()
        self.sidecar.updated = now_iso()
        final = self.sidecar.status in FINAL
        # every write is atomic (temporary file, rename). Fsynced before the rename:
        # a final status, and the write that creates the sidecar (a new file's name
        # may reach the disk before its bytes; a replacing rename's bytes go first on
        # ext4 and btrfs). A final status's directory is synced after the rename, one
        # fsync shared by the jobs that finish together (group commit). A power cut may
        # take back an intermediate status or a progress figure, and a final status
        # whose directory sync had not ended: the job then runs again (README).
        atomic_write(
            self.path, self.sidecar.to_json(), sync=final or not self._on_disk, durable=False
        )
        self._on_disk = True
        if final:
            hook_point(self.sidecar.id, "group-sync")
            self._dir_sync(self.path.parent)
        self._last_write = time.monotonic()
        return self.sidecar.copy()
