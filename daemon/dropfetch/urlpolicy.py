"""URL policy: which URLs may be downloaded, how a URL is shown, where a redirect goes,
and what the downloaded file is called.

Pure functions (no network): :func:`check_url` for a job's URL and every redirect hop,
:func:`redact_url` for every URL that reaches a sidecar, a log or an error message,
:func:`redirect_target` for a ``Location`` header, :func:`result_filename` for the
name a server gives its file (``Content-Disposition``, else the URL's last segment).
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import unquote, urljoin, urlsplit

import idna

from dropfetch.errors import BadUrlError, fragment
from dropfetch.names import safe_name

__all__ = [
    "ALLOWED_SCHEMES",
    "check_url",
    "disposition_filename",
    "location_text",
    "redact_url",
    "redirect_target",
    "result_filename",
]

ALLOWED_SCHEMES = ("http", "https")

# spaces and ASCII controls: never inside a URL (they must be percent-encoded)
_URL_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")
_DISPOSITION_PARAM_RE = re.compile(r';\s*([A-Za-z0-9*._-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


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
    if _URL_CONTROL_RE.search(url):
        raise BadUrlError(
            f"the URL contains spaces or control characters: {shown}; percent-encode them (%20)"
        )
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
        return (
            "the host name is not valid (an empty label, a label over 63 characters "
            "or more than 253 in all)"
        )
    return None


def redact_url(url: str) -> str:
    """``https://user:pw@host/p?q=1`` -> ``https://***@host/p?***``; never raises.

    User information and the query string are replaced by ``***``; the fragment is
    dropped; spaces and control characters are percent-encoded.
    """
    try:
        scheme, netloc, path, has_query = _url_pieces(str(url).strip())
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        out = f"{scheme}://{netloc}{path}" if scheme or netloc else path
        if has_query:
            out += "?***"
        out = _URL_CONTROL_RE.sub(lambda m: f"%{ord(m.group()):02X}", out)
        out = out.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
        return out[:2000] if len(out) <= 2000 else out[:2000] + "..."
    except Exception:  # noqa: BLE001 - a redaction must never fail
        return "<unprintable URL>"


def _url_pieces(text: str) -> tuple[str, str, str, bool]:
    """(scheme, netloc, path, has a query) of ``text``, split by hand where urlsplit
    refuses (e.g. an unbalanced "[" in the host)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "", text
        rest = rest.split("#", 1)[0]
        rest, qmark, query = rest.partition("?")
        netloc, slash, tail = rest.partition("/")
        return scheme, netloc, slash + tail, bool(qmark and query)
    return parts.scheme, parts.netloc, parts.path, bool(parts.query)


def location_text(header: str | None) -> str:
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


def redirect_target(current: str, location: str) -> str:
    """The URL a redirect from ``current`` to ``location`` (a :func:`location_text`)
    leads to, checked by :func:`check_url`; :class:`BadUrlError` when it cannot be
    downloaded."""
    try:
        if _URL_CONTROL_RE.search(location):  # urljoin would drop tabs silently
            raise BadUrlError(
                f"the URL contains spaces or control characters: {redact_url(location)}"
            )
        try:
            target = urljoin(current, location)
        except ValueError as exc:  # e.g. an unbalanced "[" in the host
            raise BadUrlError(f"not a valid URL ({exc}): {redact_url(location)}") from None
        return check_url(target)
    except BadUrlError as exc:
        raise BadUrlError(
            f"{redact_url(current)} redirects to a URL that cannot be downloaded: {exc.message}"
        ) from None


def disposition_filename(header: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` header (RFC 6266), if any.

    The header's raw bytes must be UTF-8 (ASCII included), else it is ignored;
    ``filename*`` is read in UTF-8 or ISO-8859-1 only (RFC 8187), other charsets are
    ignored. The caller still vets the name (:func:`dropfetch.names.safe_name`).
    """
    if not header:
        return None
    try:  # http.client hands the raw bytes over as latin-1 text
        header = header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
    params: dict[str, str] = {}
    for m in _DISPOSITION_PARAM_RE.finditer(header):
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


def result_filename(final_url: str, disposition: str | None) -> str | None:
    """The downloaded file's name: the ``Content-Disposition`` one when it is a safe
    bare name, else the final URL's last path segment when that is one, else None."""
    name = safe_name(disposition_filename(disposition))
    if name is not None:
        return name
    try:
        segment = urlsplit(final_url).path.rsplit("/", 1)[-1]
    except ValueError:
        return None
    return safe_name(unquote(segment))
