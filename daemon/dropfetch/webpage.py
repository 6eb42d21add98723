"""The web page of ``GET /`` (SPEC §9): its files shipped as package data in
``dropfetch/web/`` (``index.html``, ``app.css``, ``app.js``, ``icon.png``), served as
they are.

They hold no data (the page asks the API for the jobs, with the bearer token the
person gives it), so their routes are ``Access.PUBLIC`` (GET and HEAD only). Every
answer carries a strict Content-Security-Policy (nothing from another origin, no inline
script or style), ``nosniff`` and ``no-cache`` (the daemon's own version is the one to
run). Any other path under ``/static/`` is no route at all (404): names are looked up
in a fixed table, never joined to a path.
"""

from __future__ import annotations

import functools
import re
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING

from dropfetch.httpanswers import Reply

if TYPE_CHECKING:
    from dropfetch.httpanswers import Request

__all__ = ["HEADERS", "PAGES", "page_bytes"]

_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "icon.png": "image/png",
}
_PATHS = {"/": "index.html", **{f"/static/{name}": name for name in _TYPES if name != "index.html"}}

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@functools.cache
def page_bytes(name: str) -> bytes:
    """The bytes of the page's file ``name`` (one of the table's), read once."""
    return resources.files("dropfetch").joinpath("web", name).read_bytes()


def _serve(name: str, _req: Request) -> Reply:
    return Reply(HTTPStatus.OK, page_bytes(name), content_type=_TYPES[name], headers=HEADERS)


PAGES = tuple(
    (re.compile(re.escape(path)), functools.partial(_serve, name)) for path, name in _PATHS.items()
)
"""(path pattern, endpoint) of each of the page's files, for the route table."""
