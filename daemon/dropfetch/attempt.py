"""One try at a job, one method per step: download, unpack, publish."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropfetch.archive.delivery import delivery_format
from dropfetch.checksumfile import job_checksums, url_leaf
from dropfetch.checksums import verify
from dropfetch.download import Downloader, DownloadResult, Transfer
from dropfetch.errors import (
    BadJobError,
    CancelledError,
    LeaseLostError,
)
from dropfetch.events import JobStarted, Phase, Progress
from dropfetch.extract import ArchiveFormat, extract, single_file_name
from dropfetch.fsutil import publish_dir, remove_tree, require_free_space
from dropfetch.groupsync import GROUP
from dropfetch.jobfile import JobSpec, job_name, job_suffix, parse_job
from dropfetch.jobpaths import JobPaths, count_start
from dropfetch.leases import Lease, lease_key
from dropfetch.mirrors import load_source
from dropfetch.names import safe_name, staging_name
from dropfetch.passwords import passwords_for
from dropfetch.removal import check_owner, publish_lock_names, revoke_staging
from dropfetch.retry import Source
from dropfetch.status import FINAL, Status, StatusBoard
from dropfetch.stream import TarStream
from dropfetch.testhooks import hook_point
from dropfetch.urlpolicy import redact_url

if TYPE_CHECKING:
    from dropfetch.jobrun import JobRun

__all__ = ["Attempt"]

NO_MIRROR = Source()  # the job's own URL

logger = logging.getLogger(__name__)


class Attempt:
    """One try at a job, with the lease held: download, verify, extract, publish, ``ok``.

    It owns the try's staging token (``work_dir/staging/KEY@HOST@PID@NS``, see
    :meth:`publish`) and its stream (extraction while downloading). Both are cleaned
    up before an error leaves :meth:`run_steps`, so a final status is only written once
    nothing of the try is left. Everything it reads of the configuration is the run's
    snapshot (``run.ctx.config``).
    """

    def __init__(
        self,
        run: JobRun,
        lease: Lease,
        board: StatusBoard,
        downloader: Downloader,
        spec: JobSpec,
        token: Path,
        *,
        source: Source = NO_MIRROR,
    ) -> None:
        self.run = run
        self.ctx = run.ctx
        self.config = run.ctx.config
        self.paths = run.paths
        self.job_id = run.job_id
        self.lease = lease
        self.board = board
        self.downloader = downloader
        self.spec = spec
        self.source = source  # which of spec.urls this try downloads
        self.token = token
        self._token_left = True  # until the publish removes it
        self.staging = token / "out"
        self.segments = spec.segments or self.config.download.segments
        self.stream = (
            TarStream(
                self.paths.partial,
                self.staging,
                self.config.extract,
                run.cancel,
                self._unpack_progress,
            )
            if spec.extract and self.segments == 1  # segments: not a growing prefix
            else None
        )

    @classmethod
    def begin(
        cls,
        run: JobRun,
        lease: Lease,
        board: StatusBoard,
        downloader: Downloader,
        data: bytes | BadJobError,
        previous: Status | None,
    ) -> Attempt:
        """Read the job, check the outbox and free space, say ``downloading``, count the
        start and make the staging token: the try is under way."""
        if previous in FINAL or previous is Status.UNPACKING:
            # a new version of a finished job, or a run that died while unpacking
            # (kill -9): back to the queue, then the download resumes from the partial
            board.requeued()
        job_name(run.paths.job.name)
        if isinstance(data, BadJobError):
            raise data  # not a regular file: never opened
        spec = parse_job(data, job_suffix(run.paths.job.name))
        sidecar = board.sidecar
        source = load_source(
            run.paths, sidecar.job_sha256, len(spec.urls), attempts=sidecar.attempt
        )
        board.job_url(redact_url(spec.urls[source.index]))
        config = run.ctx.config
        check_owner(config, run.job_id, None)  # before downloading; again before publishing
        require_free_space(config.outbox, keep_free=config.min_free_space)
        # fenced (a sidecar write): the start count and the job's staging tokens,
        # revoked below, are only the lease holder's to touch
        attempt = board.downloading()
        count_start(run.paths, board.sidecar.job_sha256, max_attempts=config.download.max_attempts)
        run.ctx.events.publish(JobStarted(run.job_id, attempt))
        token = cls._new_staging(run)
        try:
            return cls(run, lease, board, downloader, spec, token, source=source)
        except BaseException:
            remove_tree(token)
            raise

    @staticmethod
    def _new_staging(run: JobRun) -> Path:
        """A new staging token for this try (see :meth:`publish`); the tree is built in
        its ``out``. Every other token of the job (an earlier try's debris, or the one
        of a holder that lost the lease) is revoked first."""
        paths = run.paths
        token = paths.staging_dir / staging_name(
            paths.key, lease_key(run.ctx.config.lease.host_id), os.getpid(), time.monotonic_ns()
        )
        revoke_staging(paths)
        token.mkdir(mode=0o755)
        (token / "out").mkdir(mode=0o755)
        return token

    def run_steps(self) -> None:
        """Download, unpack, publish; the token and the stream are gone when it returns."""
        try:
            with self.ctx.phase(self.job_id, Phase.DOWNLOAD):
                result = self.download()
            with self.ctx.phase(self.job_id, Phase.UNPACK):
                fmt, files = self.unpack(result)
            archive: dict[str, Any] = {
                "format": str(fmt),
                "size": result.size,
                "sha256": result.sha256,
            }
            kept = self._keep(fmt, result, archive)
            self.publish(kept)
            self.paths.forget_starts()
            self.board.succeeded(output=self.job_id, files=files, archive=archive)
            self.paths.drop_requests()  # a pause or retry asked too late: moot now
            self.ctx.finished(self.job_id, self.board.sidecar)
            hook_point(self.job_id, "finished")
        finally:
            if self.stream is not None:
                self.stream.stop("the job ended")  # joins the extraction thread, if any
            if self._token_left:
                remove_tree(self.token)

    # -- the steps ---------------------------------------------------------------------

    def download(self) -> DownloadResult:
        """Into the partial file (resumed), feeding the stream; verify the checksums."""
        spec, run = self.spec, self.run

        def progress(t: Transfer) -> None:
            self._watch()
            if run.cancel.is_set():
                return  # e.g. the lease is lost: the partial file may be another host's now
            if self.stream is not None:
                self.stream.feed(t)
            self.board.progress(done=t.bytes_done, total=t.bytes_total, speed=t.speed)
            self.ctx.events.publish(
                Progress(self.job_id, Phase.DOWNLOAD, t.bytes_done, t.bytes_total, t.speed)
            )

        expected = job_checksums(spec, self.downloader, run.cancel)  # before the download
        result = self.downloader.fetch(
            spec.urls[self.source.index],
            self.paths.partial,
            on_progress=progress,
            cancel=run.cancel,
            algorithms=tuple(c.algo for c in expected),
            same_file=spec.urls,
            headers=spec.headers,
            segments=self.segments,
        )
        if run.cancel.is_set():
            raise CancelledError("stopped")
        if self.source.index:  # a mirror: the names come from the job's own URL
            result = replace(result, filename=safe_name(url_leaf(spec.url)) or result.filename)
        verify(expected, result.digests)
        self.board.downloaded(size=result.size, sha256=result.sha256)
        return result

    def unpack(self, result: DownloadResult) -> tuple[ArchiveFormat, list[str]]:
        """Into the token's ``out``: the streamed files, a fresh extraction, or the file."""
        spec, leaf = self.spec, self.paths.output.name
        fmt = (
            delivery_format(
                result.path, spec.filename or result.filename, forced=spec.extract_forced
            )
            if spec.extract
            else ArchiveFormat.FILE
        )
        if fmt is ArchiveFormat.FILE:
            if self.stream is not None:
                self.stream.result(fmt)  # never started for a plain file; clean if it did
            name = spec.filename or safe_name(result.filename) or leaf
            os.replace(result.path, self.staging / name)
            return fmt, [name]
        self.board.unpacking(fmt=str(fmt), size=result.size, sha256=result.sha256)
        files = self.stream.result(fmt) if self.stream is not None else None
        if files is None:
            files = extract(
                result.path,
                self.staging,
                fmt=fmt,
                config=self.config.extract,
                single_name=single_file_name(safe_name(result.filename), fmt, leaf),
                cancel=self.run.cancel,
                on_progress=self._unpack_progress,
                passwords=passwords_for(fmt, spec.password, self.config.extract.passwords_file),
            )
        return fmt, files

    def publish(self, kept: Path | None) -> None:
        """Stash the partial file, check the lease, and rename the output (and the kept
        archive) out of the staging token into place; then remove the token.

        The token is the fencing token: a host that takes the job over renames every
        other token of the job away before it publishes anything (``_new_staging``),
        and every rename here has a path inside the token as its source or destination.
        So a holder that was paused after its last lease check either renames before the
        new holder started, when the output it replaces is not the new holder's, or its
        renames fail (ENOENT) and it publishes nothing. docs/NFS.md has the reasoning."""
        token = self.token
        stash_partial(self.job_id, self.paths, token)
        self.lease.check()  # fencing: publish only while we hold the lease
        hook_point(self.job_id, "publish")
        names = publish_lock_names(self.job_id, kept)
        with self.ctx.phase(self.job_id, Phase.PUBLISH), self.ctx.publish_locks.hold(names):
            check_owner(self.config, self.job_id, kept)
            rename_out(self.job_id, token, self.paths.output, kept)
        # the token now holds the replaced output and the stashed partial file: gone
        # before the final status, so an `ok` never has debris of its try beside it
        remove_tree(token)
        self._token_left = False

    # -- helpers -----------------------------------------------------------------------

    def _keep(
        self, fmt: ArchiveFormat, result: DownloadResult, archive: dict[str, Any]
    ) -> Path | None:
        """Where the archive is kept (``keep_archive``), moved into the token; or None."""
        keep = (
            self.config.keep_archive if self.spec.keep_archive is None else self.spec.keep_archive
        )
        if fmt is ArchiveFormat.FILE or not keep:
            return None
        kept = self.paths.output.with_name(f"{self.paths.output.name}.{fmt}")
        archive["kept"] = kept.name
        # into the token: fenced like the output (ENOENT once revoked)
        os.replace(result.path, self.token / "archive")
        return kept

    def _watch(self) -> None:
        if self.lease.is_lost():
            self.run.stop("lease_lost")

    def _unpack_progress(self, done: int, total: int) -> None:
        self._watch()
        if self.board.sidecar.status is Status.UNPACKING:  # not while the download runs
            self.board.progress(done=done, total=total, speed=None)
            self.ctx.events.publish(Progress(self.job_id, Phase.UNPACK, done, total, None))


def stash_partial(job_id: str, paths: JobPaths, token: Path) -> None:
    """The download is extracted: move the partial file and its resume data into the
    token (removed with it), so that nothing after the last lease check touches a
    shared path outside the token (a crash before the publish then costs a new
    download, as it always did for a plain file, moved into staging)."""
    for p in (paths.partial, paths.meta, paths.mirror):
        try:
            os.replace(p, token / p.name)
        except FileNotFoundError:
            if not token.is_dir():
                raise LeaseLostError(
                    f"{job_id}: another host took this job over (this try's staging was revoked)"
                ) from None


def rename_out(job_id: str, token: Path, output: Path, kept: Path | None) -> None:
    """Publish: the output (and the kept archive) out of the token into place."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        publish_dir(token / "out", output, token / "old", sync_dir=GROUP.sync)
        if kept is not None:
            os.replace(token / "archive", kept)
    except FileNotFoundError:
        if token.is_dir():
            raise
        raise LeaseLostError(
            f"{job_id}: another host took this job over (this "
            "try's staging was revoked); nothing was published"
        ) from None
