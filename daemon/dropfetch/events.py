"""What the pipeline says as it goes: explicit events, and the bus that hands them on.

A job run publishes :class:`JobStarted`, :class:`PhaseStarted`/:class:`PhaseEnded` for
each phase (download, unpack, publish), :class:`Progress`, :class:`StatusChanged` after
every sidecar write, and :class:`JobFinished` when the run ends. Metrics, hooks, the
``STATUS=`` line for systemd and the HTTP event stream subscribe to them. Subscribers
run on the publishing thread, never inside a lock of the pipeline, and must be quick
(a hook goes to its bounded executor); one that raises is logged and the rest still
get the event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from dropfetch.status import Sidecar, Status

__all__ = [
    "Event",
    "EventBus",
    "JobFinished",
    "JobStarted",
    "Phase",
    "PhaseEnded",
    "PhaseStarted",
    "Progress",
    "StatusChanged",
    "Subscriber",
]

logger = logging.getLogger(__name__)


class Phase(StrEnum):
    DOWNLOAD = "download"
    UNPACK = "unpack"
    PUBLISH = "publish"


@dataclass(frozen=True, slots=True)
class JobStarted:
    job_id: str
    attempt: int  # 1 for the first try


@dataclass(frozen=True, slots=True)
class PhaseStarted:
    job_id: str
    phase: Phase


@dataclass(frozen=True, slots=True)
class PhaseEnded:
    job_id: str
    phase: Phase
    seconds: float
    ok: bool  # False: the phase ended in an error or was cancelled


@dataclass(frozen=True, slots=True)
class Progress:
    job_id: str
    phase: Phase
    done: int  # bytes of the phase so far (resumed bytes included)
    total: int | None
    speed: float | None  # bytes per second, when known


@dataclass(frozen=True, slots=True)
class StatusChanged:
    sidecar: Sidecar  # a copy, as written


@dataclass(frozen=True, slots=True)
class JobFinished:
    """The run ended; ``status`` is what the sidecar was left at (ok, failed, waiting
    for a retry, queued after a shutdown checkpoint), None when the job was removed."""

    job_id: str
    status: Status | None
    sidecar: Sidecar | None  # a copy; None when removed


Event = JobStarted | PhaseStarted | PhaseEnded | Progress | StatusChanged | JobFinished
Subscriber = Callable[[Event], None]


class EventBus:
    """Hands each published event to every subscriber, in the order they subscribed."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:  # a snapshot: no lock held while calling
            try:
                subscriber(event)
            except Exception:
                logger.exception("an event subscriber failed on %s", type(event).__name__)
