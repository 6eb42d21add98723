"""The exceptions of requests, urllib3 and http.client as dropfetch errors.

Each function names what went wrong in plain words and returns the
:class:`~dropfetch.errors.DropfetchError` that carries the sidecar's error code; the
URL in a message is always the redacted one (``shown``).
"""

from __future__ import annotations

import socket
import ssl
from http.client import (
    BadStatusLine,
    HTTPException,
    IncompleteRead,
    LineTooLong,
    RemoteDisconnected,
)

import requests
import urllib3.exceptions

from dropfetch.errors import (
    BadUrlError,
    BlockedAddressError,
    DownloadTimeoutError,
    DropfetchError,
    IOFailureError,
    NetworkError,
    TlsError,
)

__all__ = ["REQUEST_FAILURES", "find_cause", "read_error", "request_error"]

# what a request may raise; anything else is not a network failure
REQUEST_FAILURES = (requests.RequestException, urllib3.exceptions.HTTPError, HTTPException, OSError)


def find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
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


def request_error(
    exc: BaseException,
    shown: str,
    *,
    timeout_connect: float,
    timeout_read: float,
) -> DropfetchError:
    """Map an exception of sending a request (up to the answer's headers)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return NetworkError(
            f"could not connect to {shown} within {timeout_connect:g} s (download.timeout_connect)"
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return DownloadTimeoutError(
            f"{shown} sent no answer within {timeout_read:g} s (download.timeout_read)"
        )
    if isinstance(exc, requests.exceptions.InvalidURL):
        return BadUrlError(f"not a valid URL: {shown}")
    if isinstance(exc, requests.exceptions.InvalidSchema | requests.exceptions.MissingSchema):
        return BadUrlError(f"only http and https URLs can be downloaded: {shown}")
    if isinstance(exc, requests.exceptions.SSLError):
        return TlsError(_tls_problem(exc, shown))
    return _connection_error(exc, shown)


def _connection_error(exc: BaseException, shown: str) -> DropfetchError:
    blocked = find_cause(exc, BlockedAddressError)
    if isinstance(blocked, BlockedAddressError):
        return blocked
    if find_cause(exc, urllib3.exceptions.NameResolutionError) or find_cause(exc, socket.gaierror):
        return NetworkError(f"the host name of {shown} could not be resolved")
    if find_cause(exc, ConnectionRefusedError):
        return NetworkError(f"the connection to {shown} was refused")
    if find_cause(exc, urllib3.exceptions.LocationParseError) or find_cause(exc, UnicodeError):
        return BadUrlError(
            f"the host name of {shown} is not valid (empty or over-long labels, "
            "or characters a host name cannot have)"
        )
    problem = _answer_problem(exc)
    if problem is not None:
        return NetworkError(f"{shown}: {problem}")
    return NetworkError(f"could not get {shown}: {type(exc).__name__}")


def _answer_problem(exc: BaseException) -> str | None:
    """What was wrong with a server's answer, in plain words (``None``: not known)."""
    if find_cause(exc, RemoteDisconnected):
        return "the server closed the connection without answering"
    if find_cause(exc, ConnectionResetError):
        return "the server reset the connection"
    if find_cause(exc, LineTooLong) or (
        (cause := find_cause(exc, HTTPException)) is not None
        and "more than" in str(cause)
        and "headers" in str(cause)
    ):
        return (
            "the server's answer has too many or too long header lines "
            "(more than 100 headers, or a line over 64 KiB)"
        )
    if find_cause(exc, BadStatusLine):
        return (
            "the server's answer is not HTTP (no valid status line: an HTTP/0.9 "
            "answer, TLS on an http URL, or another protocol on this port); check "
            "the URL's scheme and port"
        )
    if isinstance(
        find_cause(exc, requests.exceptions.InvalidHeader)
        or find_cause(exc, urllib3.exceptions.InvalidHeader),
        Exception,
    ):
        return "the server sent invalid headers (e.g. Content-Length headers that disagree)"
    return None


# OpenSSL's verify codes (X509_V_ERR_*) in plain words
_CERT_PROBLEMS = {
    9: "the certificate is not valid yet",
    10: "the certificate has expired",
    18: "the certificate is self-signed",
    19: "the certificate chain ends in a self-signed authority the system does not trust",
    20: "the certificate is signed by an unknown certificate authority",
    21: "the certificate is signed by an unknown certificate authority",
    62: "name mismatch: the certificate is for another host name",
    64: "name mismatch: the certificate is for another IP address",
}
_UNKNOWN_CA = (19, 20, 21)
_OLD_PROTOCOL = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "WRONG_SSL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
        "VERSION_TOO_LOW",
    }
)


def _tls_problem(exc: BaseException, shown: str) -> str:
    """A TLS failure named precisely: the certificate check, or the handshake."""
    cert = find_cause(exc, ssl.SSLCertVerificationError)
    if isinstance(cert, ssl.SSLCertVerificationError):
        return _cert_problem(cert, shown)
    tls = find_cause(exc, ssl.SSLError)
    reason = getattr(tls, "reason", None) or type(tls or exc).__name__
    if reason in _OLD_PROTOCOL:
        return (
            f"the TLS handshake with {shown} failed: protocol version mismatch ({reason}): "
            "the server speaks only a TLS version older than 1.2, which is not accepted"
        )
    hint = ""
    if reason == "WRONG_VERSION_NUMBER":
        hint = " (the server does not speak TLS on this port: an http server?)"
    return f"the TLS handshake with {shown} failed: {reason}{hint}; check the URL's scheme and port"


def _cert_problem(cert: ssl.SSLCertVerificationError, shown: str) -> str:
    code = cert.verify_code
    what = _CERT_PROBLEMS.get(code, f"it is not trusted ({cert.verify_message or cert.reason})")
    if code in _UNKNOWN_CA:
        what += " (an internal authority? add its certificate with download.ca_bundle)"
    detail = f" [{cert.verify_message}]" if cert.verify_message and code in _CERT_PROBLEMS else ""
    return f"the TLS certificate of {shown} was refused: {what}{detail}"


def read_error(exc: BaseException, shown: str, timeout: float, done: int) -> DropfetchError:
    """Map an exception raised while reading the body to our error."""
    if isinstance(exc, DropfetchError):
        return exc
    if find_cause(exc, TimeoutError) or find_cause(exc, urllib3.exceptions.ReadTimeoutError):
        return DownloadTimeoutError(
            f"{shown} sent nothing for {timeout:g} s (download.timeout_read) after "
            f"{done} bytes; the next attempt resumes"
        )
    incomplete = find_cause(exc, IncompleteRead)
    # http.client raises IncompleteRead out of the ValueError of a chunk size
    # that is not hex; urllib3 its own InvalidChunkLength
    if find_cause(exc, urllib3.exceptions.InvalidChunkLength) or (
        incomplete is not None and isinstance(incomplete.__context__, ValueError)
    ):
        return NetworkError(
            f"the chunked body of {shown} broke off or is malformed after {done} bytes "
            "(no valid chunk size where one was due); the next attempt resumes"
        )
    if incomplete is not None or find_cause(exc, urllib3.exceptions.IncompleteRead):
        return NetworkError(
            f"the connection to {shown} ended early, after {done} bytes (the next attempt resumes)"
        )
    if find_cause(exc, ConnectionResetError):
        return NetworkError(
            f"{shown} reset the connection after {done} bytes; the next attempt resumes"
        )
    if isinstance(
        exc, HTTPException | OSError | requests.RequestException | urllib3.exceptions.HTTPError
    ):
        return NetworkError(
            f"the connection to {shown} broke after {done} bytes "
            f"({type(exc).__name__}); the next attempt resumes"
        )
    return IOFailureError(f"reading {shown} failed: {type(exc).__name__}")
