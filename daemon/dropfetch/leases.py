"""Leases: one host runs a job at a time, on shared directories too (SPEC §8).

A lease is the file ``leases/<key>.lease`` created with ``O_EXCL`` (safe on NFSv3+),
holding host, pid and a random token. Its mtime is the heartbeat, renewed every
``ttl/3``. A lease older than ``ttl`` (or one of this host whose process is gone) is
broken by renaming it to a unique name: only one host's rename can succeed. Before a
write that matters, the holder checks the file still carries its token (fencing).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dropfetch.errors import LeaseLostError
from dropfetch.fsutil import temp_name

__all__ = ["Lease", "LeaseManager", "lease_key"]

logger = logging.getLogger(__name__)


def lease_key(job_id: str) -> str:
    """A file-name-safe key for a job id ("SUB/NAME" -> "SUB%2FNAME")."""
    return job_id.replace("%", "%25").replace("/", "%2F")


@dataclass(slots=True)
class Lease:
    job_id: str
    path: Path
    token: str
    lost: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise LeaseLostError unless this host still holds the lease (fencing)."""
        if self.lost.is_set() or _read_token(self.path) != self.token:
            self.lost.set()
            raise LeaseLostError(f"{self.job_id}: another host took over this job")


def _read(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_token(path: Path) -> str | None:
    data = _read(path)
    token = data.get("token") if data else None
    return token if isinstance(token, str) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeaseManager:
    """Takes, renews, checks and releases this host's leases."""

    def __init__(self, directory: Path, *, host_id: str, ttl: float) -> None:
        self.dir = directory
        self.host_id = host_id
        self.ttl = ttl
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path_for(self, job_id: str) -> Path:
        return self.dir / f"{lease_key(job_id)}.lease"

    # -- taking and giving back ------------------------------------------------------

    def acquire(self, job_id: str) -> Lease | None:
        """The job's lease, or None when another live holder has it."""
        path = self.path_for(job_id)
        for _ in range(3):
            lease = self._create(job_id, path)
            if lease is not None:
                with self._lock:
                    self._held[job_id] = lease
                return lease
            if not self._break_if_stale(path):
                return None
        return None

    def _create(self, job_id: str, path: Path) -> Lease | None:
        token = secrets.token_hex(16)
        body = json.dumps({"host": self.host_id, "pid": os.getpid(), "token": token,
                           "job": job_id, "taken": time.time()}).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return None
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        # NFS: an O_EXCL create retried after a lost reply can report EEXIST although it
        # was ours, or succeed on a file another wrote: the content decides.
        if _read_token(path) != token:
            return None
        return Lease(job_id=job_id, path=path, token=token)

    def holder(self, job_id: str) -> dict[str, object] | None:
        """What the lease file of ``job_id`` says, if any (host, pid, ...)."""
        return _read(self.path_for(job_id))

    def _break_if_stale(self, path: Path) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return True  # released meanwhile: try again
        data = _read(path) or {}
        age = time.time() - st.st_mtime
        pid = data.get("pid")
        own_dead = (data.get("host") == self.host_id and isinstance(pid, int)
                    and ((pid == os.getpid() and data.get("token") not in self._tokens())
                         or (pid != os.getpid() and not _pid_alive(pid))))
        if age <= self.ttl and not own_dead and data:
            return False
        if not data and age <= self.ttl:
            return False  # being written right now
        aside = temp_name(path.with_name(path.name + ".broken"))
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True  # somebody else broke or released it
        logger.warning("%s: took over a stale lease of %s (pid %s, %.0f s old)",
                       data.get("job", path.stem), data.get("host"), pid, age)
        try:
            aside.unlink()
        except OSError:
            pass
        return True

    def _tokens(self) -> set[str]:
        with self._lock:
            return {lease.token for lease in self._held.values()}

    def release(self, lease: Lease) -> None:
        """Give the lease back (only if it is still ours)."""
        with self._lock:
            if self._held.get(lease.job_id) is lease:
                del self._held[lease.job_id]
        if lease.lost.is_set() or _read_token(lease.path) != lease.token:
            return
        try:
            lease.path.unlink()
        except FileNotFoundError:
            pass

    # -- heartbeat --------------------------------------------------------------------

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="dropfetch-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self.renew_all()

    def renew_all(self) -> None:
        with self._lock:
            leases = list(self._held.values())
        for lease in leases:
            if _read_token(lease.path) != lease.token:
                if not lease.lost.is_set():
                    logger.error("%s: lost the lease to another host; stopping the job",
                                 lease.job_id)
                lease.lost.set()
                continue
            try:
                os.utime(lease.path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    logger.warning("%s: cannot renew the lease: %s", lease.job_id, exc)
