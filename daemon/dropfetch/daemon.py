"""Wiring, signals, sd_notify and the shutdown order of the running daemon."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

from dropfetch.config import Config, ConfigError, load_config
from dropfetch.events import Event, EventBus, JobFinished
from dropfetch.hooks import HookRunner
from dropfetch.joblog import JobLog
from dropfetch.leases import LeaseManager
from dropfetch.lifecycle import Component, Deadline, start_all, stop_all
from dropfetch.metrics import Metrics
from dropfetch.pool import WorkerPool
from dropfetch.reload import split_reload
from dropfetch.status import Status
from dropfetch.watcher import Watcher

__all__ = ["Daemon", "JobCounts", "StartupError", "notify"]

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start (missing directories, wrong filesystem layout)."""


def notify(message: str) -> bool:
    """Send one sd_notify datagram; does nothing (False) when NOTIFY_SOCKET is unset."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # never block: a receiver that stopped reading must not freeze the main loop
            sock.sendto(message.encode(), socket.MSG_DONTWAIT, address)
    except OSError as exc:
        logger.debug("sd_notify failed: %s", exc)
        return False
    return True


def _write_record_now(message: str) -> None:
    """One log record straight to stderr, formatted like the others, without taking the
    logging locks (the main thread may hold them when a signal arrives)."""
    handlers = logging.getLogger().handlers
    formatter = handlers[0].formatter if handlers else None
    record = logging.LogRecord(__name__, logging.WARNING, __file__, 0, message, None, None)
    line = formatter.format(record) if formatter is not None else f"dropfetch: {message}"
    os.write(2, (line + "\n").encode("utf-8", "backslashreplace"))


def prepare_directories(config: Config) -> None:
    """Create (or, with ``create_dirs: false``, require) inbox, outbox and work_dir."""
    for what, path in (("inbox", config.inbox), ("outbox", config.outbox)):
        if path.is_dir():
            continue
        if not config.create_dirs:
            raise StartupError(
                f"the {what} {path} does not exist, and create_dirs is false: is the share "
                "mounted? dropfetch will not write into an empty mount point"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create the {what} {path}: {exc}") from exc
    try:
        for sub in ("partial", "staging", "leases"):
            (config.work / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the work_dir {config.work}: {exc}") from exc
    if os.stat(config.work).st_dev != os.stat(config.outbox).st_dev:
        raise StartupError(
            f"work_dir {config.work} is not on the same filesystem as the outbox "
            f"{config.outbox}: outputs could not be published by an atomic rename"
        )


class JobCounts:
    """Jobs that ended ``ok`` or ``failed`` in this process, for the ``STATUS=`` line;
    fed by :class:`JobFinished` events from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def on_event(self, event: Event) -> None:
        if isinstance(event, JobFinished) and event.status in (Status.OK, Status.FAILED):
            with self._lock:
                self._counts[str(event.status)] += 1

    def get(self) -> tuple[int, int]:
        """(ok, failed)"""
        with self._lock:
            return self._counts["ok"], self._counts["failed"]


def _config_level(config: Config) -> str:
    return config.log.level.upper()


class Daemon:
    """The daemon: observer -> queue -> workers, with leases, signals and sd_notify.

    ``log_level`` says which level a configuration means (the command line's
    ``-v``/``-q`` win over the file's ``log.level``, at a reload too)."""

    def __init__(
        self,
        config: Config,
        *,
        overrides: dict[str, Any] | None = None,
        log_level: Callable[[Config], str] = _config_level,
    ) -> None:
        self.config = config
        self._overrides = overrides or {}
        self._log_level = log_level
        self._wake = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._signals = 0
        self.stopped_in_time = True
        self.counts = JobCounts()
        self.events = EventBus()
        self.metrics = Metrics(config.inbox, recursive=config.recursive)
        self.hooks = HookRunner(config)
        self.leases = LeaseManager(
            config.work / "leases", host_id=config.lease.host_id, ttl=config.lease.ttl
        )
        self.pool = WorkerPool(config, self.leases, self.events)
        self.watcher = Watcher(config, self.pool.submit)
        self.http: Any = None
        for subscriber in (self.metrics.on_event, self.counts.on_event, self.hooks.on_event):
            self.events.subscribe(subscriber)
        self.events.subscribe(JobLog(lambda: self.config.outbox).on_event)

    # -- signals: handlers only set flags; the main thread acts ---------------------------

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            _write_record_now("second signal, stopping now")
            os._exit(128 + signum)  # as a shell reports a process killed by it
        self._stop_requested = True
        self._wake.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_requested = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop_requested = True
        self._wake.set()

    def components(self) -> list[Component]:
        """In start order; stopped in the reverse one."""
        parts: list[Component] = [self.hooks, self.leases, self.pool, self.watcher]
        if self.http is not None:
            parts.append(self.http)
        return parts

    # -- running ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped. Raises StartupError, or ConfigError (``http.listen`` cannot
        be bound, ``http.token_file`` cannot be read) before any thread is started."""
        prepare_directories(self.config)
        if self.config.http.listen:
            from dropfetch.httpapi import HttpFrontEnd

            self.http = HttpFrontEnd(self.config, self.metrics, self.events)  # binds: fails early
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_stop_signal)
            signal.signal(signal.SIGINT, self._on_stop_signal)
            signal.signal(signal.SIGHUP, self._on_hup)
        start_all(self.components())
        logger.info(
            "dropfetch running: inbox %s, outbox %s, %d workers, host %s",
            self.config.inbox,
            self.config.outbox,
            self.config.workers,
            self.config.lease.host_id,
        )
        notify("READY=1\nSTATUS=" + self._status_line())
        self._main_loop()
        return self._shutdown()

    def _main_loop(self) -> None:
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        tick = min(5.0, watchdog_usec / 2e6) if watchdog_usec else 5.0
        while not self._stop_requested:
            self._wake.wait(tick)
            self._wake.clear()
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            if self._stop_requested:
                break
            line = self._status_line()
            # an observable idle signal ("0 running, 0 queued"): tests wait for it
            logger.debug("status: %s", line)
            if watchdog_usec and self.healthy():
                notify("WATCHDOG=1\nSTATUS=" + line)
            else:
                notify("STATUS=" + line)

    def healthy(self) -> bool:
        """Every component is healthy (the watchdog ping is sent only then)."""
        return all(part.healthy() for part in self.components())

    def _status_line(self) -> str:
        paused = " (inbox missing: paused)" if self.watcher.paused else ""
        ok, failed = self.counts.get()
        return (
            f"{len(self.pool.running())} running, {len(self.pool.queue)} queued, "
            f"{ok} ok, {failed} failed{paused}"
        )

    def _shutdown(self) -> int:
        """Stop every component within one ``shutdown_timeout``; the caller exits at once
        when :attr:`stopped_in_time` is False (what is left behind must not hold it)."""
        notify("STOPPING=1")
        logger.info("stopping: no new jobs; checkpointing running ones")
        start = time.monotonic()
        self.stopped_in_time = stop_all(self.components(), Deadline(self.config.shutdown_timeout))
        if not self.stopped_in_time:
            logger.warning(
                "not everything stopped within shutdown_timeout (%g s): partial "
                "files are kept and the next start resumes their jobs",
                self.config.shutdown_timeout,
            )
        logger.info("stopped in %.1f s", time.monotonic() - start)
        return 0

    def reload(self) -> None:
        """SIGHUP: load the config file again; a bad file is logged and the old one kept.
        Each component applies what it can; keys that need a restart keep their old value."""
        source = self.config.source
        if source is None:
            logger.info("SIGHUP: no config file to reload (running on the defaults)")
            return
        try:
            loaded = load_config(source, **self._overrides)
        except ConfigError as exc:
            logger.error("SIGHUP: keeping the old configuration: %s", exc)
            return
        new, applied, restart = split_reload(self.config, loaded)
        if restart:
            logger.warning(
                "SIGHUP: %s change(s) need a restart; keeping the old value(s)", ", ".join(restart)
            )
        self.config = new
        logging.getLogger("dropfetch").setLevel(self._log_level(new))
        for part in self.components():
            try:
                part.apply(new)
            except Exception:
                logger.exception("SIGHUP: %s could not apply the new configuration", part.name)
        logger.info(
            "SIGHUP: configuration reloaded from %s (%d workers); applied: %s",
            source,
            new.workers,
            ", ".join(applied) or "no change",
        )
