"""One HTTP transfer: URL policy, SSRF guard, resume, limits, progress, hashing.

:meth:`Downloader.fetch` makes ONE attempt to bring a URL into a partial file and
raises a :class:`~dropfetch.errors.DropfetchError` when it cannot; retries and backoff
belong to the caller, who reads ``err.retryable`` and ``err.retry_after``.

Resume (like pip's ``network/download.py``): next to the partial file lives
``<partial>.meta`` (JSON: url, etag, last_modified, total). When it describes the same
URL and has a validator, the next attempt re-hashes the bytes already there and asks
for the rest with ``Range: bytes=N-`` and ``If-Range`` (a strong ETag, else
Last-Modified). A ``200`` answer restarts from zero, a ``206`` with the matching
``Content-Range`` is appended, a wrong ``Content-Range`` discards the partial. When
the server gave neither a strong ETag nor Last-Modified, nothing proves that the
bytes on disk belong to the current file, so the next attempt starts from zero
instead of risking a splice of two versions.

The SSRF guard checks the address the socket actually connected to (after connect,
before a byte is sent), on every connection and so on every redirect hop: a name
that resolves differently at check time and connect time cannot slip through.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import queue
import re
import shutil
import socket
import ssl
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.client import (
    BadStatusLine,
    HTTPException,
    IncompleteRead,
    LineTooLong,
    RemoteDisconnected,
)
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import idna
import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager
from urllib3.util.retry import Retry

from dropfetch import __version__
from dropfetch.config import DownloadConfig, Network
from dropfetch.errors import (
    BadUrlError,
    BlockedAddressError,
    CancelledError,
    DiskFullError,
    DownloadTimeoutError,
    DropfetchError,
    HttpStatusError,
    IOFailureError,
    NetworkError,
    TlsError,
    TooLargeError,
    fragment,
    from_os_error,
)
from dropfetch.fsutil import atomic_write, start_writeback

__all__ = [
    "DownloadResult",
    "Downloader",
    "Transfer",
    "check_url",
    "meta_path",
    "redact_url",
]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 16 * 1024
DISK_CHECK_EVERY = 32 * 1024 * 1024
# bodies larger than this are hashed on a second thread (see _BackgroundHasher)
BACKGROUND_HASH_ABOVE = 8 * 1024 * 1024
BACKGROUND_QUEUE_CHUNKS = 4
SYNC_EVERY = 64 * 1024 * 1024
SPEED_WINDOW = 5.0  # seconds of history behind Transfer.speed
CANCEL_POLL = 0.05  # how often the cancel watcher looks at the event
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ALLOWED_SCHEMES = ("http", "https")

_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")
# ASCII digits only (\d would take any script's), few enough for int()
_DECIMAL_RE = re.compile(r"[0-9]{1,100}")
_CONTENT_RANGE_RE = re.compile(
    r"^\s*bytes\s+([0-9]{1,100})-([0-9]{1,100})/([0-9]{1,100}|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE_RE = re.compile(r"^\s*bytes\s+\*/([0-9]{1,100})\s*$", re.IGNORECASE)


# --- URL policy -----------------------------------------------------------------------

def check_url(url: str) -> str:
    """Return ``url`` without surrounding whitespace if it may be downloaded.

    Only ``http``/``https`` with a host; no spaces or control characters inside.
    Raises :class:`BadUrlError` with a plain message (the URL redacted).
    """
    url = url.strip()
    if not url:
        raise BadUrlError("the URL is empty")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise BadUrlError("the URL is not valid text (it holds a lone surrogate)") from None
    shown = fragment(redact_url(url))  # a job file may hold a secret: quote a piece only
    if _CONTROL_RE.search(url):
        raise BadUrlError(
            f"the URL contains spaces or control characters: {shown}; "
            "percent-encode them (%20)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadUrlError(f"not a valid URL (a bad host or port): {shown}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        kind = f"{fragment(scheme, 20)[1:-1]}:" if scheme else "no scheme"
        raise BadUrlError(f"only http and https URLs can be downloaded, not {kind} ({shown})")
    if not parts.hostname:
        raise BadUrlError(f"the URL has no host name: {shown}")
    if port == 0:
        raise BadUrlError(f"the URL has port 0: {shown}")
    problem = _host_problem(parts.hostname, literal="[" in parts.netloc)
    if problem is not None:
        raise BadUrlError(f"{problem}: {shown}")
    return url


def _host_problem(host: str, *, literal: bool) -> str | None:
    """Why ``host`` (a URL's host, without brackets) cannot be dialled, if it cannot."""
    if literal:
        if "%" in host:
            return "IPv6 zone ids (%25 in the address) are not supported in URLs"
        return None  # urlsplit checked the address
    if "%" in host:
        return "percent-encoded host names are not supported; write the name as is"
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            return f"the host name is not a valid internationalised domain name ({exc})"
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or any(not label or len(label) > 63 for label in labels):
        return ("the host name is not valid (an empty label, a label over 63 characters "
                "or more than 253 in all)")
    return None


def redact_url(url: str) -> str:
    """``https://user:pw@host/p?q=1`` -> ``https://***@host/p?***``; never raises.

    User information and the query string are replaced by ``***``; the fragment is
    dropped; spaces and control characters are percent-encoded.
    """
    try:
        text = str(url).strip()
        try:
            parts = urlsplit(text)
            netloc = parts.netloc
            scheme = parts.scheme
            path = parts.path
            has_query = bool(parts.query)
        except ValueError:
            # e.g. an unbalanced "[" in the host: redact by hand
            scheme, sep, rest = text.partition("://")
            if not sep:
                scheme, rest = "", text
            rest = rest.split("#", 1)[0]
            rest, qmark, query = rest.partition("?")
            netloc, slash, tail = rest.partition("/")
            path = slash + tail
            has_query = bool(qmark and query)
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        out = f"{scheme}://{netloc}{path}" if scheme or netloc else path
        if has_query:
            out += "?***"
        out = _CONTROL_RE.sub(lambda m: f"%{ord(m.group()):02X}", out)
        out = out.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
        return out[:2000] if len(out) <= 2000 else out[:2000] + "..."
    except Exception:  # noqa: BLE001 - a redaction must never fail
        return "<unprintable URL>"


# --- SSRF guard -----------------------------------------------------------------------

def _blocked_network(address: str, networks: Iterable[Network]) -> Network | None:
    """The network of ``networks`` that holds ``address`` (IPv4-mapped as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for net in networks:
        for candidate in candidates:
            if candidate in net:
                return net
    return None


class _AddressGuard:
    """Checks a freshly connected socket's peer against ``block_networks``."""

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self.networks = networks

    def pick(self, host: str, port: int) -> str:
        """The address to connect to: the first resolved one outside the blocked networks.

        Refusing before connecting means a blocked address is never contacted (not even a
        SYN to 169.254.169.254); connecting to the checked literal pins the name, so a
        second, different DNS answer (rebinding) cannot slip in between.
        """
        if not self.networks:
            return host
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return host  # the connection reports the resolution failure itself
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if _blocked_network(address, self.networks) is None:
                return address
        net = _blocked_network(addresses[0], self.networks) if addresses else None
        raise BlockedAddressError(
            f"{host} resolves to {', '.join(addresses)}, which is in a blocked network "
            f"({net}; see download.block_networks); the server is not contacted")

    def check(self, sock: socket.socket, host: str) -> None:
        if not self.networks:
            return
        try:
            peer = sock.getpeername()[0]
        except OSError:
            return  # not connected after all: the request fails on its own
        net = _blocked_network(str(peer), self.networks)
        if net is not None:
            with contextlib.suppress(OSError):
                sock.close()
            raise BlockedAddressError(
                f"{host} resolves to {peer}, which is in a blocked network ({net}; see "
                "download.block_networks); the server is not contacted")


def _guarded_pool_manager(guard: _AddressGuard, **kwargs: Any) -> PoolManager:
    """A pool manager whose connections run ``guard`` right after connecting."""

    def connect(conn: HTTPConnection, new_conn: Callable[[], socket.socket]) -> socket.socket:
        original = conn._dns_host
        conn._dns_host = guard.pick(original, conn.port)
        try:
            sock = new_conn()  # host header, SNI and certificate checks keep the name
        finally:
            conn._dns_host = original
        guard.check(sock, conn.host)
        return sock

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return connect(self, super()._new_conn)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return connect(self, super()._new_conn)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    manager = PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}
    return manager


class _Session(requests.Session):
    """A session that never looks at ``Location`` itself.

    Even with ``allow_redirects=False`` requests works out the next hop of every
    redirect (``Response.next``) and decodes ``Location`` as UTF-8 on the way, which
    raises on a header with other bytes; :meth:`Downloader._open` follows redirects by
    hand and reads ``Location`` its own way (:func:`_location_text`).
    """

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


class _GuardedAdapter(HTTPAdapter):
    """requests adapter with the SSRF guard and without urllib3's own retries."""

    def __init__(self, guard: _AddressGuard) -> None:
        self._guard = guard
        super().__init__(max_retries=Retry(total=0, read=False, redirect=False))

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any,
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _guarded_pool_manager(
            self._guard, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs)


def _location_text(header: str | None) -> str:
    """A ``Location`` header as a URL reference ("" when there is none).

    http.client hands headers over as latin-1 text, i.e. the raw bytes. UTF-8 is read
    as such (a non-ASCII host name then goes through IDNA, a path is sent
    percent-encoded); other bytes beyond ASCII are percent-encoded as they are, so the
    next request asks the server for exactly the bytes it named.
    """
    if header is None:
        return ""
    try:
        raw = header.encode("latin-1").strip()
    except UnicodeEncodeError:
        return header.strip(" \t")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(chr(b) if b < 0x80 else f"%{b:02X}" for b in raw)


def _answer_problem(exc: BaseException) -> str | None:
    """What was wrong with a server's answer, in plain words (``None``: not known)."""
    if _find_cause(exc, RemoteDisconnected):
        return "the server closed the connection without answering"
    if _find_cause(exc, ConnectionResetError):
        return "the server reset the connection"
    if _find_cause(exc, LineTooLong) or (
            (cause := _find_cause(exc, HTTPException)) is not None
            and "more than" in str(cause) and "headers" in str(cause)):
        return ("the server's answer has too many or too long header lines "
                "(more than 100 headers, or a line over 64 KiB)")
    if _find_cause(exc, BadStatusLine):
        return ("the server's answer is not HTTP (no valid status line: an HTTP/0.9 "
                "answer, TLS on an http URL, or another protocol on this port); check "
                "the URL's scheme and port")
    if isinstance(_find_cause(exc, requests.exceptions.InvalidHeader)
                  or _find_cause(exc, urllib3.exceptions.InvalidHeader), Exception):
        return ("the server sent invalid headers (e.g. Content-Length headers that "
                "disagree)")
    return None


def _tls_problem(exc: BaseException, shown: str) -> str:
    """A TLS failure named precisely: the certificate check, or the handshake."""
    cert = _find_cause(exc, ssl.SSLCertVerificationError)
    if isinstance(cert, ssl.SSLCertVerificationError):
        why = cert.verify_message or cert.reason or "not trusted"
        return (f"the TLS certificate of {shown} was refused: {why}; the server's "
                "certificate must be valid for this host name and signed by an authority "
                "the system trusts")
    tls = _find_cause(exc, ssl.SSLError)
    reason = getattr(tls, "reason", None) or type(tls or exc).__name__
    hint = ""
    if reason == "WRONG_VERSION_NUMBER":
        hint = " (the server does not speak TLS on this port: an http server?)"
    return (f"the TLS handshake with {shown} failed: {reason}{hint}; check the URL's "
            "scheme and port")


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """Dig ``kind`` out of requests/urllib3 wrapping (args, reason, cause, context)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, kind):
            return cur
        nested = [getattr(cur, "reason", None), cur.__cause__, cur.__context__, *cur.args]
        todo.extend(n for n in nested if isinstance(n, BaseException))
    return None


# --- data -----------------------------------------------------------------------------

@dataclass(slots=True)
class Transfer:
    """Progress of one transfer, passed to ``on_progress`` after each chunk.

    ``bytes_done`` counts the bytes in the partial file (resumed ones included);
    ``bytes_total`` is the full size when the server said it; ``speed`` is a moving
    average in bytes/s (``None`` until there is enough data).
    """

    bytes_done: int
    bytes_total: int | None
    speed: float | None
    resumed_from: int


@dataclass(frozen=True, slots=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str
    url: str  # final URL, after redirects (not redacted: do not log it as is)
    filename: str | None
    resumed_from: int


@dataclass(frozen=True, slots=True)
class _Meta:
    url: str
    etag: str | None
    last_modified: str | None
    total: int | None

    @property
    def validator(self) -> str | None:
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified or None


def meta_path(partial: Path) -> Path:
    """Where the resume metadata of ``partial`` lives."""
    return partial.with_name(partial.name + ".meta")


def _read_meta(path: Path) -> _Meta | None:
    try:
        raw = json.loads(path.read_bytes())
        total = raw.get("total")
        return _Meta(
            url=str(raw["url"]),
            etag=raw.get("etag") if isinstance(raw.get("etag"), str) else None,
            last_modified=(raw.get("last_modified")
                           if isinstance(raw.get("last_modified"), str) else None),
            total=total if isinstance(total, int) and not isinstance(total, bool) else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_meta(path: Path, meta: _Meta) -> None:
    data = json.dumps({"url": meta.url, "etag": meta.etag,
                       "last_modified": meta.last_modified, "total": meta.total}).encode()
    try:
        # not synced: losing it to a power cut only means the download starts over
        atomic_write(path, data, sync=False, durable=False)
    except OSError as exc:
        raise from_os_error(exc, "writing the download's resume data") from None


def _discard(partial: Path) -> None:
    for p in (partial, meta_path(partial)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if _DECIMAL_RE.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _safe_name(name: str | None) -> str | None:
    """``name`` if it is a usable bare file name, else ``None``."""
    if name is None:
        return None
    name = name.strip()
    # isprintable() also refuses C1 controls, format characters such as U+202E (which
    # would show "exe.txt" as "txt.exe") and lone surrogates
    if (not name or name in (".", "..") or name.startswith(".") or "/" in name
            or "\\" in name or not all(c == " " or c.isprintable() for c in name)
            or len(name.encode("utf-8", "surrogateescape")) > 255):
        return None
    return name


def _disposition_filename(header: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` header (RFC 6266), if any.

    The header's raw bytes must be UTF-8 (ASCII included), else it is ignored;
    ``filename*`` is read in UTF-8 or ISO-8859-1 only (RFC 8187), other charsets are
    ignored. The caller still vets the name (:func:`_safe_name`).
    """
    if not header:
        return None
    try:  # http.client hands the raw bytes over as latin-1 text
        header = header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
    params: dict[str, str] = {}
    for m in re.finditer(r';\s*([A-Za-z0-9*._-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', header):
        key, value = m.group(1).lower(), m.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key] = value
    extended = params.get("filename*")
    if extended and "'" in extended:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        charset = charset.strip().lower()
        if charset in ("utf-8", "iso-8859-1"):
            with contextlib.suppress(UnicodeDecodeError):
                return unquote(encoded, encoding=charset, errors="strict")
    return params.get("filename")


def _result_filename(final_url: str, disposition: str | None) -> str | None:
    name = _safe_name(_disposition_filename(disposition))
    if name is not None:
        return name
    try:
        segment = urlsplit(final_url).path.rsplit("/", 1)[-1]
    except ValueError:
        return None
    return _safe_name(unquote(segment))


class _SpeedMeter:
    """Average bytes/s over the last few seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float | None:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= SPEED_WINDOW:
            samples.popleft()
        t0, b0 = samples[0]
        span = now - t0
        if span < 0.1:
            return None
        return (done - b0) / span


class _CancelWatcher:
    """Shuts the socket down when ``cancel`` is set, so a blocked read returns at once."""

    def __init__(self, cancel: threading.Event, sock: socket.socket | None) -> None:
        self._cancel = cancel
        self._sock = sock
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dropfetch-cancel", daemon=True)

    def __enter__(self) -> _CancelWatcher:
        if self._sock is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        # waits on _done, so the end of a transfer is never delayed by the polling
        while not self._done.wait(CANCEL_POLL):
            if self._cancel.is_set():
                if self._sock is not None:
                    with contextlib.suppress(OSError):
                        self._sock.shutdown(socket.SHUT_RDWR)
                return


# --- the downloader -------------------------------------------------------------------

class Downloader:
    """Downloads URLs into partial files, one attempt per :meth:`fetch` call.

    Owns one ``requests.Session`` (keep-alive; proxies from the environment are not
    used). Thread-safe enough to share between workers: requests sessions may be
    used from several threads for plain GETs.
    """

    def __init__(self, config: DownloadConfig, *, min_free_space: int = 0) -> None:
        self.config = config
        self.min_free_space = min_free_space
        self.user_agent = config.user_agent or f"dropfetch/{__version__}"
        self._never = threading.Event()
        self.session = _Session()
        self.session.trust_env = False
        adapter = _GuardedAdapter(_AddressGuard(tuple(config.block_networks)))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public ---------------------------------------------------------------------

    def fetch(
        self,
        url: str,
        partial: Path,
        *,
        on_progress: Callable[[Transfer], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> DownloadResult:
        """Bring ``url`` into ``partial``, resuming it when its ``.meta`` allows.

        Raises a :class:`DropfetchError`; the partial file and its ``.meta`` are kept
        whenever a later attempt could resume from them. On success the file is
        complete and fsynced, and ``.meta`` is left for the caller to remove.
        """
        url = check_url(url)
        cancel = cancel if cancel is not None else self._never
        if cancel.is_set():
            raise CancelledError("download cancelled before it started")
        if on_progress is not None:
            on_progress = _shielded(on_progress)
        try:
            try:
                return self._attempt(url, partial, on_progress, cancel, resume=True)
            except _StartOver:
                logger.info("%s: the server has a different file now; starting over",
                            partial.name)
                _discard(partial)
                return self._attempt(url, partial, on_progress, cancel, resume=False)
        except (DropfetchError, _StartOver):
            raise
        except _CallerError as exc:  # the caller's own exception, untouched
            raise exc.original from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, HTTPException,
                OSError, ValueError) as exc:
            # the last line of defence: each known class is mapped where it arises
            raise _unexpected(exc, partial, redact_url(url)) from None

    # --- one request ----------------------------------------------------------------

    def _attempt(
        self,
        url: str,
        partial: Path,
        on_progress: Callable[[Transfer], None] | None,
        cancel: threading.Event,
        *,
        resume: bool,
    ) -> DownloadResult:
        mpath = meta_path(partial)
        hasher = hashlib.sha256()
        existing = 0
        meta = _read_meta(mpath) if resume else None
        if meta is not None and meta.url == url and meta.validator is not None:
            existing = self._rehash(partial, hasher, cancel)
        if existing == 0:
            _discard(partial)
            meta = None

        headers = {"Accept-Encoding": "identity", "User-Agent": self.user_agent}
        if existing and meta is not None and meta.validator is not None:
            headers["Range"] = f"bytes={existing}-"
            headers["If-Range"] = meta.validator
        resp, final_url = self._open(url, headers)
        try:
            return self._receive(
                resp, url=url, final_url=final_url, partial=partial, meta=meta,
                existing=existing, hasher=hasher, on_progress=on_progress, cancel=cancel)
        finally:
            resp.close()

    def _open(self, url: str, headers: Mapping[str, str]) -> tuple[requests.Response, str]:
        """GET ``url``, following redirects by hand; returns the final response."""
        current = url
        seen = {url}
        redirects = 0
        while True:
            resp = self._get(current, headers)
            if resp.status_code not in REDIRECT_STATUSES:
                return resp, current
            # (str.strip() would also take \x85, a raw byte of the URL, for a space)
            values = {v.strip(" \t") for v in resp.raw.headers.getlist("Location")}
            resp.close()
            if len(values) > 1:
                raise BadUrlError(
                    f"{redact_url(current)} redirects to {len(values)} different Location "
                    "headers at once; the server is broken")
            location = _location_text(values.pop() if values else None)
            if not location:
                raise HttpStatusError(
                    resp.status_code,
                    f"the server answered {resp.status_code} (a redirect) without a "
                    f"Location for {redact_url(current)}")
            try:
                if _CONTROL_RE.search(location):  # urljoin would drop tabs silently
                    raise BadUrlError(
                        "the URL contains spaces or control characters: "
                        f"{redact_url(location)}")
                try:
                    target = urljoin(current, location)
                except ValueError as exc:  # e.g. an unbalanced "[" in the host
                    raise BadUrlError(
                        f"not a valid URL ({exc}): {redact_url(location)}") from None
                target = check_url(target)
            except BadUrlError as exc:
                raise BadUrlError(
                    f"{redact_url(current)} redirects to a URL that cannot be downloaded: "
                    f"{exc.message}") from None
            redirects += 1
            if target in seen:
                raise BadUrlError(
                    f"too many redirects: a redirect loop at {redact_url(target)} "
                    f"(started from {redact_url(url)})")
            if redirects > self.config.max_redirects:
                raise BadUrlError(
                    f"too many redirects: more than {self.config.max_redirects} "
                    f"(download.max_redirects) starting from {redact_url(url)}")
            seen.add(target)
            logger.debug("redirect %d: %s -> %s", redirects, redact_url(current),
                         redact_url(target))
            current = target

    def _get(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        shown = redact_url(url)
        try:
            return self.session.get(
                url, headers=dict(headers), stream=True, allow_redirects=False,
                timeout=(self.config.timeout_connect, self.config.timeout_read))
        except BlockedAddressError:
            raise
        except requests.exceptions.ConnectTimeout:
            raise NetworkError(
                f"could not connect to {shown} within {self.config.timeout_connect:g} s "
                "(download.timeout_connect)") from None
        except requests.exceptions.ReadTimeout:
            raise DownloadTimeoutError(
                f"{shown} sent no answer within {self.config.timeout_read:g} s "
                "(download.timeout_read)") from None
        except requests.exceptions.InvalidURL:
            raise BadUrlError(f"not a valid URL: {shown}") from None
        except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema):
            raise BadUrlError(f"only http and https URLs can be downloaded: {shown}") from None
        except requests.exceptions.SSLError as exc:
            raise TlsError(_tls_problem(exc, shown)) from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                HTTPException, OSError) as exc:
            blocked = _find_cause(exc, BlockedAddressError)
            if isinstance(blocked, BlockedAddressError):
                raise blocked from None
            if _find_cause(exc, urllib3.exceptions.NameResolutionError) or _find_cause(
                    exc, socket.gaierror):
                raise NetworkError(f"the host name of {shown} could not be resolved") from None
            if _find_cause(exc, ConnectionRefusedError):
                raise NetworkError(f"the connection to {shown} was refused") from None
            if _find_cause(exc, urllib3.exceptions.LocationParseError) or _find_cause(
                    exc, UnicodeError):
                raise BadUrlError(
                    f"the host name of {shown} is not valid (empty or over-long labels, "
                    "or characters a host name cannot have)") from None
            problem = _answer_problem(exc)
            if problem is not None:
                raise NetworkError(f"{shown}: {problem}") from None
            raise NetworkError(f"could not get {shown}: {type(exc).__name__}") from None

    def _receive(
        self,
        resp: requests.Response,
        *,
        url: str,
        final_url: str,
        partial: Path,
        meta: _Meta | None,
        existing: int,
        hasher: Any,
        on_progress: Callable[[Transfer], None] | None,
        cancel: threading.Event,
    ) -> DownloadResult:
        status = resp.status_code
        shown = redact_url(final_url)
        total: int | None
        if status == 416 and existing:
            m = _UNSATISFIED_RANGE_RE.match(resp.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == existing and (meta is None or meta.total in (
                    None, existing)):
                logger.info("%s: already complete (%d bytes)", partial.name, existing)
                return self._finish(partial, existing, hasher, final_url=final_url, resp=resp,
                                    resumed_from=existing)
            raise _StartOver
        if status == 206:
            length = _content_length(resp, shown)
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
            start = int(m.group(1)) if m else -1
            end = int(m.group(2)) if m else -1
            total = None if m is None or m.group(3) == "*" else int(m.group(3))
            body = end - start + 1
            if (m is None or start != existing or (total is not None and end != total - 1)
                    or (length is not None and length != body)
                    or (meta is not None and meta.total is not None and total is not None
                        and total != meta.total)):
                _discard(partial)
                asked = f"bytes={existing}-" if existing else "the whole file"
                got = resp.headers.get("Content-Range", "none")
                raise NetworkError(
                    f"server sent a wrong Content-Range ({got[:80]!r} for {asked}) "
                    f"for {shown}; the partial download was discarded, the next attempt "
                    "starts from zero")
            length = body
        elif status == 200:
            length = _content_length(resp, shown)
            if existing:
                logger.info("%s: the server sent the whole file; restarting from zero",
                            partial.name)
                hasher = hashlib.sha256()
                existing = 0
            total = length
        elif not 100 <= status <= 599:  # no class to read it by (RFC 9110 section 15)
            raise NetworkError(
                f"{shown} answered with status {status}, which HTTP does not define; "
                "the server is broken")
        else:
            raise HttpStatusError(
                status, f"the server answered {status} {resp.reason or ''}".rstrip()
                + f" for {shown}",
                retry_after=_parse_retry_after(resp.headers.get("Retry-After")))

        if total is not None and total > self.config.max_size:
            raise TooLargeError(
                f"{shown} is {total} bytes, more than download.max_size "
                f"({self.config.max_size} bytes)")
        remaining = (total - existing) if total is not None else None
        self._check_space(partial, remaining or 0, shown)
        if existing == 0:
            _write_meta(meta_path(partial), _Meta(
                url=url, etag=resp.headers.get("ETag"),
                last_modified=resp.headers.get("Last-Modified"), total=total))

        done = self._copy_body(
            resp, partial=partial, existing=existing, length=length, total=total,
            hasher=hasher, on_progress=on_progress, cancel=cancel, shown=shown)
        return self._finish(partial, done, hasher, final_url=final_url, resp=resp,
                            resumed_from=existing)

    def _copy_body(
        self,
        resp: requests.Response,
        *,
        partial: Path,
        existing: int,
        length: int | None,
        total: int | None,
        hasher: Any,
        on_progress: Callable[[Transfer], None] | None,
        cancel: threading.Event,
        shown: str,
    ) -> int:
        """Stream the body into ``partial`` from offset ``existing``; return its size."""
        raw = resp.raw
        config = self.config
        chunk = CHUNK_SIZE
        if config.rate_limit is not None:
            chunk = max(MIN_CHUNK_SIZE, min(CHUNK_SIZE, config.rate_limit // 8))
        meter = _SpeedMeter()
        done = existing
        received = 0
        next_disk_check = DISK_CHECK_EVERY
        started = time.monotonic()
        sock = _socket_of(resp)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise from_os_error(exc, "opening the partial download") from None
        try:
            try:
                os.ftruncate(fd, existing)
                os.lseek(fd, existing, os.SEEK_SET)
            except OSError as exc:
                raise from_os_error(exc, "preparing the partial download") from None
            background = (_BackgroundHasher(hasher, fd)
                          if length is None or length > BACKGROUND_HASH_ABOVE else None)
            digest = hasher.update if background is None else background.update
            with contextlib.ExitStack() as stack:
                if background is not None:
                    stack.callback(background.close)
                stack.enter_context(
                    _CancelWatcher(cancel, sock if cancel is not self._never else None))
                while True:
                    if cancel.is_set():
                        raise CancelledError(f"download of {shown} cancelled")
                    want = chunk
                    if length is not None:
                        want = min(want, length - received)
                        if want <= 0:
                            break
                    try:
                        # read1: what has arrived (one socket read, up to 1 MiB, straight
                        # into a new bytes object), so a stall or a cancel never strands
                        # received bytes in a half-filled buffer. Raw bytes, no decoding.
                        data = memoryview(raw.read1(want, decode_content=False))
                    except Exception as exc:  # noqa: BLE001 - mapped to our errors
                        if cancel.is_set():
                            raise CancelledError(f"download of {shown} cancelled") from None
                        raise _read_error(exc, shown, config.timeout_read, done) from None
                    n = len(data)
                    if n == 0:
                        if cancel.is_set():
                            raise CancelledError(f"download of {shown} cancelled")
                        break
                    received += n
                    done += n
                    if done > config.max_size:
                        raise TooLargeError(
                            f"{shown} sent more than download.max_size "
                            f"({config.max_size} bytes)")
                    digest(data)
                    try:
                        while data:
                            data = data[os.write(fd, data):]
                    except OSError as exc:
                        raise from_os_error(exc, "writing the download") from None
                    if received >= next_disk_check:
                        next_disk_check += DISK_CHECK_EVERY
                        self._check_space(partial, 0, shown)
                    now = time.monotonic()
                    if on_progress is not None:
                        on_progress(Transfer(done, total, meter.add(now, done), existing))
                    if config.rate_limit is not None:
                        ahead = received / config.rate_limit - (now - started)
                        if ahead > 0 and cancel.wait(ahead):
                            raise CancelledError(f"download of {shown} cancelled")
            if length is not None and received < length:
                raise NetworkError(
                    f"the connection to {shown} ended early: {received} of {length} bytes "
                    "received (the next attempt resumes)")
            try:
                os.fsync(fd)
            except OSError as exc:
                raise from_os_error(exc, "saving the download") from None
        finally:
            os.close(fd)
        # back to the pool only when http.client saw the end of the answer: after a 206
        # that sent more than its Content-Range (chunked), the rest is still coming,
        # and the next request on that connection would read it as its answer
        # (Response.close(), by the caller, closes a connection not released here)
        framed = ("Transfer-Encoding" not in resp.headers
                  and _int_or_none(resp.headers.get("Content-Length")) == received)
        if raw.closed or framed:  # (an empty body is not "closed" before a read)
            with contextlib.suppress(Exception):
                raw.release_conn()
        return done

    # --- helpers --------------------------------------------------------------------

    def _rehash(self, partial: Path, hasher: Any, cancel: threading.Event) -> int:
        """Feed the partial file's bytes to ``hasher``; return its size (0 if none)."""
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        size = 0
        try:
            with open(partial, "rb", buffering=0) as fh:
                while True:
                    if cancel.is_set():
                        raise CancelledError("download cancelled while checking the partial file")
                    n = fh.readinto(buf)
                    if not n:
                        break
                    hasher.update(view[:n])
                    size += n
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise from_os_error(exc, "reading the partial download") from None
        return size

    def _check_space(self, partial: Path, needed: int, shown: str) -> None:
        if self.min_free_space <= 0:
            return
        try:
            free = shutil.disk_usage(partial.parent).free
        except OSError as exc:
            raise from_os_error(exc, "checking free disk space") from None
        if free - needed < self.min_free_space:
            raise DiskFullError(
                f"not enough free disk space for {shown}: {free} bytes free, "
                f"{needed} more needed, and {self.min_free_space} must stay free "
                "(min_free_space); free some space")

    def _finish(
        self, partial: Path, size: int, hasher: Any, *, final_url: str,
        resp: requests.Response, resumed_from: int,
    ) -> DownloadResult:
        return DownloadResult(
            path=partial,
            size=size,
            sha256=hasher.hexdigest(),
            url=final_url,
            filename=_result_filename(final_url, resp.headers.get("Content-Disposition")),
            resumed_from=resumed_from,
        )


class _BackgroundHasher:
    """Hashes the body on a second thread and starts its write-back as it goes.

    hashlib releases the GIL, so on a multi-core machine reading the network and
    hashing overlap instead of taking turns; the write-back started every
    ``SYNC_EVERY`` bytes leaves little for the final fsync. Chunks are hashed in the
    order they arrive.
    """

    def __init__(self, hasher: Any, fd: int) -> None:
        self._hasher = hasher
        self._fd = os.dup(fd)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._room = threading.Semaphore(BACKGROUND_QUEUE_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="dropfetch-hash", daemon=True)
        self._thread.start()

    def update(self, data: memoryview) -> None:
        self._room.acquire()  # bounds the memory held by chunks not hashed yet
        self._queue.put(data)

    def _run(self) -> None:
        unsynced = 0
        while (data := self._queue.get()) is not None:
            self._hasher.update(data)
            self._room.release()
            unsynced += len(data)
            if unsynced >= SYNC_EVERY:
                unsynced = 0
                start_writeback(self._fd)  # errors, if any, come from the final fsync

    def close(self) -> None:
        """Wait until every chunk is hashed."""
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)


class _CallerError(Exception):
    """Carries an exception of the caller's ``on_progress`` past the catch-all of
    :meth:`Downloader.fetch`: it is the caller's to handle, not a download failure."""

    def __init__(self, original: Exception) -> None:
        super().__init__(original)
        self.original = original


def _shielded(on_progress: Callable[[Transfer], None]) -> Callable[[Transfer], None]:
    def call(transfer: Transfer) -> None:
        try:
            on_progress(transfer)
        except Exception as exc:
            raise _CallerError(exc) from exc
    return call


class _StartOver(Exception):
    """The partial cannot be resumed against what the server has now."""


def _content_length(resp: requests.Response, shown: str) -> int | None:
    """The body's length by ``Content-Length``; ``None`` when unknown or chunked.

    A chunked body ignores ``Content-Length`` (RFC 9112 §6.3, as urllib3 reads it);
    several equal values count as one; any other value frames nothing reliably
    (urllib3 would read until the server closes), so the answer is refused.

    ``Transfer-Encoding`` must be exactly ``chunked`` (or ``identity``): http.client,
    which reads the body, de-chunks only that, while urllib3 also calls ``chunked ``
    or ``gzip, chunked`` chunked; taken as they are, the chunk framing (or another
    coding) would end up in the file.
    """
    coding = resp.headers.get("Transfer-Encoding")
    if coding is not None and coding.lower() not in ("chunked", "identity"):
        raise NetworkError(
            f"{shown} sent the body in a transfer coding dropfetch does not read "
            f"({coding[:40]!r}); only chunked is supported")
    if coding is not None and coding.lower() == "chunked":
        return None
    value = resp.headers.get("Content-Length")
    if value is None:
        return None
    values = {v.strip(" \t") for v in value.split(",")}
    if len(values) == 1 and _DECIMAL_RE.fullmatch(number := values.pop()):
        return int(number)
    shown_value = value if len(value) <= 40 else value[:40] + "..."
    raise NetworkError(
        f"{shown} sent an invalid Content-Length ({shown_value!r}), so the end of the "
        "file cannot be told; the server is broken")


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and _DECIMAL_RE.fullmatch(value) else None


def _socket_of(resp: requests.Response) -> socket.socket | None:
    conn = getattr(resp.raw, "connection", None)
    sock = getattr(conn, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _unexpected(exc: BaseException, partial: Path, shown: str) -> DropfetchError:
    """An error for an exception no other place mapped, logged without its message
    (which may hold the URL's credentials) but with where it came from."""
    where = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)[-4:]))
    logger.warning("%s: unexpected %s while downloading %s; reported as a failed "
                   "attempt. Raised at:\n%s", partial.name, type(exc).__name__, shown,
                   where.rstrip())
    if isinstance(exc, UnicodeError | urllib3.exceptions.LocationParseError) or (
            type(exc) is ValueError):
        return BadUrlError(
            f"{shown} cannot be downloaded: the URL or a redirect is malformed "
            f"({type(exc).__name__})")
    if isinstance(exc, OSError) and not isinstance(
            exc, ConnectionError | TimeoutError | requests.RequestException):
        # network failures come wrapped by requests/urllib3: a bare one is local
        return from_os_error(exc, f"saving the download of {shown}")
    return NetworkError(
        f"the download of {shown} failed: the server's answer could not be handled "
        f"({type(exc).__name__}); the next attempt tries again")


def _read_error(exc: BaseException, shown: str, timeout: float, done: int) -> DropfetchError:
    """Map an exception raised while reading the body to our error."""
    if isinstance(exc, DropfetchError):
        return exc
    if _find_cause(exc, TimeoutError) or _find_cause(exc, urllib3.exceptions.ReadTimeoutError):
        return DownloadTimeoutError(
            f"{shown} sent nothing for {timeout:g} s (download.timeout_read) after "
            f"{done} bytes; the next attempt resumes")
    incomplete = _find_cause(exc, IncompleteRead)
    # http.client raises IncompleteRead out of the ValueError of a chunk size
    # that is not hex; urllib3 its own InvalidChunkLength
    if _find_cause(exc, urllib3.exceptions.InvalidChunkLength) or (
            incomplete is not None and isinstance(incomplete.__context__, ValueError)):
        return NetworkError(
            f"the chunked body of {shown} broke off or is malformed after {done} bytes "
            "(no valid chunk size where one was due); the next attempt resumes")
    if _find_cause(exc, IncompleteRead) or _find_cause(
            exc, urllib3.exceptions.IncompleteRead):
        return NetworkError(
            f"the connection to {shown} ended early, after {done} bytes "
            "(the next attempt resumes)")
    if _find_cause(exc, ConnectionResetError):
        return NetworkError(
            f"{shown} reset the connection after {done} bytes; the next attempt resumes")
    if isinstance(exc, HTTPException | OSError | requests.RequestException
                  | urllib3.exceptions.HTTPError):
        return NetworkError(
            f"the connection to {shown} broke after {done} bytes "
            f"({type(exc).__name__}); the next attempt resumes")
    return IOFailureError(f"reading {shown} failed: {type(exc).__name__}")
