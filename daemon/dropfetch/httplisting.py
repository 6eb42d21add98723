"""The listing of ``GET /archive?status=&limit=&offset=`` (SPEC §9): its query (pure: a
query that cannot be honoured is a 400 naming what is wrong), the page it selects, and
:class:`SidecarCache`, which keeps the parsed sidecars so that a listing of 10,000 jobs
reads again only those that changed."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl

from dropfetch.httpanswers import Reject
from dropfetch.jobfile import SIDECAR_SUFFIX
from dropfetch.status import Sidecar, Status, read_sidecar

__all__ = ["ListQuery", "SidecarCache", "page", "parse_list_query", "selected"]

_KEYS = ("status", "limit", "offset")
_MAX_NUMBER = 10**9
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ListQuery:
    statuses: frozenset[Status] | None = None  # None: every status
    limit: int | None = None  # None: to the end
    offset: int = 0


def parse_list_query(query: str) -> ListQuery:
    """``status`` (one or several, comma-separated or repeated), ``limit`` and
    ``offset`` (whole numbers, each given once); :class:`Reject` 400 for anything else."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise Reject(HTTPStatus.BAD_REQUEST, "the query string is malformed") from None
    unknown = sorted({k for k, _ in pairs if k not in _KEYS})
    if unknown:
        raise Reject(
            HTTPStatus.BAD_REQUEST,
            f"unknown query parameter(s): {', '.join(unknown)}; known: {', '.join(_KEYS)}",
        )
    words = [w.strip() for k, v in pairs if k == "status" for w in v.split(",")]
    return ListQuery(
        statuses=_statuses(words) if words else None,
        limit=_number(pairs, "limit"),
        offset=_number(pairs, "offset") or 0,
    )


def _statuses(words: list[str]) -> frozenset[Status]:
    known = {str(s) for s in Status}
    bad = sorted({w for w in words if w not in known})
    if bad:
        raise Reject(
            HTTPStatus.BAD_REQUEST,
            f"no such status: {', '.join(repr(b) for b in bad)}; known: {', '.join(sorted(known))}",
        )
    return frozenset(Status(w) for w in words)


def _number(pairs: list[tuple[str, str]], key: str) -> int | None:
    values = [v for k, v in pairs if k == key]
    if not values:
        return None
    value = values[0].strip()
    if len(values) > 1 or not (value.isascii() and value.isdigit()) or int(value) > _MAX_NUMBER:
        raise Reject(HTTPStatus.BAD_REQUEST, f"{key} must be given once, as a whole number from 0")
    return int(value)


def page(items: Sequence[T], query: ListQuery) -> list[T]:
    """The items ``query`` pages to (after filtering)."""
    end = None if query.limit is None else query.offset + query.limit
    return list(items[query.offset : end])


def selected(sidecars: list[Sidecar], query: ListQuery) -> list[Sidecar]:
    """The sidecars of the statuses ``query`` asks for, in their order."""
    if query.statuses is None:
        return sidecars
    return [sc for sc in sidecars if sc.status in query.statuses]


class SidecarCache:
    """The sidecars of an inbox as :func:`~dropfetch.status.read_sidecars` reads them
    (regular files, hidden names skipped, in name order), each read again only when its
    inode, modification time or size changed: sidecars are replaced by a rename, so a
    changed one is always a new inode. Safe to call from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[tuple[int, int, int], Sidecar]] = {}

    def read_all(self, inbox: Path) -> list[Sidecar]:
        with self._lock:
            known = self._known
        fresh: dict[str, tuple[tuple[int, int, int], Sidecar]] = {}
        for entry, st in _sidecar_files(inbox):
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            hit = known.get(entry.name)
            sc = hit[1] if hit is not None and hit[0] == key else read_sidecar(Path(entry.path))
            if sc is not None:
                fresh[entry.name] = (key, sc)
        with self._lock:
            self._known = fresh
        return [sc for _, sc in fresh.values()]


def _sidecar_files(inbox: Path) -> list[tuple[os.DirEntry[str], os.stat_result]]:
    """The regular files named like sidecars (not hidden) in ``inbox``, by name."""
    try:
        with os.scandir(inbox) as it:
            entries = sorted(
                (e for e in it if e.name.endswith(SIDECAR_SUFFIX) and e.name[0] != "."),
                key=lambda e: e.name,
            )
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                found.append((entry, entry.stat(follow_symlinks=False)))
        except OSError:
            continue
    return found
