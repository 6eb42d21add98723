"""Issue 12: the API's new routes: job options, the listing's query, retry/pause/resume,
the seed's /arhive routes, the event stream and its session cookie, JSON 405 for every
method. The real front end in-process on 127.0.0.1 port 0, raw sockets and http.client;
the event stream of a real daemon's job is in tests/test_frontend.py."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dropfetch import control, httpevents
from dropfetch.errors import HttpStatusError
from dropfetch.events import JobStarted, StatusChanged
from dropfetch.httpanswers import Reject
from dropfetch.httpauth import (
    COOKIE,
    Access,
    authorised,
    cookie_header,
    foreign_request,
    session_value,
)
from dropfetch.httpevents import OVERFLOW, Broadcaster, Subscription
from dropfetch.httplisting import ListQuery, page, parse_list_query
from dropfetch.httpseed import seed_view
from dropfetch.jobfile import OPTIONS, job_sha256, parse_job
from dropfetch.lifecycle import Deadline
from dropfetch.status import Sidecar, Status
from harness import check_sidecar, wait_for
from test_httpapi import TOKEN, Front, _board, _front, check_error, exchange, request


@pytest.fixture(params=[None, TOKEN], ids=["no-token", "token"])
def front(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Front]:
    yield from _front(tmp_path, request.param)


@pytest.fixture
def token_front(tmp_path: Path) -> Iterator[Front]:
    yield from _front(tmp_path, TOKEN)


def call(
    front: Front, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={**front.headers(), **(headers or {})})
        r = conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None, r
    finally:
        conn.close()


# --- POST /archive: every job option -------------------------------------------------

SAMPLES: dict[str, Any] = {
    "sha256": "ab" * 32,
    "extract": False,
    "keep_archive": True,
    "filename": "t.tgz",
    "priority": "high",  # when the job file parser knows it
    "headers": {"Authorization": "Bearer t0ken", "Cookie": "a=1"},
    "checksum": "sha512:" + "cd" * 64,
    "checksum_url": "https://example.org/x/SHA256SUMS",
    "mirrors": ["https://mirror.example/x/t.tar.gz"],
    "segments": 4,
    "password": "s3cret pass",
}


def test_post_archive_takes_every_job_option(front):
    given = {k: v for k, v in SAMPLES.items() if k in OPTIONS}
    assert OPTIONS - {"url"} <= set(SAMPLES), "a job option without a sample value here"
    status, posted, _ = call(
        front, "POST", "/archive", {"url": "https://example.org/x/t.tar.gz", "name": "t", **given}
    )
    assert status == 201 and check_sidecar(posted)["id"] == "t"
    data = (front.inbox / "t.url").read_bytes()
    doc = yaml.safe_load(data)
    assert doc == {"url": "https://example.org/x/t.tar.gz", **given}  # the YAML form
    spec = parse_job(data)
    assert (spec.sha256, spec.extract, spec.keep_archive, spec.filename) == (
        "ab" * 32,
        False,
        True,
        "t.tgz",
    )
    assert spec.headers == (("Authorization", "Bearer t0ken"), ("Cookie", "a=1"))
    assert spec.password == "s3cret pass" and "s3cret" not in repr(spec)  # noqa: S105 - a test password
    assert "s3cret" not in json.dumps(posted)  # never in a sidecar
    assert posted["job_sha256"] == job_sha256(data)
    # no option (or only nulls): the plain form
    status, _, _ = call(
        front, "POST", "/archive", {"url": "https://example.org/p.zip", "filename": None}
    )
    assert status == 201 and (front.inbox / "p.url").read_text() == "https://example.org/p.zip\n"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"url": "https://example.org/a.zip", "colour": "red", "size": 3}, ["colour", "size"]),
        ({"url": "https://example.org/a.zip", "extract": "maybe"}, ["extract"]),
        ({"url": "https://example.org/a.zip", "sha256": "xyz"}, ["sha256"]),
        ({"url": "https://example.org/a.zip", "filename": "a/b"}, ["filename"]),
        ({"url": "https://example.org/a.zip", "name": 5}, ["name"]),
    ],
)
def test_post_archive_refuses_unknown_and_bad_options(front, body, words):
    status, answer, _ = call(front, "POST", "/archive", body)
    assert status == 400 and all(w in answer["error"] for w in words), answer
    assert not list(front.inbox.glob("*.url"))


# --- GET /archive?status=&limit=&offset= ---------------------------------------------


def _sidecars(inbox: Path, statuses: dict[str, Status]) -> None:
    for name, status in statuses.items():
        sc = Sidecar(id=name, job=f"{name}.url", job_sha256="0" * 64, url=None, status=status)
        (inbox / f"{name}.status.json").write_bytes(sc.to_json())


def test_listing_filters_and_pages(front):
    names = {f"j{i:02d}": [Status.OK, Status.FAILED, Status.QUEUED][i % 3] for i in range(12)}
    _sidecars(front.inbox, names)
    status, listing, r = call(front, "GET", "/archive")
    assert status == 200 and [x["id"] for x in listing] == sorted(names)
    assert r.getheader("X-Total-Count") == "12"
    status, listing, r = call(front, "GET", "/archive?status=ok,failed&limit=3&offset=2")
    want = [n for n in sorted(names) if names[n] in (Status.OK, Status.FAILED)]
    assert status == 200 and [x["id"] for x in listing] == want[2:5]
    assert r.getheader("X-Total-Count") == str(len(want)) == "8"
    assert {x["status"] for x in listing} <= {"ok", "failed"}
    status, listing, r = call(front, "GET", "/archive?status=queued&status=ok&offset=100")
    assert status == 200 and listing == [] and r.getheader("X-Total-Count") == "8"
    status, listing, _ = call(front, "GET", "/archive/?limit=0")
    assert status == 200 and listing == []


@pytest.mark.parametrize(
    "query",
    [
        "status=nope",
        "status=ok,nope",
        "status=",
        "limit=-1",
        "limit=x",
        "limit=1.5",
        "limit=1&limit=2",
        "offset=%2B1",
        "offset=99999999999",
        "colour=red",
        "limit",
    ],
)
def test_listing_refuses_bad_queries(front, query):
    status, answer, r = call(front, "GET", f"/archive?{query}")
    assert status == 400 and isinstance(answer["error"], str), (query, answer)
    assert r.getheader("Content-Type") == "application/json"


def test_parse_list_query():
    assert parse_list_query("") == ListQuery()
    q = parse_list_query("status=ok,%20failed&limit=5&offset=10")
    assert q == ListQuery(frozenset({Status.OK, Status.FAILED}), 5, 10)
    assert page(list(range(20)), q) == list(range(10, 15))
    assert page(list(range(20)), ListQuery(offset=18)) == [18, 19]
    with pytest.raises(Reject, match="no such status: 'nope'"):
        parse_list_query("status=nope")
    with pytest.raises(Reject, match=r"unknown query parameter.*: colour"):
        parse_list_query("colour=1")


# --- POST /archive/NAME/retry|pause|resume ---------------------------------------------


def test_retry_route_runs_control_retry(front):
    failed = _board(front.inbox, "gone", "https://example.org/gone.zip")
    failed.downloading()
    failed.fail(HttpStatusError(404, "Not Found"))
    status, answer, _ = call(front, "POST", "/archive/gone/retry")
    assert status == 202 and check_sidecar(answer)["status"] == "queued"
    assert answer["id"] == "gone" and not (front.inbox / "gone.status.json").exists()
    running = _board(front.inbox, "busy", "https://example.org/busy.zip")
    running.downloading()
    status, answer, _ = call(front, "POST", "/archive/busy/retry")
    assert status == 409 and "downloading" in answer["error"]
    assert (front.inbox / "busy.status.json").exists()
    status, answer, _ = call(front, "POST", "/archive/nobody/retry")
    assert status == 404 and "nobody" in answer["error"]
    status, answer, r = call(front, "GET", "/archive/gone/retry")
    assert status == 405 and r.getheader("Allow") == "POST"


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_and_resume_routes_call_control(front, monkeypatch, action):
    """The queue lane builds control.pause/resume; the route calls whatever is there
    (a stub here), answers 202 with the sidecar, 409 for a ControlError, 404 for no job."""
    _board(front.inbox, "j", "https://example.org/j.zip").downloading()
    calls = []

    def stub(config, job_id):
        calls.append((config.inbox, job_id))
        if job_id == "refuse":
            raise control.ControlError("not now")
        return "done"

    monkeypatch.setattr(control, action, stub)
    status, answer, _ = call(front, "POST", f"/archive/j/{action}")
    assert status == 202 and check_sidecar(answer)["id"] == "j"
    assert calls == [(front.inbox, "j")]
    (front.inbox / "refuse.url").write_text("https://example.org/r.zip\n")
    status, answer, _ = call(front, "POST", f"/archive/refuse/{action}")
    assert status == 409 and answer["error"] == "not now"
    monkeypatch.undo()  # the real one: an unknown job is 404 whatever it is built to do
    status, answer, _ = call(front, "POST", f"/archive/nobody/{action}")
    assert status == 404 and "error" in answer


# --- the seed's /arhive routes ----------------------------------------------------------


def _seed(conn: http.client.HTTPConnection, method: str, body: object, front: Front) -> Any:
    conn.request(method, "/arhive", body=json.dumps(body).encode(), headers=front.headers())
    r = conn.getresponse()
    assert r.getheader("Content-Type") == "application/json"
    return r.status, json.loads(r.read())


def test_seed_routes_on_one_kept_alive_connection(front):
    """POST, GET (a body on a GET) and DELETE /arhive, mixed with other requests, on one
    http.client connection: every answer is the seed's shape and nothing is mangled."""
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    try:
        assert _seed(conn, "POST", {"url": "https://example.org/os/deb.tar.gz"}, front) == (
            200,
            {"id": "deb"},
        )
        assert _seed(conn, "GET", {"id": "deb"}, front) == (
            200,
            {"id": "deb", "status": "queued", "progress": None},
        )
        conn.request("GET", "/archive/deb", headers=front.headers())
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["id"] == "deb"
        failed = _board(front.inbox, "gone", "https://example.org/gone.zip")
        failed.downloading()
        failed.fail(HttpStatusError(404, "Not Found"))
        status, shape = _seed(conn, "GET", {"id": "gone"}, front)
        assert status == 200 and set(shape) == {"id", "status", "error"}
        on_disk = json.loads((front.inbox / "gone.status.json").read_bytes())
        assert shape["status"] == "failed" and shape["error"] == on_disk["error"]["message"]
        assert _seed(conn, "GET", {"id": "nobody"}, front)[0] == 404
        assert _seed(conn, "GET", {"url": "x"}, front)[0] == 400
        assert _seed(conn, "DELETE", {"id": "deb"}, front) == (
            200,
            {"id": "deb", "status": "deleting"},
        )
        assert not (front.inbox / "deb.url").exists()
        assert _seed(conn, "DELETE", {"id": "deb"}, front)[0] == 404
        assert _seed(conn, "POST", {"url": "ftp://x/y"}, front)[0] == 400
        assert conn.sock is not None  # still the first connection: never closed
    finally:
        conn.close()


def test_seed_get_with_a_body_is_read_whole_when_pipelined(front):
    """A GET /arhive whose body is a request itself, pipelined with the next request:
    the body is read as a body, the next request gets its own answer."""
    (front.inbox / "victim.url").write_text("https://example.org/victim.zip\n")
    inner = request("DELETE", "/archive/victim", headers=front.auth() + b"Content-Length: 0\r\n")
    body = json.dumps({"id": "victim", "pad": inner.decode()}).encode()
    first = request(
        "GET", "/arhive", headers=front.auth() + b"Content-Length: %d\r\n" % len(body), body=body
    )
    last = request(
        "GET",
        "/arhive",
        headers=front.auth() + b"Content-Length: 15\r\nConnection: close\r\n",
        body=b'{"id":"victim"}',
    )
    answers = exchange(front.port, first, last)
    assert [a.status for a in answers] == [200, 200]
    assert answers[1].json() == {"id": "victim", "status": "queued", "progress": None}
    assert (front.inbox / "victim.url").exists()


def test_seed_view_shapes():
    base = Sidecar(id="a", job="a.url", job_sha256="0" * 64, url=None)
    assert seed_view(base) == {"id": "a", "status": "queued", "progress": None}
    ok = Sidecar(**{**_fields(base), "status": Status.OK, "files": ["x", "y/z"]})
    assert seed_view(ok) == {"id": "a", "status": "ok", "files": ["x", "y/z"]}
    bad = Sidecar(
        **{**_fields(base), "status": Status.FAILED, "error": {"code": "c", "message": "m"}}
    )
    assert seed_view(bad) == {"id": "a", "status": "failed", "error": "m"}


def _fields(sc: Sidecar) -> dict[str, Any]:
    return {f: getattr(sc, f) for f in sc.__dataclass_fields__}


# --- every method on every route: JSON 405 with Allow ------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "BREW", "get"]
PATHS = {
    "/archive": {"GET", "HEAD", "POST"},
    "/archive/j": {"GET", "HEAD", "DELETE"},
    "/archive/j/retry": {"POST"},
    "/archive/j/pause": {"POST"},
    "/archive/j/resume": {"POST"},
    "/arhive": {"GET", "POST", "DELETE"},
    "/events": {"GET"},
    "/session": {"POST"},
    "/metrics": {"GET", "HEAD"},
}


def _raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        buf = b""
        while chunk := sock.recv(65536):
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_every_method_on_every_route_is_answered_json(token_front):
    (token_front.inbox / "j.url").write_text("https://example.org/j.zip\n")
    failures = []
    for path, allowed in PATHS.items():
        for method in METHODS:
            if method in allowed:
                continue
            data = request(method, path, headers=token_front.auth() + b"Connection: close\r\n")
            status, headers, body = _raw(token_front.port, data)
            where = f"{method} {path}"
            if status != 405 or set(headers.get("allow", "").split(", ")) != allowed:
                failures.append(f"{where}: {status} Allow={headers.get('allow')}")
            elif headers.get("content-type") != "application/json":
                failures.append(f"{where}: {headers.get('content-type')}")
            elif method != "HEAD" and "error" not in json.loads(body):
                failures.append(f"{where}: {body[:100]!r}")
            elif method == "HEAD" and body:
                failures.append(f"{where}: a body on a HEAD answer")
            data = request(method, path, headers=b"Connection: close\r\n")
            status, headers, body = _raw(token_front.port, data)
            if status != 401 or not headers.get("www-authenticate", "").startswith("Bearer"):
                failures.append(f"{where} without the token: {status}")
            elif method != "HEAD" and "error" not in json.loads(body):
                failures.append(f"{where} without the token: {body[:100]!r}")
    assert not failures, "\n".join(failures)


def test_a_made_up_method_keeps_the_connection(front):
    final = request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n")
    answers = exchange(front.port, request("BREW", "/archive", headers=front.auth()), final)
    assert [a.status for a in answers] == [405, 200]
    check_error(answers[0])
    assert answers[0].headers["allow"] == "GET, HEAD, POST" and not answers[0].closes


# --- GET /events -------------------------------------------------------------------------


class Events:
    """A raw-socket client of GET /events."""

    def __init__(self, port: int, headers: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(request("GET", "/events", headers=headers))
        self.buf = b""
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(head[0].split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in head[1:])
        }

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf[:300])
            self.buf += chunk
        part, _, self.buf = self.buf.partition(sep)
        return part

    def block(self) -> str:
        return self._until(b"\n\n").decode("utf-8")

    def data(self) -> dict[str, Any]:
        """The next data: block's JSON (comments and other events skipped)."""
        while True:
            block = self.block()
            if block.startswith("data: "):
                assert "\n" not in block  # one data: line
                result: dict[str, Any] = json.loads(block[len("data: ") :])
                return result

    def ended(self) -> bool:
        while chunk := self.sock.recv(65536):
            self.buf += chunk
        return True

    def close(self) -> None:
        self.sock.close()


def _changed(front: Front, name: str, status: Status = Status.DOWNLOADING, **kw: Any) -> None:
    sc = Sidecar(id=name, job=f"{name}.url", job_sha256="0" * 64, url=None, status=status, **kw)
    front.bus.publish(StatusChanged(sc))


def test_events_stream_sidecar_changes(front):
    stream = Events(front.port, front.auth())
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["connection"] == "close"
        assert stream.block().startswith(f"retry: {httpevents.RETRY_MS}\n")
        wait_for(lambda: front.server.broadcaster.count == 1, message="the stream is open")
        front.bus.publish(JobStarted("a", 1))  # not a sidecar change: not shown
        _changed(front, "a", progress=5, files=["\u00e9\nx"])
        _changed(front, "a", Status.OK, output="a")
        first, second = stream.data(), stream.data()
        assert check_sidecar(first)["id"] == "a" and first["progress"] == 5
        assert first["files"] == ["\u00e9\\x0ax"]  # the sidecars' own escaped form
        assert check_sidecar(second)["status"] == "ok"
    finally:
        stream.close()
    wait_for(lambda: front.server.broadcaster.count == 0, message="the stream is released")


def test_events_heartbeat(front, monkeypatch):
    monkeypatch.setattr(httpevents, "HEARTBEAT", 0.2)
    stream = Events(front.port, front.auth())
    try:
        stream.block()  # retry:
        assert stream.block() == ": heartbeat"
    finally:
        stream.close()


def test_a_slow_client_loses_events_and_never_blocks_the_pipeline(front):
    """A client that reads nothing while 2000 big changes are published: publish()
    returns every time (the subscriber only enqueues), and the client, reading at last,
    gets "overflow" and then the changes after it."""
    stream = Events(front.port, front.auth())
    try:
        stream.block()
        wait_for(lambda: front.server.broadcaster.count == 1, message="the stream is open")
        files = [f"dir/file-{i:05d}.bin" for i in range(800)]  # ~20 KB a change
        done = threading.Event()

        def publish() -> None:
            for i in range(2000):
                _changed(front, f"n{i}", files=files)
            done.set()

        threading.Thread(target=publish, daemon=True).start()
        assert done.wait(60), "publishing blocked on a slow client"
        _changed(front, "last")
        blocks: list[str] = []
        while not blocks or not blocks[-1].startswith("data: ") or '"last"' not in blocks[-1]:
            blocks.append(stream.block())
        assert OVERFLOW.decode().strip() in blocks
        assert len([b for b in blocks if b.startswith("data: ")]) < 2001
    finally:
        stream.close()


def test_event_streams_are_capped(front):
    streams = [Events(front.port, front.auth()) for _ in range(httpevents.MAX_STREAMS)]
    try:
        assert {s.status for s in streams} == {200}
        extra = Events(front.port, front.auth())
        assert extra.status == 503 and extra.headers["retry-after"] == "5"
        size = int(extra.headers["content-length"])
        while len(extra.buf) < size:
            extra.buf += extra.sock.recv(65536)
        assert json.loads(extra.buf)["code"] == "busy"
        extra.close()
        status, _, _ = call(front, "GET", "/archive")  # other routes still served
        assert status == 200
    finally:
        for s in streams:
            s.close()


def test_streams_end_at_stop(tmp_path):
    gen = _front(tmp_path, None)
    f = next(gen)
    stream = Events(f.port)
    stream.block()
    assert f.server.stop(Deadline(20))
    assert stream.ended()
    stream.close()
    gen.close()


def test_events_session_cookie(token_front, tmp_path):
    f = token_front
    denied = Events(f.port)
    assert denied.status == 401 and denied.headers["www-authenticate"].startswith("Bearer")
    denied.close()
    status, answer, r = call(f, "POST", "/session")
    assert status == 200 and answer["events"] == "/events"
    cookie = r.getheader("Set-Cookie") or ""
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/events" in cookie
    assert TOKEN not in cookie
    pair = cookie.split(";", 1)[0]
    stream = Events(f.port, b"Cookie: other=1; %s\r\n" % pair.encode())
    assert stream.status == 200
    stream.close()
    assert Events(f.port, b"Cookie: %s0\r\n" % pair.encode()).status == 401
    status, _, _ = call(f, "GET", "/archive", headers={"Authorization": "", "Cookie": pair})
    assert status == 401  # the cookie opens /events only
    no_token = Front(f.server, f.inbox, None, f.bus)
    status, _, _ = call(no_token, "POST", "/session")
    assert status == 401  # the session itself needs the token
    (tmp_path / "token").write_text("another-token\n")
    f.server.apply(f.server.config)
    assert Events(f.port, b"Cookie: %s\r\n" % pair.encode()).status == 401  # rotated


def test_authorised():
    key = b"k" * 32
    good = f"{COOKIE}={session_value(key, 't')}"
    for access, authz, cookies, want in [
        (Access.BEARER, ["Bearer t"], [], True),
        (Access.BEARER, [], [good], False),
        (Access.BEARER_OR_COOKIE, [], [good], True),
        (Access.BEARER_OR_COOKIE, [], ['a="unterminated', good], True),
        (Access.BEARER_OR_COOKIE, [], [good + "x"], False),
        (Access.BEARER_OR_COOKIE, [], [f"{COOKIE}={session_value(b'j' * 32, 't')}"], False),
        (Access.PUBLIC, [], [], True),
    ]:
        assert authorised(access, "t", key, authz, cookies) is want, (access, authz, cookies)
    assert authorised(Access.BEARER, None, key, [], [])
    assert "Max-Age=0" in cookie_header(key, None)


def test_subscription_and_broadcaster():
    sub = Subscription(size=2)
    sc = Sidecar(id="a", job="a.url", job_sha256="0" * 64, url=None)
    sub.offer(sc)
    batch = sub.take(0)
    assert batch.sidecars == [sc] and not batch.overflow and not batch.closed
    for _ in range(3):
        sub.offer(sc)  # the third finds the queue full: all are lost
    batch = sub.take(0)
    assert batch.overflow and batch.sidecars == []
    sub.offer(sc)
    assert sub.take(0).sidecars == [sc]
    assert sub.take(0).sidecars == []  # nothing waiting: the timeout
    b = Broadcaster(max_streams=2, queue_size=5)
    one, two = b.open(), b.open()
    assert one is not None and two is not None and b.open() is None
    b.on_event(StatusChanged(sc))
    assert one.take(0).sidecars == [sc] == two.take(0).sidecars
    b.release(one)
    assert b.count == 1
    assert not b.close(0)  # two is still open ...
    assert two.take(0).closed and b.open() is None  # ... and told to end
    b.release(two)
    assert b.close(0)


def test_sidecar_cache_reads_again_what_changed(tmp_path, monkeypatch):
    from dropfetch import httplisting
    from dropfetch.fsutil import atomic_write

    cache = httplisting.SidecarCache()
    _sidecars(tmp_path, {"b": Status.QUEUED, "a": Status.OK, ".hidden": Status.OK})
    os.mkfifo(tmp_path / "fifo.status.json")
    (tmp_path / "dir.status.json").mkdir()
    assert [(sc.id, sc.status) for sc in cache.read_all(tmp_path)] == [
        ("a", Status.OK),
        ("b", Status.QUEUED),
    ]
    reads = []
    from dropfetch.status import read_sidecar as real

    def counted(path: Path) -> Sidecar | None:
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(httplisting, "read_sidecar", counted)
    new = Sidecar(id="b", job="b.url", job_sha256="0" * 64, url=None, status=Status.FAILED)
    atomic_write(tmp_path / "b.status.json", new.to_json())  # replaced, as the daemon does
    (tmp_path / "a.status.json").unlink()
    assert [(sc.id, sc.status) for sc in cache.read_all(tmp_path)] == [("b", Status.FAILED)]
    assert reads == ["b.status.json"]  # the unchanged ones come from the cache
    assert cache.read_all(tmp_path / "missing") == []


def test_pause_and_resume_routes_write_and_remove_the_request(front):
    """The real control.pause/resume behind the routes: the request file in the inbox."""
    _board(front.inbox, "j", "https://example.org/j.zip").downloading()
    status, answer, _ = call(front, "POST", "/archive/j/pause")
    assert status == 202 and check_sidecar(answer)["id"] == "j"
    assert (front.inbox / "j.pause").is_file()
    status, answer, _ = call(front, "POST", "/archive/j/resume")
    assert status == 202 and check_sidecar(answer)["id"] == "j"
    assert not (front.inbox / "j.pause").exists()


# --- requests that another site's page makes a browser send -------------------------


@pytest.mark.parametrize(
    ("method", "host", "origin", "site", "token", "refused"),
    [
        # not a browser (curl, scripts, the seed's client): never asked
        ("POST", "x", None, None, False, False),
        ("POST", "nas.example:8080", None, None, False, False),
        # the page itself
        ("POST", "127.0.0.1:8080", "http://127.0.0.1:8080", "same-origin", False, False),
        ("DELETE", "localhost:8080", "http://localhost:8080", "same-origin", False, False),
        ("POST", "[::1]:8080", "http://[::1]:8080", "same-origin", True, False),
        # another site's page: a simple POST/DELETE the browser sends without asking
        ("POST", "127.0.0.1:8080", "https://evil.example", "cross-site", True, True),
        ("POST", "127.0.0.1:8080", "https://evil.example", None, True, True),
        ("DELETE", "127.0.0.1:8080", None, "cross-site", False, True),
        ("POST", "127.0.0.1:8080", "http://127.0.0.1:3000", "same-site", False, True),
        # reading is not changing: a cross-site GET cannot read the answer (no CORS)
        ("GET", "127.0.0.1:8080", None, "cross-site", False, False),
        # DNS rebinding: a name resolving to this address, same-origin to the browser
        ("GET", "rebind.example:8080", "http://rebind.example:8080", "same-origin", False, True),
        ("POST", "rebind.example:8080", None, "same-origin", False, True),
        # ... which the token protects
        ("GET", "nas.example:8080", None, "same-origin", True, False),
        ("GET", "192.168.1.5:8080", None, "same-origin", False, False),
        ("GET", "localhost", None, "none", False, False),
    ],
)
def test_foreign_request(method, host, origin, site, token, refused):
    why = foreign_request(method, host, origin, site, token=token)
    assert (why is not None) is refused, why


def test_cross_site_and_rebinding_requests_are_refused_with_json(front):
    (front.inbox / "j.url").write_text("https://example.org/j.zip\n")
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    status, answer, _ = call(front, "DELETE", "/archive/j", headers=evil)
    assert status == 403 and answer["code"] == "forbidden" and "another site" in answer["error"]
    assert (front.inbox / "j.url").exists()  # nothing was done
    status, answer, _ = call(
        front, "POST", "/archive", {"url": "https://example.org/a.zip"}, headers=evil
    )
    assert status == 403 and sorted(p.name for p in front.inbox.iterdir()) == ["j.url"]
    rebinding = {"Host": f"rebind.example:{front.port}", "Sec-Fetch-Site": "same-origin"}
    status, answer, _ = call(front, "GET", "/archive", headers=rebinding)
    if front.token is None:
        assert status == 403 and "http.token_file" in answer["error"]
    else:
        assert status == 200  # the token guards it
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    try:
        conn.request("GET", "/", headers=rebinding)
        page = conn.getresponse()
        assert page.status == 200 and b"<html" in page.read().lower()  # the page holds no data
    finally:
        conn.close()
