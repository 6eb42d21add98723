"""Queue control: retry, pause, resume and delete a job (``dropfetch retry`` etc. and the
HTTP front end's ``POST /archive/NAME/retry|pause|resume``, ``DELETE /archive/NAME``).

Every request lives in the inbox (the shared directory), never in one daemon's memory,
so it works whichever host holds the job and survives restarts. Each function checks
the job exists and raises :class:`UnknownJobError` if not, :class:`ControlError` when
the request does not fit the job's state; it returns a sentence for the person who
asked.
"""

from __future__ import annotations

from pathlib import Path

from dropfetch.config import Config
from dropfetch.errors import BadJobError
from dropfetch.fsutil import atomic_write
from dropfetch.jobfile import SIDECAR_SUFFIX
from dropfetch.jobpaths import is_request, job_file, job_paths
from dropfetch.status import FINAL, Status, now_iso, read_sidecar

__all__ = ["ControlError", "UnknownJobError", "delete", "pause", "resume", "retry"]


class ControlError(BadJobError):
    """The request does not fit the job's state (HTTP 409)."""


class UnknownJobError(ControlError):
    """No job of that name in the inbox (HTTP 404)."""


def _require_job(config: Config, job_id: str) -> None:
    if not job_file(config.inbox, job_id).exists():
        raise UnknownJobError(f"no job named {job_id!r} in {config.inbox}")


def _request(path: Path, what: str) -> None:
    """Write the request file ``path`` (atomically: it replaces a link or FIFO of that
    name, never writes through one). The daemon only looks whether it is there."""
    try:
        atomic_write(path, f"{what} at {now_iso()}\n".encode())
    except OSError as exc:
        raise ControlError(f"cannot write the request {path.name}: {exc.strerror or exc}") from None


def retry(config: Config, job_id: str) -> str:
    """A failed or finished job runs again (its sidecar is removed); a waiting one is
    tried now (a request file its holder uses up; the attempt count stays)."""
    _require_job(config, job_id)
    sidecar_path = config.inbox / (job_id + SIDECAR_SUFFIX)
    sidecar = read_sidecar(sidecar_path)
    if sidecar is not None and sidecar.status is Status.WAITING:
        _request(job_paths(config, job_id).retry, "dropfetch retry")
        return f"{job_id}: trying again now (attempt {sidecar.attempt + 1})"
    if sidecar is not None and sidecar.status not in FINAL:
        hint = "; 'dropfetch resume' it" if sidecar.status is Status.PAUSED else ""
        raise ControlError(
            f"{job_id} is {sidecar.status}; only failed, finished or waiting jobs can be "
            f"retried{hint}"
        )
    sidecar_path.unlink(missing_ok=True)
    return f"{job_id}: queued again"


def pause(config: Config, job_id: str) -> str:
    """Stop the job within a few seconds, keeping its partial download: a request file
    ``NAME.pause`` beside the job file, which every host honours until it is removed."""
    _require_job(config, job_id)
    paths = job_paths(config, job_id)
    sidecar = read_sidecar(paths.sidecar)
    if sidecar is not None and sidecar.status in FINAL:
        raise ControlError(f"{job_id} is {sidecar.status}; there is nothing left to pause")
    if is_request(paths.pause):
        return f"{job_id}: paused already"
    _request(paths.pause, "dropfetch pause")
    return f"{job_id}: pausing; the download stops within a few seconds and keeps what it has"


def resume(config: Config, job_id: str) -> str:
    """Go on with a paused job from its partial download (the request file goes)."""
    _require_job(config, job_id)
    paths = job_paths(config, job_id)
    if not is_request(paths.pause):
        raise ControlError(f"{job_id} is not paused")
    paths.pause.unlink(missing_ok=True)
    return f"{job_id}: resuming from where it stopped"


def delete(config: Config, job_id: str) -> str:
    """Remove the job file; the daemon then removes what the job made."""
    try:
        job_file(config.inbox, job_id).unlink()
    except FileNotFoundError:
        raise UnknownJobError(f"no job named {job_id!r} in {config.inbox}") from None
    return f"{job_id}: removed; the daemon removes what it made ({config.on_job_removed})"
