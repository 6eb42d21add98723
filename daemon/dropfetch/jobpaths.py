"""Where one job's files live, and the files beside its partial download."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dropfetch.config import Config
from dropfetch.errors import BadJobError, IOFailureError, NotRegularFileError
from dropfetch.fsutil import atomic_write, read_regular
from dropfetch.jobfile import (
    JOB_SUFFIX,
    JOB_SUFFIXES,
    MAX_JOB_BYTES,
    PAUSE_SUFFIX,
    RETRY_SUFFIX,
    SIDECAR_SUFFIX,
    job_sha256,
    split_job_file,
)
from dropfetch.leases import lease_key
from dropfetch.names import parse_staging_name

__all__ = [
    "STARTS_PER_ATTEMPT",
    "JobPaths",
    "count_start",
    "find_job_files",
    "identity",
    "is_request",
    "job_file",
    "job_paths",
    "read_job",
    "read_job_of",
]

# the steps of find_job_files: what is cheap to look for (an lstat each) before a listing
_SPELLINGS = (
    JOB_SUFFIXES,
    (*(s.upper() for s in JOB_SUFFIXES), *("." + s[1:].capitalize() for s in JOB_SUFFIXES)),
)

# A job whose tries are cut short this many times max_attempts in a row (the daemon
# died, or lost the lease, each time) fails: it may be what kills the daemon.
STARTS_PER_ATTEMPT = 2


@dataclass(frozen=True, slots=True)
class JobPaths:
    """Where everything of one job lives."""

    id: str
    job: Path
    sidecar: Path
    output: Path
    partial: Path
    meta: Path
    starts: Path
    staging_dir: Path
    key: str
    pause: Path  # the request files (dropfetch pause, retry) beside the job file
    retry: Path
    rivals: tuple[str, ...] = ()  # other job files of the same name (a conflict)

    def staging_dirs(self) -> list[Path]:
        """Staging directories of this job, from any host."""
        try:
            return [
                p
                for p in self.staging_dir.iterdir()
                if (found := parse_staging_name(p.name)) is not None and found[0] == self.key
            ]
        except FileNotFoundError:
            return []

    @property
    def mirror(self) -> Path:
        """Which of the job's URLs its tries use (:mod:`dropfetch.mirrors`)."""
        return self.partial.with_name(f"{self.key}.mirror")

    def forget_starts(self) -> None:
        try:
            self.starts.unlink()
        except OSError:
            pass

    def paused(self) -> bool:
        """Whether ``dropfetch pause`` asked this job to pause (and no resume since)."""
        return is_request(self.pause)

    def take_retry(self) -> bool:
        """Whether ``dropfetch retry`` asked for a try now; the request is used up. Only
        the lease holder calls this."""
        if not is_request(self.retry):
            return False
        self.retry.unlink(missing_ok=True)
        return True

    def drop_requests(self) -> None:
        """The purge: the job's request files go with it (only regular files)."""
        for p in (self.pause, self.retry):
            if is_request(p):
                p.unlink(missing_ok=True)

    def drop_partial(self) -> None:
        """Remove the partial download, its resume data, the start count and the URL
        in use."""
        for p in (self.partial, self.meta, self.starts, self.mirror):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise IOFailureError(f"cannot remove {p.name}: {exc}") from exc


def find_job_files(inbox: Path, job_id: str) -> list[Path]:
    """The job files of job ``job_id`` (``NAME.url``, ``.webloc``, ``.desktop``, the
    suffix in any case). The spellings are looked for by ``lstat`` in steps: lower
    case, then upper case and capitalized (``.URL``, ``.Url``); only when none is there
    is the directory listed for any other spelling. More than one found at the same
    step is a name conflict (:func:`read_job_of`)."""
    for spellings in _SPELLINGS:
        found = [p for s in spellings if os.path.lexists(p := inbox / (job_id + s))]
        if found:
            return found
    return _any_spelling(inbox, job_id)


def _any_spelling(inbox: Path, job_id: str) -> list[Path]:
    folder, _, stem = job_id.rpartition("/")
    try:
        with os.scandir(inbox / folder) as it:
            names = sorted(e.name for e in it if e.name.startswith(stem))
    except OSError:
        return []
    return [inbox / folder / n for n in names if (s := split_job_file(n)) and s[0] == stem]


def job_file(inbox: Path, job_id: str) -> Path:
    """The job file of ``job_id`` (the first of a conflict); ``NAME.url`` when there is
    none."""
    found = find_job_files(inbox, job_id)
    return found[0] if found else inbox / (job_id + JOB_SUFFIX)


def job_paths(config: Config, job_id: str) -> JobPaths:
    key = lease_key(job_id)
    partial = config.work / "partial" / f"{key}.part"
    found = find_job_files(config.inbox, job_id)
    return JobPaths(
        id=job_id,
        job=found[0] if found else config.inbox / (job_id + JOB_SUFFIX),
        rivals=tuple(p.name for p in found[1:]),
        sidecar=config.inbox / (job_id + SIDECAR_SUFFIX),
        output=config.outbox / job_id,
        partial=partial,
        meta=partial.with_name(partial.name + ".meta"),
        starts=partial.with_name(f"{key}.starts"),
        staging_dir=config.work / "staging",
        key=key,
        pause=config.inbox / (job_id + PAUSE_SUFFIX),
        retry=config.inbox / (job_id + RETRY_SUFFIX),
    )


def is_request(path: Path) -> bool:
    """A request file counts when it is a regular file (by ``lstat``: a symbolic link,
    a FIFO, a directory of that name is no request, and nothing is ever opened)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_job(path: Path) -> bytes | BadJobError | None:
    """A job file's bytes (at most MAX_JOB_BYTES + 1: parse_job refuses more), the
    error for an entry that is not a regular file, or None when there is none."""
    try:
        return read_regular(path, MAX_JOB_BYTES)
    except FileNotFoundError:
        return None
    except NotRegularFileError as err:
        return NotRegularFileError(
            f"{err.message}; only a regular file is read as a job file "
            "(replace it with one that holds the URL)"
        )


def read_job_of(paths: JobPaths) -> bytes | BadJobError | None:
    """:func:`read_job` of the job's file; a name conflict (``a.url`` and ``a.webloc``,
    or two spellings of a suffix) is the job's error until all but one are gone."""
    if paths.rivals:
        names = ", ".join([paths.job.name, *paths.rivals])
        return BadJobError(
            f"more than one job file is named {paths.id!r} ({names}); a name is one job: "
            "remove or rename all but one"
        )
    return read_job(paths.job)


def identity(data: bytes | BadJobError) -> str:
    """``job_sha256``: of the bytes; for an entry that cannot be read, of what it is
    (so a FIFO replaced by a symbolic link is a new job, with a new message)."""
    return job_sha256(data if isinstance(data, bytes) else b"\0" + data.message.encode())


def count_start(paths: JobPaths, job_sha: str, *, max_attempts: int) -> None:
    """Count a try that starts; raise once too many in a row were cut short.

    A try that ends (ok, an error, a graceful stop) forgets the count; one cut short
    by a crash or a lost lease does not, and is not a failed attempt either. So a
    job that kills the daemon every time still ends, as ``failed``, after
    ``STARTS_PER_ATTEMPT * max_attempts`` starts. The count lives next to the
    partial file (work_dir is shared, like the lease)."""
    starts = 0
    try:
        data = json.loads(paths.starts.read_bytes())
        if isinstance(data, dict) and data.get("job_sha256") == job_sha:
            starts = int(data.get("starts", 0))
    except (OSError, ValueError, TypeError):
        pass
    if starts >= STARTS_PER_ATTEMPT * max_attempts:
        raise IOFailureError(
            f"the daemon was stopped {starts} times in a row (killed, crashed or cut off "
            "from the shared directory) while working on this job, without finishing "
            "it; giving up in case the job itself is the cause. See the daemon's log, then "
            "'dropfetch retry' the job to try again"
        )
    atomic_write(
        paths.starts,
        json.dumps({"job_sha256": job_sha, "starts": starts + 1}).encode(),
        sync=False,  # kill -9 keeps it; a power cut may take back one start
        durable=False,
    )
