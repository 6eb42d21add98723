"""Hooks: run ``hooks.on_done`` / ``hooks.on_failed`` when a job ends (never a shell).

Hooks run on a bounded executor: at most :data:`HOOK_WORKERS` hook processes at a time,
and at most :data:`HOOK_BACKLOG` more waiting for a turn. A hook fired while the backlog
is full is logged and dropped (the caller is a worker thread, which never waits for a
hook). Each hook process is the leader of a session of its own, so killing it (after
``hooks.timeout``, or at the shutdown deadline) kills what it started too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO

from dropfetch.config import Config
from dropfetch.events import Event, JobFinished
from dropfetch.jobfile import SIDECAR_SUFFIX
from dropfetch.lifecycle import Deadline
from dropfetch.status import Sidecar, Status

__all__ = ["HOOK_BACKLOG", "HOOK_WORKERS", "HookCall", "HookRunner", "hook_call"]

logger = logging.getLogger(__name__)

HOOK_WORKERS = 4  # hook processes running at the same time, at most
HOOK_BACKLOG = 100  # hooks waiting for a turn, at most; more are logged and dropped
_TAIL = 500  # characters of a failing hook's stderr that are logged


@dataclass(frozen=True, slots=True)
class HookCall:
    """One hook to run: for which job, what, with which environment, for how long."""

    job_id: str
    argv: tuple[str, ...]
    env: dict[str, str]
    timeout: float


def hook_call(config: Config, sc: Sidecar) -> HookCall | None:
    """The hook to run for the final sidecar ``sc``, None when there is none."""
    hooks = config.hooks
    argv = (
        hooks.on_done
        if sc.status is Status.OK
        else (hooks.on_failed if sc.status is Status.FAILED else None)
    )
    if not argv:
        return None
    env = {
        **os.environ,
        "DROPFETCH_ID": sc.id,
        "DROPFETCH_STATUS": str(sc.status),
        "DROPFETCH_OUTPUT": str(config.outbox / sc.id) if sc.output else "",
        "DROPFETCH_SIDECAR": str(config.inbox / (sc.id + SIDECAR_SUFFIX)),
        "DROPFETCH_ERROR_CODE": (sc.error or {}).get("code", ""),
    }
    return HookCall(sc.id, tuple(argv), env, hooks.timeout)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the hook's whole session (it may ignore SIGTERM, or have children)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(err: IO[bytes]) -> str:
    err.seek(0)
    return err.read().decode(errors="replace").strip()[-_TAIL:]


class HookRunner:
    """Runs hooks on a bounded executor, so a slow hook never holds a worker.

    The hook gets ``DROPFETCH_ID``, ``DROPFETCH_STATUS``, ``DROPFETCH_OUTPUT``,
    ``DROPFETCH_SIDECAR`` (and ``DROPFETCH_ERROR_CODE`` when failed) in its environment;
    its exit status is logged; it is killed after ``hooks.timeout`` seconds. What a hook
    does never changes the job's result.
    """

    name = "hooks"

    def __init__(
        self, config: Config, *, workers: int = HOOK_WORKERS, backlog: int = HOOK_BACKLOG
    ) -> None:
        self.config = config
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="dropfetch-hook"
        )
        # a turn for each hook running or waiting: fire() never blocks on it
        self._limit = workers + backlog
        self._slots = threading.BoundedSemaphore(self._limit)
        self._lock = threading.Lock()
        self._running: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        self._futures: set[Future[None]] = set()
        self._stopping = threading.Event()
        self._killing = False  # stop() reached its deadline: kill what still starts

    def on_event(self, event: Event) -> None:
        """A subscriber of the pipeline's events: a job that ended ok or failed."""
        if isinstance(event, JobFinished) and event.sidecar is not None:
            self.fire(event.sidecar)

    def fire(self, sc: Sidecar) -> None:
        """Queue the hook for the final sidecar ``sc`` (if any); never waits."""
        call = hook_call(self.config, sc)
        if call is None:
            return
        if self._stopping.is_set():
            logger.warning("%s: hook %s not run: stopping", call.job_id, call.argv[0])
            return
        if not self._slots.acquire(blocking=False):
            logger.error(
                "%s: hook %s dropped: %d hooks are running or waiting already",
                call.job_id,
                call.argv[0],
                self._limit,
            )
            return
        try:
            future = self._executor.submit(self._turn, call)
        except RuntimeError:  # shut down meanwhile
            self._slots.release()
            logger.warning("%s: hook %s not run: stopping", call.job_id, call.argv[0])
            return
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _turn(self, call: HookCall) -> None:
        try:
            if self._stopping.is_set():
                logger.warning("%s: hook %s not run: stopping", call.job_id, call.argv[0])
                return
            self._run(call)
        finally:
            self._slots.release()

    def _run(self, call: HookCall) -> None:
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    call.argv,
                    env=call.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                logger.error("%s: hook %s could not be started: %s", call.job_id, call.argv[0], exc)
                return
            with self._lock:
                self._running[proc.pid] = (call.job_id, proc)
                late = self._killing  # started as stop() killed the others
            if late:
                _kill(proc)
            try:
                code = proc.wait(call.timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                proc.wait()
                logger.error(
                    "%s: hook %s timed out after %.0f s and was killed",
                    call.job_id,
                    call.argv[0],
                    call.timeout,
                )
                return
            finally:
                with self._lock:
                    self._running.pop(proc.pid, None)
            self._report(call, code, _tail(err))

    @staticmethod
    def _report(call: HookCall, code: int, tail: str) -> None:
        if code == 0:
            logger.info("%s: hook %s exited 0", call.job_id, call.argv[0])
        elif code == -signal.SIGKILL:
            logger.warning("%s: hook %s was killed", call.job_id, call.argv[0])
        else:
            logger.warning(
                "%s: hook %s exited %d%s",
                call.job_id,
                call.argv[0],
                code,
                f": {tail}" if tail else "",
            )

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        pass

    def stop(self, deadline: Deadline) -> bool:
        """Run no more hooks; wait for the running ones until ``deadline``, then kill
        them (logged). True if none had to be killed."""
        self._stopping.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            futures = list(self._futures)
        if not wait(futures, timeout=deadline.left()).not_done:
            return True
        with self._lock:
            self._killing = True
            left = list(self._running.values())
        for job_id, proc in left:
            logger.warning(
                "%s: hook (pid %d) still running at the shutdown deadline: killed", job_id, proc.pid
            )
            _kill(proc)
        return False

    def healthy(self) -> bool:
        return True

    def apply(self, config: Config) -> None:
        self.config = config  # hooks fired from now on; running ones keep theirs
