"""The optional HTTP front end: the seed's API on top of the inbox (SPEC §9).

It only writes job files and reads sidecars, so it answers the same on every host
of a shared inbox.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dropfetch.config import Config
from dropfetch.errors import DropfetchError
from dropfetch.jobfile import JOB_SUFFIX, SIDECAR_SUFFIX
from dropfetch.metrics import Metrics
from dropfetch.status import Sidecar, read_sidecar, read_sidecars
from dropfetch.submit import derive_name, job_content, write_job, write_unique_job

__all__ = ["HttpFrontEnd"]

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    front: HttpFrontEnd


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "dropfetch"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http: %s %s", self.address_string(), format % args)

    # -- plumbing ----------------------------------------------------------------------

    def _send(self, status: int, body: Any, *, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (
            json.dumps(body, ensure_ascii=False, indent=2) + "\n").encode()
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        body: dict[str, Any] = {"error": message}
        if code:
            body["code"] = code
        self._send(status, body)

    def _authorised(self) -> bool:
        token = self.server.front.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(),
                                                               token.encode()):
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "a valid 'Authorization: Bearer <token>' is needed")
        return False

    def _route(self) -> tuple[str, str | None] | None:
        path = self.path.split("?", 1)[0]
        if path in ("/archive", "/archive/"):
            return "collection", None
        if path.startswith("/archive/"):
            name = unquote(path[len("/archive/"):])
            if name and "/" not in name and not name.startswith("."):
                return "item", name
            return "item", None
        if path == "/metrics":
            return "metrics", None
        return None

    def _dispatch(self, method: str) -> None:
        if not self._authorised():
            return
        route = self._route()
        front = self.server.front
        if route is None:
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.path}")
        elif route == ("metrics", None) and method == "GET":
            self._send(HTTPStatus.OK, generate_latest(front.metrics.registry),
                       content_type=CONTENT_TYPE_LATEST)
        elif route[0] == "collection" and method == "GET":
            self._send(HTTPStatus.OK, [front.view(sc) for sc in front.all_sidecars()])
        elif route[0] == "collection" and method == "POST":
            self._post()
        elif route[0] == "item" and method in ("GET", "DELETE"):
            name = route[1]
            if name is None:
                self._error(HTTPStatus.NOT_FOUND, "unknown id")
            elif method == "GET":
                self._get_item(name)
            else:
                self._delete_item(name)
        else:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed here")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- endpoints ---------------------------------------------------------------------

    def _read_json(self) -> dict[str, Any] | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
            return None
        if length > MAX_BODY or length < 0:
            self.close_connection = True  # the unread body must not become the next request
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
            return None
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "the body is not valid JSON")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, 'expected a JSON object such as {"url": "..."}')
            return None
        return body

    def _post(self) -> None:
        body = self._read_json()
        if body is None:
            return
        url, name, sha = body.get("url"), body.get("name"), body.get("sha256")
        unknown = sorted(set(body) - {"url", "name", "sha256"})
        if unknown:
            self._error(HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}")
            return
        if not isinstance(url, str) or (name is not None and not isinstance(name, str)) or (
                sha is not None and not isinstance(sha, str)):
            self._error(HTTPStatus.BAD_REQUEST, '"url" (and optional "name", "sha256") '
                        "must be strings")
            return
        inbox = self.server.front.config.inbox
        try:
            content = job_content(url, sha256=sha)
            if name:
                path = write_job(inbox, name, content)
            else:
                path = write_unique_job(inbox, derive_name(url), content)
        except DropfetchError as exc:
            status = HTTPStatus.CONFLICT if exc.code == "name_conflict" else HTTPStatus.BAD_REQUEST
            self._error(status, exc.message, exc.code)
            return
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
            self._error(HTTPStatus.NOT_FOUND, f"unknown id {name!r}")

    def _delete_item(self, name: str) -> None:
        inbox = self.server.front.config.inbox
        try:
            (inbox / (name + JOB_SUFFIX)).unlink()
        except FileNotFoundError:
            self._error(HTTPStatus.NOT_FOUND, f"unknown id {name!r}")
            return
        self._send(HTTPStatus.ACCEPTED, {"id": name, "status": "deleting"})


class HttpFrontEnd:
    """A threaded HTTP server on ``http.listen``; ``start()`` / ``stop()``."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.token: str | None = None
        if config.http.token_file is not None:
            self.token = config.http.token_file.read_text(encoding="utf-8").strip()
        if config.http.listen is None:
            raise ValueError("http.listen is not set")
        host, _, port = config.http.listen.rpartition(":")
        self._server = _Server((host.strip("[]"), int(port)), _Handler)
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
        logger.info("HTTP front end on http://%s:%d%s", *self.address,
                    " (bearer token required)" if self.token else "")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
