"""Queue control: retry, pause, resume and delete a job (``dropfetch retry`` etc. and the
HTTP front end's ``POST /archive/NAME/retry|pause|resume``, ``DELETE /archive/NAME``).

Every request lives in the inbox (the shared directory), never in one daemon's memory,
so it works whichever host holds the job and survives restarts. Each function checks
the job exists and raises :class:`UnknownJobError` if not, :class:`ControlError` when
the request does not fit the job's state; it returns a sentence for the person who
asked.
"""

from __future__ import annotations

from dropfetch.config import Config
from dropfetch.errors import BadJobError
from dropfetch.jobfile import JOB_SUFFIX, SIDECAR_SUFFIX
from dropfetch.status import FINAL, read_sidecar

__all__ = ["ControlError", "UnknownJobError", "delete", "pause", "resume", "retry"]


class ControlError(BadJobError):
    """The request does not fit the job's state (HTTP 409)."""


class UnknownJobError(ControlError):
    """No job of that name in the inbox (HTTP 404)."""


def _require_job(config: Config, job_id: str) -> None:
    if not (config.inbox / (job_id + JOB_SUFFIX)).exists():
        raise UnknownJobError(f"no job named {job_id!r} in {config.inbox}")


def retry(config: Config, job_id: str) -> str:
    """A failed or finished job runs again (its sidecar is removed)."""
    _require_job(config, job_id)
    sidecar_path = config.inbox / (job_id + SIDECAR_SUFFIX)
    sidecar = read_sidecar(sidecar_path)
    if sidecar is not None and sidecar.status not in FINAL:
        raise ControlError(
            f"{job_id} is {sidecar.status}; only failed or finished jobs can be retried"
        )
    sidecar_path.unlink(missing_ok=True)
    return f"{job_id}: queued again"


def pause(config: Config, job_id: str) -> str:
    """Stop the job within a few seconds, keeping its partial download."""
    _require_job(config, job_id)
    raise ControlError("pause is not built yet")


def resume(config: Config, job_id: str) -> str:
    """Go on with a paused job from its partial download."""
    _require_job(config, job_id)
    raise ControlError("resume is not built yet")


def delete(config: Config, job_id: str) -> str:
    """Remove the job file; the daemon then removes what the job made."""
    try:
        (config.inbox / (job_id + JOB_SUFFIX)).unlink()
    except FileNotFoundError:
        raise UnknownJobError(f"no job named {job_id!r} in {config.inbox}") from None
    return f"{job_id}: removed; the daemon removes what it made ({config.on_job_removed})"
