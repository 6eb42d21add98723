"""The optional HTTP front end: the seed's API on top of the inbox (SPEC §9).

It only writes job files and reads sidecars, so it answers the same on every host
of a shared inbox. The parts: :mod:`dropfetch.httpwire` (request framing and reading
under deadlines), :mod:`dropfetch.httproutes` (the route table and the endpoints),
:mod:`dropfetch.httpanswers` (replies, errors, JSON); here, the server (a cap on
connections), the request handler that joins them, and the :class:`HttpFrontEnd`
component. Who may use a route: :mod:`dropfetch.httpauth`; the event stream:
:mod:`dropfetch.httpevents`.

HTTP/1.1 keep-alive: a request body is read only where it is used (``POST /archive``,
the seed's ``/arhive``).
Every answer sent while a body is still unread, or while its framing is unknown,
carries ``Connection: close`` and the connection ends, so the unread bytes are never
parsed as the next request. Every error answer is JSON: ``{"error": "...", "code": ...}``;
so is the 405 (with ``Allow``) of a method no route takes, a made-up one included.

Over a deadline of :mod:`dropfetch.httpwire` the connection is closed, after a 408
answer when a request had begun. At most ``MAX_CONNECTIONS`` connections are served at
once, one thread each; a connection beyond them is answered 503 with ``Connection:
close`` by the accepting thread itself, which starts no thread for it. Event streams
count among them (at most ``httpevents.MAX_STREAMS``); one is framed by ``Connection:
close`` and ends at ``stop()`` (or when its client goes away).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import secrets
import selectors
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any

from dropfetch import httpwire as wire
from dropfetch.config import Config, ConfigError, read_token_file
from dropfetch.events import EventBus
from dropfetch.httpanswers import Reject, Reply, Request, Stream, error_body, json_bytes
from dropfetch.httpauth import Access, authorised, bearer_ok, foreign_request
from dropfetch.httpevents import Broadcaster, peer_gone
from dropfetch.httplisting import SidecarCache
from dropfetch.httproutes import ROUTES, Route, resolve
from dropfetch.httpwire import Framing
from dropfetch.lifecycle import Deadline
from dropfetch.metrics import Metrics
from dropfetch.status import Sidecar

__all__ = ["HttpFrontEnd", "bearer_ok", "json_bytes"]

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # connections served at once; more are answered 503 and closed
_DRAIN_BYTES = 1024 * 1024  # read (and drop) at most this much before closing
_DRAIN_SECONDS = 2.0  # ... for at most this long in all
_STREAMS_END = 2.0  # seconds that stop() gives event streams to end by themselves
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of connections waits there
    front: HttpFrontEnd

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
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
        logger.warning(
            "http: %d connections already, %s is answered 503", MAX_CONNECTIONS, client_address
        )
        body = json_bytes(
            error_body(
                f"the server is busy ({MAX_CONNECTIONS} connections): try again in a moment", "busy"
            )
        )
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
                self._idle.notify_all()

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self.connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait_idle(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for every connection's thread to end."""
        with self._idle:
            return self._idle.wait_for(lambda: not self.connections, timeout)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also looks up the host's FQDN: a DNS query at start-up
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, _request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("http: %s went away", client_address)
        else:
            logger.exception("http: error while serving %s", client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """One connection: framing from :mod:`~dropfetch.httpwire`, routes from
    :mod:`~dropfetch.httproutes`, every answer (errors included) as JSON."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "dropfetch"
    timeout = wire.IDLE_TIMEOUT

    # per request: the body framing its headers declare, whether that body is still
    # unread, whether "100 Continue" is still owed, whether an answer has started
    _framing: Framing = None
    _unread = False
    _expect_continue = False
    _answered = False
    rfile: Any

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._input = self.rfile = wire.Input(self.connection)

    def handle_one_request(self) -> None:
        self._input.next_request()
        self._answered = False
        super().handle_one_request()  # a TimeoutError ends the connection there
        if self._input.expired and not self._input.idle and not self._answered:
            self.requestline, self.command = getattr(self, "requestline", ""), ""
            self.request_version = "HTTP/1.1"
            with contextlib.suppress(OSError):
                self.send_error(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"the request line and headers took over {wire.HEADER_TIMEOUT:g} s",
                )

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http: %s %s", self.address_string(), format % args)

    # -- framing -----------------------------------------------------------------------

    def parse_request(self) -> bool:
        self._framing, self._unread, self._expect_continue = None, False, False
        self._answered = False
        if not super().parse_request():
            return False
        try:
            self._framing = wire.body_framing(
                self.headers.get_all("Transfer-Encoding") or [],
                self.headers.get_all("Content-Length") or [],
            )
        except Reject as exc:  # the framing is unknown: answered first, then closed
            self.close_connection = True
            self._error(exc.status, exc.message)
            return False
        self._unread = bool(self._framing)
        # "100 Continue" is sent only when the body is wanted (see _read_body); any
        # other answer goes first, and the connection is closed
        self._expect_continue = (
            self._unread
            and self.request_version >= "HTTP/1.1"
            and self.headers.get("Expect", "").strip().lower() == "100-continue"
        )
        return True

    def handle_expect_100(self) -> bool:
        return True  # decided in parse_request() and _read_body()

    def _read_body(self) -> bytes:
        if not self._unread:
            return b""
        wire.check_length(self._framing)  # 413 before a "100 Continue"
        if self._expect_continue:
            self._expect_continue = False
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()
            self.wfile.flush()
        self._input.want_body()
        data = wire.read_body(self._input, self._framing)
        self._unread = False
        return data

    # -- answers -----------------------------------------------------------------------

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, Stream):
            self._stream(reply, reply.body)
            return
        data = reply.body if isinstance(reply.body, bytes) else json_bytes(reply.body)
        if self._unread or self._expect_continue:
            self.close_connection = True  # the unread body must not become the next request
        self._answered = True
        self.send_response(reply.status)
        if self.close_connection:
            self.send_header("Connection", "close")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, reply: Reply, body: Stream) -> None:
        """An answer whose body ends when the connection does (``GET /events``)."""
        self.close_connection = True
        self._answered = True
        try:
            self.send_response(reply.status)
            self.send_header("Connection", "close")
            for key, value in {**reply.headers, "Content-Type": reply.content_type}.items():
                self.send_header(key, value)
            self.end_headers()
            body.run(self.wfile.write, lambda: peer_gone(self.connection))
        except OSError:
            pass  # the client went away, or stop() shut the connection down
        finally:
            body.close()

    def _error(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send(Reply(status, error_body(message, code), headers=headers or {}))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
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

    def _dispatch(self) -> None:
        try:
            self._send(self._answer())
        except Reject as exc:
            self._error(exc.status, exc.message, exc.code, exc.headers)
        except TimeoutError:
            self.close_connection = True
            if self._input.expired and not self._answered:
                self._error(
                    HTTPStatus.REQUEST_TIMEOUT, f"the body took over {wire.BODY_TIMEOUT:g} s"
                )
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away
        except Exception:
            logger.exception("http: %s %s failed", self.command, self.path)
            self.close_connection = True
            if not self._answered:
                self._error(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    "an internal error; the daemon's log says more",
                    "internal",
                )

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    if not TYPE_CHECKING:

        def __getattr__(self, name):
            """Any other method too: the routes answer it (405, JSON, with ``Allow``)."""
            if name.startswith("do_"):
                return self._dispatch
            raise AttributeError(name)

    def _answer(self) -> Reply:
        front = self.server.front
        path, _, query = self.path.partition("?")
        try:
            route, job_id = resolve(ROUTES, self.command, path)
        except Reject:
            self._check_access(None)  # no route: 401 before 404 or 405
            raise
        self._check_access(route)
        return route.endpoint(Request(front, job_id, self._framing, self._read_body, query))

    def _check_access(self, route: Route | None) -> None:
        front = self.server.front
        if route is None or route.access is not Access.PUBLIC:
            foreign = foreign_request(
                self.command,
                self.headers.get("Host"),
                self.headers.get("Origin"),
                self.headers.get("Sec-Fetch-Site"),
                token=front.token is not None,
            )
            if foreign is not None:
                raise Reject(HTTPStatus.FORBIDDEN, f"refused: {foreign}", "forbidden")
        if not authorised(
            Access.BEARER if route is None else route.access,
            front.token,
            front.session_key,
            self.headers.get_all("Authorization") or [],
            self.headers.get_all("Cookie") or [],
        ):
            raise Reject(
                HTTPStatus.UNAUTHORIZED,
                "a valid 'Authorization: Bearer <token>' header is needed",
                headers={"WWW-Authenticate": 'Bearer realm="dropfetch"'},
            )

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


class HttpFrontEnd:
    """The front end as a daemon component: a threaded HTTP server on ``http.listen``.

    The constructor reads the token and binds the address: a problem with either is a
    :class:`ConfigError` naming the key (``http.token_file``, ``http.listen``).
    ``apply()`` (SIGHUP) reads the token file again; ``http.listen`` needs a restart.
    """

    name = "http"

    def __init__(self, config: Config, metrics: Metrics, events: EventBus) -> None:
        self.config = config
        self.metrics = metrics
        self.token = _read_token(config)
        self.session_key = secrets.token_bytes(32)  # session cookies: httpauth
        self.broadcaster = Broadcaster()
        self._sidecars = SidecarCache()
        events.subscribe(self.broadcaster.on_event)
        if config.http.listen is None:
            raise ValueError("http.listen is not set")
        self._server = _bind(config.http.listen, _where(config))
        self._server.front = self
        self._server.socket.setblocking(False)  # accept() never waits: see _serve
        self._server.timeout = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @staticmethod
    def view(sc: Sidecar) -> dict[str, Any]:
        """A sidecar as the JSON answers show it: as written to disk."""
        data: dict[str, Any] = json.loads(sc.to_json())
        return data

    def all_sidecars(self) -> list[Sidecar]:
        return self._sidecars.read_all(self.config.inbox)  # ids with '/' have no URL here

    # -- the component protocol ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="dropfetch-http", daemon=True)
        self._thread.start()
        host, port = self.address
        logger.info(
            "HTTP front end on http://%s:%d%s",
            f"[{host}]" if ":" in host else host,
            port,
            " (bearer token required)" if self.token else "",
        )

    def _serve(self) -> None:
        """Accept connections until ``stop()``, which wakes the wait at once."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                ready = selector.select()
                if not self._stopping.is_set() and any(
                    key.fileobj is self._server.socket for key, _ in ready
                ):
                    self._server.handle_request()  # one connection, or none (timeout 0)

    def stop(self, deadline: Deadline) -> bool:
        """Stop accepting, close the listener, then shut every open connection down
        (a silent or half-sent request included) and wait, until ``deadline``, for
        their threads to end. True if every thread ended in time; the port is closed
        either way."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        served = self._thread is None or deadline.join([self._thread])
        self.broadcaster.close(min(_STREAMS_END, deadline.left()))  # streams end first
        self._server.server_close()
        self._server.close_connections()  # their threads end at once
        ended = self._server.wait_idle(deadline.left())
        if served:
            self._wake_r.close()
            self._wake_w.close()
        return served and ended

    def healthy(self) -> bool:
        """Whether the thread that accepts connections is alive."""
        return self._thread is not None and self._thread.is_alive()

    def apply(self, config: Config) -> None:
        """SIGHUP: read ``http.token_file`` again (a rotated token counts from the next
        request). A token file that cannot be read is logged and the token in use kept."""
        try:
            token = _read_token(config)
        except ConfigError as exc:
            logger.error("SIGHUP: keeping the HTTP front end's token in use: %s", exc)
            return
        if token != self.token:
            logger.info(
                "SIGHUP: the HTTP front end %s",
                "takes a new bearer token" if token else "no longer requires a bearer token",
            )
        self.config, self.token = config, token


def _where(config: Config) -> str:
    return str(config.source) if config.source is not None else "<config>"


def _read_token(config: Config) -> str | None:
    if config.http.token_file is None:
        return None
    try:
        return read_token_file(config.http.token_file)
    except ValueError as exc:
        raise ConfigError(f"{_where(config)}: key http.token_file: {exc}") from None


_BIND_ERRORS = {
    errno.EADDRINUSE: "the address is already in use (another dropfetch, or another "
    "program, listens there): stop it or choose another port",
    errno.EADDRNOTAVAIL: "this machine has no such address: use one of its own, such as 127.0.0.1",
    errno.EACCES: "permission denied (ports below 1024 need privileges): choose a port above 1024",
}


def _bind(listen: str, where: str) -> _Server:
    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host

    def fail(reason: str) -> ConfigError:
        return ConfigError(f"{where}: key http.listen: cannot listen on {listen}: {reason}")

    try:
        infos = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise fail(
            f"{host!r} is not an address or a known host name "
            f"({getattr(exc, 'strerror', None) or exc})"
        ) from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # "localhost": 127.0.0.1 first
    family, _, _, _, address = infos[0]
    cls = _Server6 if family == socket.AF_INET6 else _Server
    try:
        return cls((str(address[0]), int(address[1])), _Handler)
    except OSError as exc:
        raise fail(_BIND_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))) from None
