"""The ``/archive`` endpoints (SPEC §9): they write job files, read sidecars and call
:mod:`dropfetch.control`, nothing else.

Every answer that shows a job is a whole sidecar built from :class:`~dropfetch.status.
Sidecar` (so it validates against ``schema/status.schema.json``): the one on disk, or,
for a job the daemon has not written one for yet, the sidecar it will start from
(``queued``, the job file's ``job_sha256`` and redacted URL). ``POST`` answers that of
the job it wrote; ``DELETE`` that of the job it removed, ``deleting``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dropfetch import control
from dropfetch.config import Config
from dropfetch.errors import DropfetchError
from dropfetch.fsutil import read_regular
from dropfetch.httpanswers import Endpoint, Reject, Reply, Request
from dropfetch.httplisting import page, parse_list_query, selected
from dropfetch.jobfile import (
    JOB_SUFFIX,
    MAX_JOB_BYTES,
    OPTIONS,
    SIDECAR_SUFFIX,
    job_name,
    job_sha256,
    job_suffix,
    parse_job,
)
from dropfetch.jobpaths import job_file
from dropfetch.status import Sidecar, Status, read_sidecar
from dropfetch.submit import derive_name, job_document, write_job, write_unique_job
from dropfetch.urlpolicy import redact_url

__all__ = [
    "check_id",
    "control_endpoint",
    "current",
    "delete_job",
    "get_job",
    "list_jobs",
    "metrics",
    "read_json",
    "submit",
    "submit_job",
    "unstarted",
]

logger = logging.getLogger(__name__)

_FIELDS = frozenset({"name"} | OPTIONS)  # a POST body: the job's name, url and options


def check_id(name: str) -> str:
    """``name`` if it can be a job id (no '/', not hidden, the rules of job names);
    :class:`Reject` 404 or 400 otherwise."""
    if not name or "/" in name or name.startswith("."):
        raise Reject(HTTPStatus.NOT_FOUND, "unknown id")  # sub-paths and hidden names
    try:
        job_name(name + JOB_SUFFIX)
    except DropfetchError as exc:
        raise Reject(HTTPStatus.BAD_REQUEST, f"not a job id: {exc.message}", exc.code) from None
    return name


# -- sidecars of jobs the daemon has not taken yet -------------------------------------


def unstarted(
    name: str, data: bytes, status: Status = Status.QUEUED, *, job: str | None = None
) -> Sidecar:
    """The sidecar of job ``name`` whose file (``job``: ``NAME.url`` unless said) holds
    ``data``, before the daemon writes one: the job's identity and redacted URL (None if
    the file is no valid job), no progress, no host."""
    job = job or name + JOB_SUFFIX
    try:
        url: str | None = redact_url(parse_job(data, job_suffix(job)).url)
    except DropfetchError:
        url = None
    return Sidecar(id=name, job=job, job_sha256=job_sha256(data), url=url, status=status)


def _job_bytes(path: Path) -> bytes | None:
    """A job file's bytes (None: there is none; empty: it cannot be read as one)."""
    try:
        return read_regular(path, MAX_JOB_BYTES)
    except FileNotFoundError:
        return None
    except (DropfetchError, OSError):  # not a regular file, unreadable: the daemon says
        return b""


def current(inbox: Path, name: str) -> Sidecar:
    """Job ``name``'s sidecar on disk, else the one it starts from; 404 for no job."""
    sc = read_sidecar(inbox / (name + SIDECAR_SUFFIX))
    if sc is None:
        path = job_file(inbox, name)
        data = _job_bytes(path)
        if data is None:
            raise Reject(HTTPStatus.NOT_FOUND, f"unknown id {name!r}")
        sc = unstarted(name, data, job=path.name)
    return sc


# -- endpoints -------------------------------------------------------------------------


def list_jobs(req: Request) -> Reply:
    """Sidecars in name order, filtered by ``status``, paged by ``limit`` and ``offset``;
    ``X-Total-Count`` is how many there are before paging."""
    query = parse_list_query(req.query)
    chosen = selected(req.front.all_sidecars(), query)
    listing = []
    for sc in page(chosen, query):
        try:
            listing.append(req.front.view(sc))
        except Exception:  # one odd sidecar must not hide the others
            logger.exception("%s: cannot show this sidecar", sc.id)
    return Reply(HTTPStatus.OK, listing, headers={"X-Total-Count": str(len(chosen))})


def get_job(req: Request) -> Reply:
    return Reply(HTTPStatus.OK, req.front.view(current(req.inbox, str(req.job_id))))


def delete_job(req: Request) -> Reply:
    name = str(req.job_id)
    path = job_file(req.inbox, name)
    data = _job_bytes(path)
    _control(control.delete, req.front.config, name)
    sc = unstarted(name, data or b"", Status.DELETING, job=path.name)
    return Reply(HTTPStatus.ACCEPTED, req.front.view(sc))


def control_endpoint(action: str) -> Endpoint:
    """``POST /archive/NAME/ACTION``: 202 with the job's sidecar once
    ``dropfetch.control.ACTION`` (looked up at each call) has done its part."""

    def endpoint(req: Request) -> Reply:
        name = str(req.job_id)
        _control(getattr(control, action), req.front.config, name)
        return Reply(HTTPStatus.ACCEPTED, req.front.view(current(req.inbox, name)))

    endpoint.__name__ = endpoint.__qualname__ = action
    return endpoint


def _control(action: Callable[[Config, str], str], config: Config, name: str) -> None:
    try:
        action(config, name)
    except control.UnknownJobError as exc:
        raise Reject(HTTPStatus.NOT_FOUND, exc.message) from None
    except control.ControlError as exc:
        raise Reject(HTTPStatus.CONFLICT, exc.message) from None
    except OSError as exc:
        raise _io_error(config.inbox, exc) from None


def submit_job(req: Request) -> Reply:
    path, content = submit(req.inbox, read_json(req))
    job_id = job_name(path.name)
    return Reply(HTTPStatus.CREATED, req.front.view(unstarted(job_id, content)))


def submit(inbox: Path, body: dict[str, Any]) -> tuple[Path, bytes]:
    """Write the job a ``POST`` body asks for: ``url``, optional ``name`` and every job
    option (:data:`~dropfetch.jobfile.OPTIONS`); 400 for others, 409 for a taken name."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise Reject(
            HTTPStatus.BAD_REQUEST,
            f"unknown field(s): {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}",
        )
    url, name = body.get("url"), body.get("name")
    if not isinstance(url, str) or not (name is None or isinstance(name, str)):
        raise Reject(HTTPStatus.BAD_REQUEST, '"url" (and an optional "name") must be strings')
    try:
        content = job_document(url, {k: v for k, v in body.items() if k != "name"})
        return _write(inbox, name, url, content), content
    except DropfetchError as exc:
        status = HTTPStatus.CONFLICT if exc.code == "name_conflict" else HTTPStatus.BAD_REQUEST
        raise Reject(status, exc.message, exc.code) from None


def metrics(req: Request) -> Reply:
    return Reply(
        HTTPStatus.OK, generate_latest(req.front.metrics.registry), content_type=CONTENT_TYPE_LATEST
    )


def read_json(req: Request) -> dict[str, Any]:
    """The request's body as a JSON object; 411 without a length, 400 for others."""
    if req.framing is None:
        raise Reject(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
    try:
        body = json.loads(req.read_body())
    except ValueError:
        raise Reject(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Reject(HTTPStatus.BAD_REQUEST, 'expected a JSON object such as {"url": "..."}')
    return body


def _write(inbox: Path, name: str | None, url: str, content: bytes) -> Path:
    try:
        if name:
            return write_job(inbox, name, content)
        return write_unique_job(inbox, derive_name(url), content)
    except OSError as exc:
        raise _io_error(inbox, exc) from None


def _io_error(inbox: Path, exc: OSError) -> Reject:
    logger.error("http: cannot change a job file in %s: %s", inbox, exc)
    return Reject(
        HTTPStatus.SERVICE_UNAVAILABLE,
        f"cannot change the job file in the inbox ({exc.strerror}): is the inbox "
        "there and writable?",
        "io_error",
    )
