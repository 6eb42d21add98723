"""The demo's sample downloads and the loopback HTTP server that serves them.

The samples are made in memory when the demo starts (no file is shipped): a tar.gz and a
zip of a few files, a plain text file, a large file streamed from a repeating pattern at
a limited rate (its progress shows for several seconds), and two that fail on purpose:
one the server does not have (``http_404``), one whose job names another SHA-256
(``checksum_mismatch``).
"""

from __future__ import annotations

import gzip
import io
import random
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

__all__ = ["PATTERN", "Sample", "SampleSite", "samples"]

# The large sample's bytes: this block over and over (random bytes compress badly, as a
# real disk image would; the header keeps them from looking like an archive format)
PATTERN = b"dropfetch demo disk image\n" + random.Random(12).randbytes(65536 - 26)
_MTIME = 1_767_225_600  # 2026-01-01: the archives are the same at every start


@dataclass(frozen=True, slots=True)
class Sample:
    """One demo job: what the site serves at ``path`` and how the job must end."""

    name: str  # the job's name: inbox/NAME.url, outbox/NAME
    path: str  # the URL path on the site
    body: bytes | None = None  # what the site answers; None: see ``size``, else a 404
    size: int = 0  # a body of this many bytes streamed from PATTERN, at the site's rate
    members: dict[str, bytes] = field(default_factory=dict)  # the output's files
    sha256: str | None = None  # the job's ``sha256`` option
    expect: str = "ok"  # "ok", or the error code the job fails with
    note: str = ""  # what it shows, for the summary

    @property
    def files(self) -> list[str]:
        """The sidecar's ``files`` when the job is ``ok``."""
        return sorted(self.members) if self.members else [self.path.rsplit("/", 1)[-1]]


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=_MTIME) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def samples(big: int) -> list[Sample]:
    """The demo's jobs, the large one ``big`` bytes long."""
    tools = {
        "tools-1.0/README": b"tools 1.0: a sample tar.gz, unpacked by dropfetch\n",
        "tools-1.0/bin/tool": b"#!/bin/sh\necho 'hello from the demo'\n",
        "tools-1.0/doc/CHANGES": b"1.0: first release\n" * 40,
    }
    photos = {
        "photos/beach.jpg": random.Random(1).randbytes(48_000),
        "photos/forest.jpg": random.Random(2).randbytes(64_000),
        "photos/index.txt": b"beach.jpg\nforest.jpg\n",
    }
    notes = b"Release notes\n\nA plain file is delivered as it is: outbox/NAME/FILE.\n"
    return [
        Sample("tools-1.0", "/tools-1.0.tar.gz", _tar_gz(tools), members=tools, note="a tar.gz"),
        Sample("photos", "/photos.zip", _zip(photos), members=photos, note="a zip"),
        Sample("release-notes", "/release-notes.txt", notes, note="a plain file"),
        Sample("disk-image", "/disk-image.img", size=big, note="a large file, at a limited rate"),
        Sample("missing", "/missing.tar.gz", expect="http_404", note="not on the server"),
        Sample(
            "tampered",
            "/tampered.tar.gz",
            _tar_gz(tools),
            sha256="0" * 64,
            expect="checksum_mismatch",
            note="its job names another SHA-256",
        ),
    ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Sample]
    rate: int  # bytes/s of a streamed body; 0: unlimited
    stopping: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server_version = "dropfetch-demo"

    def do_GET(self) -> None:
        server = cast(_Server, self.server)
        sample = server.routes.get(self.path)
        if sample is None or (sample.body is None and not sample.size):
            self.send_error(404, "Not Found")
            return
        length = len(sample.body) if sample.body is not None else sample.size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            if sample.body is not None:
                self.wfile.write(sample.body)
            else:
                _stream(self.wfile, sample.size, server.rate, server.stopping)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped this download (a stop, Ctrl-C)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the demo's terminal shows the status view, not a request log


def _stream(out: io.BufferedIOBase, size: int, rate: int, stopping: threading.Event) -> None:
    """``size`` bytes of PATTERN, at most ``rate`` bytes/s, until ``stopping`` is set."""
    start, sent = time.monotonic(), 0
    while sent < size and not stopping.is_set():
        chunk = PATTERN[: min(len(PATTERN), size - sent)]
        out.write(chunk)
        sent += len(chunk)
        if rate:
            stopping.wait(max(0.0, start + sent / rate - time.monotonic()))


class SampleSite:
    """The samples on ``http://127.0.0.1:PORT/`` (a free port), in a thread of its own."""

    def __init__(self, items: list[Sample], *, rate: int = 0) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.routes = {s.path: s for s in items}
        self._server.rate = rate
        self._server.stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dropfetch-demo-site", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket (streams in progress end too)."""
        self._server.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> SampleSite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
