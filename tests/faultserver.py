"""A misbehaving HTTP/1.1 server on loopback, for download tests.

``RawServer`` (below) answers with scripted bytes instead, for answers no HTTP
server library makes: garbage status lines, bad framing, resets, TLS bytes.

``FaultServer`` serves in-memory files registered per path and can be told to
misbehave per file: drop the connection, stall, answer scripted error statuses,
ignore ``Range``, send a wrong ``Content-Range``, lie about ``Content-Length``,
throttle, redirect. Every request is logged in ``server.requests``.

Use it as a context manager or through the ``fault_server`` fixture::

    def test_x(fault_server):
        fault_server.add("/a.bin", b"data", drop_after=2)
        url = fault_server.url("/a.bin")
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

WRITE_CHUNK = 1024 * 1024
_QUIET_ERRORS = (ConnectionError, BrokenPipeError, TimeoutError, OSError)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]
    at: float = field(default_factory=time.time)  # when it arrived (wall clock, like sidecars)

    def header(self, name: str) -> str | None:
        """A request header, case-insensitively."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Resource:
    data: bytes
    version: int = 1
    drop_after: int | None = None
    drop_times: int = 1
    stall_after: int | None = None
    stall_times: int = 1_000_000
    stall_seconds: float = 120.0  # then the server hangs up
    statuses: list[int] = field(default_factory=list)
    reason: str | None = None  # the reason phrase of the scripted statuses (latin-1)
    retry_after: str | None = None
    ignore_range: bool = False
    wrong_content_range: bool = False
    lie_length: int | None = None
    rate: int | None = None
    redirect_to: str | None = None
    redirect_status: int = 302
    headers: dict[str, str] = field(default_factory=dict)
    # request headers the file needs (e.g. credentials): 401 without them
    require_headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    validators: bool = True
    replace_on_drop: bytes | None = None  # new content once a drop happened (a new version)
    drops_done: int = 0
    stalls_done: int = 0
    stalls_run_out: int = 0  # stalls that lasted stall_seconds (the client never left)
    bytes_sent: int = 0  # body bytes written to clients, every answer counted

    @property
    def etag(self) -> str:
        digest = hashlib.sha256(self.data).hexdigest()[:16]
        return f'"{digest}-{self.version}"'

    @property
    def last_modified(self) -> str:
        # one second more per version, so a replaced file has a different date
        return formatdate(1_700_000_000 + self.version, usegmt=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True  # server_close() joins the handler threads
    owner: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # client disconnects are part of the game; anything else is printed
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, _QUIET_ERRORS):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # idle keep-alive connections end on their own

    def setup(self) -> None:
        super().setup()
        self.server.owner.track(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(*_QUIET_ERRORS):
            super().finish()
        self.server.owner.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    # --- the behaviours -------------------------------------------------------------

    def _serve(self, *, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        owner.requests.append(LoggedRequest(self.command, self.path, dict(self.headers.items())))
        with owner.lock:
            res = owner.resources.get(path)
            status = res.statuses.pop(0) if res is not None and res.statuses else None
        if res is None:
            self._simple(404, b"not found\n")
            return
        if any(self.headers.get(k) != v for k, v in res.require_headers.items()):
            self._simple(401, b"credentials needed\n")
            return
        if status is not None:
            extra = {"Retry-After": res.retry_after} if res.retry_after is not None else {}
            self._simple(status, b"scripted status\n", extra, reason=res.reason)
            return
        if res.redirect_to is not None:
            self._simple(res.redirect_status, b"", {"Location": res.redirect_to})
            return
        data = res.data
        total = len(data)
        start, end = 0, total - 1
        code = 200
        rng = self._wanted_range(res)
        if rng is not None:
            start, req_end = rng
            if start >= total:
                self._simple(416, b"", {"Content-Range": f"bytes */{total}"})
                return
            end = min(req_end if req_end is not None else total - 1, total - 1)
            code = 206
        headers = {"Accept-Ranges": "bytes"}
        if res.validators:
            headers["ETag"] = res.etag
            headers["Last-Modified"] = res.last_modified
        headers.update(res.headers)  # may override the validators
        if code == 206:
            shown = start + 1 if res.wrong_content_range else start
            if res.wrong_content_range:
                start = shown
            headers["Content-Range"] = f"bytes {shown}-{end}/{total}"
        view = memoryview(data)[start : end + 1]
        close_after = False
        if res.lie_length is not None:
            headers["Content-Length"] = str(res.lie_length)
            close_after = True
        elif res.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(len(view))
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        if close_after:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not body:
            return
        self._send_body(res, view)
        if close_after:
            self._hang_up()

    def _wanted_range(self, res: Resource) -> tuple[int, int | None] | None:
        header = self.headers.get("Range")
        if header is None or res.ignore_range or not header.startswith("bytes="):
            return None
        spec = header[len("bytes=") :]
        if "," in spec or "-" not in spec:
            return None
        first, _, last = spec.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        if_range = self.headers.get("If-Range")
        sent = res.headers.get("ETag", res.etag)  # the one it sends (a test may set it)
        if if_range is not None and if_range not in (sent, res.last_modified):
            return None  # validator does not match: the whole, current file
        return int(first), int(last) if last else None

    def _send_body(self, res: Resource, view: memoryview) -> None:
        owner = self.server.owner
        with owner.lock:
            drop = None
            if res.drop_after is not None and res.drops_done < res.drop_times:
                res.drops_done += 1
                drop = res.drop_after
                if res.replace_on_drop is not None:
                    # the file changes on the server while this answer is under way (this
                    # answer still sends the old bytes, from `view`): the next try sees it
                    res.data, res.replace_on_drop = res.replace_on_drop, None
                    res.version += 1
            stall = None
            if res.stall_after is not None and res.stalls_done < res.stall_times:
                res.stalls_done += 1
                stall = res.stall_after
        limit = min(x for x in (drop, stall, len(view)) if x is not None)
        step = WRITE_CHUNK
        if res.rate is not None:
            step = max(1, min(WRITE_CHUNK, res.rate // 20))
        began = time.monotonic()
        sent = 0
        try:
            while sent < limit:
                piece = view[sent : min(limit, sent + step)]
                self._write(piece, chunked=res.chunked)
                sent += len(piece)
                with owner.lock:
                    res.bytes_sent += len(piece)
                if res.rate is not None:
                    ahead = sent / res.rate - (time.monotonic() - began)
                    if ahead > 0 and owner.stopping.wait(ahead):
                        return
            if stall is not None and sent == stall:
                self.wfile.flush()
                if not self._wait_for_client_to_leave(res.stall_seconds):
                    with owner.lock:
                        res.stalls_run_out += 1
                self._hang_up()
                return
            if drop is not None and sent == drop:
                self._hang_up()
                return
            if res.chunked:
                self.wfile.write(b"0\r\n\r\n")
        except _QUIET_ERRORS:
            self.close_connection = True

    def _wait_for_client_to_leave(self, seconds: float) -> bool:
        """True once the client closed the connection (or the server stops), False
        after ``seconds`` with the client still there."""
        owner = self.server.owner
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if owner.stopping.is_set():
                return True
            ready, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if ready:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return True  # EOF: the client is gone
                except OSError:
                    return True
                # a pipelined request: not an answer to the stall; keep waiting
                owner.stopping.wait(min(left, 0.05))
        return False

    def _write(self, piece: memoryview, *, chunked: bool) -> None:
        if chunked:
            self.wfile.write(b"%x\r\n" % len(piece))
            self.wfile.write(piece)
            self.wfile.write(b"\r\n")
        else:
            self.wfile.write(piece)

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def _simple(
        self,
        code: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.send_response(code, reason)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class FaultServer:
    """An HTTP server on ``host``, port 0, serving registered in-memory files."""

    def __init__(self, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.scheme = "http" if tls is None else "https"
        self.resources: dict[str, Resource] = {}
        self.requests: list[LoggedRequest] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self.connections = 0  # accepted so far (keep-alive: fewer than requests)
        self._httpd = _Server((host, 0), _Handler)
        self._httpd.owner = self
        if tls is not None:  # the handshake happens in accept(); a failed one is dropped
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def add(self, path: str, data: bytes = b"", **behaviour: Any) -> Resource:
        """Serve ``data`` at ``path``; keyword arguments are :class:`Resource` fields."""
        statuses = behaviour.pop("statuses", [])
        res = Resource(data=data, statuses=list(statuses), **behaviour)
        with self.lock:
            self.resources[path] = res
        return res

    def replace(self, path: str, data: bytes) -> None:
        """Change the content at ``path``: a new ETag and Last-Modified."""
        with self.lock:
            res = self.resources[path]
            res.data = data
            res.version += 1

    def requests_for(self, path: str) -> list[LoggedRequest]:
        return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def start(self) -> FaultServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"faultserver-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        with self.lock:
            socks = list(self._sockets)
        for sock in socks:  # wake handler threads blocked on idle keep-alive reads
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def track(self, sock: socket.socket) -> None:
        with self.lock:
            self._sockets.add(sock)
            self.connections += 1

    def untrack(self, sock: socket.socket) -> None:
        with self.lock:
            self._sockets.discard(sock)


Script = bytes | Callable[[socket.socket, threading.Event], None]


class RawServer:
    """A TCP server on ``host``, port 0, answering every connection with ``script``.

    ``script`` is the bytes to send (then the server closes its side and waits for the
    client to hang up), or a function ``(connection, stopping)`` that does anything.
    Either runs once the request's headers are in; with ``read_first="bytes"`` once
    the first bytes are (for clients that speak something else, e.g. TLS), with
    ``"nothing"`` at once (a TLS server wraps the socket itself). ``requests`` holds
    what was read.
    """

    def __init__(
        self,
        script: Script,
        host: str = "127.0.0.1",
        *,
        read_first: Literal["request", "bytes", "nothing"] = "request",
    ) -> None:
        self.script = script
        self.read_first = read_first
        self.host = host
        self.requests: list[bytes] = []
        self.stopping = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(16)
        self._port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._run, name="rawserver")

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/f.bin") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="rawserver-conn")
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            head = b""
            conn.settimeout(30)
            while self.read_first != "nothing" and b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
                if self.read_first == "bytes":
                    break
            self.requests.append(head)
            if isinstance(self.script, bytes):
                conn.sendall(self.script)
                conn.shutdown(socket.SHUT_WR)
                while not self.stopping.is_set() and conn.recv(65536):
                    pass  # until the client hangs up (closing now could reset it)
            else:
                self.script(conn, self.stopping)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def start(self) -> RawServer:
        self._accept.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._accept.join()
        for t in self._threads:
            t.join()

    def __enter__(self) -> RawServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_answer(
    status: str = "200 OK", body: bytes = b"", *headers: str, length: bool = True
) -> bytes:
    """The bytes of an answer: ``http_answer("302 Found", b"", "Location: /x")``.

    Headers are latin-1 text (so any byte can be sent); ``Content-Length`` is added
    unless ``length`` is false.
    """
    lines = [f"HTTP/1.1 {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv
