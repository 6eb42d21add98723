"""Leases: one host runs a job at a time, on shared directories too (SPEC §8).

A lease is the file ``leases/<key>.lease``, created with ``O_EXCL`` (an atomic create on
the server for NFSv3+ and SFTP alike) and holding host, pid, a random token and a
heartbeat counter ``beat``. The holder renews every ``ttl/3`` by rewriting the file in
place through a descriptor on which it has just read its own token, so a renewal never
lands on another host's lease.

No clock is compared between hosts. A host that finds a lease held by another one
remembers the lease's bytes and when (on its own monotonic clock) it first saw them; a
lease whose bytes have not changed for ``ttl`` is stale. A lease of this very host whose
process is gone (same ``host_id``, pid not running) is stale at once. A stale lease is
broken by renaming it to a unique name, which only one host can win; the winner reads
the renamed file back and, should it have changed meanwhile (its holder renewed it),
links it back and gives up.

Fencing: :meth:`Lease.check` (before every sidecar write and before publishing) fails
once the file no longer carries this holder's token, and also once this holder has not
renewed for ``ttl`` by its own clock (a process stopped or starved that long cannot know
whether another host broke the lease meanwhile, so it assumes so).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dropfetch.config import Config
from dropfetch.errors import LeaseLostError, NotRegularFileError
from dropfetch.fsutil import read_regular, temp_name
from dropfetch.lifecycle import Deadline

__all__ = ["LEASE_SIZE", "Lease", "LeaseManager", "lease_key"]

logger = logging.getLogger(__name__)

# Every version of a lease file has this size (JSON padded with spaces), so an in-place
# renewal never truncates and a reader never sees a half-shrunk file.
LEASE_SIZE = 512
# room for ".lease", ".part.meta" and the staging suffix in a 255-byte file name
_MAX_KEY_BYTES = 160
# check() renews first when the last renewal is older than this share of the ttl.
_RENEW_IN_CHECK = 2 / 3


# characters a key never holds as themselves: "/" (a path), "@" (the separator of
# staging names), "~" (the mark of a hashed key) and "%" (the escape itself)
_ESCAPED = {c: f"%{ord(c):02X}" for c in "%/@~"}


def lease_key(job_id: str) -> str:
    """A file-name-safe key for a job id, unique to it ("SUB/NAME" -> "SUB%2FNAME").

    Keys are injective: ``%``, ``/``, ``@`` and ``~`` (and a leading ``.``) are
    percent-encoded, so a short key decodes back to its id; an id whose key would not
    fit a file name (with its suffixes) gets a shortened key that ends with ``~`` and
    a hash of the id, and only those keys contain a ``~``. A key never contains ``@``.
    """
    key = "".join(_ESCAPED.get(c, c) for c in job_id)
    if key.startswith("."):
        key = "%2E" + key[1:]  # never a hidden name, never a temporary one
    raw = key.encode("utf-8", "surrogateescape")
    if len(raw) > _MAX_KEY_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:32]
        key = raw[:100].decode("utf-8", "ignore") + "~" + digest
    return key


def _body(info: dict[str, object]) -> bytes:
    raw = json.dumps(info, separators=(",", ":")).encode()
    if len(raw) >= LEASE_SIZE:
        raise ValueError("lease body too long")  # host ids and job ids are bounded
    return raw.ljust(LEASE_SIZE - 1) + b"\n"


def _parse(raw: bytes) -> dict[str, object] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _read_raw(path: Path) -> bytes | None:
    """The lease's bytes, None when there is none. Anything that is not a regular file
    (a FIFO would block) reads as an unparsable lease: it goes stale after ``ttl``."""
    try:
        return read_regular(path, LEASE_SIZE * 2)
    except FileNotFoundError:
        return None
    except NotRegularFileError:
        return b""


def _read(path: Path) -> dict[str, object] | None:
    try:
        raw = _read_raw(path)
    except OSError:
        return None
    return None if raw is None else _parse(raw)


def _token_of(data: dict[str, object] | None) -> str | None:
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


@dataclass(slots=True)
class Lease:
    """One held lease. ``lost`` is set once this host knows (or must assume) it lost it."""

    job_id: str
    path: Path
    token: str
    info: dict[str, object]
    ttl: float
    renewed: float  # time.monotonic() when the last renewal (or the create) started
    lost: threading.Event = field(default_factory=threading.Event)
    released: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def is_lost(self) -> bool:
        """True once lost; also (without any I/O) once not renewed for ``ttl``."""
        if not self.lost.is_set() and time.monotonic() - self.renewed > self.ttl:
            logger.error(
                "%s: the lease was not renewed for %.1f s (longer than lease.ttl: "
                "paused or starved); another host may have taken the job over",
                self.job_id,
                time.monotonic() - self.renewed,
            )
            self.lost.set()
        return self.lost.is_set()

    def check(self) -> None:
        """Raise LeaseLostError unless this host still holds the lease (fencing)."""
        if not self.is_lost():
            if time.monotonic() - self.renewed > self.ttl * _RENEW_IN_CHECK:
                self.renew()
            elif _token_of(_read(self.path)) != self.token:
                self._lose("another host took over this job")
        if self.lost.is_set():
            raise LeaseLostError(f"{self.job_id}: this host lost the job's lease")

    def renew(self) -> None:
        """Bump the heartbeat, through a descriptor that still holds our token."""
        with self.lock:
            if self.released or self.is_lost():
                return
            started = time.monotonic()
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                self._lose("the lease file is gone")
                return
            except OSError as exc:
                logger.warning("%s: cannot renew the lease: %s", self.job_id, exc)
                return
            try:
                if _token_of(_parse(os.pread(fd, LEASE_SIZE * 2, 0))) != self.token:
                    self._lose("another host took over this job")
                    return
                beat = self.info.get("beat")
                self.info["beat"] = (beat if isinstance(beat, int) else 0) + 1
                os.pwrite(fd, _body(self.info), 0)
                os.fsync(fd)
            except OSError as exc:
                logger.warning("%s: cannot renew the lease: %s", self.job_id, exc)
                return
            finally:
                os.close(fd)
            self.renewed = started

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            logger.error("%s: lost the lease (%s); stopping the job", self.job_id, why)
        self.lost.set()


def _restore(aside: Path, path: Path) -> None:
    """Put a live lease moved aside back (never over a new one), then drop the copy."""
    try:
        os.link(aside, path)  # link() never replaces an existing name
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            logger.warning("%s: cannot put back a live lease: %s", path.name, exc)
    try:
        aside.unlink()
    except OSError:
        pass


class LeaseManager:
    """Takes, renews, checks and releases this host's leases."""

    def __init__(self, directory: Path, *, host_id: str, ttl: float) -> None:
        self.dir = directory
        self.host_id = host_id
        self.ttl = ttl
        self._held: dict[str, Lease] = {}
        self._creating: set[str] = set()  # tokens of leases being created right now
        # other holders' leases: path -> (bytes seen, monotonic time first seen)
        self._observed: dict[Path, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path_for(self, job_id: str) -> Path:
        return self.dir / f"{lease_key(job_id)}.lease"

    # -- taking and giving back ------------------------------------------------------

    def acquire(self, job_id: str) -> Lease | None:
        """The job's lease, or None when another live holder has it."""
        path = self.path_for(job_id)
        try:
            for _ in range(3):
                lease = self._create(job_id, path)
                if lease is not None:
                    with self._lock:
                        self._held[job_id] = lease
                        self._observed.pop(path, None)
                    return lease
                if not self._break_if_stale(path):
                    return None
        except OSError as exc:
            # the caller looks again later, as for a lease held by another host
            logger.warning("%s: cannot take the lease %s: %s", job_id, path, exc)
        return None

    def _create(self, job_id: str, path: Path) -> Lease | None:
        started = time.monotonic()
        token = secrets.token_hex(16)
        info: dict[str, object] = {
            "host": self.host_id,
            "pid": os.getpid(),
            "token": token,
            "job": job_id[:32],
            "taken": round(time.time(), 3),
            "beat": 0,
        }
        with self._lock:
            self._creating.add(token)  # so no other thread here takes it for a dead one's
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                return None
            except PermissionError:
                # sshfs: an exclusive create that loses a race with another host's create
                # comes back from the server as a generic failure, reported as EPERM
                # (the other host may even have given the lease back already)
                if os.access(path.parent, os.W_OK):
                    return None
                raise
            try:
                # no fsync: other hosts see the bytes after close() (NFS close-to-open),
                # and after a power cut every lease of this host is stale anyway
                os.write(fd, _body(info))
            finally:
                os.close(fd)
            # NFS: an O_EXCL create retried after a lost reply can report EEXIST although
            # it was ours, or succeed on a file another wrote: the content decides.
            if _token_of(_read(path)) != token:
                return None
        finally:
            with self._lock:
                self._creating.discard(token)
        return Lease(
            job_id=job_id, path=path, token=token, info=info, ttl=self.ttl, renewed=started
        )

    def look_again_in(self, job_id: str) -> float:
        """Seconds until the lease of ``job_id``, held elsewhere, could be stale.

        That is ``ttl`` after its bytes were first seen as they are now, but at most
        ``ttl/2`` from now: a holder renews every ``ttl/3``, so the first look after
        its last renewal comes at most ``ttl/2`` after it, and the lease is broken
        ``ttl`` after that look: at most ``1.5 * ttl`` after the holder died.
        """
        with self._lock:
            seen = self._observed.get(self.path_for(job_id))
        limit = self.ttl / 2
        if seen is None:
            return limit
        return max(0.05, min(limit, seen[1] + self.ttl - time.monotonic() + 0.05))

    def own_dead(self) -> list[str]:
        """Keys of the leases of this ``host_id`` whose process is gone (a restart
        after a crash takes them back first)."""
        keys = []
        try:
            names = sorted(p.name for p in self.dir.iterdir())
        except OSError:
            return []
        for name in names:
            if (
                not name.startswith(".")
                and name.endswith(".lease")
                and self._of_dead_process(_read(self.dir / name) or {})
            ):
                keys.append(name[: -len(".lease")])
        return keys

    def _of_dead_process(self, data: dict[str, object]) -> bool:
        """Whether a lease says it is this ``host_id``'s, of a process that is gone."""
        pid = data.get("pid")
        return (
            data.get("host") == self.host_id
            and isinstance(pid, int)
            and pid != os.getpid()
            and not _pid_alive(pid)
        )

    def _is_stale(self, path: Path, raw: bytes, data: dict[str, object]) -> bool:
        """Whether the lease at ``path`` (now ``raw``) may be broken."""
        pid = data.get("pid")
        if data.get("host") == self.host_id and isinstance(pid, int):
            if pid == os.getpid():
                return _token_of(data) not in self._tokens()  # an earlier lease of ours
            if not _pid_alive(pid):
                return True  # this host's daemon that held it is gone
        now = time.monotonic()
        with self._lock:
            seen = self._observed.get(path)
            if seen is None or seen[0] != raw:
                self._observed[path] = (raw, now)
                return False
            return now - seen[1] >= self.ttl

    def _break_if_stale(self, path: Path) -> bool:
        """Break the lease at ``path`` if stale; True means "try to create it again"."""
        try:
            raw = _read_raw(path)
        except OSError as exc:
            logger.warning("cannot read the lease %s: %s", path.name, exc)
            return False
        if raw is None:
            return True  # released meanwhile
        data = _parse(raw) or {}
        if not self._is_stale(path, raw, data):
            return False
        aside = temp_name(path.with_name(path.name + ".broken"))
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True  # somebody else broke or released it
        try:
            now_raw = _read_raw(aside)
        except OSError:
            now_raw = None
        if now_raw != raw:
            # renewed (or replaced by a new holder) between our read and the rename:
            # put it back where it was, unless a new lease is there already
            _restore(aside, path)
            return False
        with self._lock:
            self._observed.pop(path, None)
        logger.warning(
            "%s: broke the stale lease of %s (pid %s): taking the job over",
            data.get("job", path.stem),
            data.get("host"),
            data.get("pid"),
        )
        try:
            aside.unlink()
        except OSError:
            pass
        return True

    def _tokens(self) -> set[str]:
        with self._lock:
            return {lease.token for lease in self._held.values()} | self._creating

    def release(self, lease: Lease) -> None:
        """Give the lease back (only if it is still ours)."""
        with self._lock:
            if self._held.get(lease.job_id) is lease:
                del self._held[lease.job_id]
        with lease.lock:
            lease.released = True
            if lease.is_lost():
                return
            try:
                fd = os.open(lease.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
            # unlink while the descriptor that proved the token is still open: a FUSE
            # client that hides open files (.fuse_hidden*, like NFS's .nfs*) then cleans
            # up at our close, instead of racing with the release of a closed one
            try:
                if _token_of(_parse(os.pread(fd, LEASE_SIZE * 2, 0))) == lease.token:
                    lease.path.unlink()
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    logger.warning("%s: cannot give the lease back: %s", lease.job_id, exc)
            finally:
                os.close(fd)

    # -- heartbeat --------------------------------------------------------------------

    name = "leases"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="dropfetch-leases", daemon=True)
        self._thread.start()

    def stop(self, deadline: Deadline) -> bool:
        self._stop.set()
        return self._thread is None or deadline.join([self._thread])

    def apply(self, config: Config) -> None:
        self.ttl = config.lease.ttl

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self.renew_all()

    def renew_all(self) -> None:
        with self._lock:
            leases = list(self._held.values())
            # forget other holders' leases nobody asked about for a while
            horizon = time.monotonic() - 4 * self.ttl
            for path in [p for p, (_, t) in self._observed.items() if t < horizon]:
                del self._observed[path]
        for lease in leases:
            lease.ttl = self.ttl
            try:
                lease.renew()
            except Exception:
                logger.exception("%s: renewing the lease failed", lease.job_id)
