"""Which of a job's URLs (its own, then its ``mirrors``) its tries use, kept beside the
partial file: work_dir is shared like the lease, so a restart, or another host that
takes the job over, goes on with the same URL. The decision is
:func:`dropfetch.retry.plan_retry`'s (pure)."""

from __future__ import annotations

import json
import logging

from dropfetch.errors import DropfetchError
from dropfetch.fsutil import atomic_write
from dropfetch.jobpaths import JobPaths
from dropfetch.retry import Source
from dropfetch.status import StatusBoard
from dropfetch.urlpolicy import redact_url

__all__ = ["load_source", "next_mirror", "save_source"]

logger = logging.getLogger(__name__)


def load_source(paths: JobPaths, job_sha: str, urls: int, *, attempts: int) -> Source:
    """The URL in use for the job file ``job_sha`` with ``urls`` URLs and ``attempts``
    failed tries so far: the job's own unless a try moved on to a mirror (a state of
    another job file, or from before the count was reset, does not count)."""
    try:
        data = json.loads(paths.mirror.read_bytes())
        index, base = int(data["index"]), int(data["base"])
        same = data.get("job_sha256") == job_sha
    except (OSError, ValueError, TypeError, KeyError):
        return Source()
    if not same or not 0 <= index < urls or not 0 <= base <= attempts:
        return Source()
    return Source(index, base)


def save_source(paths: JobPaths, job_sha: str, source: Source) -> None:
    """Say that the job's next tries use ``source`` (only the lease holder calls this)."""
    data = {"job_sha256": job_sha, "index": source.index, "base": source.base}
    atomic_write(paths.mirror, json.dumps(data).encode(), durable=False)


def next_mirror(
    paths: JobPaths,
    board: StatusBoard,
    err: DropfetchError,
    urls: tuple[str, ...],
    source: Source,
) -> None:
    """The URL in use failed for good with ``err``: the next tries use ``source``, a
    mirror, which the sidecar's ``url`` shows (redacted) from now on."""
    save_source(paths, board.sidecar.job_sha256, source)
    shown = redact_url(urls[source.index])
    logger.warning(
        "%s: %s failed (%s: %s); trying mirror %d of %d: %s",
        paths.id,
        board.sidecar.url,
        err.code,
        err.message,
        source.index,
        len(urls) - 1,
        shown,
    )
    board.job_url(shown)
