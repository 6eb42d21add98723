"""Who may use a route of the HTTP front end (SPEC §9): the bearer token, or for
``GET /events`` (which a browser's EventSource opens without headers) a session cookie
that ``POST /session`` hands out to a request that carries the token. Pure code.

The cookie's value is an HMAC of the token under a key of the running front end (random
at start): it is never the token itself, it stops counting when the token changes or the
daemon restarts, and a page that gets 401 on ``/events`` simply asks for it again.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from enum import Enum
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

__all__ = [
    "COOKIE",
    "Access",
    "authorised",
    "bearer_ok",
    "cookie_header",
    "foreign_request",
    "session_value",
]

COOKIE = "dropfetch_session"


class Access(Enum):
    BEARER = "bearer"  # the bearer token (when there is a token file)
    BEARER_OR_COOKIE = "bearer or cookie"  # ... or the session cookie (GET /events)
    PUBLIC = "public"  # no token (the page and its static files: they hold no data)


def bearer_ok(token: str | None, given: list[str]) -> bool:
    """Whether the ``Authorization`` header values ``given`` carry ``token`` (always,
    with no token): exactly one header, ``Bearer`` in any case, compared in constant
    time."""
    if token is None:
        return True
    scheme, _, credentials = (given[0] if len(given) == 1 else "").strip().partition(" ")
    credentials = credentials.strip()
    return (
        scheme.lower() == "bearer"
        and bool(credentials)
        and hmac.compare_digest(credentials.encode(), token.encode())
    )


def session_value(key: bytes, token: str) -> str:
    """The session cookie's value for ``token`` under the front end's ``key``."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def cookie_header(key: bytes, token: str | None) -> str:
    """The ``Set-Cookie`` value ``POST /session`` answers (one that removes the cookie
    when there is no token): same-site only, never readable by a script, sent only to
    ``/events``."""
    value, age = (session_value(key, token), "") if token else ("", "; Max-Age=0")
    return f"{COOKIE}={value}; Path=/events; HttpOnly; SameSite=Strict{age}"


def _cookie_ok(key: bytes, token: str, cookies: list[str]) -> bool:
    want = session_value(key, token).encode()
    for header in cookies:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        if COOKIE in jar and hmac.compare_digest(jar[COOKIE].value.encode(), want):
            return True
    return False


def authorised(
    access: Access, token: str | None, key: bytes, authorization: list[str], cookies: list[str]
) -> bool:
    """Whether a request with these ``Authorization`` and ``Cookie`` header values may
    use a route of ``access``."""
    if access is Access.PUBLIC or bearer_ok(token, authorization):
        return True
    return (
        access is Access.BEARER_OR_COOKIE and token is not None and _cookie_ok(key, token, cookies)
    )


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def foreign_request(
    method: str, host: str | None, origin: str | None, fetch_site: str | None, *, token: bool
) -> str | None:
    """Why a request that a web page of another site made the browser send is refused,
    else None (every client that is not a browser sends neither header).

    - Cross-site requests that change something: a page elsewhere can make a browser
      send a "simple" POST or DELETE without asking first (``Sec-Fetch-Site`` says
      ``cross-site``/``same-site``, or ``Origin`` is not this ``Host``).
    - Without a token, a browser's request (it says where it comes from: ``Origin`` or
      ``Sec-Fetch-Site``) for a ``Host`` that is a name other than ``localhost``: a page
      of a domain that resolves to this address (DNS rebinding) is same-origin to the
      browser. With a token, the token protects the data; by IP address or localhost,
      no other site can reach it. Clients that are not browsers are not asked.
    """
    if method not in _SAFE_METHODS:
        if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
            return "a request from another site's page (Sec-Fetch-Site: " + fetch_site + ")"
        if origin is not None and host is not None and _authority(origin) != host.lower():
            return "a request from another site's page (Origin " + origin + ")"
    browser = origin is not None or fetch_site is not None
    if browser and not token and host is not None and not _local_host(host):
        return (
            f"the Host {host!r} is a name: without http.token_file only an IP address or "
            "localhost is answered (a web page of another site could use that name); "
            "set http.token_file to use a host name"
        )
    return None


def _authority(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip())
        return parts.netloc.lower() or None
    except ValueError:
        return None


def _local_host(host: str) -> bool:
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
