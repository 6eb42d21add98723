"""Domain errors. Each carries the sidecar's error code (SPEC §7)."""

from __future__ import annotations

RETRYABLE_HTTP = frozenset({408, 429})


class DropfetchError(Exception):
    """Base of every error the daemon reports in a sidecar.

    ``code`` is the sidecar's ``error.code``; ``retryable`` says whether the job
    may be tried again; ``retry_after`` is a server's hint in seconds, if any.
    ``message`` may quote names as they are (undecodable bytes as surrogate escapes):
    every way out escapes it in the same ``\\xNN`` form (the sidecar writer with
    :func:`dropfetch.fsutil.display_name`, the log formatters with
    :func:`dropfetch.logs.escape`).
    """

    code = "io_error"
    retryable = False
    mirror_may_help = True  # False: another URL of the same file fails alike (dropfetch.retry)

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadJobError(DropfetchError):
    code = "bad_job"


class NotRegularFileError(BadJobError):
    """An inbox entry that is not a regular file (symlink, FIFO, socket, device,
    directory): it is never opened as a job file or a sidecar."""


class BadUrlError(DropfetchError):
    code = "bad_url"


class BlockedAddressError(DropfetchError):
    code = "blocked_address"


class HttpStatusError(DropfetchError):
    """An HTTP answer that is not a success; code ``http_<status>``."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status
        self.code = f"http_{status}"
        self.retryable = status >= 500 or status in RETRYABLE_HTTP


class NetworkError(DropfetchError):
    code = "network"
    retryable = True


class TlsError(DropfetchError):
    """A refused certificate or a failed TLS handshake: the same next time, not retried."""

    code = "tls"


class DownloadTimeoutError(DropfetchError):
    code = "timeout"
    retryable = True


class TooLargeError(DropfetchError):
    code = "too_large"


class ChecksumMismatchError(DropfetchError):
    code = "checksum_mismatch"


class CorruptArchiveError(DropfetchError):
    code = "corrupt_archive"


class UnsafeArchiveError(DropfetchError):
    code = "unsafe_archive"


class ArchiveLimitsError(DropfetchError):
    code = "archive_limits"


class EncryptedArchiveError(DropfetchError):
    code = "encrypted_archive"


class UnsupportedArchiveError(DropfetchError):
    """A real archive that uses a feature dropfetch cannot unpack (e.g. Deflate64)."""

    code = "unsupported_archive"


class DiskFullError(DropfetchError):
    code = "disk_full"
    retryable = True


class IOFailureError(DropfetchError):
    code = "io_error"


class InternalError(DropfetchError):
    """A bug in dropfetch hit a job: retried like a transient error, so one bad moment
    does not fail the job, and a job that always hits it fails after its attempts."""

    code = "io_error"
    retryable = True


class NameConflictError(DropfetchError):
    code = "name_conflict"


class CancelledError(DropfetchError):
    """Work stopped on purpose (job removed, daemon stopping, lease lost).

    Never written to a sidecar as a failure.
    """

    code = "cancelled"


class LeaseLostError(CancelledError):
    """Another host took this job's lease: stop and publish nothing."""


def from_os_error(exc: OSError, what: str) -> DropfetchError:
    """Turn an ``OSError`` into ``disk_full`` or ``io_error`` with a plain message."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on device while {what}; free some space")
    return IOFailureError(f"{what} failed: {exc.strerror or exc}")


FRAGMENT_CHARS = 40


def fragment(text: str, limit: int = FRAGMENT_CHARS) -> str:
    """``text`` quoted for an error message: control and other unprintable characters
    escaped, then cut to ``limit`` characters (with "..."), quotes included. Messages
    quote a job file's content only through this, so a sidecar or a log never carries
    more than a short piece of it (a job file may hold a secret)."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(escaped) > limit - 2:
        escaped = escaped[: max(0, limit - 5)] + "..."
    return f"'{escaped}'"
