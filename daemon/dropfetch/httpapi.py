"""The optional HTTP front end: the seed's API on top of the inbox (SPEC §9).

It only writes job files and reads sidecars, so it answers the same on every host
of a shared inbox.

HTTP/1.1 keep-alive: a request body is read only where it is used (``POST /archive``).
Every answer sent while a body is still unread, or while its framing is unknown,
carries ``Connection: close`` and the connection ends, so the unread bytes are never
parsed as the next request. Every error answer is JSON: ``{"error": "...", "code": ...}``.

Slow and many clients (module constants; the tests lower them with monkeypatch): a
connection may stay silent between requests for ``IDLE_TIMEOUT`` seconds; from the first
byte of a request, its request line and headers must arrive within ``HEADER_TIMEOUT``,
and a body within ``BODY_TIMEOUT`` from when it is wanted (bodies are at most
``MAX_BODY`` bytes). Over a deadline the connection is closed, after a 408 answer when a
request had begun. At most ``MAX_CONNECTIONS`` connections are served at once, one
thread each; a connection beyond them is answered 503 with ``Connection: close`` by the
accepting thread itself, which starts no thread for it.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import logging
import math
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import unquote_to_bytes

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dropfetch.config import Config, ConfigError, read_token_file
from dropfetch.errors import DropfetchError
from dropfetch.fsutil import display_name
from dropfetch.jobfile import JOB_SUFFIX, SIDECAR_SUFFIX, job_name
from dropfetch.lifecycle import Deadline
from dropfetch.metrics import Metrics
from dropfetch.status import Sidecar, read_sidecar, read_sidecars
from dropfetch.submit import derive_name, job_content, write_job, write_unique_job

__all__ = ["HttpFrontEnd", "json_bytes"]

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may stay silent between requests
HEADER_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its headers
BODY_TIMEOUT = 10.0  # seconds to receive a body once it is wanted (>= 6.5 KiB/s at MAX_BODY)
SEND_TIMEOUT = 30.0  # seconds to send one answer
MAX_CONNECTIONS = 64  # connections served at once; more are answered 503 and closed
_DRAIN_BYTES = 1024 * 1024  # read (and drop) at most this much before closing
_DRAIN_SECONDS = 2.0  # ... for at most this long in all
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
         b"Content-Type: application/json\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s")
_CHUNK_SIZE = re.compile(rb"^[0-9A-Fa-f]{1,8}$")


class _Reject(Exception):
    """An answer other than success, raised from anywhere below the dispatcher."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def json_bytes(value: Any) -> bytes:
    """``value`` as indented JSON in valid UTF-8; never raises for data read from disk.

    Strings are shown as :func:`~dropfetch.fsutil.display_name` shows them (bytes that
    were not UTF-8 as ``\\xNN``, the sidecars' own form), NaN and infinities become
    null, and anything JSON has no type for becomes its ``str()``.
    """
    text = json.dumps(_clean(value), ensure_ascii=False, allow_nan=False, indent=2,
                      default=str)
    return (text + "\n").encode("utf-8")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return display_name(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_clean(k) if isinstance(k, str) else k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class _Input:
    """A connection's input with a total deadline (the socket's own timeout only bounds
    each recv): ``readline()`` and ``read()`` as the handler uses them, ``TimeoutError``
    once ``deadline`` (a ``time.monotonic()`` value) has passed."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._eof = False
        self.deadline = math.inf
        self.idle = True  # waiting for a request's first byte
        self.expired = False

    def next_request(self) -> None:
        """Wait ``IDLE_TIMEOUT`` for a request; from its first byte, ``HEADER_TIMEOUT``."""
        self.idle = not self._buf
        self.deadline = time.monotonic() + (IDLE_TIMEOUT if self.idle else HEADER_TIMEOUT)

    def _fill(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise TimeoutError("the client is too slow")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            self.expired = True
            raise
        finally:
            self._sock.settimeout(SEND_TIMEOUT)
        if not data:
            self._eof = True
        elif self.idle:
            self.idle = False
            self.deadline = time.monotonic() + HEADER_TIMEOUT
        self._buf += data

    def readline(self, limit: int = -1) -> bytes:
        limit = limit if limit >= 0 else sys.maxsize
        while True:
            end = self._buf.find(b"\n", 0, limit)
            if end >= 0 or len(self._buf) >= limit or self._eof:
                size = end + 1 if end >= 0 else min(limit, len(self._buf))
                data = bytes(self._buf[:size])
                del self._buf[:size]
                return data
            self._fill()

    def read(self, size: int) -> bytes:
        while len(self._buf) < size and not self._eof:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def close(self) -> None:
        self._buf.clear()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of connections waits there
    front: HttpFrontEnd

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        self.connections: set[socket.socket] = set()  # being served, one thread each
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            busy = len(self.connections) >= MAX_CONNECTIONS
            if not busy:
                self.connections.add(request)
        if not busy:
            super().process_request(request, client_address)
            return
        logger.warning("http: %d connections already, %s is answered 503",
                       MAX_CONNECTIONS, client_address)
        body = json_bytes({"error": f"the server is busy ({MAX_CONNECTIONS} connections): "
                                    "try again in a moment", "code": "busy"})
        with contextlib.suppress(OSError):
            request.setblocking(False)  # never wait here: this thread accepts for all
            request.send(_BUSY % (len(body), body))
            request.shutdown(socket.SHUT_WR)
            while request.recv(65536):  # what has arrived, so that close() sends no reset
                pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self.connections.discard(request)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self.connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also looks up the host's FQDN: a DNS query at start-up
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("http: %s went away", client_address)
        else:
            logger.exception("http: error while serving %s", client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "dropfetch"
    timeout = IDLE_TIMEOUT

    # per request: the unread body (a byte count, "chunked", or "unknown" when its
    # framing is not understood; 0: no body, or read), whether "100 Continue" is still
    # owed, whether an answer has started
    _body: int | str = 0
    _expect_continue = False
    _answered = False
    rfile: Any

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._input = self.rfile = _Input(self.connection)

    def handle_one_request(self) -> None:
        self._input.next_request()
        self._answered = False
        super().handle_one_request()  # a TimeoutError ends the connection there
        if self._input.expired and not self._input.idle and not self._answered:
            self.requestline, self.command = getattr(self, "requestline", ""), ""
            self.request_version = "HTTP/1.1"
            with contextlib.suppress(OSError):
                self.send_error(HTTPStatus.REQUEST_TIMEOUT,
                                f"the request line and headers took over {HEADER_TIMEOUT:g} s")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http: %s %s", self.address_string(), format % args)

    # -- framing -----------------------------------------------------------------------

    def parse_request(self) -> bool:
        self._body, self._expect_continue, self._answered = 0, False, False
        if not super().parse_request():
            return False
        transfer = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if transfer:
            self._body = "chunked"  # unread until read: whatever the outcome below
            codings = [c.strip().lower() for v in transfer for c in v.split(",") if c.strip()]
            if lengths:
                self._reject_now(HTTPStatus.BAD_REQUEST,
                                 "a request cannot have both Transfer-Encoding and "
                                 "Content-Length")
                return False
            if codings != ["chunked"]:
                self._reject_now(HTTPStatus.NOT_IMPLEMENTED,
                                 "only the chunked transfer coding is understood")
                return False
        elif lengths:
            values = {v.strip() for value in lengths for v in value.split(",")}
            value = values.pop() if len(values) == 1 else ""
            if not (value.isascii() and value.isdigit()):
                self._body = "unknown"
                self._reject_now(HTTPStatus.BAD_REQUEST, "the Content-Length is not a number")
                return False
            self._body = int(value)
        # "100 Continue" is sent only when the body is wanted (see _read_body); any
        # other answer goes first, and the connection is closed
        self._expect_continue = bool(self._body) and self.request_version >= "HTTP/1.1" and \
            self.headers.get("Expect", "").strip().lower() == "100-continue"
        return True

    def handle_expect_100(self) -> bool:
        return True  # decided in parse_request() and _read_body()

    def _reject_now(self, status: int, message: str) -> None:
        self.close_connection = True
        self._error(status, message)

    def _read_body(self) -> bytes:
        if not self._body:
            return b""
        if isinstance(self._body, int) and self._body > MAX_BODY:
            raise _Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"the body is over {MAX_BODY} bytes")
        if self._expect_continue:
            self._expect_continue = False
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()
            self.wfile.flush()
        self._input.deadline = time.monotonic() + BODY_TIMEOUT
        data = self._read_chunked() if self._body == "chunked" else self._read_exactly(
            int(self._body))
        self._body = 0
        return data

    def _read_exactly(self, size: int) -> bytes:
        data = self._input.read(size)
        if len(data) != size:
            raise _Reject(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self._input.readline(1024)
            size_text = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not _CHUNK_SIZE.match(size_text):
                raise _Reject(HTTPStatus.BAD_REQUEST, "a malformed chunked body")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise _Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"the body is over {MAX_BODY} bytes")
            parts.append(self._read_exactly(size))
            if self._input.readline(3) not in (b"\r\n", b"\n"):
                raise _Reject(HTTPStatus.BAD_REQUEST, "a malformed chunked body")
        for _ in range(64):  # trailer fields, up to the empty line
            line = self._input.readline(8192)
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)
            if not line.endswith(b"\n"):
                break
        raise _Reject(HTTPStatus.BAD_REQUEST, "a malformed chunked body (trailer)")

    # -- answers -----------------------------------------------------------------------

    def _send(self, status: int, body: Any, *, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json_bytes(body)
        if self._body or self._expect_continue:
            self.close_connection = True  # the unread body must not become the next request
        self._answered = True
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        body: dict[str, Any] = {"error": message}
        if code:
            body["code"] = code
        self._send(status, body, headers=headers)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """The base class's errors (bad request line, headers too long, unknown method),
        as JSON; the connection is closed after them."""
        self.close_connection = True
        if getattr(self, "request_version", "") == "HTTP/0.9" or not hasattr(self, "command"):
            self.request_version = "HTTP/1.1"
        if message is None:
            try:
                message = HTTPStatus(code).phrase
            except ValueError:
                message = "error"
        self._error(code, message + (f": {explain}" if explain else ""))

    # -- dispatch ----------------------------------------------------------------------

    def _authorised(self) -> None:
        token = self.server.front.token
        if token is None:
            return
        given = self.headers.get_all("Authorization") or []
        scheme, _, credentials = (given[0] if len(given) == 1 else "").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials and hmac.compare_digest(
                credentials.encode(), token.encode()):
            return
        raise _Reject(HTTPStatus.UNAUTHORIZED,
                      "a valid 'Authorization: Bearer <token>' header is needed",
                      headers={"WWW-Authenticate": 'Bearer realm="dropfetch"'})

    def _dispatch(self) -> None:
        method = "GET" if self.command == "HEAD" else self.command
        try:
            self._authorised()
            path = self.path.split("?", 1)[0]
            if path in ("/archive", "/archive/"):
                self._collection(method)
            elif path.startswith("/archive/"):
                self._item(method, _item_id(path[len("/archive/"):]))
            elif path == "/metrics":
                _allow(method, "GET")
                self._send(HTTPStatus.OK, generate_latest(self.server.front.metrics.registry),
                           content_type=CONTENT_TYPE_LATEST)
            else:
                raise _Reject(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        except _Reject as exc:
            self._error(exc.status, exc.message, exc.code, exc.headers)
        except TimeoutError:
            self.close_connection = True
            if self._input.expired and not self._answered:
                self._error(HTTPStatus.REQUEST_TIMEOUT,
                            f"the body took over {BODY_TIMEOUT:g} s")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away
        except Exception:
            logger.exception("http: %s %s failed", self.command, self.path)
            self.close_connection = True
            if not self._answered:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                            "an internal error; the daemon's log says more", "internal")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def finish(self) -> None:
        """Before closing, read what the client still sends (for a moment): closing a
        socket with unread input resets the connection, and the client could lose the
        answer it has not read yet."""
        with contextlib.suppress(OSError):
            super().finish()
        if not self.close_connection:
            return
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _DRAIN_SECONDS
            left = _DRAIN_BYTES
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                if not (data := self.connection.recv(min(left, 65536))):
                    break
                left -= len(data)

    # -- endpoints ---------------------------------------------------------------------

    def _collection(self, method: str) -> None:
        _allow(method, "GET", "POST")
        front = self.server.front
        if method == "POST":
            self._post()
            return
        listing = []
        for sc in front.all_sidecars():
            try:
                listing.append(front.view(sc))
            except Exception:  # one odd sidecar must not hide the others
                logger.exception("%s: cannot show this sidecar", sc.id)
        self._send(HTTPStatus.OK, listing)

    def _item(self, method: str, name: str) -> None:
        _allow(method, "GET", "DELETE")
        if method == "GET":
            self._get_item(name)
        else:
            self._delete_item(name)

    def _read_json(self) -> dict[str, Any]:
        if self.headers.get("Content-Length") is None and self._body != "chunked":
            raise _Reject(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        try:
            body = json.loads(self._read_body())
        except ValueError:
            raise _Reject(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Reject(HTTPStatus.BAD_REQUEST,
                          'expected a JSON object such as {"url": "..."}')
        return body

    def _post(self) -> None:
        body = self._read_json()
        url, name, sha = body.get("url"), body.get("name"), body.get("sha256")
        unknown = sorted(set(body) - {"url", "name", "sha256"})
        if unknown:
            raise _Reject(HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}")
        if not isinstance(url, str) or (name is not None and not isinstance(name, str)) or (
                sha is not None and not isinstance(sha, str)):
            raise _Reject(HTTPStatus.BAD_REQUEST,
                          '"url" (and optional "name", "sha256") must be strings')
        inbox = self.server.front.config.inbox
        try:
            content = job_content(url, sha256=sha)
            if name:
                path = write_job(inbox, name, content)
            else:
                path = write_unique_job(inbox, derive_name(url), content)
        except DropfetchError as exc:
            status = HTTPStatus.CONFLICT if exc.code == "name_conflict" else HTTPStatus.BAD_REQUEST
            raise _Reject(status, exc.message, exc.code) from None
        except OSError as exc:
            logger.error("http: cannot write a job file into %s: %s", inbox, exc)
            raise _Reject(HTTPStatus.SERVICE_UNAVAILABLE,
                          f"cannot write the job file into the inbox ({exc.strerror}): is "
                          "the inbox there and writable?", "io_error") from None
        self._send(HTTPStatus.CREATED, {"id": path.name[: -len(JOB_SUFFIX)]})

    def _get_item(self, name: str) -> None:
        front = self.server.front
        sc = read_sidecar(front.config.inbox / (name + SIDECAR_SUFFIX))
        if sc is not None:
            self._send(HTTPStatus.OK, front.view(sc))
        elif (front.config.inbox / (name + JOB_SUFFIX)).exists():
            self._send(HTTPStatus.OK, {"id": name, "job": name + JOB_SUFFIX, "status": "queued",
                                       "progress": None, "files": []})
        else:
            raise _Reject(HTTPStatus.NOT_FOUND, f"unknown id {name!r}")

    def _delete_item(self, name: str) -> None:
        inbox = self.server.front.config.inbox
        try:
            (inbox / (name + JOB_SUFFIX)).unlink()
        except FileNotFoundError:
            raise _Reject(HTTPStatus.NOT_FOUND, f"unknown id {name!r}") from None
        self._send(HTTPStatus.ACCEPTED, {"id": name, "status": "deleting"})


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _Reject(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed here",
                      headers={"Allow": ", ".join(allowed)})


def _item_id(raw: str) -> str:
    """The job id in ``/archive/ID``: percent-decoded UTF-8, under the rules of job names
    (no control characters, at most 200 bytes); 400 or 404 for anything else."""
    try:  # the request line was read as latin-1: its bytes are the code points
        name = unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        raise _Reject(HTTPStatus.BAD_REQUEST, "the id is not UTF-8 text once percent-decoded",
                      "bad_job") from None
    if not name or "/" in name or name.startswith("."):
        raise _Reject(HTTPStatus.NOT_FOUND, "unknown id")  # sub-paths and hidden names
    try:
        job_name(name + JOB_SUFFIX)
    except DropfetchError as exc:
        raise _Reject(HTTPStatus.BAD_REQUEST, f"not a job id: {exc.message}", exc.code) from None
    return name


class HttpFrontEnd:
    """A threaded HTTP server on ``http.listen``; ``start()`` / ``stop()``.

    The constructor reads the token and binds the address: a problem with either is a
    :class:`ConfigError` naming the key (``http.token_file``, ``http.listen``).
    """

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        where = str(config.source) if config.source is not None else "<config>"
        self.token: str | None = None
        if config.http.token_file is not None:
            try:
                self.token = read_token_file(config.http.token_file)
            except ValueError as exc:
                raise ConfigError(f"{where}: key http.token_file: {exc}") from None
        if config.http.listen is None:
            raise ValueError("http.listen is not set")
        self._server = _bind(config.http.listen, where)
        self._server.front = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @staticmethod
    def view(sc: Sidecar) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(sc.to_json())
        return data

    def all_sidecars(self) -> list[Sidecar]:
        return read_sidecars(self.config.inbox)  # ids with '/' have no URL here

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="dropfetch-http",
                                        daemon=True)
        self._thread.start()
        host, port = self.address
        logger.info("HTTP front end on http://%s:%d%s", f"[{host}]" if ":" in host else host,
                    port, " (bearer token required)" if self.token else "")

    def stop(self, deadline: Deadline) -> bool:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()  # their threads end at once
        return self._thread is None or deadline.join([self._thread])

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def apply(self, config: Config) -> None:
        """http.* keys need a restart (the daemon says so); nothing to apply."""


_BIND_ERRORS = {
    errno.EADDRINUSE: "the address is already in use (another dropfetch, or another "
                      "program, listens there): stop it or choose another port",
    errno.EADDRNOTAVAIL: "this machine has no such address: use one of its own, such as "
                         "127.0.0.1",
    errno.EACCES: "permission denied (ports below 1024 need privileges): choose a port "
                  "above 1024",
}


def _bind(listen: str, where: str) -> _Server:
    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host

    def fail(reason: str) -> ConfigError:
        return ConfigError(f"{where}: key http.listen: cannot listen on {listen}: {reason}")

    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise fail(f"{host!r} is not an address or a known host name "
                   f"({getattr(exc, 'strerror', None) or exc})") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # "localhost": 127.0.0.1 first
    family, _, _, _, address = infos[0]
    cls = _Server6 if family == socket.AF_INET6 else _Server
    try:
        return cls((str(address[0]), int(address[1])), _Handler)
    except OSError as exc:
        raise fail(_BIND_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))) from None
