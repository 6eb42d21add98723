"""The archive code's error boundaries: a failure while decoding means a damaged
archive, one while writing is reported as the filesystem's."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from dropfetch.errors import CorruptArchiveError, DropfetchError, UnsafeArchiveError, from_os_error

__all__ = ["reading", "writing"]


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """Any failure while decoding the archive means it is damaged."""
    try:
        yield
    except DropfetchError:
        raise
    except Exception as exc:  # hostile input can break any parser
        detail = str(exc) or type(exc).__name__
        raise CorruptArchiveError(
            f"the archive is damaged or incomplete: {detail} (while {what}); "
            "download it again or check the source"
        ) from exc


@contextlib.contextmanager
def writing(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # what the checks before could not foresee
            raise UnsafeArchiveError(
                f"unsafe archive: a name too long for the filesystem while {what}"
            ) from exc
        raise from_os_error(exc, what) from exc
