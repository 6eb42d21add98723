"""Issue 12: the files of the web page (``GET /``, ``/static/NAME``) as the front end
serves them: no token, the right types, a strict policy, nothing else under /static/,
and files that stay small and load nothing from another site.

The front end runs in-process on 127.0.0.1 port 0; the browser tests are in
tests/test_web.py.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from dropfetch.config import config_from_mapping
from dropfetch.events import EventBus
from dropfetch.httpanswers import Reject
from dropfetch.httpapi import HttpFrontEnd
from dropfetch.httpauth import Access
from dropfetch.httproutes import ROUTES, resolve
from dropfetch.lifecycle import Deadline
from dropfetch.metrics import Metrics
from dropfetch.webpage import page_bytes

TOKEN = "page-token"  # noqa: S105 - a test token
WEB = resources.files("dropfetch").joinpath("web")
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/icon.png": ("icon.png", "image/png"),
}


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    """A front end with a token file, so that a route that needs it answers 401."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = config_from_mapping(
        {
            "inbox": str(tmp_path / "inbox"),
            "outbox": str(tmp_path / "outbox"),
            "http": {"listen": "127.0.0.1:0", "token_file": str(tmp_path / "token")},
        }
    )
    (tmp_path / "inbox").mkdir()
    server = HttpFrontEnd(config, Metrics(tmp_path / "inbox"), EventBus())
    server.start()
    try:
        yield server.address[1]
    finally:
        assert server.stop(Deadline(30))


def is_public(method: str, path: str) -> bool:
    try:
        route, _ = resolve(ROUTES, method, path)
    except Reject:
        return False
    return route.access is Access.PUBLIC


def get(port: int, path: str, method: str = "GET") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path)
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer


def fetch(port: int, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer, body


@pytest.mark.parametrize("path", sorted(FILES))
def test_page_files_are_served_without_a_token(port, path):
    name, content_type = FILES[path]
    answer, body = fetch(port, path + "?v=1")  # a query changes nothing
    assert answer.status == 200
    assert body == WEB.joinpath(name).read_bytes() == page_bytes(name)
    assert answer.getheader("Content-Type") == content_type
    assert answer.getheader("X-Content-Type-Options") == "nosniff"
    assert answer.getheader("Cache-Control") == "no-cache"
    policy = answer.getheader("Content-Security-Policy") or ""
    assert policy.startswith("default-src 'self'")
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    head = get(port, path, "HEAD")
    assert head.status == 200 and head.getheader("Content-Length") == str(len(body))


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/index.html",
        "/static/nope.js",
        "/static/../archive",
        "/static/%2e%2e/archive",
        "/static/..%2farchive",
        "/static/app.js/",
        "/static//app.js",
        "/static/APP.JS",
        "/static/web/app.js",
        "/index.html",
        "/static/../../../../etc/passwd",
    ],
)
def test_anything_else_is_no_page_and_needs_the_token(port, path):
    assert not is_public("GET", path)
    answer, body = fetch(port, path)
    assert answer.status == 401  # like every route that is not the page's
    assert answer.getheader("Content-Type") == "application/json"
    assert b"passwd" not in body and b"root:" not in body


def test_the_page_needs_no_other_route_without_token(port):
    assert is_public("GET", "/") and not is_public("POST", "/")
    assert get(port, "/archive").status == 401
    assert get(port, "/events").status == 401
    assert get(port, "/", "POST").status == 401  # only GET (and HEAD) are public


def test_only_get_serves_the_page(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("DELETE", "/", headers={"Authorization": f"Bearer {TOKEN}"})
    answer = conn.getresponse()
    answer.read()
    conn.close()
    assert answer.status == 405 and answer.getheader("Allow") == "GET, HEAD"


URL = re.compile(rb"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}")


def test_page_files_are_small_and_load_nothing_from_another_site():
    names = sorted(p.name for p in WEB.iterdir() if p.is_file())
    assert names == sorted(name for name, _ in FILES.values())
    total = sum(len(WEB.joinpath(n).read_bytes()) for n in names)
    assert total < 100 * 1024, total
    for name in names:
        data = WEB.joinpath(name).read_bytes()
        if name.endswith(".png"):
            continue
        assert not re.search(rb"https?://", data), name  # no URL to another origin
        assert not URL.findall(data), name
    html = page_bytes("index.html").decode()
    # no inline script or style: the policy would refuse them
    assert "<style" not in html and " style=" not in html and "javascript:" not in html
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js" defer>']
    assert not re.search(r"\son\w+\s*=", html)  # no inline event handler


def test_the_script_never_sets_html():
    js = page_bytes("app.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
    assert "new Function" not in js
