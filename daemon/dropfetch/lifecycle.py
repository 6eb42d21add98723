"""The component protocol and the one shutdown deadline every component shares.

The daemon's parts (hooks, leases, worker pool, watcher, HTTP front end) are started
in that order and stopped in the reverse one, all within one :class:`Deadline`
(``shutdown_timeout``): a component that does not stop in what is left of it is
logged and left behind, so the daemon exits in time even when every part is stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from dropfetch.config import Config

__all__ = ["Component", "Deadline", "start_all", "stop_all"]

logger = logging.getLogger(__name__)


class Deadline:
    """A point in time (monotonic) that several waits share."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def join(self, threads: Sequence[threading.Thread]) -> bool:
        """Join ``threads`` until the deadline; True if all of them ended."""
        for t in threads:
            t.join(self.left())
        return not any(t.is_alive() for t in threads)


class Component(Protocol):
    """One part of the running daemon."""

    name: str

    def start(self) -> None:
        """Start its threads; raises if it cannot run at all."""

    def stop(self, deadline: Deadline) -> bool:
        """Stop, waiting at most until ``deadline``; True if it stopped in time."""

    def healthy(self) -> bool:
        """Whether every thread it needs is alive and working."""

    def apply(self, config: Config) -> None:
        """SIGHUP: take on what it can of a new configuration (the daemon has already
        kept the old value of every key that needs a restart)."""


def start_all(components: Sequence[Component]) -> None:
    for c in components:
        c.start()


def stop_all(components: Sequence[Component], deadline: Deadline) -> bool:
    """Stop ``components`` in reverse order within ``deadline``; True if all stopped.

    Each ``stop`` runs in a thread of its own, so one that blocks past the deadline
    (a stuck join, a hung filesystem) cannot hold the others or the exit."""
    in_time = True
    for c in reversed(components):
        late = deadline.expired()  # the ones before used it all up
        done = _call_before(c.stop, deadline)
        if not done:
            logger.warning(
                "%s did not stop within shutdown_timeout%s; leaving it",
                c.name,
                " (none of it was left)" if late else "",
            )
            in_time = False
    return in_time


def _call_before(stop: Callable[[Deadline], bool], deadline: Deadline) -> bool:
    result: list[bool] = []
    t = threading.Thread(
        target=lambda: result.append(stop(deadline)), name="dropfetch-stop", daemon=True
    )
    t.start()
    t.join(deadline.left() + 0.05)
    return bool(result and result[0])
