"""Credentials of a request: a job's ``headers``, ``download.netrc``, and which hop
of a redirect chain may carry them (the job URL's origin only).

Pure code except :func:`load_netrc`, which reads the file once. Nothing here logs,
and no message quotes a credential: a message names the file, the host or the header.
"""

from __future__ import annotations

import base64
import netrc
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Credentials", "load_netrc", "origin", "request_headers"]

_DEFAULT_PORTS = {"http": 80, "https": 443}

# login and password per host name (lower case), from a netrc file
Credentials = Mapping[str, tuple[str, str]]


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``: http and https of one host are two origins."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def load_netrc(path: Path) -> dict[str, tuple[str, str]]:
    """The credentials of the netrc file ``path``; ValueError (naming the file, never a
    line of it) when it is missing, unreadable, not a regular file, not parseable, or
    readable by others than its owner or owned by another user than this one."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ValueError(f"cannot read the netrc file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"the netrc file {path} is not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.getuid():
        raise ValueError(
            f"the netrc file {path} is insecure: it must belong to this user and be "
            f"readable by nobody else (chmod 600 {path})"
        )
    try:
        parsed = netrc.netrc(str(path))
    except netrc.NetrcParseError as exc:  # its message quotes a token: keep the line only
        raise ValueError(f"the netrc file {path} cannot be parsed (line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the netrc file {path}: {type(exc).__name__}") from None
    out: dict[str, tuple[str, str]] = {}
    for host, (login, _account, password) in parsed.hosts.items():
        out[host.lower()] = (login or "", password or "")
    return out


def request_headers(
    job_url: str,
    hop_url: str,
    headers: tuple[tuple[str, str], ...],
    credentials: Credentials,
) -> dict[str, str]:
    """The job's own headers for a request of ``hop_url``: its headers and the netrc's
    Basic credentials for the job URL's host, only while ``hop_url`` has the job URL's
    origin (a redirect elsewhere, or from https to http, gets none of them)."""
    if origin(hop_url) != origin(job_url):
        return {}
    out = dict(headers)
    entry = credentials.get(origin(job_url)[1]) or credentials.get("default")
    if entry is not None and not any(k.lower() == "authorization" for k in out):
        token = base64.b64encode(f"{entry[0]}:{entry[1]}".encode()).decode("ascii")
        out["Authorization"] = f"Basic {token}"
    return out
