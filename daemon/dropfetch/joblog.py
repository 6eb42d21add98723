"""The log a person follows at INFO, from the pipeline's events: one line when a job
starts (its name and redacted URL), one with its size once the server said it (the
first progress of the download), a progress line at most every
:data:`PROGRESS_EVERY` seconds of a long download, and one line when it is published
(size, duration, average speed, files and where). Failures, retries, stops and purges
are logged where they happen (``jobrun``, ``removal``); internal names (staging
tokens, partial files) only ever at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dropfetch.events import Event, JobFinished, JobStarted, Phase, Progress, StatusChanged
from dropfetch.status import Sidecar, Status
from dropfetch.units import human_size

__all__ = ["PROGRESS_EVERY", "JobLog", "progress_due"]

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 10.0  # seconds between two progress lines of one download, at least


def progress_due(last: float | None, now: float, *, every: float = PROGRESS_EVERY) -> bool:
    """Whether a progress line may be logged at ``now`` (monotonic seconds), the job's
    last one having been at ``last`` (None: none yet, the size line is due)."""
    return last is None or now - last >= every


@dataclass(slots=True)
class _Run:
    """What the log remembers of one running job."""

    started: float
    last_line: float | None = None  # the size line or the last progress line


class JobLog:
    """A subscriber of the daemon's :class:`dropfetch.events.EventBus`; ``outbox`` says
    where published jobs are (the configuration's, at the time)."""

    def __init__(self, outbox: Callable[[], Path], *, clock: Callable[[], float] = time.monotonic):
        self._outbox = outbox
        self._clock = clock
        self._urls: dict[str, str | None] = {}  # the job's URL as its sidecar shows it
        self._runs: dict[str, _Run] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, StatusChanged):
            self._urls[event.sidecar.id] = event.sidecar.url
        elif isinstance(event, JobStarted):
            self._started(event)
        elif isinstance(event, Progress) and event.phase is Phase.DOWNLOAD:
            self._progress(event)
        elif isinstance(event, JobFinished):
            self._urls.pop(event.job_id, None)
            run = self._runs.pop(event.job_id, None)
            if event.status is Status.OK and event.sidecar is not None:
                self._published(event.sidecar, run)

    def _started(self, event: JobStarted) -> None:
        self._runs[event.job_id] = _Run(self._clock())
        again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
        url = self._urls.get(event.job_id) or "?"
        logger.info("%s: started%s: %s", event.job_id, again, url)

    def _progress(self, event: Progress) -> None:
        run = self._runs.get(event.job_id)
        now = self._clock()
        if run is None or not progress_due(run.last_line, now):
            return
        total = f"{human_size(event.total)}" if event.total is not None else "size unknown"
        if run.last_line is None:
            logger.info("%s: downloading, %s", event.job_id, total)
        elif event.total:
            logger.info(
                "%s: %d%% (%s of %s) at %s/s",
                event.job_id,
                event.done * 100 // event.total,
                human_size(event.done),
                total,
                human_size(event.speed or 0),
            )
        else:
            logger.info(
                "%s: %s so far at %s/s",
                event.job_id,
                human_size(event.done),
                human_size(event.speed or 0),
            )
        run.last_line = now

    def _published(self, sc: Sidecar, run: _Run | None) -> None:
        size = (sc.archive or {}).get("size")
        seconds = self._clock() - run.started if run is not None else None
        took = "" if seconds is None else f" in {seconds:.1f} s"
        speed = (
            f" ({human_size(size / seconds)}/s)"
            if isinstance(size, int) and seconds and seconds > 0
            else ""
        )
        logger.info(
            "%s: published %d file(s) to %s: %s%s%s",
            sc.id,
            len(sc.files),
            self._outbox() / (sc.output or sc.id),
            human_size(size) if isinstance(size, int) else "size unknown",
            took,
            speed,
        )
