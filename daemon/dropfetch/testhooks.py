"""Test hooks, not features: make the daemon pause, die or hit a bug at a named point.

``DROPFETCH_TEST_PAUSE=<phase>`` ("publish": after extraction and the last lease check,
right before the renames that publish; "finished": the final status is written, the
run not done yet; "purge": the sidecar says deleting, nothing removed yet) makes the
worker stop there for 30 s (or ``DROPFETCH_TEST_PAUSE_SECONDS``), so tests can kill or
stop the daemon at that point. ``DROPFETCH_TEST_CRASH=<phase>`` makes the daemon kill
itself (SIGKILL) there instead: a job that crashes the daemon every time.
``DROPFETCH_TEST_BUG=<phase>`` raises a RuntimeError there: what a bug in dropfetch
looks like to the job. ``DROPFETCH_TEST_BUG=worker`` raises in a worker thread's loop,
outside every job, once per process: a worker that dies.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

__all__ = ["TEST_BUG_ENV", "TEST_CRASH_ENV", "TEST_PAUSE_ENV", "hook_point", "worker_bug"]

logger = logging.getLogger(__name__)

TEST_PAUSE_ENV = "DROPFETCH_TEST_PAUSE"
TEST_PAUSE_SECONDS_ENV = "DROPFETCH_TEST_PAUSE_SECONDS"
TEST_CRASH_ENV = "DROPFETCH_TEST_CRASH"
TEST_BUG_ENV = "DROPFETCH_TEST_BUG"
TEST_PAUSE_SECONDS = 30.0

_worker_bug = threading.Lock()  # held once the worker bug has fired in this process


def hook_point(job_id: str, phase: str) -> None:
    """Do what a test variable asks at ``phase``; nothing unless one names it."""
    if os.environ.get(TEST_CRASH_ENV) == phase:
        logger.warning("%s: %s=%s: killing the daemon (a test hook)", job_id, TEST_CRASH_ENV, phase)
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(TEST_BUG_ENV) == phase:
        raise RuntimeError(f"{TEST_BUG_ENV}={phase} (a test hook)")
    if os.environ.get(TEST_PAUSE_ENV) == phase:
        seconds = float(os.environ.get(TEST_PAUSE_SECONDS_ENV) or TEST_PAUSE_SECONDS)
        logger.warning(
            "%s: %s=%s: pausing %g s (a test hook)", job_id, TEST_PAUSE_ENV, phase, seconds
        )
        threading.Event().wait(seconds)


def worker_bug() -> None:
    """``DROPFETCH_TEST_BUG=worker``: raise in the calling worker's loop, once per process."""
    if os.environ.get(TEST_BUG_ENV) == "worker" and _worker_bug.acquire(blocking=False):
        raise RuntimeError(f"{TEST_BUG_ENV}=worker (a test hook)")
