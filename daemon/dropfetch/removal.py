"""Removing what a job made: a job whose file went away (purge, or ``keep``), the
revocation of a job's staging tokens, this host's debris at start, and who owns a
path in the outbox (the ``name_conflict`` check)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from dropfetch.config import Config
from dropfetch.context import JobContext
from dropfetch.errors import NameConflictError
from dropfetch.extract import ArchiveFormat
from dropfetch.fsutil import is_abandoned_temp, remove_tree, temp_name
from dropfetch.jobfile import SIDECAR_SUFFIX
from dropfetch.jobpaths import JobPaths, find_job_files
from dropfetch.leases import lease_key
from dropfetch.names import parse_staging_name
from dropfetch.status import Sidecar, StatusBoard, read_sidecar
from dropfetch.testhooks import hook_point

__all__ = ["check_owner", "clean_own_debris", "output_owner", "purge", "removed", "revoke_staging"]

logger = logging.getLogger(__name__)

_KEPT_SUFFIXES = tuple(f".{f}" for f in ArchiveFormat if f is not ArchiveFormat.FILE)


def removed(ctx: JobContext, paths: JobPaths) -> None:
    """The job file is gone: purge (or, with ``keep``, clean up unfinished work)."""
    sidecar = read_sidecar(paths.sidecar)
    if sidecar is None and not paths.partial.exists() and not paths.staging_dirs():
        return
    lease = ctx.leases.acquire(paths.id)
    if lease is None:
        ctx.queue.put(paths.id, delay=ctx.config.lease.ttl / 2)
        return
    try:
        if find_job_files(ctx.config.inbox, paths.id):  # it came back meanwhile
            ctx.queue.put(paths.id)
            return
        board = ctx.board(paths, sidecar, sidecar.status, lease) if sidecar else None
        purge(ctx, paths, sidecar, board)
    finally:
        ctx.leases.release(lease)


def purge(
    ctx: JobContext, paths: JobPaths, sidecar: Sidecar | None, board: StatusBoard | None
) -> None:
    """Remove what the job made (``on_job_removed: purge``), or only its unfinished
    work (``keep``); ``board`` (the lease held) says ``deleting`` first."""
    keep = ctx.config.on_job_removed == "keep"
    paths.drop_requests()  # a pause or retry request goes with its job
    if keep and sidecar is not None and sidecar.is_final:
        paths.drop_partial()
        logger.info("%s: job removed; output and sidecar kept (on_job_removed: keep)", paths.id)
        return
    if board is not None and sidecar is not None and not keep:
        board.deleting()
        hook_point(paths.id, "purge")
    revoke_staging(paths)  # first: a stale holder cannot publish after the purge
    if not keep:
        _remove_outputs(ctx.config, paths, sidecar)
    paths.drop_partial()
    try:
        paths.sidecar.unlink()
    except FileNotFoundError:
        pass
    logger.info(
        "%s: job removed; %s",
        paths.id,
        "output kept" if keep else "output, partial files and sidecar purged",
    )
    ctx.finished(paths.id, None)


def _remove_outputs(config: Config, paths: JobPaths, sidecar: Sidecar | None) -> None:
    """Only what this job made: not a kept archive or a category of the same name."""
    if output_owner(config, paths.id, me=paths.id) == paths.id:
        remove_tree(paths.output)
    archive = (sidecar.archive or {}) if sidecar else {}
    if archive.get("kept") and archive.get("format") in set(ArchiveFormat):
        # named as when it was kept; not read back from the sidecar, where a name
        # that is not UTF-8 is only shown (display_name)
        kept = f"{paths.output.name}.{archive['format']}"
        prefix = paths.id.rpartition("/")[0]
        rel = f"{prefix}/{kept}" if prefix else kept
        if output_owner(config, rel, me=paths.id) == paths.id:
            remove_tree(paths.output.with_name(kept))


def revoke_staging(paths: JobPaths) -> None:
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


def clean_own_debris(config: Config) -> None:
    """Remove what an earlier process of this host left (crash recovery): its staging,
    and its temporary files (sidecars, resume data, leases aside) wherever it writes
    them. Other hosts' temporary names may be mid-rename on a shared directory:
    only this host's, of processes that are gone (``is_abandoned_temp``)."""
    host = lease_key(config.lease.host_id)
    for p in (config.work / "staging").iterdir():
        found = parse_staging_name(p.name)
        mine = found is not None and found[1] == host and found[2] != os.getpid()
        # other hosts' temporary names may be mid-rename on a shared work_dir
        if mine or is_abandoned_temp(p.name):
            logger.debug("removing staging debris %s", p.name)
            remove_tree(p)
    for d in _temp_dirs(config):
        try:
            names = [e.name for e in os.scandir(d)]
        except OSError:
            continue  # e.g. the inbox is not there (yet): the watcher says so
        for name in names:
            if is_abandoned_temp(name):
                logger.debug("removing an abandoned temporary file %s", d / name)
                remove_tree(d / name)


def _temp_dirs(config: Config) -> list[Path]:
    """Every directory the daemon writes temporary files into (outputs aside)."""
    dirs = [config.inbox, config.outbox, config.work / "partial", config.work / "leases"]
    if config.recursive:
        try:
            dirs += [
                Path(e.path)
                for e in os.scandir(config.inbox)
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            ]
        except OSError:
            pass
    return dirs


def published_paths(job_id: str, kept: Path | None) -> list[str]:
    """The outbox paths (relative) a publish of ``job_id`` writes: its output, and its
    kept archive."""
    rels = [job_id]
    if kept is not None:
        rels.append(job_id.rpartition("/")[0] + "/" + kept.name if "/" in job_id else kept.name)
    return rels


def publish_lock_names(job_id: str, kept: Path | None) -> set[str]:
    """The names a publish holds (see :class:`dropfetch.context.NameLocks`): every path
    it writes and the directories above them (a category directory is a job's output
    too, with ``recursive``)."""
    names: set[str] = set()
    for rel in published_paths(job_id, kept):
        parts = rel.split("/")
        names.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return names


def check_owner(config: Config, job_id: str, kept: Path | None) -> None:
    """Fail with name_conflict when a path this job would publish is another job's."""
    for rel in published_paths(job_id, kept):
        owner = output_owner(config, rel, me=job_id)
        if owner is not None and owner != job_id:
            whose = f"the jobs in inbox/{owner}" if owner.endswith("/") else f"the job {owner!r}"
            raise NameConflictError(
                f"outbox/{rel} belongs to {whose}; publishing this job would overwrite "
                "it. Rename this job file (or remove the other job)"
            )


def output_owner(config: Config, rel: str, *, me: str | None = None) -> str | None:
    """Which job made ``outbox/REL``, judged from the names in the inbox.

    A job's output is a directory, ``outbox/NAME``; its kept archive is a file,
    ``outbox/NAME.<fmt>``; with ``recursive``, ``outbox/SUB`` holding outputs of jobs in
    ``inbox/SUB/`` is that category's (answered as "SUB/"). None: missing, or nobody's
    (debris). ``me`` counts as an existing job whatever the inbox says."""
    prefix, _, name = rel.rpartition("/")
    if prefix:
        parent = output_owner(config, prefix, me=me)
        if parent is not None and parent != prefix + "/":
            return parent  # outbox/SUB is a top-level job's (or a kept archive)
        prefix += "/"
    try:
        st = (config.outbox / rel).lstat()
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return _directory_owner(config, rel, top=not prefix, me=me)
    for suffix in _KEPT_SUFFIXES:
        if (
            name.endswith(suffix)
            and len(name) > len(suffix)
            and _job_exists(config, prefix + name[: -len(suffix)], me)
        ):
            return prefix + name[: -len(suffix)]
    return None


def _directory_owner(config: Config, rel: str, *, top: bool, me: str | None) -> str | None:
    """The owner of the directory ``outbox/REL``: a category's (``SUB/``), a job's, or none."""
    if config.recursive and top:
        try:
            entries = [e.name for e in os.scandir(config.outbox / rel)]
        except OSError:
            entries = []
        if any(_job_exists(config, f"{rel}/{e}", me) for e in entries):
            return rel + "/"
    return rel if _job_exists(config, rel, me) else None


def _job_exists(config: Config, job_id: str, me: str | None) -> bool:
    return (
        job_id == me
        or os.path.lexists(config.inbox / (job_id + SIDECAR_SUFFIX))
        or bool(find_job_files(config.inbox, job_id))
    )
