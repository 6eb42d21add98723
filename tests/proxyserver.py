"""A small HTTP proxy on loopback for tests: CONNECT tunnels (https targets) and plain
forwarding of absolute-form requests (http targets), counting what passes through."""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Passed:
    method: str
    target: str  # host:port for CONNECT, the absolute URL otherwise
    proxy_authorization: str | None


@dataclass
class _State:
    passed: list[Passed] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        head = self.rfile.readline(65536).decode("latin-1").rstrip("\r\n")
        lines = []
        while (line := self.rfile.readline(65536)) not in (b"\r\n", b"\n", b""):
            lines.append(line.decode("latin-1").rstrip("\r\n"))
        method, target, _version = head.split(" ", 2)
        auth = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in lines
                if ln.lower().startswith("proxy-authorization:")
            ),
            None,
        )
        with self.server.state.lock:
            self.server.state.passed.append(Passed(method, target, auth))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
        else:
            parts = urlsplit(target)
            upstream = socket.create_connection((parts.hostname, parts.port or 80), timeout=30)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            keep = [ln for ln in lines if not ln.lower().startswith(("proxy-", "connection:"))]
            request = f"{method} {path or '/'} HTTP/1.1\r\n" + "".join(f"{ln}\r\n" for ln in keep)
            upstream.sendall((request + "Connection: close\r\n\r\n").encode("latin-1"))
        with upstream:
            self._pipe(upstream)

    def _pipe(self, upstream: socket.socket) -> None:
        client = self.connection  # the client sent nothing more yet: rfile holds no bytes
        while True:
            ready, _, _ = select.select([client, upstream], [], [], 30)
            if not ready:
                return
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                (upstream if sock is client else client).sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State


class Proxy:
    """``with Proxy() as p:`` -> ``p.url``; ``p.passed`` lists what went through."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    @property
    def passed(self) -> list[Passed]:
        with self._server.state.lock:
            return list(self._server.state.passed)

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        with contextlib.suppress(OSError):
            self._server.server_close()
        self._thread.join()
