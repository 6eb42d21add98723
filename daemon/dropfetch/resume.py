"""Resume: the partial file, its metadata, and what to do with the server's answer.

Next to a partial file lives ``<partial>.meta`` (JSON: url, etag, last_modified,
total). When it describes the same URL and has a validator (a strong ETag, else
Last-Modified), the next attempt re-hashes the bytes already there and asks for the
rest with ``Range: bytes=N-`` and ``If-Range``. When the server gave neither, nothing
proves that the bytes on disk belong to the current file, so the next attempt starts
from zero instead of risking a splice of two versions.

:func:`decide` is the whole 200/206/416 rule as a pure function: a ``200`` replaces
the partial, a ``206`` with the matching ``Content-Range`` is appended, any other
``206`` is an error that discards the partial, a ``416`` saying the file has exactly
the bytes on disk completes it, any other ``416`` starts over.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dropfetch.checksums import Digests
from dropfetch.errors import CancelledError, from_os_error
from dropfetch.fsutil import atomic_write

__all__ = [
    "Action",
    "Answer",
    "Asked",
    "ContentRange",
    "Decision",
    "Meta",
    "Partial",
    "decide",
    "hash_file",
    "meta_path",
    "parse_content_range",
    "parse_unsatisfied_range",
    "read_meta",
    "resumable",
]

READ_CHUNK = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(
    r"^\s*bytes\s+([0-9]{1,100})-([0-9]{1,100})/([0-9]{1,100}|\*)\s*$", re.IGNORECASE
)
_UNSATISFIED_RANGE_RE = re.compile(r"^\s*bytes\s+\*/([0-9]{1,100})\s*$", re.IGNORECASE)


# --- the metadata ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Meta:
    """What ``<partial>.meta`` says: the URL, the server's validators, the full size."""

    url: str
    etag: str | None
    last_modified: str | None
    total: int | None
    # a segmented download: (first, last, bytes done) of each segment (dropfetch.segments)
    segments: tuple[tuple[int, int, int], ...] = ()

    @property
    def validator(self) -> str | None:
        """The ``If-Range`` value: a strong ETag, else Last-Modified, else None."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified or None


def meta_path(partial: Path) -> Path:
    """Where the resume metadata of ``partial`` lives."""
    return partial.with_name(partial.name + ".meta")


def read_meta(path: Path) -> Meta | None:
    """The metadata in ``path``; None when it is missing or not what :func:`write_meta`
    writes."""
    try:
        raw = json.loads(path.read_bytes())
        total = raw.get("total")
        return Meta(
            url=str(raw["url"]),
            etag=raw.get("etag") if isinstance(raw.get("etag"), str) else None,
            last_modified=(
                raw.get("last_modified") if isinstance(raw.get("last_modified"), str) else None
            ),
            total=total if isinstance(total, int) and not isinstance(total, bool) else None,
            segments=_segments_of(raw.get("segments")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _segments_of(raw: object) -> tuple[tuple[int, int, int], ...]:
    """The ``segments`` of a ``.meta`` file; () unless each is a sane (first, last, done)."""
    if not isinstance(raw, list):
        return ()
    out = []
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and all(type(v) is int for v in item)
            and 0 <= item[0] <= item[1]
            and 0 <= item[2] <= item[1] - item[0] + 1
        ):
            return ()
        out.append((item[0], item[1], item[2]))
    return tuple(out)


def write_meta(path: Path, meta: Meta) -> None:
    doc: dict[str, object] = {
        "url": meta.url,
        "etag": meta.etag,
        "last_modified": meta.last_modified,
        "total": meta.total,
    }
    if meta.segments:
        doc["segments"] = [list(s) for s in meta.segments]
    data = json.dumps(doc).encode()
    try:
        # not synced: losing it to a power cut only means the download starts over
        atomic_write(path, data, sync=False, durable=False)
    except OSError as exc:
        raise from_os_error(exc, "writing the download's resume data") from None


def resumable(meta: Meta | None, url: str, same_file: Iterable[str] = ()) -> bool:
    """Whether a partial file with ``meta`` may be continued for ``url``: the same URL,
    and a validator that lets the server tell whether its file is still the same. A
    partial file of another URL of the same file (``same_file``: a job's mirrors) only
    with a strong ETag: a date says nothing about another server's file; the server
    answers a different ETag with the whole file (200), and a 206 of another size is
    refused (:func:`decide`), so two files are never spliced."""
    if meta is None or meta.validator is None:
        return False
    if meta.url == url:
        return True
    strong = meta.etag is not None and meta.validator == meta.etag
    return strong and meta.url in same_file


# --- the partial file -----------------------------------------------------------------


@dataclass(slots=True)
class Partial:
    """A partial download: its path, its resume metadata, the bytes on disk that the next
    request continues (``size``) and the digests of those bytes so far (SHA-256, and the
    ``algorithms`` a job's checksum asks for)."""

    path: Path
    meta: Meta | None = None  # set only while size > 0
    size: int = 0
    hasher: Digests = field(default_factory=Digests)

    @classmethod
    def load(
        cls,
        path: Path,
        url: str,
        cancel: threading.Event,
        *,
        resume: bool,
        algorithms: Iterable[str] = (),
        same_file: Iterable[str] = (),
    ) -> Partial:
        """The partial file at ``path`` for ``url``: re-hashed when it can be resumed,
        else removed (with its metadata), so the download starts from zero."""
        partial = cls(path, hasher=Digests(algorithms))
        meta = read_meta(meta_path(path)) if resume else None
        if resumable(meta, url, same_file):
            partial.size = _rehash(path, partial.hasher, cancel)
            partial.meta = meta
        if partial.size == 0:
            partial.discard()
        return partial

    @property
    def meta_path(self) -> Path:
        return meta_path(self.path)

    @property
    def validator(self) -> str | None:
        """The ``If-Range`` value for continuing this partial file (None: start afresh)."""
        return self.meta.validator if self.meta is not None and self.size else None

    def asked(self) -> Asked:
        """What a request for the rest of this file asks for."""
        if self.validator is None:
            return Asked()
        return Asked(offset=self.size, total=self.meta.total if self.meta else None)

    def restart(self) -> None:
        """Forget the bytes on disk: the next body is the whole file."""
        self.size = 0
        self.meta = None
        self.hasher = self.hasher.fresh()

    def discard(self) -> None:
        """Remove the partial file and its metadata, and :meth:`restart`."""
        for p in (self.path, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self.restart()


def hash_file(path: Path, hasher: Digests, cancel: threading.Event) -> int:
    """Feed the file's bytes to ``hasher`` in order; return its size (0 if none)."""
    return _rehash(path, hasher, cancel)


def _rehash(partial: Path, hasher: Digests, cancel: threading.Event) -> int:
    """Feed the partial file's bytes to ``hasher``; return its size (0 if none)."""
    buf = bytearray(READ_CHUNK)
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


# --- the decision ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asked:
    """What the request asked for: ``Range: bytes=offset-`` (0: the whole file), and the
    full size the partial's metadata knows (None: not known)."""

    offset: int = 0
    total: int | None = None


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A ``Content-Range: bytes first-last/total`` (``total`` None for ``*``)."""

    first: int
    last: int
    total: int | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The parts of an answer the decision reads: the status, a 206's range, a 416's
    ``bytes */N`` and the ``Content-Length`` framing the body (None: chunked or none)."""

    status: int
    content_range: ContentRange | None = None
    unsatisfied: int | None = None
    length: int | None = None


class Action(enum.Enum):
    APPEND = "append"  # the body continues the partial file at ``offset``
    REPLACE = "replace"  # the body is the whole file: written from byte 0
    COMPLETE = "complete"  # the partial file already holds the whole file
    START_OVER = "start_over"  # discard the partial and ask again for the whole file
    ERROR = "error"  # a range that was not asked for: discard the partial, fail
    HTTP_ERROR = "http_error"  # no body to keep: the status is the answer


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with an answer: write ``length`` bytes (None: until the body ends) at
    ``offset`` of a file of ``total`` bytes (None: not known)."""

    action: Action
    reason: str
    offset: int = 0
    length: int | None = None
    total: int | None = None


def parse_content_range(header: str | None) -> ContentRange | None:
    m = _CONTENT_RANGE_RE.match(header or "")
    if m is None:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return ContentRange(int(m.group(1)), int(m.group(2)), total)


def parse_unsatisfied_range(header: str | None) -> int | None:
    """N of a 416's ``Content-Range: bytes */N``."""
    m = _UNSATISFIED_RANGE_RE.match(header or "")
    return int(m.group(1)) if m else None


def decide(asked: Asked, answer: Answer) -> Decision:
    """What to do with ``answer`` to a request for ``asked`` (pure)."""
    if answer.status == 416 and asked.offset:
        return _unsatisfiable(asked, answer.unsatisfied)
    if answer.status == 206:
        return _partial_content(asked, answer)
    if answer.status == 200:
        reason = (
            "the server sent the whole file; restarting from zero"
            if asked.offset
            else "the whole file"
        )
        return Decision(Action.REPLACE, reason, length=answer.length, total=answer.length)
    return Decision(Action.HTTP_ERROR, f"status {answer.status} brings no file")


def _unsatisfiable(asked: Asked, size: int | None) -> Decision:
    if size is None:
        return Decision(Action.START_OVER, "416 without the file's size (bytes */N)")
    if size != asked.offset:
        return Decision(
            Action.START_OVER, f"the file has {size} bytes now, the partial file {asked.offset}"
        )
    if asked.total not in (None, size):
        return Decision(Action.START_OVER, f"the file has {size} bytes now, {asked.total} before")
    return Decision(
        Action.COMPLETE, f"already complete ({size} bytes)", offset=size, length=0, total=size
    )


def _partial_content(asked: Asked, answer: Answer) -> Decision:
    got = answer.content_range
    if got is None:
        return Decision(Action.ERROR, "206 without a valid Content-Range")
    if got.first != asked.offset:
        return Decision(Action.ERROR, f"the range starts at byte {got.first}, not {asked.offset}")
    if got.total is not None and got.last != got.total - 1:
        return Decision(Action.ERROR, "the range does not run to the end of the file")
    body = got.last - got.first + 1
    if answer.length is not None and answer.length != body:
        return Decision(Action.ERROR, f"Content-Length {answer.length} for a range of {body} bytes")
    if asked.total is not None and got.total is not None and got.total != asked.total:
        return Decision(Action.ERROR, f"the file has {got.total} bytes now, {asked.total} before")
    return Decision(
        Action.APPEND,
        f"bytes {got.first}-{got.last} as asked",
        offset=asked.offset,
        length=body,
        total=got.total,
    )
