"""The worker pool and the per-job pipeline: lease, download, verify, extract, publish."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import os
import random
import re
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dropfetch.config import Config, ExtractConfig
from dropfetch.download import Downloader, DownloadResult, Transfer
from dropfetch.errors import (
    BadJobError,
    CancelledError,
    ChecksumMismatchError,
    DiskFullError,
    DropfetchError,
    InternalError,
    IOFailureError,
    LeaseLostError,
    NameConflictError,
    NotRegularFileError,
    from_os_error,
)
from dropfetch.events import (
    EventBus,
    JobFinished,
    JobStarted,
    Phase,
    PhaseEnded,
    PhaseStarted,
    Progress,
    StatusChanged,
)
from dropfetch.extract import ArchiveFormat, Growth, extract, single_file_name, sniff
from dropfetch.fsutil import (
    atomic_write,
    is_abandoned_temp,
    publish_dir,
    read_regular,
    remove_tree,
    temp_name,
)
from dropfetch.jobfile import (
    JOB_SUFFIX,
    MAX_JOB_BYTES,
    SIDECAR_SUFFIX,
    JobSpec,
    job_name,
    job_sha256,
    parse_job,
)
from dropfetch.leases import Lease, LeaseManager, lease_key
from dropfetch.lifecycle import Deadline
from dropfetch.status import FINAL, Sidecar, Status, StatusBoard, now_iso, read_sidecar
from dropfetch.urlpolicy import redact_url

__all__ = ["JobPaths", "JobQueue", "WorkerPool", "job_paths", "output_owner",
           "parse_staging_name", "staging_name"]

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,255}$")

# Test hooks, not features: DROPFETCH_TEST_PAUSE=<phase> ("publish": after extraction and
# the last lease check, right before the renames that publish; "finished": the final
# status is written, the run not done yet; "purge": the sidecar says deleting, nothing
# removed yet) makes the worker stop there for 30 s (or
# DROPFETCH_TEST_PAUSE_SECONDS), so tests can kill or stop the daemon at that point.
# DROPFETCH_TEST_CRASH=<phase> makes the daemon kill itself (SIGKILL) there instead: a
# job that crashes the daemon every time. DROPFETCH_TEST_BUG=<phase> raises a
# RuntimeError there: what a bug in dropfetch looks like to the job.
TEST_PAUSE_ENV = "DROPFETCH_TEST_PAUSE"
TEST_PAUSE_SECONDS_ENV = "DROPFETCH_TEST_PAUSE_SECONDS"
TEST_CRASH_ENV = "DROPFETCH_TEST_CRASH"
TEST_BUG_ENV = "DROPFETCH_TEST_BUG"
TEST_PAUSE_SECONDS = 30.0
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

    def staging_dirs(self) -> list[Path]:
        """Staging directories of this job, from any host."""
        try:
            return [p for p in self.staging_dir.iterdir()
                    if (found := parse_staging_name(p.name)) is not None and found[0] == self.key]
        except FileNotFoundError:
            return []


def staging_name(key: str, host_id: str, pid: int, stamp: int) -> str:
    """``KEY@HOST@PID@STAMP``: the name of one attempt's staging directory. Neither the
    job's key nor the escaped host contains an ``@`` (see :func:`lease_key`)."""
    return f"{key}@{lease_key(host_id)}@{pid}@{stamp}"


def parse_staging_name(name: str) -> tuple[str, str, int] | None:
    """(key, escaped host, pid) of a :func:`staging_name`, else None."""
    parts = name.split("@")
    if len(parts) != 4 or not parts[0] or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


def job_paths(config: Config, job_id: str) -> JobPaths:
    key = lease_key(job_id)
    partial = config.work / "partial" / f"{key}.part"
    return JobPaths(
        id=job_id,
        job=config.inbox / (job_id + JOB_SUFFIX),
        sidecar=config.inbox / (job_id + SIDECAR_SUFFIX),
        output=config.outbox / job_id,
        partial=partial,
        meta=partial.with_name(partial.name + ".meta"),
        starts=partial.with_name(f"{key}.starts"),
        staging_dir=config.work / "staging",
        key=key,
    )


class JobQueue:
    """Job ids due now or at a time; an id is in the queue at most once.

    ``urgent`` entries (a look at a lease that can go stale, a dead lease of this very
    host) are taken before every other due entry, so a takeover never waits behind a
    backlog (a rescan of thousands of jobs). An id put twice keeps the earlier due
    time, and stays urgent if either put was.
    """

    def __init__(self) -> None:
        self._heaps: tuple[list[tuple[float, int, str]], list[tuple[float, int, str]]] = ([], [])
        self._due: dict[str, tuple[float, bool]] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def put(self, job_id: str, *, delay: float = 0.0, urgent: bool = False) -> None:
        due = time.monotonic() + delay
        with self._cond:
            old = self._due.get(job_id)
            if old is not None:
                if old[0] <= due and (old[1] or not urgent):
                    return
                due, urgent = min(due, old[0]), urgent or old[1]
            self._due[job_id] = (due, urgent)
            heapq.heappush(self._heaps[urgent], (due, next(self._seq), job_id))
            self._cond.notify()

    def _top(self, urgent: bool) -> float | None:
        heap = self._heaps[urgent]
        while heap and self._due.get(heap[0][2]) != (heap[0][0], urgent):
            heapq.heappop(heap)  # superseded entry
        return heap[0][0] if heap else None

    def get(self, timeout: float) -> str | None:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                wait = end - now
                for urgent in (True, False):
                    top = self._top(urgent)
                    if top is None:
                        continue
                    if top <= now:
                        _, _, job_id = heapq.heappop(self._heaps[urgent])
                        del self._due[job_id]
                        return job_id
                    wait = min(wait, top - now)
                if wait <= 0:
                    return None
                self._cond.wait(wait)

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)


@dataclass(slots=True)
class _Run:
    job_id: str
    job_sha256: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # removed | changed | shutdown | lease_lost
    rerun: bool = False

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.cancel.set()


def _iso_in(seconds: float) -> str:
    return now_iso(time.time() + seconds)


def _seconds_until(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        when = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return when.timestamp() - time.time()


_STREAMABLE = frozenset({ArchiveFormat.TAR, ArchiveFormat.TAR_GZ, ArchiveFormat.TAR_BZ2,
                         ArchiveFormat.TAR_XZ, ArchiveFormat.TAR_ZST})
_SNIFF_AT = 64 * 1024  # bytes of the download needed to recognise a tar stream


class _Stream:
    """Extracts a tar archive in a thread while it is still being downloaded, so a job
    costs about max(download, extract) instead of their sum.

    It reads the growing partial file (resumed bytes first, then what arrives). If the
    download starts over (a 200 instead of a 206, a changed file), what it extracted is
    discarded and the complete file is extracted again afterwards. The sha256 check
    still gates the publish: the caller verifies the download before using the result.
    """

    def __init__(self, partial: Path, staging: Path, config: ExtractConfig,
                 cancel: threading.Event, on_progress: Callable[[int, int], None]) -> None:
        self.partial = partial
        self.staging = staging
        self.config = config
        self.cancel = cancel
        self.on_progress = on_progress
        try:
            self.start_size = partial.stat().st_size
        except FileNotFoundError:
            self.start_size = 0
        self.growth = Growth()
        self.growth.grew(self.start_size)
        self.fmt: ArchiveFormat | None = None
        self.files: list[str] = []
        self.error: BaseException | None = None
        self._last = self.start_size
        self._thread: threading.Thread | None = None

    def feed(self, t: Transfer) -> None:
        """From the download's progress callback."""
        if t.resumed_from < self.start_size or t.bytes_done < self._last:
            self.growth.abort("the download started over")
        self._last = t.bytes_done
        self.growth.grew(t.bytes_done, t.bytes_total)
        if self.fmt is None and t.bytes_done >= _SNIFF_AT and self.growth.aborted is None:
            self.fmt = sniff(self.partial)
            if self.fmt in _STREAMABLE:
                self._thread = threading.Thread(target=self._run, args=(self.fmt,), daemon=True,
                                                name=f"{threading.current_thread().name}-x")
                self._thread.start()

    def _run(self, fmt: ArchiveFormat) -> None:
        try:
            self.files = extract(self.partial, self.staging, fmt=fmt, config=self.config,
                                 single_name="archive", cancel=self.cancel,
                                 on_progress=self.on_progress, growth=self.growth)
        except BaseException as exc:  # noqa: BLE001 - handed to the worker thread
            self.error = exc

    def stop(self, why: str) -> None:
        """The download failed or was cancelled: end the extraction thread."""
        self.growth.abort(why)
        if self._thread is not None:
            self._thread.join()

    def result(self, fmt: ArchiveFormat) -> list[str] | None:
        """After a complete download: the streamed files, or None to extract afresh."""
        self.growth.finish()
        if self._thread is None:
            return None
        self._thread.join()
        if self.growth.aborted is not None or fmt is not self.fmt:
            remove_tree(self.staging)
            self.staging.mkdir(mode=0o755)
            return None
        if self.error is not None:
            raise self.error
        return self.files


class WorkerPool:
    """``workers`` threads taking job ids from one queue; each with its own session."""

    name = "worker pool"

    def __init__(
        self,
        config: Config,
        leases: LeaseManager,
        events: EventBus | None = None,
    ) -> None:
        self.config = config
        self.leases = leases
        self.events = events if events is not None else EventBus()
        self.queue = JobQueue()
        self._running: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._retire = 0
        self._stopping = threading.Event()
        self._names = itertools.count(1)
        self._publish_lock = threading.Lock()  # owner check and publish, one job at a time

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for sub in ("partial", "staging"):
            (self.config.work / sub).mkdir(parents=True, exist_ok=True)
        self._clean_own_debris()
        self._reclaim_own_leases()
        self.resize(self.config.workers)

    def resize(self, workers: int) -> None:
        """Grow or shrink to ``workers`` threads (SIGHUP); shrinking lets jobs finish."""
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            alive = len(self._threads) - self._retire
            for _ in range(workers - alive):
                name = f"dropfetch-worker-{next(self._names)}"
                t = threading.Thread(target=self._work, name=name, daemon=True)
                self._threads.append(t)
                t.start()
            self._retire += max(0, alive - workers)
        self.queue.wake_all()

    def stop(self, deadline: Deadline) -> bool:
        """Stop taking jobs, checkpoint running ones; True if all stopped in time."""
        self._stopping.set()
        with self._lock:
            for run in self._running.values():
                run.stop("shutdown")
        self.queue.wake_all()
        return deadline.join(list(self._threads))

    def healthy(self) -> bool:
        with self._lock:
            return any(t.is_alive() for t in self._threads) or not self._threads

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def apply(self, config: Config) -> None:
        self.config = config
        self.resize(config.workers)

    # -- intake ----------------------------------------------------------------------

    def submit(self, job_id: str, *, delay: float = 0.0) -> None:
        """Look at ``job_id`` soon. A running job is stopped if its file went away or
        changed (and then run again)."""
        with self._lock:
            run = self._running.get(job_id)
            if run is not None:
                self._check_running(run)
                return
        self.queue.put(job_id, delay=delay)

    def _check_running(self, run: _Run) -> None:
        try:
            data = _read_job(job_paths(self.config, run.job_id).job)
        except OSError:
            return
        if run.job_sha256 is None:
            # a purge (or a job not read yet): a job file that is there again runs again
            # as soon as this is done, not at the next rescan
            if data is not None:
                run.rerun = True
            return
        if data is None:
            logger.info("%s: the job file was removed; stopping the job", run.job_id)
            run.stop("removed")
            # the run may be past its last look at the cancel flag (finishing): look at
            # the job again once it is done, so the purge is never lost
            run.rerun = True
        elif _identity(data) != run.job_sha256:
            logger.info("%s: the job file changed; starting over with the new one", run.job_id)
            run.rerun = True
            run.stop("changed")

    # -- the worker loop ---------------------------------------------------------------

    def _work(self) -> None:
        downloader: Downloader | None = None
        try:
            while not self._stopping.is_set():
                with self._lock:
                    if self._retire > 0:
                        self._retire -= 1
                        return
                job_id = self.queue.get(timeout=0.5)
                if job_id is None or self._stopping.is_set():
                    if job_id is not None:
                        self.queue.put(job_id)
                    continue
                run = _Run(job_id)
                with self._lock:
                    if job_id in self._running:  # raced with another worker: look later
                        self._running[job_id].rerun = True
                        continue
                    self._running[job_id] = run
                try:
                    cfg = self.config
                    if downloader is not None and (
                            downloader.config != cfg.download
                            or downloader.min_free_space != cfg.min_free_space):
                        downloader.close()  # SIGHUP changed its settings
                        downloader = None
                    if downloader is None:
                        downloader = Downloader(cfg.download, min_free_space=cfg.min_free_space)
                    self._process(run, downloader)
                except Exception:
                    # a bug, not the job's fault: look again later rather than drop it
                    logger.exception("%s: unexpected error; the daemon goes on and looks "
                                     "at this job again later", job_id)
                    run.rerun = False
                    self.queue.put(job_id, delay=max(30.0, self.config.rescan_interval))
                finally:
                    with self._lock:
                        del self._running[job_id]
                    if run.rerun and not self._stopping.is_set():
                        self.queue.put(job_id)
        finally:
            if downloader is not None:
                downloader.close()

    # -- one job ---------------------------------------------------------------------

    def _process(self, run: _Run, downloader: Downloader) -> None:
        cfg = self.config
        paths = job_paths(cfg, run.job_id)
        try:
            data = _read_job(paths.job)
        except OSError as exc:
            logger.warning("%s: cannot read the job file (%s); will look again", run.job_id, exc)
            self.queue.put(run.job_id, delay=cfg.rescan_interval)
            return
        if data is None:
            if not self._inbox_present(run.job_id):
                return
            self._removed(paths)
            return
        run.job_sha256 = _identity(data)
        old = read_sidecar(paths.sidecar)
        if old is not None and old.is_final and old.job_sha256 == run.job_sha256:
            return  # finished before (restarts are idempotent): no lease needed to see it
        lease = self.leases.acquire(run.job_id)
        if lease is None:
            # another host works on it; look again as soon as its lease could be stale
            self._look_again(run.job_id)
            return
        try:
            self._run_job(run, paths, data, lease, downloader)
        except LeaseLostError:
            # from a sidecar write on an error path: the job belongs to another host now
            logger.error("%s: lost the lease; stopping without publishing", run.job_id)
            self._look_again(run.job_id)
        except OSError:
            if self._inbox_present(run.job_id):
                raise
        finally:
            self.leases.release(lease)

    def _look_again(self, job_id: str) -> None:
        """The job's lease is (or may be) another host's: look again, before the rest of
        the queue, as soon as that lease could be stale (the new holder may die too)."""
        delay = self.leases.look_again_in(job_id)
        logger.debug("%s: the lease is another holder's; looking again in %.2f s", job_id, delay)
        self.queue.put(job_id, delay=delay, urgent=True)

    def _reclaim_own_leases(self) -> None:
        """After a crash: the jobs whose leases this host's dead process left go first."""
        keys = set(self.leases.own_dead())
        if not keys:
            return
        ids: dict[str, str] = {}
        dirs = [("", self.config.inbox)]
        try:
            if self.config.recursive:
                dirs += [(e.name + "/", Path(e.path)) for e in os.scandir(self.config.inbox)
                         if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
            for prefix, d in dirs:
                for name in (p.name for p in d.iterdir()):
                    for suffix in (JOB_SUFFIX, SIDECAR_SUFFIX):
                        if name.endswith(suffix) and not name.startswith("."):
                            job_id = prefix + name[: -len(suffix)]
                            ids[lease_key(job_id)] = job_id
        except OSError as exc:
            logger.warning("cannot list the inbox to take back this host's leases: %s", exc)
        for key in sorted(keys):
            if key in ids:
                logger.info("%s: taking back the lease of this host's earlier process",
                            ids[key])
                self.queue.put(ids[key], urgent=True)

    def _inbox_present(self, job_id: str) -> bool:
        """False (and the job looked at again later) when the inbox itself is gone: an
        unmounted share is not a removed job, and no sidecar can be written meanwhile."""
        if self.config.inbox.is_dir():
            return True
        logger.warning("%s: the inbox %s is gone; the job waits for it", job_id,
                       self.config.inbox)
        self.queue.put(job_id, delay=self.config.rescan_interval)
        return False

    def _board(self, paths: JobPaths, sidecar: Sidecar, previous: Status | None,
               lease: Lease) -> StatusBoard:
        return StatusBoard(paths.sidecar, sidecar, previous=previous,
                           interval=self.config.status.update_interval, fence=lease.check,
                           on_change=lambda sc: self.events.publish(StatusChanged(sc)))

    def _run_job(self, run: _Run, paths: JobPaths, data: bytes | BadJobError, lease: Lease,
                 downloader: Downloader) -> None:
        cfg = self.config
        if _is_dir(paths.sidecar):
            logger.error("%s: %s is a directory, so the job cannot have a status file; it is "
                         "not run (remove that directory, then touch the job file)",
                         run.job_id, paths.sidecar.name)
            return
        old = read_sidecar(paths.sidecar)
        same = old is not None and old.job_sha256 == run.job_sha256
        if same and old is not None:
            if old.is_final:
                return  # finished before: restarts are idempotent
            if old.status is Status.WAITING and (wait := _seconds_until(old.next_attempt_at)) > 0:
                self.queue.put(run.job_id, delay=wait)
                return
        sidecar = Sidecar(id=run.job_id, job=paths.job.name, job_sha256=run.job_sha256 or "",
                          host=cfg.lease.host_id,
                          attempt=_failed_tries(old) if same and old is not None else 0,
                          created=old.created if same and old is not None else now_iso())
        previous = None if old is None or old.status is Status.DELETING else old.status
        board = self._board(paths, sidecar, previous, lease)
        try:
            self._attempt(run, paths, data, lease, downloader, board, previous)
        except LeaseLostError as exc:
            logger.error("%s: lost the lease; stopping without publishing (%s)", run.job_id,
                         exc)
            self._look_again(run.job_id)
        except CancelledError:
            self._cancelled(run, board, paths, lease)
        except DropfetchError as err:
            self._error(run, board, paths, err)
        except OSError as exc:
            if not self._inbox_present(run.job_id):
                return  # the partial file is kept for when the inbox is back
            self._error(run, board, paths, from_os_error(exc, "writing the output"))
        except Exception as exc:  # a bug, not the job's fault: tried again, then failed
            logger.exception("%s: internal error (a bug in dropfetch)", run.job_id)
            self._error(run, board, paths, InternalError(
                f"dropfetch hit an internal error ({type(exc).__name__}); the job is tried "
                "again, and fails once its attempts are used up. The daemon's log has the "
                "details: please report it"))

    def _attempt(self, run: _Run, paths: JobPaths, data: bytes | BadJobError, lease: Lease,
                 downloader: Downloader, board: StatusBoard, previous: Status | None) -> None:
        """One attempt at a job: download, verify, extract, publish, ``ok``. Staging and
        the extraction thread are cleaned up before an error reaches the caller, so a
        final status is only written once nothing of the attempt is left."""
        cfg = self.config
        attempt = board.sidecar.attempt
        token: Path | None = None
        stream: _Stream | None = None
        try:
            if previous in FINAL or previous is Status.UNPACKING:
                # a new version of a finished job, or a run that died while unpacking
                # (kill -9): back to the queue, then the download resumes from the partial
                board.set(Status.QUEUED)
            job_name(paths.job.name)
            if isinstance(data, BadJobError):
                raise data  # not a regular file: never opened
            spec = parse_job(data)
            board.sidecar.url = redact_url(spec.url)
            self._check_owner(run.job_id, None)  # before downloading; again before publishing
            self._check_space()
            # fenced (a sidecar write): the start count and the job's staging tokens,
            # revoked below, are only the lease holder's to touch
            board.set(Status.DOWNLOADING, attempt=attempt + 1, error=None, progress=0,
                      bytes_done=0, bytes_total=None)
            self._count_start(paths, board.sidecar.job_sha256)
            self.events.publish(JobStarted(run.job_id, attempt + 1))
            token = self._new_staging(paths)
            staging = token / "out"
            stream = _Stream(paths.partial, staging, cfg.extract, run.cancel,
                             self._unpack_progress(run, board, lease)) if spec.extract else None
            with self._phase(run.job_id, Phase.DOWNLOAD):
                result = self._download(run, board, lease, downloader, spec, paths, stream)
            with self._phase(run.job_id, Phase.UNPACK):
                fmt, files = self._unpack(run, board, lease, spec, paths, result, staging,
                                          stream)
            archive = {"format": str(fmt), "size": result.size, "sha256": result.sha256}
            kept: Path | None = None
            if fmt is not ArchiveFormat.FILE and self._keep_archive(spec):
                kept = paths.output.with_name(f"{paths.output.name}.{fmt}")
                archive["kept"] = kept.name
                # into the token: fenced like the output (ENOENT once revoked)
                os.replace(result.path, token / "archive")
            self._stash_partial(run.job_id, paths, token)
            lease.check()  # fencing: publish only while we hold the lease (see _publish)
            _test_pause(run.job_id, "publish")
            with self._phase(run.job_id, Phase.PUBLISH), self._publish_lock:
                self._check_owner(run.job_id, kept)
                self._publish(run.job_id, token, paths.output, kept)
            # the token now holds the replaced output and the stashed partial file: gone
            # before the final status, so an `ok` never has debris of its try beside it
            remove_tree(token)
            token = None
            self._forget_starts(paths)
            board.set(Status.OK, output=run.job_id, files=files, archive=archive,
                      progress=100, error=None)
            logger.info("%s: published %d file(s) to %s", run.job_id, len(files), paths.output)
            self._finished(run.job_id, board.sidecar)
            _test_pause(run.job_id, "finished")
        finally:
            if stream is not None:
                stream.stop("the job ended")  # joins the extraction thread, if any
            if token is not None:
                remove_tree(token)

    @staticmethod
    def _stash_partial(job_id: str, paths: JobPaths, token: Path) -> None:
        """The download is extracted: move the partial file and its resume data into the
        token (removed with it), so that nothing after the last lease check touches a
        shared path outside the token (a crash before the publish then costs a new
        download, as it always did for a plain file, moved into staging)."""
        for p in (paths.partial, paths.meta):
            try:
                os.replace(p, token / p.name)
            except FileNotFoundError:
                if not token.is_dir():
                    raise LeaseLostError(f"{job_id}: another host took this job over (this "
                                         "try's staging was revoked)") from None

    def _publish(self, job_id: str, token: Path, output: Path, kept: Path | None) -> None:
        """Rename the output (and the kept archive) out of the staging token into place.

        The token (``work_dir/staging/KEY@host@pid@ns``) is the fencing token: a host
        that takes the job over renames every other token of the job away before it
        publishes anything (``_new_staging``), and every rename here has a path inside
        the token as its source or destination. So a holder that was paused after its
        last lease check either renames before the new holder started, when the output
        it replaces is not the new holder's, or its renames fail (ENOENT) and it
        publishes nothing. docs/NFS.md has the reasoning."""
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            publish_dir(token / "out", output, token / "old")
            if kept is not None:
                os.replace(token / "archive", kept)
        except FileNotFoundError:
            if token.is_dir():
                raise
            raise LeaseLostError(f"{job_id}: another host took this job over (this try's "
                                 "staging was revoked); nothing was published") from None

    def _check_owner(self, job_id: str, kept: Path | None) -> None:
        """Fail with name_conflict when a path this job would publish is another job's."""
        rels = [job_id]
        if kept is not None:
            rels.append(job_id.rpartition("/")[0] + "/" + kept.name
                        if "/" in job_id else kept.name)
        for rel in rels:
            owner = output_owner(self.config, rel, me=job_id)
            if owner is not None and owner != job_id:
                whose = (f"the jobs in inbox/{owner}" if owner.endswith("/")
                         else f"the job {owner!r}")
                raise NameConflictError(
                    f"outbox/{rel} belongs to {whose}; publishing this job would overwrite "
                    "it. Rename this job file (or remove the other job)")

    def _check_space(self) -> None:
        cfg = self.config
        free = shutil.disk_usage(cfg.outbox).free
        if free < cfg.min_free_space:
            raise DiskFullError(
                f"only {free // 2**20} MiB free on the outbox's filesystem, below "
                f"min_free_space ({cfg.min_free_space // 2**20} MiB); waiting for space")

    def _watch(self, run: _Run, lease: Lease) -> None:
        if lease.is_lost():
            run.stop("lease_lost")

    def _download(self, run: _Run, board: StatusBoard, lease: Lease, downloader: Downloader,
                  spec: JobSpec, paths: JobPaths, stream: _Stream | None) -> DownloadResult:
        def progress(t: Transfer) -> None:
            self._watch(run, lease)
            if run.cancel.is_set():
                return  # e.g. the lease is lost: the partial file may be another host's now
            if stream is not None:
                stream.feed(t)
            board.progress(done=t.bytes_done, total=t.bytes_total, speed=t.speed)
            self.events.publish(Progress(run.job_id, Phase.DOWNLOAD, t.bytes_done,
                                         t.bytes_total, t.speed))

        result = downloader.fetch(spec.url, paths.partial, on_progress=progress,
                                  cancel=run.cancel)
        if run.cancel.is_set():
            raise CancelledError("stopped")
        if spec.sha256 and result.sha256 != spec.sha256:
            raise ChecksumMismatchError(
                f"the download's SHA-256 is {result.sha256}, but the job asks for {spec.sha256}; "
                "nothing was published (wrong file, or a corrupted download)")
        board.sidecar.archive = {"format": None, "size": result.size, "sha256": result.sha256}
        return result

    def _new_staging(self, paths: JobPaths) -> Path:
        """A new staging token for this try (see ``_publish``); the tree is built in
        its ``out``. Every other token of the job (an earlier try's debris, or the one
        of a holder that lost the lease) is revoked first."""
        token = paths.staging_dir / staging_name(paths.key, self.config.lease.host_id,
                                                 os.getpid(), time.monotonic_ns())
        self._revoke_staging(paths)
        token.mkdir(mode=0o755)
        (token / "out").mkdir(mode=0o755)
        return token

    @staticmethod
    def _revoke_staging(paths: JobPaths) -> None:
        """Rename every staging token of the job away (atomic: the old holder's renames
        out of it fail from then on), then remove it. The name aside is a temporary
        name of this process, swept at the next start should it die meanwhile."""
        for old in paths.staging_dirs():
            aside = temp_name(paths.staging_dir / "revoked")
            try:
                os.rename(old, aside)
            except FileNotFoundError:
                continue
            remove_tree(aside)

    def _unpack_progress(self, run: _Run, board: StatusBoard,
                         lease: Lease) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            self._watch(run, lease)
            if board.sidecar.status is Status.UNPACKING:  # not while the download runs
                board.progress(done=done, total=total, speed=None)
                self.events.publish(Progress(run.job_id, Phase.UNPACK, done, total, None))

        return progress

    def _unpack(self, run: _Run, board: StatusBoard, lease: Lease, spec: JobSpec,
                paths: JobPaths, result: DownloadResult, staging: Path,
                stream: _Stream | None) -> tuple[ArchiveFormat, list[str]]:
        leaf = paths.output.name
        fmt = (sniff(result.path, name=spec.filename or result.filename) if spec.extract
               else ArchiveFormat.FILE)
        if fmt is ArchiveFormat.FILE:
            if stream is not None:
                stream.result(fmt)  # never started for a plain file; clean if it did
            name = spec.filename or _safe_name(result.filename) or leaf
            os.replace(result.path, staging / name)
            return fmt, [name]
        board.set(Status.UNPACKING, progress=0, bytes_done=0, bytes_total=result.size,
                  speed=None, eta=None,
                  archive={"format": str(fmt), "size": result.size, "sha256": result.sha256})
        files = stream.result(fmt) if stream is not None else None
        if files is None:
            files = extract(result.path, staging, fmt=fmt, config=self.config.extract,
                            single_name=single_file_name(_safe_name(result.filename), fmt,
                                                         leaf),
                            cancel=run.cancel, on_progress=self._unpack_progress(run, board,
                                                                                 lease))
        return fmt, files

    def _keep_archive(self, spec: JobSpec) -> bool:
        return self.config.keep_archive if spec.keep_archive is None else spec.keep_archive

    # -- endings ---------------------------------------------------------------------

    def _finished(self, job_id: str, sidecar: Sidecar | None) -> None:
        self.events.publish(JobFinished(job_id, None if sidecar is None else sidecar.status,
                                        None if sidecar is None else sidecar.copy()))

    @contextlib.contextmanager
    def _phase(self, job_id: str, phase: Phase) -> Iterator[None]:
        self.events.publish(PhaseStarted(job_id, phase))
        start = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.events.publish(PhaseEnded(job_id, phase, time.monotonic() - start, ok))

    def _error(self, run: _Run, board: StatusBoard, paths: JobPaths, err: DropfetchError) -> None:
        cfg = self.config.download
        sc = board.sidecar
        if isinstance(err, DiskFullError) and sc.status is Status.DOWNLOADING:
            sc.attempt -= 1  # waiting for space is not a failed attempt
        if err.retryable and (sc.attempt < cfg.max_attempts or isinstance(err, DiskFullError)):
            delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** max(0, sc.attempt - 1))
            delay *= random.uniform(0.5, 1.0)  # jitter: hosts and jobs do not retry in step
            if err.retry_after is not None:
                delay = max(delay, min(err.retry_after, cfg.backoff_max))
            logger.warning("%s: attempt %d failed (%s: %s); next try in %.1f s", run.job_id,
                           sc.attempt, err.code, err.message, delay)
            board.set(Status.WAITING, next_attempt_at=_iso_in(delay),
                      error={"code": err.code, "message": err.message})
            self._forget_starts(paths)
            self.queue.put(run.job_id, delay=delay)
            self._finished(run.job_id, sc)
            return
        logger.error("%s: failed (%s): %s", run.job_id, err.code, err.message)
        self._drop_partial(paths)
        board.fail(err)
        self._finished(run.job_id, board.sidecar)

    def _cancelled(self, run: _Run, board: StatusBoard, paths: JobPaths, lease: Lease) -> None:
        if run.reason == "removed":
            self._purge(paths, board.sidecar, board)
        elif run.reason == "shutdown":
            # checkpoint: the next start resumes the partial file; a try cut short is
            # not a failed attempt (nor is a kill -9: see _count_start)
            board.set(Status.QUEUED, attempt=max(0, board.sidecar.attempt - 1))
            self._forget_starts(paths)
            logger.info("%s: stopped for shutdown; partial download kept", run.job_id)
            self._finished(run.job_id, board.sidecar)
        elif run.reason == "lease_lost":
            logger.error("%s: lost the lease; stopped without publishing", run.job_id)
            self._look_again(run.job_id)
        # "changed": the new job file starts over at once (rerun)

    def _removed(self, paths: JobPaths) -> None:
        """The job file is gone: purge (or, with ``keep``, clean up unfinished work)."""
        sidecar = read_sidecar(paths.sidecar)
        if sidecar is None and not paths.partial.exists() and not paths.staging_dirs():
            return
        lease = self.leases.acquire(paths.id)
        if lease is None:
            self.queue.put(paths.id, delay=self.config.lease.ttl / 2)
            return
        try:
            if os.path.lexists(paths.job):  # it came back meanwhile
                self.queue.put(paths.id)
                return
            previous = None if sidecar is None else sidecar.status
            board = self._board(paths, sidecar, previous, lease) if sidecar else None
            self._purge(paths, sidecar, board)
        finally:
            self.leases.release(lease)

    def _purge(self, paths: JobPaths, sidecar: Sidecar | None, board: StatusBoard | None) -> None:
        keep = self.config.on_job_removed == "keep"
        if keep and sidecar is not None and sidecar.is_final:
            self._drop_partial(paths)
            logger.info("%s: job removed; output and sidecar kept (on_job_removed: keep)",
                        paths.id)
            return
        if board is not None and sidecar is not None and not keep:
            board.set(Status.DELETING)
            _test_pause(paths.id, "purge")
        self._revoke_staging(paths)  # first: a stale holder cannot publish after the purge
        if not keep:
            # only what this job made: not a kept archive or a category of the same name
            if output_owner(self.config, paths.id, me=paths.id) == paths.id:
                remove_tree(paths.output)
            archive = (sidecar.archive or {}) if sidecar else {}
            if archive.get("kept") and archive.get("format") in set(ArchiveFormat):
                # named as when it was kept; not read back from the sidecar, where a name
                # that is not UTF-8 is only shown (display_name)
                kept = f"{paths.output.name}.{archive['format']}"
                prefix = paths.id.rpartition("/")[0]
                rel = f"{prefix}/{kept}" if prefix else kept
                if output_owner(self.config, rel, me=paths.id) == paths.id:
                    remove_tree(paths.output.with_name(kept))
        self._drop_partial(paths)
        try:
            paths.sidecar.unlink()
        except FileNotFoundError:
            pass
        logger.info("%s: job removed; %s", paths.id,
                    "output kept" if keep else "output, partial files and sidecar purged")
        self._finished(paths.id, None)

    def _count_start(self, paths: JobPaths, job_sha: str) -> None:
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
        limit = STARTS_PER_ATTEMPT * self.config.download.max_attempts
        if starts >= limit:
            raise IOFailureError(
                f"the daemon was stopped {starts} times in a row (killed, crashed or cut off "
                "from the shared directory) while working on this job, without finishing "
                "it; giving up in case the job itself is the cause. See the daemon's log, then "
                "'dropfetch retry' the job to try again")
        atomic_write(paths.starts, json.dumps(
            {"job_sha256": job_sha, "starts": starts + 1}).encode(), durable=False)

    @staticmethod
    def _forget_starts(paths: JobPaths) -> None:
        try:
            paths.starts.unlink()
        except OSError:
            pass

    @staticmethod
    def _drop_partial(paths: JobPaths) -> None:
        for p in (paths.partial, paths.meta, paths.starts):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise IOFailureError(f"cannot remove {p.name}: {exc}") from exc

    def _clean_own_debris(self) -> None:
        """Remove what an earlier process of this host left (crash recovery): its staging,
        and its temporary files (sidecars, resume data, leases aside) wherever it writes
        them. Other hosts' temporary names may be mid-rename on a shared directory:
        only this host's, of processes that are gone (``is_abandoned_temp``)."""
        host = lease_key(self.config.lease.host_id)
        staging = self.config.work / "staging"
        for p in staging.iterdir():
            found = parse_staging_name(p.name)
            mine = found is not None and found[1] == host and found[2] != os.getpid()
            # other hosts' temporary names may be mid-rename on a shared work_dir
            if mine or is_abandoned_temp(p.name):
                logger.info("removing staging debris %s", p.name)
                remove_tree(p)
        for d in self._temp_dirs():
            try:
                names = [e.name for e in os.scandir(d)]
            except OSError:
                continue  # e.g. the inbox is not there (yet): the watcher says so
            for name in names:
                if is_abandoned_temp(name):
                    logger.info("removing an abandoned temporary file %s", d / name)
                    remove_tree(d / name)

    def _temp_dirs(self) -> list[Path]:
        """Every directory the daemon writes temporary files into (outputs aside)."""
        cfg = self.config
        dirs = [cfg.inbox, cfg.outbox, cfg.work / "partial", cfg.work / "leases"]
        if cfg.recursive:
            try:
                dirs += [Path(e.path) for e in os.scandir(cfg.inbox)
                         if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
            except OSError:
                pass
        return dirs


def _read_job(path: Path) -> bytes | BadJobError | None:
    """A job file's bytes (at most MAX_JOB_BYTES + 1: parse_job refuses more), the
    error for an entry that is not a regular file, or None when there is none."""
    try:
        return read_regular(path, MAX_JOB_BYTES)
    except FileNotFoundError:
        return None
    except NotRegularFileError as err:
        return NotRegularFileError(f"{err.message}; only a regular file is read as a job file "
                                   "(replace it with one that holds the URL)")


def _identity(data: bytes | BadJobError) -> str:
    """``job_sha256``: of the bytes; for an entry that cannot be read, of what it is
    (so a FIFO replaced by a symbolic link is a new job, with a new message)."""
    return job_sha256(data if isinstance(data, bytes) else b"\0" + data.message.encode())


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _test_pause(job_id: str, phase: str) -> None:
    """The test hooks (see ``TEST_PAUSE_ENV``); do nothing unless a variable names ``phase``."""
    if os.environ.get(TEST_CRASH_ENV) == phase:
        logger.warning("%s: %s=%s: killing the daemon (a test hook)", job_id, TEST_CRASH_ENV,
                       phase)
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(TEST_BUG_ENV) == phase:
        raise RuntimeError(f"{TEST_BUG_ENV}={phase} (a test hook)")
    if os.environ.get(TEST_PAUSE_ENV) == phase:
        seconds = float(os.environ.get(TEST_PAUSE_SECONDS_ENV) or TEST_PAUSE_SECONDS)
        logger.warning("%s: %s=%s: pausing %g s (a test hook)", job_id, TEST_PAUSE_ENV, phase,
                       seconds)
        threading.Event().wait(seconds)


_KEPT_SUFFIXES = tuple(f".{f}" for f in ArchiveFormat if f is not ArchiveFormat.FILE)


def output_owner(config: Config, rel: str, *, me: str | None = None) -> str | None:
    """Which job made ``outbox/REL``, judged from the names in the inbox.

    A job's output is a directory, ``outbox/NAME``; its kept archive is a file,
    ``outbox/NAME.<fmt>``; with ``recursive``, ``outbox/SUB`` holding outputs of jobs in
    ``inbox/SUB/`` is that category's (answered as "SUB/"). None: missing, or nobody's
    (debris). ``me`` counts as an existing job whatever the inbox says."""
    def exists(job_id: str) -> bool:
        return job_id == me or any(os.path.lexists(config.inbox / (job_id + suffix))
                                   for suffix in (JOB_SUFFIX, SIDECAR_SUFFIX))

    prefix, _, name = rel.rpartition("/")
    if prefix:
        parent = output_owner(config, prefix, me=me)
        if parent is not None and parent != prefix + "/":
            return parent  # outbox/SUB is a top-level job's (or a kept archive)
        prefix += "/"
    path = config.outbox / rel
    try:
        st = path.lstat()
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        if config.recursive and not prefix:
            try:
                entries = [e.name for e in os.scandir(path)]
            except OSError:
                entries = []
            if any(exists(f"{rel}/{e}") for e in entries):
                return rel + "/"
        return rel if exists(rel) else None
    for suffix in _KEPT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix) \
                and exists(prefix + name[: -len(suffix)]):
            return prefix + name[: -len(suffix)]
    return None


def _failed_tries(old: Sidecar) -> int:
    """How many tries of the job in ``old`` ended in an error. ``attempt`` counts those,
    plus one for the try under way (downloading, unpacking): a try that was cut short
    there (kill -9, a lost lease) is not a failed one, so the next try has its number."""
    if old.status in (Status.DOWNLOADING, Status.UNPACKING, Status.DELETING):
        return max(0, old.attempt - 1)
    return old.attempt


def _safe_name(name: str | None) -> str | None:
    if not name or name.startswith(".") or not _SAFE_NAME.match(name):
        return None
    return name
