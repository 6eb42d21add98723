"""The seed's own routes, kept so that its client works unchanged (SPEC §9): ``/arhive``
(sic) with the id in a JSON body, for ``GET`` and ``DELETE`` too, and the seed's
answer shapes (:func:`seed_view`). The body is always read whole, so a kept-alive
connection goes on after it."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from dropfetch import control
from dropfetch.httpanswers import Reject, Reply, Request
from dropfetch.httpjobs import check_id, current, read_json, submit
from dropfetch.jobfile import job_name
from dropfetch.status import Sidecar, Status

__all__ = ["seed_delete", "seed_get", "seed_submit", "seed_view"]


def seed_view(sc: Sidecar) -> dict[str, Any]:
    """``{"id", "status", "files"}`` when ok, ``{"id", "status": "failed", "error"}``
    (the error's message) when failed, else ``{"id", "status", "progress"}``."""
    if sc.status is Status.OK:
        return {"id": sc.id, "status": str(sc.status), "files": list(sc.files)}
    if sc.status is Status.FAILED:
        error = sc.error.get("message") if isinstance(sc.error, dict) else None
        return {"id": sc.id, "status": str(sc.status), "error": error or "failed"}
    return {"id": sc.id, "status": str(sc.status), "progress": sc.progress}


def _body_id(req: Request) -> str:
    job_id = read_json(req).get("id")
    if not isinstance(job_id, str):
        raise Reject(HTTPStatus.BAD_REQUEST, 'expected a JSON object such as {"id": "..."}')
    return check_id(job_id)


def seed_submit(req: Request) -> Reply:
    """``POST /arhive`` ``{"url": ...}`` (and the options of ``POST /archive``):
    ``200 {"id": ...}``."""
    path, _ = submit(req.inbox, read_json(req))
    return Reply(HTTPStatus.OK, {"id": job_name(path.name)})


def seed_get(req: Request) -> Reply:
    """``GET /arhive`` ``{"id": ...}``: the job in the seed's shape."""
    return Reply(HTTPStatus.OK, seed_view(current(req.inbox, _body_id(req))))


def seed_delete(req: Request) -> Reply:
    """``DELETE /arhive`` ``{"id": ...}``: ``200 {"id", "status": "deleting"}``."""
    job_id = _body_id(req)
    try:
        control.delete(req.front.config, job_id)
    except control.UnknownJobError as exc:
        raise Reject(HTTPStatus.NOT_FOUND, exc.message) from None
    return Reply(HTTPStatus.OK, {"id": job_id, "status": str(Status.DELETING)})
