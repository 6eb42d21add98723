"""The archive code's error boundaries: a failure while decoding means a damaged
archive, one while writing is reported as the filesystem's."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import NoReturn

from dropfetch.errors import CorruptArchiveError, DropfetchError, UnsafeArchiveError, from_os_error

__all__ = ["raise_reading", "raise_writing", "reading", "writing"]


def raise_reading(exc: Exception, what: str) -> NoReturn:
    """Any failure while decoding the archive means it is damaged (a domain error
    passes as it is)."""
    if isinstance(exc, DropfetchError):
        raise exc
    detail = str(exc) or type(exc).__name__  # hostile input can break any parser
    raise CorruptArchiveError(
        f"the archive is damaged or incomplete: {detail} (while {what}); "
        "download it again or check the source"
    ) from exc


def raise_writing(exc: OSError, what: str) -> NoReturn:
    if exc.errno == errno.ENAMETOOLONG:  # what the checks before could not foresee
        raise UnsafeArchiveError(
            f"unsafe archive: a name too long for the filesystem while {what}"
        ) from exc
    raise from_os_error(exc, what) from exc


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """:func:`raise_reading` as a block."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - raise_reading sorts them
        raise_reading(exc, what)


@contextlib.contextmanager
def writing(what: str) -> Iterator[None]:
    """:func:`raise_writing` as a block."""
    try:
        yield
    except OSError as exc:
        raise_writing(exc, what)
