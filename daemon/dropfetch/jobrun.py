"""One job run: look at the job file, take the lease, reconcile the sidecar, run one
try (:class:`dropfetch.attempt.Attempt`) and settle how it ended."""

from __future__ import annotations

import logging
import os
import random
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from dropfetch.attempt import Attempt
from dropfetch.context import JobContext
from dropfetch.download import Downloader
from dropfetch.errors import (
    BadJobError,
    CancelledError,
    DropfetchError,
    InternalError,
    LeaseLostError,
    from_os_error,
)
from dropfetch.jobpaths import JobPaths, identity, read_job_of
from dropfetch.leases import Lease
from dropfetch.mirrors import next_mirror
from dropfetch.removal import purge, removed
from dropfetch.retry import Source, plan_retry
from dropfetch.status import Sidecar, Status, StatusBoard, now_iso, read_sidecar

__all__ = ["JobRun"]

logger = logging.getLogger(__name__)


class JobRun:
    """A job from the moment a worker takes its id until the worker is done with it.

    ``ctx.config`` is the configuration the run started with, for the whole run. The
    pool keeps the run in its map of running jobs; the intake stops it (``stop``) when
    the job file goes away or changes, and ``rerun`` asks for another look once done.
    """

    def __init__(self, ctx: JobContext, job_id: str) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.paths = ctx.paths(job_id)
        self.job_sha256: str | None = None
        self.cancel = threading.Event()
        self.reason: str | None = None  # removed | changed | shutdown | lease_lost
        self.rerun = False

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.cancel.set()

    def file_changed(self) -> bool:
        """Read the job file again (the intake saw it change): stop the run if the file
        went away or changed. True when the job needs another look once the run ends."""
        try:
            data = read_job_of(self.ctx.paths(self.job_id))  # its file now
        except OSError:
            return False
        if self.job_sha256 is None:
            # a purge (or a job not read yet): a job file that is there again runs again
            # as soon as this is done, not at the next rescan
            return data is not None
        if data is None:
            logger.debug("%s: the job file was removed; stopping the job", self.job_id)
            self.stop("removed")
            # the run may be past its last look at the cancel flag (finishing): look at
            # the job again once it is done, so the purge is never lost
            return True
        if identity(data) != self.job_sha256:
            logger.info("%s: the job file changed; starting over with the new one", self.job_id)
            self.stop("changed")
            return True
        if self.paths.paused() and self.reason is None:
            logger.info("%s: pausing (dropfetch pause); the partial download is kept", self.job_id)
            self.stop("paused")
        # a pause, or a resume while the pause is under way: look once the run ends
        return self.reason == "paused"

    def run(self, downloader: Downloader) -> None:
        """Read the job file; unless it is finished or another host's, run a try."""
        ctx, paths = self.ctx, self.paths
        try:
            data = read_job_of(paths)
        except OSError as exc:
            logger.warning("%s: cannot read the job file (%s); will look again", self.job_id, exc)
            ctx.queue.put(self.job_id, delay=ctx.config.rescan_interval)
            return
        if data is None:
            if ctx.inbox_present(self.job_id):
                removed(ctx, paths)
            return
        self.job_sha256 = identity(data)
        if _at_rest(read_sidecar(paths.sidecar), self.job_sha256, paths):
            return  # finished before (restarts are idempotent), or paused: no lease needed
        lease = ctx.leases.acquire(self.job_id)
        if lease is None:
            # another host works on it; look again as soon as its lease could be stale
            ctx.look_again(self.job_id)
            return
        try:
            self._with_lease(data, lease, downloader)
        except LeaseLostError:
            # from a sidecar write on an error path: the job belongs to another host now
            logger.error("%s: lost the lease; stopping without publishing", self.job_id)
            ctx.look_again(self.job_id)
        except OSError:
            if ctx.inbox_present(self.job_id):
                raise
        finally:
            ctx.leases.release(lease)

    def _open_board(self, lease: Lease) -> tuple[StatusBoard, Status | None] | None:
        """The board of this try, from the sidecar on disk; None: nothing to do now."""
        paths = self.paths
        if _is_dir(paths.sidecar):
            logger.error(
                "%s: %s is a directory, so the job cannot have a status file; it is "
                "not run (remove that directory, then touch the job file)",
                self.job_id,
                paths.sidecar.name,
            )
            return None
        old = read_sidecar(paths.sidecar)
        same = old if old is not None and old.job_sha256 == self.job_sha256 else None
        if same is not None and same.is_final:
            return None  # finished before: restarts are idempotent
        sidecar = self._fresh_sidecar(same)
        previous = None if old is None or old.status is Status.DELETING else old.status
        board = self.ctx.board(paths, sidecar, previous, lease)
        if paths.paused():
            self._pause_idle(board, same, previous)
            return None
        if same is not None and not self._due(same):
            return None
        return board, previous

    def _fresh_sidecar(self, same: Sidecar | None) -> Sidecar:
        """This try's sidecar; ``same`` is this job file's sidecar on disk, if any."""
        return Sidecar(
            id=self.job_id,
            job=self.paths.job.name,
            job_sha256=self.job_sha256 or "",
            host=self.ctx.config.lease.host_id,
            attempt=_failed_tries(same) if same is not None else 0,
            created=same.created if same is not None else now_iso(),
        )

    def _pause_idle(
        self, board: StatusBoard, same: Sidecar | None, previous: Status | None
    ) -> None:
        """Pause a job that is not running (unless this job file is ``paused`` already),
        with the figures of its last try (this job file's) as they were."""
        if previous is Status.PAUSED and same is not None:
            return
        if same is not None:
            sc = board.sidecar
            sc.url, sc.error, sc.progress = same.url, same.error, same.progress
            sc.bytes_done, sc.bytes_total = same.bytes_done, same.bytes_total
        board.paused(cut_short=False)
        logger.info("%s: paused; 'dropfetch resume' goes on from here", self.job_id)
        self.ctx.finished(self.job_id, board.sidecar)

    def _due(self, same: Sidecar) -> bool:
        """Whether a try of the job in ``same`` (this job file's unfinished sidecar) is
        due now (``dropfetch retry`` makes a waiting one due); else it is queued again
        for when its retry is due."""
        retry_now = self.paths.take_retry()  # a request is used up by the next look
        wait = _seconds_until(same.next_attempt_at)
        if same.status is Status.WAITING and wait > 0 and not retry_now:
            self.ctx.queue.put(self.job_id, delay=wait)
            return False
        if retry_now:
            logger.info("%s: retrying now (dropfetch retry)", self.job_id)
        return True

    def _with_lease(self, data: bytes | BadJobError, lease: Lease, downloader: Downloader) -> None:
        opened = self._open_board(lease)
        if opened is None:
            return
        board, previous = opened
        attempt: Attempt | None = None  # None: the try did not get as far as a URL
        try:
            attempt = Attempt.begin(self, lease, board, downloader, data, previous)
            attempt.run_steps()
        except LeaseLostError as exc:
            logger.error("%s: lost the lease; stopping without publishing (%s)", self.job_id, exc)
            self.ctx.look_again(self.job_id)
        except CancelledError:
            self._cancelled(board)
        except DropfetchError as err:
            self._error(board, err, attempt)
        except OSError as exc:
            if not self.ctx.inbox_present(self.job_id):
                return  # the partial file is kept for when the inbox is back
            self._error(board, from_os_error(exc, "writing the output"), attempt)
        except Exception as exc:  # a bug, not the job's fault: tried again, then failed
            logger.exception("%s: internal error (a bug in dropfetch)", self.job_id)
            self._error(
                board,
                InternalError(
                    f"dropfetch hit an internal error ({type(exc).__name__}); the job is tried "
                    "again, and fails once its attempts are used up. The daemon's log has the "
                    "details: please report it"
                ),
                attempt,
            )

    def _error(self, board: StatusBoard, err: DropfetchError, attempt: Attempt | None) -> None:
        sc = board.sidecar
        urls = attempt.spec.urls if attempt is not None else ()
        source = attempt.source if attempt is not None else Source()
        retry = plan_retry(
            err,
            attempt=sc.attempt,
            counted=sc.status is Status.DOWNLOADING,
            config=self.ctx.config.download,
            draw=random.random(),
            source=source,
            urls=len(urls),
        )
        if retry is not None:
            if retry.source != source:
                next_mirror(self.paths, board, err, urls, retry.source)
            else:
                logger.warning(
                    "%s: attempt %d failed (%s: %s); next try in %.1f s",
                    self.job_id,
                    retry.attempt,
                    err.code,
                    err.message,
                    retry.delay,
                )
            board.retry_at(retry.delay, err, attempt=retry.attempt)
            self.paths.forget_starts()
            self.ctx.queue.put(self.job_id, delay=retry.delay)
            self.ctx.finished(self.job_id, board.sidecar)
            return
        logger.error("%s: failed (%s): %s", self.job_id, err.code, err.message)
        self.paths.drop_partial()
        board.fail(err)
        self.paths.drop_requests()  # moot once the job is finished
        self.ctx.finished(self.job_id, board.sidecar)

    def _cancelled(self, board: StatusBoard) -> None:
        if self.reason == "removed":
            purge(self.ctx, self.paths, board.sidecar, board)
        elif self.reason == "shutdown":
            # checkpoint: the next start resumes the partial file; a try cut short is
            # not a failed attempt (nor is a kill -9: see count_start)
            board.checkpoint()
            self.paths.forget_starts()
            logger.info("%s: stopped for shutdown; partial download kept", self.job_id)
            self.ctx.finished(self.job_id, board.sidecar)
        elif self.reason == "paused":
            board.paused(cut_short=True)
            self.paths.forget_starts()
            logger.info("%s: paused; partial download kept", self.job_id)
            self.ctx.finished(self.job_id, board.sidecar)
        elif self.reason == "lease_lost":
            logger.error("%s: lost the lease; stopped without publishing", self.job_id)
            self.ctx.look_again(self.job_id)
        # "changed": the new job file starts over at once (rerun)


def _at_rest(old: Sidecar | None, job_sha256: str, paths: JobPaths) -> bool:
    """Whether ``old`` says this job file needs no look with a lease: it is finished,
    or paused (and the pause request is still there)."""
    if old is None or old.job_sha256 != job_sha256:
        return False
    return old.is_final or (old.status is Status.PAUSED and paths.paused())


def _seconds_until(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        when = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return when.timestamp() - time.time()


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _failed_tries(old: Sidecar) -> int:
    """How many tries of the job in ``old`` ended in an error. ``attempt`` counts those,
    plus one for the try under way (downloading, unpacking): a try that was cut short
    there (kill -9, a lost lease) is not a failed one, so the next try has its number."""
    if old.status in (Status.DOWNLOADING, Status.UNPACKING, Status.DELETING):
        return max(0, old.attempt - 1)
    return old.attempt
