"""The HTTP front end's routes (SPEC §9): a table of (method, path pattern) -> endpoint
and who may use it, and :func:`resolve`, which finds a request's route.

The endpoints: :mod:`dropfetch.httpjobs` (``/archive``, ``/metrics``),
:mod:`dropfetch.httpseed` (the seed's ``/arhive``), :mod:`dropfetch.httpevents`
(``/events``, ``/session``). A ``GET`` route answers ``HEAD`` too unless it says not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

from dropfetch.httpanswers import Endpoint, Front, Reject, Request
from dropfetch.httpauth import Access
from dropfetch.httpevents import events, open_session
from dropfetch.httpjobs import (
    check_id,
    control_endpoint,
    delete_job,
    get_job,
    list_jobs,
    metrics,
    submit_job,
)
from dropfetch.httpseed import seed_delete, seed_get, seed_submit
from dropfetch.webpage import PAGES

__all__ = ["ROUTES", "Front", "Request", "Route", "allowed", "item_id", "resolve"]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]  # matched in full; a group "id" is the job id
    endpoint: Endpoint
    access: Access = Access.BEARER
    head: bool = True  # a GET route that answers HEAD as well


def _takes(route: Route, method: str) -> bool:
    return route.method == method or (method == "HEAD" and route.method == "GET" and route.head)


def allowed(routes: list[Route]) -> str:
    """The ``Allow`` header of a path with these routes."""
    methods: list[str] = []
    for route in routes:
        methods += (
            [route.method, "HEAD"] if route.method == "GET" and route.head else [route.method]
        )
    return ", ".join(dict.fromkeys(methods))


def resolve(routes: tuple[Route, ...], method: str, path: str) -> tuple[Route, str | None]:
    """The route for ``method`` on ``path`` (no query) and the job id in the path.
    404 for a path no route has, 400 or 404 for an unusable id (before the method is
    looked at), 405 with ``Allow`` for a method the path does not take."""
    matching = [r for r in routes if r.pattern.fullmatch(path)]
    if not matching:
        raise Reject(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
    first = matching[0].pattern  # the first pattern that matches is the path's resource
    matching = [r for r in matching if r.pattern.pattern == first.pattern]
    found = first.fullmatch(path)
    raw = found.groupdict().get("id") if found is not None else None
    job_id = item_id(raw) if raw is not None else None
    for route in matching:
        if _takes(route, method):
            return route, job_id
    raise Reject(
        HTTPStatus.METHOD_NOT_ALLOWED,
        f"{method} is not allowed here",
        headers={"Allow": allowed(matching)},
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
    return check_id(name)


_COLLECTION = re.compile(r"/archive/?")
_ITEM = re.compile(r"/archive/(?P<id>.+)", re.DOTALL)
_SEED = re.compile(r"/arhive/?")


def _action(name: str) -> re.Pattern[str]:
    return re.compile(rf"/archive/(?P<id>.+)/{name}", re.DOTALL)


# The more particular patterns first: /archive/NAME/retry before /archive/NAME
ROUTES = (
    Route("GET", _COLLECTION, list_jobs),
    Route("POST", _COLLECTION, submit_job),
    Route("POST", _action("retry"), control_endpoint("retry")),
    Route("POST", _action("pause"), control_endpoint("pause")),
    Route("POST", _action("resume"), control_endpoint("resume")),
    Route("GET", _ITEM, get_job),
    Route("DELETE", _ITEM, delete_job),
    Route("GET", _SEED, seed_get, head=False),  # the id is in the body
    Route("POST", _SEED, seed_submit),
    Route("DELETE", _SEED, seed_delete),
    Route("GET", re.compile(r"/events"), events, Access.BEARER_OR_COOKIE, head=False),
    Route("POST", re.compile(r"/session"), open_session),
    Route("GET", re.compile(r"/metrics"), metrics),
    *(Route("GET", pattern, endpoint, Access.PUBLIC) for pattern, endpoint in PAGES),  # GET /
)
