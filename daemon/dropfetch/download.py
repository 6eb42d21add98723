"""One HTTP transfer: a GET with redirects followed by hand, resume, limits, progress.

:meth:`Downloader.fetch` makes ONE attempt to bring a URL into a partial file and
raises a :class:`~dropfetch.errors.DropfetchError` when it cannot; retries and backoff
belong to the caller, who reads ``err.retryable`` and ``err.retry_after``.

The pieces it puts together: :mod:`dropfetch.urlpolicy` (which URLs, how they are
shown, redirects, the result's file name), :mod:`dropfetch.netguard` (the SSRF guard
on every connection), :mod:`dropfetch.resume` (the partial file, its metadata and the
200/206/416 decision, like pip's ``network/download.py``),
:mod:`dropfetch.bodywriter` (the body onto disk) and :mod:`dropfetch.neterrors` (the
network's exceptions as dropfetch errors).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from dropfetch import __version__
from dropfetch.bodywriter import Body, CancelWatcher, socket_of, write_body
from dropfetch.checksums import Digests
from dropfetch.config import DownloadConfig
from dropfetch.credentials import Credentials, load_netrc, request_headers
from dropfetch.errors import (
    BadUrlError,
    CancelledError,
    DropfetchError,
    HttpStatusError,
    NetworkError,
    TooLargeError,
    from_os_error,
)
from dropfetch.fsutil import require_free_space
from dropfetch.neterrors import REQUEST_FAILURES, read_error, request_error
from dropfetch.netguard import guarded_session
from dropfetch.ratelimit import RateLimiter
from dropfetch.resume import (
    Action,
    Answer,
    Decision,
    Meta,
    Partial,
    decide,
    meta_path,
    parse_content_range,
    parse_unsatisfied_range,
    read_meta,
    resumable,
    write_meta,
)
from dropfetch.segments import SLOTS, Fallback, Segment, Segmented, plan, splittable
from dropfetch.segments import Job as SegmentJob
from dropfetch.urlpolicy import (
    check_url,
    location_text,
    redact_url,
    redirect_target,
    result_filename,
)

__all__ = ["DownloadResult", "Downloader", "Transfer"]

logger = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# ASCII digits only (\d would take any script's), few enough for int()
_DECIMAL_RE = re.compile(r"[0-9]{1,100}")


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
    digests: dict[str, str]  # by algorithm: sha256 and those the caller asked for
    url: str  # final URL, after redirects (not redacted: do not log it as is)
    filename: str | None
    resumed_from: int


@dataclass(frozen=True, slots=True)
class _Call:
    """One :meth:`Downloader.fetch` call: the URL and the caller's hooks."""

    url: str
    on_progress: Callable[[Transfer], None] | None
    cancel: threading.Event
    watch_cancel: bool  # False: the caller gave no cancel event
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # the job's own
    algorithms: tuple[str, ...] = ()  # digests besides the SHA-256
    same_file: tuple[str, ...] = ()  # other URLs of the same file (a job's mirrors)
    segments: int = 1  # parallel Range connections wanted (dropfetch.segments)


class Downloader:
    """Downloads URLs into partial files, one attempt per :meth:`fetch` call; owns one
    ``requests.Session`` (keep-alive, no proxies from the environment), safe for plain
    GETs from several worker threads."""

    def __init__(
        self, config: DownloadConfig, *, min_free_space: int = 0, limiter: RateLimiter | None = None
    ) -> None:
        self.config = config
        self.limiter = limiter  # download.rate_limit_total: one for the whole daemon
        self.min_free_space = min_free_space
        self.user_agent = config.user_agent or f"dropfetch/{__version__}"
        self.session = guarded_session(
            config.block_networks, proxy=config.proxy, ca_bundle=config.ca_bundle
        )
        self.credentials = _credentials(config)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(
        self,
        url: str,
        partial: Path,
        *,
        on_progress: Callable[[Transfer], None] | None = None,
        cancel: threading.Event | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        algorithms: tuple[str, ...] = (),
        same_file: tuple[str, ...] = (),
        segments: int = 1,
    ) -> DownloadResult:
        """Bring ``url`` into ``partial``, resuming it when its ``.meta`` allows (also a
        partial file of another URL in ``same_file``: see :func:`resume.resumable`); the
        result has the SHA-256 and the digests of ``algorithms``.

        ``headers`` (the job's own, often credentials) and the netrc's credentials go
        with every request to the URL's origin, never to another one after a redirect.

        Raises a :class:`DropfetchError`; the partial file and its ``.meta`` are kept
        whenever a later attempt could resume from them. On success the file is
        complete and fsynced, and ``.meta`` is left for the caller to remove.
        """
        url = check_url(url)
        call = _Call(
            url,
            None if on_progress is None else _shielded(on_progress),
            threading.Event() if cancel is None else cancel,
            watch_cancel=cancel is not None,
            headers=headers,
            algorithms=algorithms,
            same_file=same_file,
            segments=segments,
        )
        cap = self.config.max_connections_per_host
        with SLOTS.held(urlsplit(url).hostname or "", cap, call.cancel), _mapped(partial, url):
            try:  # (a segmented try that the server does not serve: one stream)
                try:
                    return self._attempt(call, partial, resume=True)
                except _StartOver:
                    logger.debug("%s: the server has a different file now", partial.name)
                    return self._attempt(call, partial, resume=False)
            except Fallback as exc:
                logger.info("%s: one stream from the start: %s", partial.name, exc)
                return self._attempt(dc_replace(call, segments=1), partial, resume=False)

    def read_small(self, url: str, *, limit: int, cancel: threading.Event) -> bytes:
        """The whole body of ``url`` (a small file, e.g. a checksum file), at most
        ``limit`` bytes, with the URL policy, SSRF guard, redirects and connection cap
        of :meth:`fetch`."""
        url = check_url(url)
        headers = {"Accept-Encoding": "identity", "User-Agent": self.user_agent}
        cap = self.config.max_connections_per_host
        with SLOTS.held(urlsplit(url).hostname or "", cap, cancel):
            resp, final_url = self._open(_Call(url, None, cancel, watch_cancel=True), headers)
            shown = redact_url(final_url)
            try:
                if resp.status_code != 200:
                    raise _status_error(resp, shown)
                with CancelWatcher(cancel, socket_of(resp)):
                    data = _read_capped(resp, limit, shown, self.config.timeout_read)
            finally:
                resp.close()
        if cancel.is_set():
            raise CancelledError(f"the download of {shown} was cancelled")
        return data

    def _attempt(self, call: _Call, path: Path, *, resume: bool) -> DownloadResult:
        """One request: for the rest of the partial file when it can be resumed."""
        meta = read_meta(meta_path(path)) if resume else None
        if meta is not None and meta.segments and resumable(meta, call.url, call.same_file):
            return _resume_segments(self._segments(call), call, path, meta)
        partial = Partial.load(
            path,
            call.url,
            call.cancel,
            resume=resume,
            algorithms=call.algorithms,
            same_file=call.same_file,
        )
        headers = {"Accept-Encoding": "identity", "User-Agent": self.user_agent}
        if partial.validator is not None:
            headers["Range"] = f"bytes={partial.size}-"
            headers["If-Range"] = partial.validator
        resp, final_url = self._open(call, headers)
        try:
            return self._receive(resp, call, partial, final_url)
        finally:
            resp.close()

    def _segments(self, call: _Call) -> SegmentJob:
        """A segmented download of ``call``: its GETs through :meth:`_open`, one limiter."""
        return _segment_job(
            call,
            self.config,
            lambda headers: self._open(call, {"User-Agent": self.user_agent, **headers}),
            self.limiter,
        )

    def _open(self, call: _Call, headers: Mapping[str, str]) -> tuple[requests.Response, str]:
        """GET the call's URL, following redirects by hand; returns the final response.

        The job's headers go with each hop of the URL's own origin only."""
        url = current = call.url
        seen = {url}
        redirects = 0
        while True:
            own = request_headers(url, current, call.headers, self.credentials)
            resp = self._get(current, {**own, **headers})
            if resp.status_code not in REDIRECT_STATUSES:
                return resp, current
            target = _next_hop(resp, current)
            redirects += 1
            _check_hop(target, seen, redirects, self.config.max_redirects, url)
            seen.add(target)
            logger.debug(
                "redirect %d: %s -> %s", redirects, redact_url(current), redact_url(target)
            )
            current = target

    def _get(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        try:
            return self.session.get(
                url,
                headers=dict(headers),
                stream=True,
                allow_redirects=False,
                timeout=(self.config.timeout_connect, self.config.timeout_read),
            )
        except requests.exceptions.ProxyError:
            raise NetworkError(
                f"the proxy {redact_url(self.config.proxy or '')} could not be used for "
                f"{redact_url(url)} (download.proxy)"
            ) from None
        except REQUEST_FAILURES as exc:
            raise request_error(
                exc,
                redact_url(url),
                timeout_connect=self.config.timeout_connect,
                timeout_read=self.config.timeout_read,
            ) from None

    def _receive(
        self,
        resp: requests.Response,
        call: _Call,
        partial: Partial,
        final_url: str,
    ) -> DownloadResult:
        """Act on the final answer: the resume decision, then the body."""
        shown = redact_url(final_url)
        decision = decide(partial.asked(), _answer_of(resp, shown))
        logger.debug("%s: %s: %s", partial.path.name, decision.action.value, decision.reason)
        if decision.action is Action.START_OVER:
            raise _StartOver  # the next attempt discards the partial file
        if decision.action is Action.ERROR:
            error = _wrong_range(resp, partial.size, shown)
            partial.discard()
            raise error
        if decision.action is Action.HTTP_ERROR:
            raise _status_error(resp, shown)
        if decision.action is Action.COMPLETE:
            logger.debug("%s: already complete (%d bytes)", partial.path.name, partial.size)
        else:
            self._write(resp, call, partial, decision, shown)
        return DownloadResult(
            path=partial.path,
            size=partial.size,
            sha256=partial.hasher.hexdigest(),
            digests=partial.hasher.hexdigests(),
            url=final_url,
            filename=result_filename(final_url, resp.headers.get("Content-Disposition")),
            resumed_from=decision.offset,
        )

    def _write(
        self,
        resp: requests.Response,
        call: _Call,
        partial: Partial,
        decision: Decision,
        shown: str,
    ) -> None:
        """Write the body as ``decision`` says (APPEND or REPLACE) after checking the
        size and the free space; ``partial.size`` is then the file's size."""
        if decision.action is Action.REPLACE and partial.size:
            logger.debug(
                "%s: the server sent the whole file; restarting from zero", partial.path.name
            )
            partial.restart()
        total = decision.total
        _check_total(total, self.config.max_size, shown)
        remaining = (total - partial.size) if total is not None else None
        require_free_space(
            partial.path.parent, keep_free=self.min_free_space, needed=remaining or 0, shown=shown
        )
        if call.segments > 1 and _split(self._segments(call), resp, call, partial, total):
            return
        if partial.size == 0:
            write_meta(partial.meta_path, _meta_of(resp, call.url, total))
        resumed_from = partial.size
        on_progress = call.on_progress

        def on_chunk(done: int, speed: float | None) -> None:
            if on_progress is not None:
                on_progress(Transfer(done, total, speed, resumed_from))

        body = Body(
            shown,
            decision.length,
            call.cancel,
            call.watch_cancel,
            on_chunk=None if on_progress is None else on_chunk,
            check_space=lambda: require_free_space(
                partial.path.parent, keep_free=self.min_free_space, shown=shown
            ),
            limiter=self.limiter,
        )
        partial.size = write_body(resp, partial, body, self.config)


_Opened = tuple[requests.Response, str]


def _meta_of(resp: requests.Response, url: str, total: int | None) -> Meta:
    """The resume metadata of a download of ``url`` answered by ``resp``."""
    return Meta(url, resp.headers.get("ETag"), resp.headers.get("Last-Modified"), total)


def _check_total(total: int | None, max_size: int, shown: str) -> None:
    if total is not None and total > max_size:
        raise TooLargeError(
            f"{shown} is {total} bytes, more than download.max_size ({max_size} bytes)"
        )


def _check_hop(target: str, seen: set[str], redirects: int, most: int, url: str) -> None:
    """Refuse a redirect loop, and more than ``download.max_redirects`` redirects."""
    if target in seen:
        raise BadUrlError(
            f"too many redirects: a redirect loop at {redact_url(target)} "
            f"(started from {redact_url(url)})"
        )
    if redirects > most:
        raise BadUrlError(
            f"too many redirects: more than {most} "
            f"(download.max_redirects) starting from {redact_url(url)}"
        )


def _segment_job(
    call: _Call,
    config: DownloadConfig,
    opener: Callable[[Mapping[str, str]], _Opened],
    limiter: RateLimiter | None,
) -> SegmentJob:
    """What :class:`Segmented` needs of one call: progress summed up as a Transfer."""
    on_progress = call.on_progress

    def progress(done: int, total: int, speed: float | None, resumed: int) -> None:
        if on_progress is not None:
            on_progress(Transfer(done, total, speed, resumed))

    return SegmentJob(
        open_range=opener,
        config=config,
        cancel=call.cancel,
        on_progress=progress,
        shown=redact_url(call.url),
        limiter=limiter,
    )


@contextlib.contextmanager
def _mapped(partial: Path, url: str) -> Iterator[None]:
    """The last line of defence of :meth:`Downloader.fetch`: each known class of error
    is mapped where it arises; what is left here becomes a dropfetch error too."""
    try:
        yield
    except (DropfetchError, _StartOver):
        raise
    except _CallerError as exc:  # the caller's own exception, untouched
        raise exc.original from None
    except (*REQUEST_FAILURES, ValueError) as exc:
        raise _unexpected(exc, partial, redact_url(url)) from None


def _resume_segments(job: SegmentJob, call: _Call, path: Path, meta: Meta) -> DownloadResult:
    """Continue each segment of a segmented partial file from its own offset."""
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    if size != meta.total:  # gone or cut: what the segments say is on disk is not
        raise Fallback(f"the partial file has {size} bytes, its segments {meta.total}")
    partial = Partial(path, meta=meta, hasher=Digests(call.algorithms))
    segments = [Segment(a, b, done) for a, b, done in meta.segments]
    host = urlsplit(call.url).hostname or ""
    cap = job.config.max_connections_per_host
    more = SLOTS.take(host, sum(1 for s in segments if s.left) - 1, cap)  # fetch holds one
    try:
        run = Segmented(job, partial, meta, segments, connections=1 + more)
        final_url = run.run(None) or call.url
    finally:
        SLOTS.give(host, more)
    return DownloadResult(
        path=path,
        size=partial.size,
        sha256=partial.hasher.hexdigest(),
        digests=partial.hasher.hexdigests(),
        url=final_url,
        filename=result_filename(final_url, run.disposition),
        resumed_from=sum(s[2] for s in meta.segments),
    )


def _split(
    job: SegmentJob, resp: requests.Response, call: _Call, partial: Partial, total: int | None
) -> bool:
    """Download the answer ``resp`` (the whole file) in segments when the call wants
    them and the server allows them; False: one stream, as always."""
    etag = splittable(resp, total) if partial.size == 0 else None
    if etag is None or total is None:
        return False
    cfg = job.config
    host = urlsplit(call.url).hostname or ""
    wanted = len(plan(total, call.segments, cfg.segment_min_size, cfg.max_connections_per_host))
    more = SLOTS.take(host, wanted - 1, cfg.max_connections_per_host)  # fetch holds one
    try:
        if more < 1:
            return False
        segments = plan(total, 1 + more, cfg.segment_min_size, 1 + more)
        Segmented(job, partial, _meta_of(resp, call.url, total), segments).run(resp)
    finally:
        SLOTS.give(host, more)
    return True


def _credentials(config: DownloadConfig) -> Credentials:
    """The netrc's credentials (checked at start; a file broken since is logged)."""
    if config.netrc is None:
        return {}
    try:
        return load_netrc(config.netrc)
    except ValueError as exc:
        logger.error("download.netrc: %s; downloads go without its credentials", exc)
        return {}


def _read_capped(resp: requests.Response, limit: int, shown: str, timeout: float) -> bytes:
    """The body, refused (``too_large``) once it is longer than ``limit`` bytes."""
    data = bytearray()
    try:
        while chunk := resp.raw.read(64 * 1024, decode_content=False):
            data += chunk
            if len(data) > limit:
                raise TooLargeError(f"{shown} is larger than {limit} bytes")
    except DropfetchError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to our errors
        raise read_error(exc, shown, timeout, len(data)) from None
    return bytes(data)


def _next_hop(resp: requests.Response, current: str) -> str:
    """Where the redirect ``resp`` (to a request for ``current``) leads; closes it."""
    # (str.strip() would also take \x85, a raw byte of the URL, for a space)
    values = {v.strip(" \t") for v in resp.raw.headers.getlist("Location")}
    resp.close()
    if len(values) > 1:
        raise BadUrlError(
            f"{redact_url(current)} redirects to {len(values)} different Location "
            "headers at once; the server is broken"
        )
    location = location_text(values.pop() if values else None)
    if not location:
        raise HttpStatusError(
            resp.status_code,
            f"the server answered {resp.status_code} (a redirect) without a "
            f"Location for {redact_url(current)}",
        )
    return redirect_target(current, location)


def _answer_of(resp: requests.Response, shown: str) -> Answer:
    """What the resume decision reads of ``resp``; the framing only of a 200 or 206."""
    status = resp.status_code
    header = resp.headers.get("Content-Range")
    return Answer(
        status,
        content_range=parse_content_range(header),
        unsatisfied=parse_unsatisfied_range(header),
        length=_content_length(resp, shown) if status in (200, 206) else None,
    )


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
            f"({coding[:40]!r}); only chunked is supported"
        )
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
        "file cannot be told; the server is broken"
    )


def _wrong_range(resp: requests.Response, offset: int, shown: str) -> NetworkError:
    asked = f"bytes={offset}-" if offset else "the whole file"
    got = resp.headers.get("Content-Range", "none")
    return NetworkError(
        f"server sent a wrong Content-Range ({got[:80]!r} for {asked}) "
        f"for {shown}; the partial download was discarded, the next attempt "
        "starts from zero"
    )


def _status_error(resp: requests.Response, shown: str) -> DropfetchError:
    status = resp.status_code
    if not 100 <= status <= 599:  # no class to read it by (RFC 9110 section 15)
        return NetworkError(
            f"{shown} answered with status {status}, which HTTP does not define; "
            "the server is broken"
        )
    return HttpStatusError(
        status,
        f"the server answered {status} {resp.reason or ''}".rstrip() + f" for {shown}",
        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait by a ``Retry-After`` header (a number or an HTTP date)."""
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


def _unexpected(exc: BaseException, partial: Path, shown: str) -> DropfetchError:
    """An error for an exception no other place mapped, logged without its message
    (which may hold the URL's credentials) but with where it came from."""
    where = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)[-4:]))
    logger.warning(
        "%s: unexpected %s while downloading %s; reported as a failed attempt. Raised at:\n%s",
        partial.name,
        type(exc).__name__,
        shown,
        where.rstrip(),
    )
    if isinstance(exc, UnicodeError | urllib3.exceptions.LocationParseError) or (
        type(exc) is ValueError
    ):
        return BadUrlError(
            f"{shown} cannot be downloaded: the URL or a redirect is malformed "
            f"({type(exc).__name__})"
        )
    if isinstance(exc, OSError) and not isinstance(
        exc, ConnectionError | TimeoutError | requests.RequestException
    ):
        # network failures come wrapped by requests/urllib3: a bare one is local
        return from_os_error(exc, f"saving the download of {shown}")
    return NetworkError(
        f"the download of {shown} failed: the server's answer could not be handled "
        f"({type(exc).__name__}); the next attempt tries again"
    )
