"""Writing job files the safe way (used by ``dropfetch submit`` and the HTTP front end)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from dropfetch.errors import BadJobError, NameConflictError
from dropfetch.fsutil import temp_name
from dropfetch.jobfile import JOB_SUFFIX, job_name, parse_job
from dropfetch.jobpaths import find_job_files

__all__ = [
    "derive_name",
    "header_lines",
    "job_content",
    "job_document",
    "write_job",
    "write_unique_job",
]

_ARCHIVE_SUFFIX = re.compile(
    r"\.(tar\.(gz|bz2|xz|zst)|tgz|tbz2?|txz|tzst|tar|zip|gz|bz2|xz|zst)$", re.IGNORECASE
)


def derive_name(url: str) -> str:
    """A job name from a URL: the file name without archive suffixes, else the host."""
    parts = urlsplit(url)
    leaf = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", _ARCHIVE_SUFFIX.sub("", leaf)).strip("._")
    if not name:
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", parts.hostname or "").strip("._")
    return name[:100] or "download"


def job_content(
    url: str,
    *,
    sha256: str | None = None,
    extract: bool = True,
    filename: str | None = None,
    keep_archive: bool | None = None,
    priority: str | None = None,
    headers: Mapping[str, str] | None = None,
    checksum: str | None = None,
    checksum_url: str | None = None,
    mirrors: list[str] | None = None,
    segments: int | None = None,
    password: str | None = None,
) -> bytes:
    """The bytes of a job file: the plain form, or YAML when there are options.

    Raises BadJobError/BadUrlError for what the daemon would refuse.
    """
    options: dict[str, Any] = {"sha256": sha256 or None, "filename": filename or None}
    options["extract"] = None if extract else False
    options["keep_archive"] = keep_archive
    options["priority"] = None if priority in (None, "normal") else priority
    options["headers"] = dict(headers) if headers else None
    options["checksum"] = checksum or None
    options["checksum_url"] = checksum_url or None
    options["mirrors"] = list(mirrors) if mirrors else None
    options["segments"] = segments
    options["password"] = password or None
    return job_document(url, options)


def header_lines(lines: Iterable[str]) -> dict[str, str]:
    """``Name: value`` lines (blank ones skipped) as the ``headers`` option; BadJobError
    for a line without a colon (not quoted: it may hold a credential)."""
    out: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise BadJobError(f"header {number} is not 'Name: value'")
        out[name.strip()] = value.strip()
    return out


def job_document(url: str, options: Mapping[str, Any]) -> bytes:
    """The bytes of a job file for ``url`` and ``options`` (keys of
    :data:`~dropfetch.jobfile.OPTIONS`; None values are left out): the plain form
    without options, else YAML. Raises BadJobError/BadUrlError for what the daemon
    would refuse, an unknown option included."""
    given = {k: v for k, v in options.items() if v is not None and k != "url"}
    if not given:
        content = url.strip() + "\n"
    else:
        content = yaml.safe_dump({"url": url.strip(), **given}, sort_keys=False)
    parse_job(content.encode())
    return content.encode()


def _check_name(name: str) -> None:
    job_name(name + JOB_SUFFIX)
    if not name or "/" in name or name.startswith(".") or name.endswith(("~", ".tmp", ".part")):
        raise BadJobError(f"invalid job name {name!r}: use a plain file name without '/'")


def write_job(inbox: Path, name: str, content: bytes) -> Path:
    """Write ``inbox/NAME.url``: temporary name, fsync, then a link that never replaces
    an existing job (NameConflictError if the name is taken, by a link file too)."""
    _check_name(name)
    target = inbox / (name + JOB_SUFFIX)
    if find_job_files(inbox, name):
        raise NameConflictError(f"a job named {name!r} exists already; choose another name")
    tmp = temp_name(target)
    with open(tmp, "xb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise NameConflictError(
            f"a job named {name!r} exists already; choose another name"
        ) from None
    finally:
        tmp.unlink()
    return target


def write_unique_job(inbox: Path, name: str, content: bytes) -> Path:
    """Like :func:`write_job`, making the name unique with ``-2``, ``-3``, ..."""
    for n in range(1, 10_000):
        candidate = name if n == 1 else f"{name}-{n}"
        try:
            return write_job(inbox, candidate, content)
        except NameConflictError:
            continue
    raise NameConflictError(f"no free name left for {name!r}")
