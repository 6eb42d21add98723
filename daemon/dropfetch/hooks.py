"""Hooks: run ``hooks.on_done`` / ``hooks.on_failed`` when a job ends (never a shell)."""

from __future__ import annotations

import logging
import os
import subprocess
import threading

from dropfetch.config import Config
from dropfetch.jobfile import SIDECAR_SUFFIX
from dropfetch.lifecycle import Deadline
from dropfetch.status import Sidecar, Status

__all__ = ["HookRunner"]

logger = logging.getLogger(__name__)


class HookRunner:
    """Runs hooks in their own threads, so a slow hook never holds a worker.

    The hook gets ``DROPFETCH_ID``, ``DROPFETCH_STATUS``, ``DROPFETCH_OUTPUT``,
    ``DROPFETCH_SIDECAR`` (and ``DROPFETCH_ERROR_CODE`` when failed) in its environment;
    its exit status is logged; it is killed after ``hooks.timeout`` seconds. What a hook
    does never changes the job's result.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def fire(self, sc: Sidecar) -> None:
        hooks = self.config.hooks
        argv = hooks.on_done if sc.status is Status.OK else (
            hooks.on_failed if sc.status is Status.FAILED else None)
        if not argv:
            return
        env = {
            **os.environ,
            "DROPFETCH_ID": sc.id,
            "DROPFETCH_STATUS": str(sc.status),
            "DROPFETCH_OUTPUT": str(self.config.outbox / sc.id) if sc.output else "",
            "DROPFETCH_SIDECAR": str(self.config.inbox / (sc.id + SIDECAR_SUFFIX)),
            "DROPFETCH_ERROR_CODE": (sc.error or {}).get("code", ""),
        }
        t = threading.Thread(target=self._run, args=(sc.id, list(argv), env, hooks.timeout),
                             name=f"dropfetch-hook-{sc.id}", daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    @staticmethod
    def _run(job_id: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
        try:
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            logger.error("%s: hook %s timed out after %.0f s and was killed", job_id, argv[0],
                         timeout)
            return
        except OSError as exc:
            logger.error("%s: hook %s could not be started: %s", job_id, argv[0], exc)
            return
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        if done.returncode == 0:
            logger.info("%s: hook %s exited 0", job_id, argv[0])
        else:
            logger.warning("%s: hook %s exited %d%s", job_id, argv[0], done.returncode,
                           f": {tail}" if tail else "")

    name = "hooks"

    def start(self) -> None:
        pass

    def stop(self, deadline: Deadline) -> bool:
        with self._lock:
            threads = list(self._threads)
        return deadline.join(threads)

    def healthy(self) -> bool:
        return True

    def apply(self, config: Config) -> None:
        self.config = config
