"""Issue 10: the HTTP front end's keep-alive framing, ids, token, errors and start-up.

Most tests run the real front end in-process on 127.0.0.1 port 0 and talk to it over
raw sockets (pipelined requests) and http.client (keep-alive); start-up and
configuration errors run a real ``dropfetch`` subprocess.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import yaml

from dropfetch import httpapi, httproutes, httpwire
from dropfetch.config import ConfigError, config_from_mapping
from dropfetch.errors import HttpStatusError
from dropfetch.events import EventBus
from dropfetch.httpanswers import Reject
from dropfetch.httpapi import HttpFrontEnd, bearer_ok, json_bytes
from dropfetch.httpjobs import unstarted
from dropfetch.httproutes import resolve
from dropfetch.httpwire import MAX_BODY, body_framing
from dropfetch.jobfile import job_sha256
from dropfetch.lifecycle import Deadline
from dropfetch.metrics import Metrics
from dropfetch.status import Sidecar, Status, StatusBoard
from harness import Daemon, check_sidecar, wait_for

TOKEN = "s3cret-token"  # noqa: S105 - a test token


@dataclass
class Front:
    server: HttpFrontEnd
    inbox: Path
    token: str | None
    bus: EventBus

    @property
    def port(self) -> int:
        return self.server.address[1]

    def auth(self) -> bytes:
        return f"Authorization: Bearer {self.token}\r\n".encode() if self.token else b""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _front(tmp_path: Path, token: str | None) -> Generator[Front, None, None]:
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    http_cfg: dict[str, str] = {"listen": "127.0.0.1:0"}
    if token is not None:
        (tmp_path / "token").write_text(token + "\n")
        http_cfg["token_file"] = str(tmp_path / "token")
    config = config_from_mapping(
        {"inbox": str(inbox), "outbox": str(tmp_path / "outbox"), "http": http_cfg}
    )
    bus = EventBus()
    server = HttpFrontEnd(config, Metrics(inbox), bus)
    server.start()
    try:
        yield Front(server, inbox, token, bus)
    finally:
        assert server.stop(Deadline(30))


@pytest.fixture(params=[None, TOKEN], ids=["no-token", "token"])
def front(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Front]:
    yield from _front(tmp_path, request.param)


@pytest.fixture
def token_front(tmp_path: Path) -> Iterator[Front]:
    yield from _front(tmp_path, TOKEN)


# --- a raw HTTP/1.1 client ------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"

    def json(self) -> Any:
        assert self.headers.get("content-type") == "application/json", self
        return json.loads(self.body.decode("utf-8"))


def _parse(buf: bytes) -> tuple[Answer | None, bytes]:
    """The first whole answer in ``buf`` (None if incomplete) and what follows it."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return None, buf
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    size = int(headers.get("content-length", "0")) if status >= 200 else 0
    if len(rest) < size:
        return None, buf
    return Answer(status, headers, rest[:size]), rest[size:]


def exchange(
    port: int, *requests: bytes, sequential: bool = False, timeout: float = 20
) -> list[Answer]:
    """Send ``requests`` on one connection, all at once (pipelined) or each after the
    answer to the one before (``sequential``: none after an answer that closes); every
    answer until the server closes (the last request should say ``Connection: close``).
    1xx answers are left out."""
    answers: list[Answer] = []
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:

        def receive() -> bool:
            nonlocal buf
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            buf += chunk
            while True:
                answer, buf = _parse(buf)
                if answer is None:
                    return bool(chunk)
                if answer.status >= 200:
                    answers.append(answer)

        batches = [[*requests]] if not sequential else [[r] for r in requests]
        for batch in batches:
            if answers and answers[-1].closes:
                break
            try:
                sock.sendall(b"".join(batch))
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed early: what it answered is still readable
            if sequential:
                wanted = len(answers) + 1
                while len(answers) < wanted and receive():
                    pass
        while receive():
            pass
    assert not buf, f"a truncated answer: {buf[:300]!r}"
    return answers


def check_error(answer: Answer) -> None:
    """Every error answer is JSON with an "error" text; every 401 names the scheme."""
    if answer.status >= 400:
        data = answer.json()
        assert isinstance(data, dict) and isinstance(data.get("error"), str), answer
    if answer.status == 401:
        assert answer.headers.get("www-authenticate", "").startswith("Bearer"), answer


def request(method: str, path: str, *, headers: bytes = b"", body: bytes = b"") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + headers + b"\r\n" + body


# --- 1. keep-alive: bodies are read, or the connection is closed -----------------------


# A body that is itself a request: if the server takes it for the next request, the
# job "victim" is deleted and one answer too many comes back.
def smuggled(front: Front) -> bytes:
    return request("DELETE", "/archive/victim", headers=front.auth() + b"Content-Length: 0\r\n")


def chunked(data: bytes, size: int | None = None) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (size if size is not None else len(data), data)


# framing name -> (extra headers, body) and the status it earns by itself (None: none)
def framings(front: Front) -> dict[str, tuple[bytes, bytes, int | None]]:
    s = smuggled(front)
    big = s + b"x" * (MAX_BODY + 10 - len(s))
    return {
        "none": (b"", b"", None),
        "length": (b"Content-Length: %d\r\n" % len(s), s, None),
        "chunked": (b"Transfer-Encoding: chunked\r\n", chunked(s), None),
        "chunked-ext": (
            b"Transfer-Encoding: chunked\r\n",
            b"%x;name=value\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(s), s),
            None,
        ),
        "expect-100": (b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(s), s, None),
        "too-large": (b"Content-Length: %d\r\n" % len(big), big, 413),
        "too-large-chunked": (b"Transfer-Encoding: chunked\r\n", chunked(big), 413),
        "expect-too-large": (
            b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(big),
            big,
            413,
        ),
        "bad-length": (b"Content-Length: abc\r\n", s, 400),
        "negative-length": (b"Content-Length: -1\r\n", s, 400),
        "plus-length": (b"Content-Length: +%d\r\n" % len(s), s, 400),
        "two-lengths": (b"Content-Length: %d\r\nContent-Length: 5\r\n" % len(s), s, 400),
        "length-and-chunked": (
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(s),
            chunked(s),
            400,
        ),
        "gzip-coding": (b"Transfer-Encoding: gzip, chunked\r\n", chunked(s), 501),
        "bad-chunk": (b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + s, 400),
    }


# framing errors are found before anything else; 413 only where a body is read
FRAMING_ERRORS = {
    "bad-length",
    "negative-length",
    "plus-length",
    "two-lengths",
    "length-and-chunked",
    "gzip-coding",
}

# (method, path) -> the status with no body (authorised)
ROUTES = {
    ("GET", "/archive"): 200,
    ("GET", "/archive/"): 200,
    ("GET", "/archive?status=ok"): 200,
    ("POST", "/archive"): 400,  # with no body or a non-JSON one
    ("GET", "/archive/victim"): 200,
    ("GET", "/archive/no-such-job"): 404,
    ("DELETE", "/archive/no-such-job"): 404,
    ("GET", "/metrics"): 200,
    ("GET", "/nope"): 404,
    ("PUT", "/archive"): 405,
    ("DELETE", "/archive"): 405,
    ("POST", "/archive/victim"): 405,
    ("POST", "/metrics"): 405,
    ("BREW", "/archive"): 405,  # a made-up method: JSON 405 with Allow, like PUT
}


def expected_status(method: str, path: str, framing: str, own: int | None, authorised: bool) -> int:
    if framing in FRAMING_ERRORS:
        return own or 400
    if not authorised:
        return 401
    if (method, path) == ("POST", "/archive"):
        if framing == "none":
            return 411
        return own if own == 413 else 400  # the smuggled request is no JSON
    return ROUTES[(method, path)]


@pytest.mark.parametrize("sequential", [False, True], ids=["pipelined", "sequential"])
def test_requests_on_one_connection_never_read_a_body_as_a_request(front, sequential):
    """Every route x every body framing (x with and without the token, when there is a
    token file), on one connection with a last request after it: sent at once, or after
    the first answer."""
    (front.inbox / "victim.url").write_text("https://example.org/victim.zip\n")
    final = request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n")
    failures = []
    for authorised in [True, False] if front.token else [True]:
        for (method, path), _ in ROUTES.items():
            for framing, (headers, body, own) in framings(front).items():
                auth = front.auth() if authorised else b""
                first = request(method, path, headers=auth + headers, body=body)
                answers = exchange(front.port, first, final, sequential=sequential)
                want = expected_status(method, path, framing, own, authorised)
                where = f"{method} {path} [{framing}]{'' if authorised else ' no token'}"
                if not answers:
                    failures.append(f"{where}: no answer (connection dropped)")
                    continue
                check_error(answers[0])
                got = [a.status for a in answers]
                if answers[0].status != want:
                    failures.append(f"{where}: {got}, expected {want} first")
                elif answers[0].closes and len(answers) != 1:
                    failures.append(f"{where}: answers after Connection: close: {got}")
                elif not answers[0].closes and (len(answers) != 2 or answers[1].status != 200):
                    failures.append(f"{where}: kept alive but then {got}")
                elif framing == "none" and answers[0].closes and want != 501:
                    failures.append(f"{where}: closed a connection that had no body")
                if not (front.inbox / "victim.url").exists():
                    failures.append(f"{where}: the body was run as a request (victim deleted)")
                    (front.inbox / "victim.url").write_text("https://example.org/victim.zip\n")
    assert not failures, "\n".join(failures)


def test_a_read_body_keeps_the_connection(front):
    """A POST body that is read (valid or not) leaves the connection usable: the next
    pipelined request gets its own answer."""
    final = request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n")
    job = json.dumps({"url": "https://example.org/a/tool.zip"}).encode()
    for headers, body, status in [
        (b"Content-Length: %d\r\n" % len(job), job, 201),
        (b"Transfer-Encoding: chunked\r\n", chunked(job), 201),
        (b"Transfer-Encoding: chunked\r\n", b"3\r\n" + job[:3] + b"\r\n" + chunked(job[3:]), 201),
        (b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(job), job, 201),
        (b"Content-Length: 7\r\n", b"{broken", 400),
        (b"Content-Length: 2\r\n", b"[]", 400),
    ]:
        answers = exchange(
            front.port,
            request("POST", "/archive", headers=front.auth() + headers, body=body) + final,
        )
        assert [a.status for a in answers] == [status, 200], (headers, answers)
        check_error(answers[0])
    assert sorted(p.name for p in front.inbox.iterdir()) == [
        "tool-2.url",
        "tool-3.url",
        "tool-4.url",
        "tool.url",
    ]


def test_expect_100_continue_is_sent_only_when_the_body_is_wanted(token_front):
    front = token_front
    job = json.dumps({"url": "https://example.org/x.zip"}).encode()
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as sock:
        sock.sendall(
            request(
                "POST",
                "/archive",
                headers=front.auth() + b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(job),
            )
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 ")  # only then the body
        sock.sendall(job)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 201 ")
    # refused before the body: no 100, a final answer that closes the connection
    answers = exchange(
        front.port,
        request("POST", "/archive", headers=b"Expect: 100-continue\r\nContent-Length: 5\r\n"),
    )
    assert [a.status for a in answers] == [401] and answers[0].closes


def test_http_client_keep_alive_through_every_error(front):
    """http.client on one connection object, for every route, body kind and (with a
    token file) without the token: after each answer the next request on the same
    connection object is answered correctly."""
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=20)
    auth = front.headers()
    job = json.dumps({"url": "https://example.org/k/kept.zip"}).encode()
    (front.inbox / "victim.url").write_text("https://example.org/victim.zip\n")
    bodies = {
        "none": None,
        "length": b"GET /archive HTTP/1.1\r\n\r\n",
        "chunked": [b"a body ", b"in chunks"],
        "too-large": b"x" * (MAX_BODY + 1),
    }
    cases = []
    for (method, path), _ in ROUTES.items():
        for framing, body in bodies.items():
            for authorised in [True, False] if front.token else [True]:
                want = expected_status(
                    method, path, framing, 413 if framing == "too-large" else None, authorised
                )
                if (method, path, framing, want) == ("POST", "/archive", "none", 411):
                    want = 400  # http.client sends "Content-Length: 0" with a POST
                cases.append((method, path, body, authorised, want))
    cases += [
        ("POST", "/archive", [job[:5], job[5:]], True, 201),
        ("POST", "/archive", job, True, 201),
        ("GET", "/archive/%00", None, True, 400),
    ]
    failures = []
    try:
        for method, path, body, authorised, want in cases:
            where = f"{method} {path} {str(body)[:20]} {'auth' if authorised else 'no-auth'}"
            conn.request(
                method,
                path,
                body=iter(body) if isinstance(body, list) else body,
                headers=auth if authorised else {},
                encode_chunked=isinstance(body, list),
            )
            r = conn.getresponse()
            data = r.read()
            if r.status != want:
                failures.append(f"{where}: {r.status}, expected {want}")
            if r.status >= 400 and not isinstance(json.loads(data)["error"], str):
                failures.append(f"{where}: not a JSON error")
            if r.status == 401 and not r.getheader("WWW-Authenticate", "").startswith("Bearer"):
                failures.append(f"{where}: 401 without WWW-Authenticate: Bearer")
            conn.request("GET", "/archive", headers=auth)
            r = conn.getresponse()
            listing = r.read()
            if r.status != 200 or not isinstance(json.loads(listing), list):
                failures.append(f"{where}: then GET /archive answered {r.status} {listing!r}")
    finally:
        conn.close()
    assert not failures, "\n".join(failures)
    assert (front.inbox / "victim.url").exists()


def test_protocol_errors_are_json_and_close(front):
    long_header = b"X-Long: " + b"a" * 70_000 + b"\r\n"
    for data, status in [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /archive HTTP/1.x\r\n\r\n", 400),
        (b"GET /archive HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /archive HTTP/1.1\r\n" + long_header + b"\r\n", 431),
        (b"GET /archive HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 120 + b"\r\n", 431),
    ]:
        answers = exchange(front.port, data)
        assert [a.status for a in answers] == [status], (data[:40], answers)
        check_error(answers[0])
        assert answers[0].closes


def test_internal_errors_answer_json(front, monkeypatch, caplog):
    """A bug answers 500 JSON (and the traceback goes to the log); a missing inbox
    answers 503 JSON; neither drops the connection without an answer."""
    final = request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n")
    sc = Sidecar(id="x", job="x.url", job_sha256="a" * 64, status=Status.OK)
    (front.inbox / "x.status.json").write_bytes(sc.to_json())

    def broken(_: Sidecar) -> dict[str, object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(front.server, "view", broken)
    with caplog.at_level(logging.ERROR, logger="dropfetch"):
        answers = exchange(front.port, request("GET", "/archive/x", headers=front.auth()) + final)
    assert answers[0].status == 500 and answers[0].json() == {
        "error": "an internal error; the daemon's log says more",
        "code": "internal",
    }
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)
    monkeypatch.undo()
    for p in front.inbox.iterdir():
        p.unlink()
    front.inbox.rmdir()
    front.inbox.write_text("not a directory")
    job = json.dumps({"url": "https://example.org/x.zip"}).encode()
    answers = exchange(
        front.port,
        request(
            "POST",
            "/archive",
            headers=front.auth() + b"Content-Length: %d\r\n" % len(job),
            body=job,
        )
        + final,
    )
    assert [a.status for a in answers] == [503, 200]
    assert answers[0].json()["code"] == "io_error"


# --- 2. odd ids: 400 or 404 JSON, never a dropped connection or a traceback -------------

ODD_IDS = [
    "a%00b",
    "%00",
    "a\x00b",
    "%0a",
    "a%0d%0aX-Injected:%201",
    "a%1b[31m",
    "a\x1bb",
    "a%7fb",
    "%ff",
    "%c3%28",
    "%ed%a0%80",
    "%f4%90%80%80",
    "%e2%80%a8",
    "a%c2%85b",
    "a" * 300,
    "%41" * 2000,
    "a%5cb",
    "..",
    "%2e%2e",
    "a%2fb",
    ".hidden",
    "%2fetc%2fpasswd",
    "x%",
    "x%zz",
    "\u00e9t\u00e9",
    "%e6%97%a5%e6%9c%ac",
    "%20",
]


def test_odd_ids_answer_400_or_404_json(front, caplog):
    (front.inbox / "victim.url").write_text("https://example.org/victim.zip\n")
    final = request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n")
    failures = []
    with caplog.at_level(logging.WARNING, logger="dropfetch"):
        for odd in ODD_IDS:
            for method in ("GET", "DELETE"):
                first = (
                    f"{method} /archive/{odd} HTTP/1.1\r\nHost: x\r\n".encode()
                    + front.auth()
                    + b"\r\n"
                )
                answers = exchange(front.port, first, final)
                got = [a.status for a in answers]
                if not answers or answers[0].status not in (400, 404):
                    failures.append(f"{method} {odd!r}: {got}")
                    continue
                check_error(answers[0])
                if answers[0].closes or got != [answers[0].status, 200]:
                    failures.append(f"{method} {odd!r}: the connection did not go on: {got}")
    assert not failures, "\n".join(failures)
    assert (front.inbox / "victim.url").exists()
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


def test_an_odd_but_valid_id_round_trips(front):
    """Ids that are unusual but allowed (non-ASCII, spaces) are found by their
    percent-encoded form."""
    from urllib.parse import quote

    for name in ("\u00e9t\u00e9 2026", "a+b", "\u65e5\u672c\u8a9e", "x%y"):
        (front.inbox / f"{name}.url").write_text("https://example.org/x.zip\n")
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=20)
        try:
            conn.request("GET", "/archive/" + quote(name, safe=""), headers=front.headers())
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read())["id"] == name
        finally:
            conn.close()


# --- GET /archive with odd sidecars ------------------------------------------------------


def test_odd_sidecars_never_break_the_listing(front):
    inbox = front.inbox
    good = Sidecar(id="good", job="good.url", job_sha256="a" * 64, status=Status.OK)
    (inbox / "good.status.json").write_bytes(good.to_json())
    # names that are not UTF-8 (surrogate escapes), as the filesystem hands them out
    odd_name = os.fsdecode(b"odd\xff\xfe")
    odd = Sidecar(
        id=odd_name,
        job=odd_name + ".url",
        job_sha256="b" * 64,
        status=Status.OK,
        files=[os.fsdecode(b"member\x80.txt"), "\ud800lone"],
    )
    (inbox / "odd.status.json").write_bytes(odd.to_json())
    os.mkdir(os.fsencode(inbox) + b"/dir\xff.status.json")  # a directory
    (inbox / "broken.status.json").write_bytes(b'{"schema": 1, "id": "broken", ')
    (inbox / "notutf8.status.json").write_bytes(b'{"id": "\xff\xfe"}')
    (inbox / "array.status.json").write_text("[1, 2]")
    (inbox / "wrongstatus.status.json").write_text(
        '{"id": "w", "job": "w.url", "job_sha256": "c", "status": "exploded"}'
    )
    (inbox / "nan.status.json").write_text(
        '{"id": "nan", "job": "nan.url", "job_sha256": "d", "status": "downloading", '
        '"speed": NaN, "eta": Infinity, "progress": -Infinity}'
    )
    (inbox / "typed.status.json").write_text(
        '{"id": 5, "job": ["x"], "job_sha256": null, "status": "ok", "files": {"a": 1}}'
    )
    answers = exchange(
        front.port, request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n")
    )
    assert [a.status for a in answers] == [200]
    text = answers[0].body.decode("utf-8")  # strict: valid UTF-8

    def no_constants(name: str) -> None:
        raise AssertionError(f"not JSON: {name}")

    listing = json.loads(text, parse_constant=no_constants)
    ids = [x["id"] for x in listing]
    # the documented escaped form: bytes that are not UTF-8 as \xNN
    assert "good" in ids and "odd\\xff\\xfe" in ids and "nan" in ids
    shown = next(x for x in listing if x["id"] == "odd\\xff\\xfe")
    assert shown["files"] == ["\\ud800lone", "member\\x80.txt"]  # sorted as shown
    assert next(x for x in listing if x["id"] == "nan")["speed"] is None
    assert not any("\ud800" <= c <= "\udfff" for c in text)
    for name in (odd_name, "good"):  # each item also answers, as valid UTF-8
        got = front.server.view(odd if name == odd_name else good)
        assert json.loads(json_bytes(got).decode("utf-8"))["status"] == "ok"


def test_json_bytes_never_raises():
    odd = {
        "s": "\udcff\ud800",
        "f": [float("nan"), float("inf"), 1.5],
        "t": (1, "x"),
        "o": object(),
        "\udc80k": {"n": None},
    }
    data = json.loads(json_bytes(odd).decode("utf-8"))
    # the sidecars' escaped form: an undecodable byte as \xNN, a lone surrogate as \uNNNN
    assert data["s"] == "\\xff\\ud800" and data["f"] == [None, None, 1.5]
    assert data["t"] == [1, "x"] and data["o"].startswith("<object") and "\\x80k" in data


# --- 3. the token: config rule and the Authorization header ------------------------------


def _token_cases(tmp_path: Path) -> list[tuple[str, Path]]:
    cases = []
    for name, content in [
        ("empty", b""),
        ("blank", b"  \n\t \r\n"),
        ("newline", b"\n"),
        ("two-words", b"two words\n"),
        ("two-lines", b"line1\nline2\n"),
        ("not-utf8", b"\xff\xfe\x00"),
        ("huge", b"x" * 10_000),
        ("control", b"tok\x1ben\n"),
    ]:
        p = tmp_path / f"token-{name}"
        p.write_bytes(content)
        cases.append((name, p))
    cases.append(("missing", tmp_path / "no-such-token"))
    (tmp_path / "token-dir").mkdir()
    cases.append(("directory", tmp_path / "token-dir"))
    os.mkfifo(tmp_path / "token-fifo")
    cases.append(("fifo", tmp_path / "token-fifo"))
    cases.append(("not-a-directory", tmp_path / "token-empty" / "token"))
    cases.append(("device", Path("/dev/zero")))
    if os.geteuid() != 0:
        unreadable = tmp_path / "token-unreadable"
        unreadable.write_text("secret\n")
        unreadable.chmod(0)
        cases.append(("unreadable", unreadable))
    return cases


def test_bad_token_files_are_configuration_errors(tmp_path):
    for name, path in _token_cases(tmp_path):
        with pytest.raises(ConfigError) as info:
            config_from_mapping(
                {"http": {"listen": "127.0.0.1:0", "token_file": str(path)}}, where="cfg.yaml"
            )
        message = str(info.value)
        assert "cfg.yaml: key http.token_file" in message and str(path) in message, (name, message)
    for value in ("", "   "):
        with pytest.raises(ConfigError, match=r"key http\.token_file"):
            config_from_mapping({"http": {"token_file": value}})
    good = tmp_path / "good-token"
    good.write_bytes(b"\xef\xbb\xbf  s3cr3t/+=~!\r\n")  # BOM, spaces, CRLF around the token
    cfg = config_from_mapping({"http": {"listen": "127.0.0.1:0", "token_file": str(good)}})
    assert cfg.http.token_file == good


def _dropfetch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropfetch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_check_config_and_run_refuse_bad_token_files(tmp_path):
    config = tmp_path / "config.yaml"
    for name, path in _token_cases(tmp_path):
        if name not in ("empty", "blank", "missing", "directory", "fifo"):
            continue
        config.write_text(
            yaml.safe_dump(
                {
                    "inbox": str(tmp_path / "in"),
                    "outbox": str(tmp_path / "out"),
                    "http": {"listen": "127.0.0.1:0", "token_file": str(path)},
                }
            )
        )
        for command in ("check-config", "run --config"):
            done = _dropfetch(*command.split(), str(config))
            assert done.returncode == 2, (name, command, done)
            assert "http.token_file" in done.stderr and str(path) in done.stderr, done.stderr
            assert "Traceback" not in done.stderr


AUTH_REFUSED = [
    "",
    "Bearer",
    "Bearer ",
    "Bearer  ",
    "Bearer \t",
    "bearer wrong",
    "BEARER wrong",
    f"Basic {TOKEN}",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN} extra",
    f"Bearer{TOKEN}",
    f"Token {TOKEN}",
    TOKEN,
    "Bearer \u00e9\u00e8",
    "Bearer " + "x" * 5000,
]
AUTH_ACCEPTED = [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} ", f"Bearer {TOKEN}\t"]


def test_bearer_token_matching(token_front):
    front = token_front
    final = request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n")
    for header in AUTH_REFUSED + AUTH_ACCEPTED:
        line = f"Authorization: {header}\r\n".encode("latin-1") if header else b""
        for method, path in (
            ("GET", "/archive"),
            ("GET", "/archive/x"),
            ("GET", "/metrics"),
            ("DELETE", "/archive/x"),
            ("GET", "/nope"),
        ):
            answers = exchange(front.port, request(method, path, headers=line) + final)
            assert answers, (header, path)
            check_error(answers[0])
            if header in AUTH_ACCEPTED:
                assert answers[0].status != 401, (header, method, path)
            else:
                assert answers[0].status == 401, (header, method, path, answers[0])
    # two Authorization headers, one right: refused (which one counts is ambiguous)
    two = f"Authorization: Bearer {TOKEN}\r\nAuthorization: Bearer wrong\r\n".encode()
    assert (
        exchange(front.port, request("GET", "/archive", headers=two + b"Connection: close\r\n"))[
            0
        ].status
        == 401
    )


# --- 4. start-up errors: exit 2 naming the key and the address --------------------------


def _run_daemon(tmp_path: Path, listen: str) -> subprocess.CompletedProcess[str]:
    d = Daemon(tmp_path, http={"listen": listen})
    return _dropfetch("run", "--config", str(d.config_path))


@pytest.mark.e2e  # `dropfetch run`
def test_listen_address_in_use_exits_2(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _run_daemon(tmp_path, f"127.0.0.1:{port}")
    assert done.returncode == 2, done
    assert "http.listen" in done.stderr and f"127.0.0.1:{port}" in done.stderr
    assert "already in use" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.e2e  # `dropfetch run`
def test_unusable_listen_addresses_exit_2(tmp_path):
    for listen, words in [
        ("192.0.2.1:8008", "no such address"),
        ("no-such-host.invalid:8008", "not an address"),
        ("[2001:db8::1]:8008", "no such address"),
    ]:
        done = _run_daemon(tmp_path, listen)
        assert done.returncode == 2, (listen, done)
        assert "http.listen" in done.stderr and listen in done.stderr, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr, done.stderr
    for listen in ("[:::1]:8008", "[zz::1]:80", "127.0.0.1:99999", "127.0.0.1", ":80", "a..b:80"):
        config = tmp_path / "bad.yaml"
        config.write_text(yaml.safe_dump({"http": {"listen": listen}}))
        done = _dropfetch("check-config", str(config))
        assert done.returncode == 2 and "key http.listen" in done.stderr, (listen, done)


def test_ipv6_listen_serves(make_daemon):
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    d = make_daemon(http={"listen": f"[::1]:{port}"})

    def answer() -> int | None:
        conn = http.client.HTTPConnection("::1", port, timeout=5)
        try:
            conn.request("GET", "/archive")
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    assert wait_for(answer, message="the front end on [::1]") == 200
    assert d.stop() == 0


# --- slow and many clients: deadlines and a cap on connections ------------------------


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def trickle(
    port: int, clients: list[tuple[bytes, bytes]], tick: float = 0.1, bound: float = 30
) -> list[tuple[list[Answer], bool]]:
    """Per client (sent at once, then sent one byte per ``tick``): its answers, and
    whether the server closed the connection within ``bound`` seconds. A client stops
    sending once it has an answer that closes."""
    import select
    import time

    socks = [_connect(port) for _ in clients]
    sent = [0] * len(clients)
    bufs = [b""] * len(clients)
    closed = [False] * len(clients)
    try:
        for sock, (prefix, _) in zip(socks, clients, strict=True):
            sock.sendall(prefix)
        end = time.monotonic() + bound
        while not all(closed) and time.monotonic() < end:
            readable, _, _ = select.select(
                [s for s, c in zip(socks, closed, strict=True) if not c], [], [], tick
            )
            for i, sock in enumerate(socks):
                if sock in readable:
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    bufs[i] += chunk
                    closed[i] = not chunk
                slow = clients[i][1]
                if (
                    not closed[i]
                    and b"connection: close" not in bufs[i].lower()
                    and sent[i] < len(slow)
                ):
                    with contextlib.suppress(OSError):
                        sock.send(slow[sent[i] : sent[i] + 1])
                    sent[i] += 1
    finally:
        for sock in socks:
            sock.close()
    results = []
    for got, was_closed in zip(bufs, closed, strict=True):
        answers, buf = [], got
        while (parsed := _parse(buf))[0] is not None:
            answer, buf = parsed
            assert answer is not None
            if answer.status >= 200:
                answers.append(answer)
        assert not buf, f"a truncated answer: {buf[:300]!r}"
        results.append((answers, was_closed))
    return results


def test_slow_request_heads_are_answered_408_and_closed(token_front, monkeypatch):
    """The request line and headers have HEADER_TIMEOUT in all from the request's first
    byte, however steadily the bytes trickle in (the per-recv idle timeout never fires)."""
    monkeypatch.setattr(httpwire, "HEADER_TIMEOUT", 1.0)
    front = token_front
    ok = request("GET", "/archive", headers=front.auth())
    endless = b"a" * 100_000
    cases = {
        "request line": (b"", b"GET /archive" + endless),
        "request line, then a header": (b"", b"GET /archive HTTP/1.1\r\nX-Slow: " + endless),
        "a header never ended": (b"GET /archive HTTP/1.1\r\nHost: x\r\nX-Slow: ", endless),
        "many short headers": (b"GET /archive HTTP/1.1\r\n", b"X-A: 1\r\n" * 95),
        "after a served request": (ok, ok[:-2] + b"X-Slow: " + endless),
    }
    results = trickle(front.port, list(cases.values()))
    for (name, _), (answers, closed) in zip(cases.items(), results, strict=True):
        assert closed, f"{name}: the connection is still open"
        want = [200, 408] if name == "after a served request" else [408]
        assert [a.status for a in answers] == want, (name, answers)
        assert answers[-1].closes, name
        check_error(answers[-1])


def test_slow_bodies_are_answered_408_and_closed(token_front, monkeypatch):
    """A body wanted (POST /archive) has BODY_TIMEOUT in all, in every framing."""
    monkeypatch.setattr(httpwire, "BODY_TIMEOUT", 1.0)
    front = token_front
    body = json.dumps({"url": "https://example.org/" + "a" * 2000 + ".zip"}).encode()
    post = b"POST /archive HTTP/1.1\r\nHost: x\r\n" + front.auth()
    length = b"Content-Length: %d\r\n" % len(body)
    cases = {
        "length": (post + length + b"\r\n", body),
        "expect-100": (post + length + b"Expect: 100-continue\r\n\r\n", body),
        "chunked": (post + b"Transfer-Encoding: chunked\r\n\r\n", chunked(body)),
        "chunked, many chunks": (
            post + b"Transfer-Encoding: chunked\r\n\r\n",
            b"".join(b"1\r\n%c\r\n" % c for c in body),
        ),
        "nothing sent": (post + length + b"\r\n", b""),
    }
    results = trickle(front.port, list(cases.values()))
    for (name, _), (answers, closed) in zip(cases.items(), results, strict=True):
        assert closed, f"{name}: the connection is still open"
        assert [a.status for a in answers] == [408], (name, answers)
        assert answers[0].closes, name
        check_error(answers[0])
    assert not list(front.inbox.iterdir())


def test_idle_keep_alive_connections_are_closed(token_front, monkeypatch):
    """Silent for IDLE_TIMEOUT between requests (or before the first): closed, with no
    answer, since no request had begun."""
    monkeypatch.setattr(httpwire, "IDLE_TIMEOUT", 0.5)
    ok = request("GET", "/archive", headers=token_front.auth())
    results = trickle(token_front.port, [(b"", b""), (ok, b""), (ok + ok, b"")])
    assert [([a.status for a in answers], closed) for answers, closed in results] == [
        ([], True),
        ([200], True),
        ([200, 200], True),
    ]
    assert not any(a.closes for answers, _ in results for a in answers)


def _thread_count_returns(before: int) -> None:
    wait_for(
        lambda: threading.active_count() <= before,
        timeout=30,
        message=f"the thread count back to {before}",
    )


def test_connections_beyond_the_cap_are_answered_503_without_a_thread(token_front):
    """MAX_CONNECTIONS connections are served (keep-alive, quickly, while the rest of a
    flood is refused); each one beyond gets a JSON 503 with Connection: close and starts
    no thread; the slots come back when clients leave."""
    front = token_front
    before = threading.active_count()
    ok = request("GET", "/archive", headers=front.auth())
    served = [_connect(front.port) for _ in range(httpapi.MAX_CONNECTIONS)]
    flood: list[socket.socket] = []
    try:
        for sock in served:  # each has a thread of its own once it has an answer
            sock.sendall(ok)
            answer, rest = _read_answer(sock)
            assert answer.status == 200 and not answer.closes and not rest
        flood = [_connect(front.port) for _ in range(2 * httpapi.MAX_CONNECTIONS)]
        for sock in flood:
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
            refused, rest = _parse(rest)
            assert refused is not None and refused.status == 503 and refused.closes, refused
            assert not rest
            check_error(answer)
            assert threading.active_count() <= before + httpapi.MAX_CONNECTIONS
        for sock in served:  # still served, on the same connections
            sock.sendall(ok)
            answer, rest = _read_answer(sock)
            assert answer.status == 200 and not answer.closes and not rest
    finally:
        for sock in served + flood:
            sock.close()

    def served_again() -> bool:
        answers = exchange(
            front.port, request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n")
        )
        return [a.status for a in answers] == [200]

    wait_for(served_again, timeout=30, message="a new connection served")
    _thread_count_returns(before)


def _read_answer(sock: socket.socket) -> tuple[Answer, bytes]:
    buf = b""
    while (parsed := _parse(buf))[0] is None:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {buf[:300]!r}"
        buf += chunk
    answer, rest = parsed
    assert answer is not None
    return answer, rest


def test_a_client_is_served_while_100_slow_clients_hang(token_front, monkeypatch):
    """Slow clients hold only their own threads: a client still gets its answers while
    100 of them are in the middle of their headers; the threads end with them."""
    monkeypatch.setattr(httpapi, "MAX_CONNECTIONS", 128)
    monkeypatch.setattr(httpwire, "HEADER_TIMEOUT", 600.0)  # they hang the whole test
    front = token_front
    before = threading.active_count()
    slow = [_connect(front.port) for _ in range(100)]
    try:
        for sock in slow:
            sock.sendall(b"GET /archive HTTP/1.1\r\nX-Slow: a")
        for _ in range(5):
            answers = exchange(
                front.port,
                request("GET", "/archive", headers=front.auth() + b"Connection: close\r\n"),
            )
            assert [a.status for a in answers] == [200]
    finally:
        for sock in slow:
            sock.close()
    _thread_count_returns(before)


# --- issue 11: every answer that shows a job is a sidecar the schema accepts ------------


def _get(front: Front, method: str, path: str, body: object = None) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=20)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=front.headers())
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def _board(inbox: Path, name: str, url: str) -> StatusBoard:
    job = inbox / f"{name}.url"
    job.write_text(url + "\n")
    sc = Sidecar(
        id=name, job=job.name, job_sha256=job_sha256(job.read_bytes()), url=url, host="host-a"
    )
    return StatusBoard(inbox / f"{name}.status.json", sc, previous=None, interval=0.0)


def test_every_answer_that_shows_a_job_is_a_valid_sidecar(front):
    """POST, GET of a job with no sidecar yet (a good, a bad and an unreadable job
    file), of a failed and an ok one (written through the status board), the listing
    and DELETE: each object is a whole sidecar that schema/status.schema.json accepts."""
    inbox = front.inbox
    status, posted = _get(
        front, "POST", "/archive", {"url": "https://user:pw@example.org/a/tool.zip?key=secret"}
    )
    assert status == 201
    check_sidecar(posted)
    assert isinstance(posted, dict) and posted["id"] == "tool" and posted["status"] == "queued"
    assert posted["url"] == "https://***@example.org/a/tool.zip?***"  # redacted
    assert posted["job_sha256"] == job_sha256((inbox / "tool.url").read_bytes())
    status, named = _get(
        front,
        "POST",
        "/archive",
        {"url": "https://example.org/b.zip", "name": "named", "sha256": "a" * 64},
    )
    assert status == 201 and check_sidecar(named)["id"] == "named"

    status, queued = _get(front, "GET", "/archive/tool")  # no sidecar yet
    assert status == 200 and check_sidecar(queued) == {**posted, "created": ANY, "updated": ANY}
    (inbox / "bad.url").write_text("not a url at all\n")
    status, bad = _get(front, "GET", "/archive/bad")
    assert status == 200 and check_sidecar(bad)["url"] is None
    os.mkfifo(inbox / "fifo.url")
    status, fifo = _get(front, "GET", "/archive/fifo")
    assert status == 200 and check_sidecar(fifo)["status"] == "queued"

    failed = _board(inbox, "gone", "https://example.org/gone.zip")
    failed.downloading()
    failed.fail(HttpStatusError(404, "Not Found"))
    done = _board(inbox, "done", "https://example.org/done.tar.gz")
    done.downloading()
    done.progress(done=10, total=10, speed=5.0)
    done.unpacking(fmt="tar.gz", size=10, sha256="b" * 64)
    done.succeeded(
        output="done",
        files=["a/b.txt", "c"],
        archive={"format": "tar.gz", "size": 10, "sha256": "b" * 64},
    )
    for name, want in (("gone", "failed"), ("done", "ok")):
        status, got = _get(front, "GET", f"/archive/{name}")
        assert status == 200 and check_sidecar(got)["status"] == want

    status, listing = _get(front, "GET", "/archive")
    assert status == 200 and isinstance(listing, list)
    assert sorted(x["id"] for x in listing) == ["done", "gone"]  # sidecars on disk only
    for item in listing:
        check_sidecar(item)

    for name in ("tool", "done", "fifo"):
        status, deleted = _get(front, "DELETE", f"/archive/{name}")
        assert status == 202 and check_sidecar(deleted)["status"] == "deleting"
        assert isinstance(deleted, dict) and deleted["id"] == name
    assert not (inbox / "tool.url").exists()


def test_unstarted_sidecars_are_valid_for_any_job_file_bytes():
    for data in (
        b"https://example.org/x.zip\n",
        b"",
        b"\xff\xfe\x00",
        b"url: 5\n",
        b"x" * 70_000,
        b"[InternetShortcut]\nURL=https://example.org/y\n",
    ):
        for status in (Status.QUEUED, Status.DELETING):
            sc = unstarted("job", data, status)
            check_sidecar(json.loads(sc.to_json()))
            assert sc.job_sha256 == job_sha256(data) and sc.status is status


# --- issue 11: the route table, the framing and the token as pure functions -------------


@pytest.mark.parametrize(
    ("method", "path", "endpoint", "job_id"),
    [
        ("GET", "/archive", "list_jobs", None),
        ("GET", "/archive/", "list_jobs", None),
        ("POST", "/archive", "submit_job", None),
        ("POST", "/archive/", "submit_job", None),
        ("GET", "/archive/a%20b", "get_job", "a b"),
        ("DELETE", "/archive/%C3%A9t%C3%A9", "delete_job", "\u00e9t\u00e9"),
        ("GET", "/metrics", "metrics", None),
    ],
)
def test_routes_resolve(method, path, endpoint, job_id):
    found, got_id = resolve(httproutes.ROUTES, method, path)
    assert found.endpoint.__name__ == endpoint and got_id == job_id


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/nope", 404, None),
        ("GET", "/metrics/", 404, None),
        ("GET", "/archivex", 404, None),
        ("GET", "/archive/a/b", 404, None),
        ("GET", "/archive/.hidden", 404, None),
        ("PUT", "/archive", 405, "GET, HEAD, POST"),
        ("DELETE", "/archive/", 405, "GET, HEAD, POST"),
        ("POST", "/archive/x", 405, "GET, HEAD, DELETE"),
        ("POST", "/metrics", 405, "GET, HEAD"),
        ("POST", "/archive/%00", 400, None),  # the id is looked at before the method
        ("GET", "/archive/%ff", 400, None),
    ],
)
def test_routes_refuse(method, path, status, allow):
    with pytest.raises(Reject) as info:
        resolve(httproutes.ROUTES, method, path)
    assert info.value.status == status and info.value.headers.get("Allow") == allow


@pytest.mark.parametrize(
    ("transfer", "lengths", "want"),
    [
        ([], [], None),
        ([], ["0"], 0),
        ([], ["12"], 12),
        ([], ["12, 12"], 12),
        ([], ["12", " 12 "], 12),
        (["chunked"], [], "chunked"),
        ([" Chunked "], [], "chunked"),
        (["chunked", ""], [], "chunked"),
        ([], ["12", "13"], 400),
        ([], ["-1"], 400),
        ([], ["+1"], 400),
        ([], [""], 400),
        ([], ["1 2"], 400),
        ([], ["\u0663"], 400),  # a non-ASCII digit
        (["chunked"], ["5"], 400),
        (["gzip, chunked"], [], 501),
        (["chunked, chunked"], [], 501),
        (["identity"], [], 501),
    ],
)
def test_body_framing(transfer, lengths, want):
    if isinstance(want, int) and want >= 400:
        with pytest.raises(Reject) as info:
            body_framing(transfer, lengths)
        assert info.value.status == want
    else:
        assert body_framing(transfer, lengths) == want


@pytest.mark.parametrize(
    ("data", "framing", "want"),
    [
        (b"hello", 5, b"hello"),
        (b"hel", 5, 400),
        (b"5\r\nhello\r\n0\r\n\r\n", "chunked", b"hello"),
        (b"2;x=y\r\nhe\r\n3\nllo\n0\r\nX-T: 1\r\n\r\n", "chunked", b"hello"),
        (b"5\r\nhello\r\n0\r\n", "chunked", 400),  # no end of the trailer
        (b"5\r\nhelloXX0\r\n\r\n", "chunked", 400),
        (b"g\r\n", "chunked", 400),
        (b"%x\r\n" % (MAX_BODY + 1), "chunked", 413),
        (b"", MAX_BODY + 1, 413),
    ],
)
def test_read_body(data, framing, want):
    left, right = socket.socketpair()
    with left, right:
        left.sendall(data)
        left.shutdown(socket.SHUT_WR)
        source = httpwire.Input(right)
        source.want_body()
        if isinstance(want, int):
            with pytest.raises(Reject) as info:
                httpwire.read_body(source, framing)
            assert info.value.status == want
        else:
            assert httpwire.read_body(source, framing) == want


def test_bearer_ok():
    assert bearer_ok(None, []) and bearer_ok(None, ["Bearer anything"])
    for header in AUTH_ACCEPTED:
        assert bearer_ok(TOKEN, [header]), header
    for header in AUTH_REFUSED:
        assert not bearer_ok(TOKEN, [header] if header else []), header
    assert not bearer_ok(TOKEN, [f"Bearer {TOKEN}", f"Bearer {TOKEN}"])


# --- issue 11: the component protocol ------------------------------------------------


def test_stop_closes_slow_and_silent_connections_within_the_deadline(tmp_path, monkeypatch):
    """Clients that hold connections open (half a request, nothing at all, an idle
    keep-alive after an answer) do not hold stop() past its deadline: it returns True
    in time, every such client sees its connection end, and the port is closed."""
    monkeypatch.setattr(httpwire, "HEADER_TIMEOUT", 600.0)  # only stop() can end them
    monkeypatch.setattr(httpwire, "IDLE_TIMEOUT", 600.0)
    gen = _front(tmp_path, TOKEN)
    front = next(gen)
    assert front.server.name == "http" and front.server.healthy()
    before = threading.active_count()
    clients = [_connect(front.port) for _ in range(3)]
    try:
        clients[0].sendall(b"GET /archive HTTP/1.1\r\nHost: x\r\n" + front.auth())  # half
        clients[2].sendall(request("GET", "/archive", headers=front.auth()))
        answer, rest = _read_answer(clients[2])
        assert answer.status == 200 and not answer.closes and not rest
        # the half request and the silent client are being served: one thread each
        wait_for(lambda: threading.active_count() >= before + 3, message="three connections served")
        started = time.monotonic()
        assert front.server.stop(Deadline(2.0))
        assert time.monotonic() - started < 2.0 + 3.0  # the deadline and a margin
        assert not front.server.healthy()
        for sock in clients:
            sock.settimeout(20)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(65536) == b""  # closed by the server, no answer
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", front.port), timeout=20).close()
    finally:
        for sock in clients:
            sock.close()
        gen.close()  # the fixture's own stop(): a second one is harmless


def test_stop_without_start_and_twice(tmp_path):
    config = config_from_mapping({"inbox": str(tmp_path), "http": {"listen": "127.0.0.1:0"}})
    server = HttpFrontEnd(config, Metrics(tmp_path), EventBus())
    port = server.address[1]
    assert not server.healthy()
    assert server.stop(Deadline(5)) and server.stop(Deadline(5))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=20).close()


def test_apply_reads_the_token_file_again(token_front, tmp_path, caplog):
    """SIGHUP: a rotated token counts from the next request; a token file that cannot
    be read any more is logged and the token in use kept."""
    front = token_front
    token_file = tmp_path / "token"
    config = front.server.config

    def status_with(token: str) -> int:
        line = f"Authorization: Bearer {token}\r\nConnection: close\r\n".encode()
        return exchange(front.port, request("GET", "/archive", headers=line))[0].status

    assert (status_with(TOKEN), status_with("rotated")) == (200, 401)
    token_file.write_text("rotated\n")
    assert status_with(TOKEN) == 200  # nothing changes before the SIGHUP
    front.server.apply(config)
    assert (status_with(TOKEN), status_with("rotated")) == (401, 200)
    token_file.write_text("   \n")
    with caplog.at_level(logging.ERROR, logger="dropfetch"):
        front.server.apply(config)
    assert "keeping the HTTP front end's token in use" in caplog.text
    assert "http.token_file" in caplog.text
    assert (status_with(TOKEN), status_with("rotated")) == (401, 200)
