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
from enum import Enum
from http.cookies import CookieError, SimpleCookie

__all__ = ["COOKIE", "Access", "authorised", "bearer_ok", "cookie_header", "session_value"]

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
