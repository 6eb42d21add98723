"""The worker pool: ``workers`` threads, the job queue and the map of running jobs."""

from __future__ import annotations

import itertools
import logging
import threading

from dropfetch.config import Config
from dropfetch.context import JobContext, NameLocks
from dropfetch.download import Downloader
from dropfetch.events import EventBus
from dropfetch.intake import scan
from dropfetch.jobfile import job_priority
from dropfetch.jobpaths import job_paths, read_job_of
from dropfetch.jobqueue import JobQueue
from dropfetch.jobrun import JobRun
from dropfetch.leases import LeaseManager, lease_key
from dropfetch.lifecycle import Deadline
from dropfetch.ratelimit import RateLimiter
from dropfetch.removal import clean_own_debris
from dropfetch.testhooks import worker_bug

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)


class WorkerPool:
    """``workers`` threads taking job ids from one queue; each with its own session.

    A job id taken from the queue becomes a :class:`JobRun` with the configuration of
    that moment (a SIGHUP reaches the next run). A worker whose loop dies of a bug is
    logged and replaced; ``healthy`` is true while every configured worker is alive.
    """

    name = "worker pool"

    def __init__(
        self,
        config: Config,
        leases: LeaseManager,
        events: EventBus | None = None,
    ) -> None:
        self.config = config
        self.leases = leases
        self.events = events if events is not None else EventBus()
        self.queue = JobQueue()
        self._running: dict[str, JobRun] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._target = 0  # the configured count
        self._retire = 0  # threads asked to end (shrinking)
        self._stopping = threading.Event()
        self._names = itertools.count(1)
        self._publish_locks = NameLocks()  # owner check and publish, per outbox name
        # download.rate_limit_total: one bucket for every worker's transfers
        self.limiter = RateLimiter(config.download.rate_limit_total)

    def context(self) -> JobContext:
        """What a run that starts now works with (the configuration of this moment)."""
        return JobContext(self.config, self.leases, self.queue, self.events, self._publish_locks)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for sub in ("partial", "staging"):
            (self.config.work / sub).mkdir(parents=True, exist_ok=True)
        clean_own_debris(self.config)
        self._reclaim_own_leases()
        self.resize(self.config.workers)

    def resize(self, workers: int) -> None:
        """Grow or shrink to ``workers`` threads (SIGHUP); shrinking lets jobs finish."""
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            alive = len(self._threads) - self._retire
            for _ in range(workers - alive):
                self._spawn()
            self._retire += max(0, alive - workers)
            self._target = workers
        self.queue.wake_all()

    def _spawn(self) -> None:
        """A new worker thread (the lock held)."""
        t = threading.Thread(
            target=self._thread_main, daemon=True, name=f"dropfetch-worker-{next(self._names)}"
        )
        self._threads.append(t)
        t.start()

    def stop(self, deadline: Deadline) -> bool:
        """Stop taking jobs, checkpoint running ones; True if all stopped in time."""
        self._stopping.set()
        with self._lock:
            for run in self._running.values():
                run.stop("shutdown")
            threads = list(self._threads)
        self.queue.wake_all()
        return deadline.join(threads)

    def healthy(self) -> bool:
        """Every configured worker is alive."""
        with self._lock:
            alive = sum(t.is_alive() for t in self._threads)
            return alive - self._retire == self._target

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def apply(self, config: Config) -> None:
        """SIGHUP: runs that start from now on get ``config``; running ones keep theirs,
        except for ``download.rate_limit_total`` (the shared limiter), which they follow."""
        self.config = config
        self.limiter.set_rate(config.download.rate_limit_total)  # running transfers too
        self.resize(config.workers)

    # -- intake ----------------------------------------------------------------------

    def submit(self, job_id: str, *, delay: float = 0.0) -> None:
        """Look at ``job_id`` soon, queued by its ``priority`` (read here, on the intake
        thread, so it is known before a worker takes the job). A running job is stopped
        if its file went away or changed (and then run again), or was asked to pause.
        The job file is read outside the pool's lock."""
        with self._lock:
            run = self._running.get(job_id)
        if run is None:
            self.queue.put(job_id, delay=delay, priority=self._priority(job_id))
            return
        if not run.file_changed():
            return
        with self._lock:
            if self._running.get(job_id) is run:
                run.rerun = True  # the worker looks again when the run ends
                return
        self.queue.put(job_id)  # the run ended meanwhile

    def _priority(self, job_id: str) -> str:
        try:
            return job_priority(read_job_of(job_paths(self.config, job_id)))
        except OSError:
            return "normal"  # the run says why it cannot read the file

    # -- the worker loop ---------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            self._work()
        except Exception:
            # a bug in the loop itself, outside every job's handling (which logs its own)
            me = threading.current_thread()
            logger.exception(
                "%s died of an unexpected error (a bug in dropfetch); a new worker takes its place",
                me.name,
            )
            with self._lock:
                if me in self._threads:
                    self._threads.remove(me)
                if not self._stopping.is_set():
                    self._spawn()

    def _work(self) -> None:
        downloader = _WorkerDownloader(self.limiter)
        try:
            while not self._stopping.is_set():
                if self._retiring():
                    return
                worker_bug()
                job_id = self.queue.get(timeout=0.5)
                if job_id is None:
                    continue
                if self._stopping.is_set():
                    self.queue.put(job_id)
                    continue
                self._take(job_id, downloader)
        finally:
            downloader.close()

    def _retiring(self) -> bool:
        """Whether this thread ends (the pool shrinks); it leaves the list if so."""
        with self._lock:
            if self._retire <= 0:
                return False
            self._retire -= 1
            self._threads.remove(threading.current_thread())
            return True

    def _take(self, job_id: str, downloader: _WorkerDownloader) -> None:
        """Run the job ``job_id`` on this thread, registered as running meanwhile."""
        run = JobRun(self.context(), job_id)
        with self._lock:
            if job_id in self._running:  # raced with another worker: look later
                self._running[job_id].rerun = True
                return
            self._running[job_id] = run
        try:
            run.run(downloader.for_config(run.ctx.config))
        except Exception:
            # a bug, not the job's fault: look again later rather than drop it
            logger.exception(
                "%s: unexpected error; the daemon goes on and looks at this job again later", job_id
            )
            run.rerun = False
            self.queue.put(job_id, delay=max(30.0, run.ctx.config.rescan_interval))
        finally:
            with self._lock:
                del self._running[job_id]
                rerun = run.rerun
            if rerun and not self._stopping.is_set():
                self.queue.put(job_id)

    def _reclaim_own_leases(self) -> None:
        """After a crash: the jobs whose leases this host's dead process left go first."""
        keys = set(self.leases.own_dead())
        if not keys:
            return
        ids = _inbox_ids(self.config)
        for key in sorted(keys):
            if key in ids:
                logger.info("%s: taking back the lease of this host's earlier process", ids[key])
                self.queue.put(ids[key], urgent=True)


class _WorkerDownloader:
    """A worker's one downloader (its HTTP session), renewed when a run's settings differ."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._downloader: Downloader | None = None
        self._limiter = limiter

    def for_config(self, config: Config) -> Downloader:
        d = self._downloader
        if d is not None and (
            d.config != config.download or d.min_free_space != config.min_free_space
        ):
            d.close()  # SIGHUP changed its settings
            d = None
        if d is None:
            d = Downloader(
                config.download, min_free_space=config.min_free_space, limiter=self._limiter
            )
            self._downloader = d
        return d

    def close(self) -> None:
        if self._downloader is not None:
            self._downloader.close()
            self._downloader = None


def _inbox_ids(config: Config) -> dict[str, str]:
    """The job ids the inbox has job files or sidecars for, by lease key."""
    jobs, sidecars = scan(config.inbox, recursive=config.recursive)
    return {lease_key(job_id): job_id for job_id in jobs | sidecars}
