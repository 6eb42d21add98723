"""Domain errors. Each carries the sidecar's error code (SPEC §7)."""

from __future__ import annotations

RETRYABLE_HTTP = frozenset({408, 429})


class DropfetchError(Exception):
    """Base of every error the daemon reports in a sidecar.

    ``code`` is the sidecar's ``error.code``; ``retryable`` says whether the job
    may be tried again; ``retry_after`` is a server's hint in seconds, if any.
    """

    code = "io_error"
    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadJobError(DropfetchError):
    code = "bad_job"


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


class DiskFullError(DropfetchError):
    code = "disk_full"
    retryable = True


class IOFailureError(DropfetchError):
    code = "io_error"


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
