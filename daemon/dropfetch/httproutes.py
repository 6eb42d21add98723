"""The HTTP front end's routes (SPEC §9): a table of (method, path pattern) -> endpoint,
and the endpoints, which only write job files and read sidecars.

Every answer that shows a job is a whole sidecar built from :class:`~dropfetch.status.
Sidecar` (so it validates against ``schema/status.schema.json``): the one on disk, or,
for a job the daemon has not written one for yet, the sidecar it will start from
(``queued``, the job file's ``job_sha256`` and redacted URL). ``POST`` answers that of
the job it wrote; ``DELETE`` that of the job it removed, ``deleting``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dropfetch.config import Config
from dropfetch.errors import DropfetchError
from dropfetch.fsutil import read_regular
from dropfetch.httpanswers import Reject, Reply
from dropfetch.httpwire import Framing
from dropfetch.jobfile import (
    JOB_SUFFIX,
    MAX_JOB_BYTES,
    SIDECAR_SUFFIX,
    job_name,
    job_sha256,
    parse_job,
)
from dropfetch.metrics import Metrics
from dropfetch.status import Sidecar, Status, read_sidecar
from dropfetch.submit import derive_name, job_content, write_job, write_unique_job
from dropfetch.urlpolicy import redact_url
from dropfetch.webpage import PAGES

__all__ = ["ROUTES", "Front", "Request", "Route", "item_id", "resolve", "unstarted"]

logger = logging.getLogger(__name__)


class Front(Protocol):
    """What the endpoints use of the front end."""

    config: Config
    metrics: Metrics

    def view(self, sc: Sidecar) -> dict[str, Any]: ...

    def all_sidecars(self) -> list[Sidecar]: ...


@dataclass(frozen=True, slots=True)
class Request:
    """One request as an endpoint sees it: ``job_id`` from the path (None if it has
    none), and the body, read only when an endpoint calls ``read_body``."""

    front: Front
    job_id: str | None
    framing: Framing
    read_body: Callable[[], bytes]

    @property
    def inbox(self) -> Path:
        return self.front.config.inbox


Endpoint = Callable[[Request], Reply]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]  # matched in full; a group "id" is the job id
    endpoint: Endpoint


def resolve(routes: tuple[Route, ...], method: str, path: str) -> tuple[Endpoint, str | None]:
    """The endpoint for ``method`` on ``path`` (no query) and the job id in the path.
    404 for a path no route has, 400 or 404 for an unusable id (before the method is
    looked at), 405 with ``Allow`` for a method the path does not take."""
    matching = [r for r in routes if r.pattern.fullmatch(path)]
    if not matching:
        raise Reject(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
    found = matching[0].pattern.fullmatch(path)
    raw = found.groupdict().get("id") if found is not None else None
    job_id = item_id(raw) if raw is not None else None
    for route in matching:
        if route.method == method:
            return route.endpoint, job_id
    allowed = [r.method for r in matching]
    raise Reject(
        HTTPStatus.METHOD_NOT_ALLOWED,
        f"{method} is not allowed here",
        headers={"Allow": ", ".join(allowed)},
    )


def item_id(raw: str) -> str:
    """The job id in ``/archive/ID``: percent-decoded UTF-8, under the rules of job names
    (no control characters, at most 200 bytes); 400 or 404 for anything else."""
    try:  # the request line was read as latin-1: its bytes are the code points
        name = unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        raise Reject(
            HTTPStatus.BAD_REQUEST, "the id is not UTF-8 text once percent-decoded", "bad_job"
        ) from None
    if not name or "/" in name or name.startswith("."):
        raise Reject(HTTPStatus.NOT_FOUND, "unknown id")  # sub-paths and hidden names
    try:
        job_name(name + JOB_SUFFIX)
    except DropfetchError as exc:
        raise Reject(HTTPStatus.BAD_REQUEST, f"not a job id: {exc.message}", exc.code) from None
    return name


# -- sidecars of jobs the daemon has not taken yet -------------------------------------


def unstarted(name: str, data: bytes, status: Status = Status.QUEUED) -> Sidecar:
    """The sidecar of job ``name`` whose file holds ``data``, before the daemon writes
    one: the job's identity and redacted URL (None if the file is no valid job), no
    progress, no host."""
    try:
        url: str | None = redact_url(parse_job(data).url)
    except DropfetchError:
        url = None
    return Sidecar(
        id=name, job=name + JOB_SUFFIX, job_sha256=job_sha256(data), url=url, status=status
    )


def _job_bytes(path: Path) -> bytes | None:
    """A job file's bytes (None: there is none; empty: it cannot be read as one)."""
    try:
        return read_regular(path, MAX_JOB_BYTES)
    except FileNotFoundError:
        return None
    except (DropfetchError, OSError):  # not a regular file, unreadable: the daemon says
        return b""


# -- endpoints -------------------------------------------------------------------------


def list_jobs(req: Request) -> Reply:
    listing = []
    for sc in req.front.all_sidecars():
        try:
            listing.append(req.front.view(sc))
        except Exception:  # one odd sidecar must not hide the others
            logger.exception("%s: cannot show this sidecar", sc.id)
    return Reply(HTTPStatus.OK, listing)


def get_job(req: Request) -> Reply:
    name = str(req.job_id)
    sc = read_sidecar(req.inbox / (name + SIDECAR_SUFFIX))
    if sc is None:
        data = _job_bytes(req.inbox / (name + JOB_SUFFIX))
        if data is None:
            raise Reject(HTTPStatus.NOT_FOUND, f"unknown id {name!r}")
        sc = unstarted(name, data)
    return Reply(HTTPStatus.OK, req.front.view(sc))


def delete_job(req: Request) -> Reply:
    name = str(req.job_id)
    job = req.inbox / (name + JOB_SUFFIX)
    data = _job_bytes(job)
    try:
        job.unlink()
    except FileNotFoundError:
        raise Reject(HTTPStatus.NOT_FOUND, f"unknown id {name!r}") from None
    return Reply(HTTPStatus.ACCEPTED, req.front.view(unstarted(name, data or b"", Status.DELETING)))


def submit_job(req: Request) -> Reply:
    url, name, sha = _job_fields(_read_json(req))
    try:
        content = job_content(url, sha256=sha)
        path = _write(req.inbox, name, url, content)
    except DropfetchError as exc:
        status = HTTPStatus.CONFLICT if exc.code == "name_conflict" else HTTPStatus.BAD_REQUEST
        raise Reject(status, exc.message, exc.code) from None
    job_id = path.name[: -len(JOB_SUFFIX)]
    return Reply(HTTPStatus.CREATED, req.front.view(unstarted(job_id, content)))


def metrics(req: Request) -> Reply:
    return Reply(
        HTTPStatus.OK, generate_latest(req.front.metrics.registry), content_type=CONTENT_TYPE_LATEST
    )


def _read_json(req: Request) -> dict[str, Any]:
    if req.framing is None:
        raise Reject(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
    try:
        body = json.loads(req.read_body())
    except ValueError:
        raise Reject(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Reject(HTTPStatus.BAD_REQUEST, 'expected a JSON object such as {"url": "..."}')
    return body


def _job_fields(body: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """``url``, ``name`` and ``sha256`` of a ``POST /archive`` body; 400 for others."""
    unknown = sorted(set(body) - {"url", "name", "sha256"})
    if unknown:
        raise Reject(HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}")
    url, name, sha = body.get("url"), body.get("name"), body.get("sha256")
    if not isinstance(url, str) or not all(v is None or isinstance(v, str) for v in (name, sha)):
        raise Reject(
            HTTPStatus.BAD_REQUEST, '"url" (and optional "name", "sha256") must be strings'
        )
    return url, name, sha


def _write(inbox: Path, name: str | None, url: str, content: bytes) -> Path:
    try:
        if name:
            return write_job(inbox, name, content)
        return write_unique_job(inbox, derive_name(url), content)
    except OSError as exc:
        logger.error("http: cannot write a job file into %s: %s", inbox, exc)
        raise Reject(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"cannot write the job file into the inbox ({exc.strerror}): is the inbox "
            "there and writable?",
            "io_error",
        ) from None


_COLLECTION = re.compile(r"/archive/?")
_ITEM = re.compile(r"/archive/(?P<id>.+)", re.DOTALL)

ROUTES = (
    Route("GET", _COLLECTION, list_jobs),
    Route("POST", _COLLECTION, submit_job),
    Route("GET", _ITEM, get_job),
    Route("DELETE", _ITEM, delete_job),
    Route("GET", re.compile(r"/metrics"), metrics),
    *(Route("GET", pattern, endpoint) for pattern, endpoint in PAGES),  # the web page
)
