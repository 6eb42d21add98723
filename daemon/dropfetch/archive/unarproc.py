"""One run of The Unarchiver's ``lsar`` or ``unar``: a clean environment, its own
session, standard output read in chunks with a timeout on silence, standard error kept
in a file for the message, killed on cancel, on error and on exit."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, cast

from dropfetch.archive.compression import CHUNK
from dropfetch.errors import CorruptArchiveError, from_os_error

__all__ = ["SILENCE_TIMEOUT", "ToolRun", "clean_env"]

SILENCE_TIMEOUT = 300.0  # seconds without a byte from the tool: it hangs
_POLL = 0.5
_TAIL = 2000


def clean_env(home: str) -> dict[str, str]:
    """Nothing of the daemon's environment: a private HOME (GNUstep's defaults), UTF-8."""
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LC_ALL": "C.UTF-8"}


class ToolRun:
    """``argv`` running in ``home``; :meth:`read` gives its standard output."""

    def __init__(
        self,
        argv: Sequence[str],
        home: str,
        check_cancel: Callable[[], None],
        silence: float = SILENCE_TIMEOUT,
    ) -> None:
        self.tool = Path(argv[0]).name
        self._check_cancel = check_cancel
        self._silence = silence
        self._err = tempfile.TemporaryFile(dir=home)  # noqa: SIM115 - closed by close()
        try:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._err,
                env=clean_env(home),
                cwd=home,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self._err.close()
            raise from_os_error(exc, f"starting {self.tool}") from exc
        self._stdout = cast(IO[bytes], self._proc.stdout)
        self._fd = self._stdout.fileno()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def __enter__(self) -> ToolRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def read(self, n: int = CHUNK) -> bytes:
        """Up to ``n`` bytes of its output, ``b""`` at the end; raises
        :class:`CancelledError` on cancel and :class:`CorruptArchiveError` when it has
        said nothing for the silence timeout."""
        deadline = time.monotonic() + self._silence
        while True:
            self._check_cancel()
            ready, _, _ = select.select([self._fd], [], [], _POLL)
            if ready:
                try:
                    return os.read(self._fd, n)
                except OSError as exc:
                    raise from_os_error(exc, f"reading from {self.tool}") from exc
            if time.monotonic() > deadline:
                raise CorruptArchiveError(
                    f"{self.tool} sent nothing for {self._silence:.0f} s while decoding the "
                    "archive: stopped (a damaged archive, or a decoder that hangs)"
                )

    def wait(self) -> int:
        """Its exit status, once its output is read to the end."""
        deadline = time.monotonic() + self._silence
        while True:
            self._check_cancel()
            try:
                return self._proc.wait(_POLL)
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise CorruptArchiveError(f"{self.tool} did not exit") from None

    def stderr_tail(self) -> str:
        """The end of what it wrote to standard error."""
        size = self._err.seek(0, os.SEEK_END)
        self._err.seek(max(0, size - _TAIL))
        return self._err.read().decode("utf-8", "replace").strip()

    def close(self) -> None:
        """Kill it (and anything it started) if it still runs; free its pipes."""
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except OSError:
                self._proc.kill()
        self._proc.wait()
        self._stdout.close()
        self._err.close()
