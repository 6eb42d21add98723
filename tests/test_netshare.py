"""Shared directories on a real network filesystem (SPEC §5 observer/lease, §8).

The bed (tests/netshare.py): one export directory mounted twice over sshfs, "host A"
and "host B"; a third daemon may use the export directly. Every daemon has its own
``lease.host_id``, its own config and log (on the local disk), and the same inbox,
outbox and work_dir seen through its own path.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from archives import tar_bytes
from dropfetch.config import load_config
from dropfetch.errors import LeaseLostError
from dropfetch.fsutil import filesystem_type
from dropfetch.leases import Lease, LeaseManager
from dropfetch.watcher import choose_observer
from faultserver import FaultServer
from harness import (
    DEBUG_LOG,
    FAST_TICK,
    Daemon,
    check_sidecar,
    publishes,
    wait_for,
    wait_idle,
    wait_looked,
)
from netshare import NetShare, is_mounted, netshare_fixture, share_bed  # noqa: F401

pytestmark = pytest.mark.netshare

TTL = 3.0
FAST: dict[str, Any] = {
    "poll_interval": 0.5,
    "settle_time": 0.3,
    "rescan_interval": 3,
    "lease": {"ttl": TTL},
    "shutdown_timeout": 5,
    **DEBUG_LOG,  # the lines wait_looked() and wait_idle() read
}


def _daemon(
    make_daemon: Any, tmp_path: Path, view: Path, host: str, *, start: bool = True, **extra: Any
) -> Daemon:
    """A daemon whose config and log live locally, working on the shared ``view``."""
    base = tmp_path / host
    base.mkdir(exist_ok=True)
    config = {
        **FAST,
        "inbox": str(view / "inbox"),
        "outbox": str(view / "outbox"),
        "work_dir": str(view / "work"),
        **extra,
    }
    config["lease"] = {**FAST["lease"], "host_id": host, **extra.get("lease", {})}
    d: Daemon = make_daemon(start=False, base=base, **config)
    d.inbox, d.outbox = view / "inbox", view / "outbox"
    return d.start(env=FAST_TICK) if start else d  # wait_idle() in 1 s, not 10 s


def _drop(inbox: Path, name: str, url: str) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.url.tmp"
    tmp.write_text(url + "\n")
    tmp.rename(inbox / f"{name}.url")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _ranges(server: FaultServer, path: str) -> list[str | None]:
    return [r.header("Range") for r in server.requests_for(path)]


# -- 1. why polling: inotify does not see the other host's writes ----------------------


class _Names(FileSystemEventHandler):
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        with self.lock:
            for p in (event.src_path, getattr(event, "dest_path", "")):
                if p:
                    self.names.add(Path(str(p)).name)

    def seen(self, name: str) -> bool:
        with self.lock:
            return name in self.names


def test_inotify_misses_other_hosts_writes_auto_polls(
    netshare: NetShare, fault_server, make_daemon, tmp_path
):
    area = netshare.area("observer")
    assert filesystem_type(area.host_a) == filesystem_type(area.host_b) == "fuse.sshfs"
    inbox_a, inbox_b = area.host_a / "inbox", area.host_b / "inbox"
    inbox_a.mkdir()
    handler = _Names()
    observer = InotifyObserver(timeout=0.2)
    observer.schedule(handler, str(inbox_a))
    observer.start()
    try:
        _drop(inbox_b, "from-b", "http://127.0.0.1:1/x")  # written through host B
        _drop(inbox_a, "from-a", "http://127.0.0.1:1/x")  # the control, through host A
        # inotify queues events in the order the kernel makes them: one for B's write,
        # had there been one, would have come before this one for A's later write
        wait_for(lambda: handler.seen("from-a.url"), message="inotify to see A's write")
        assert (inbox_a / "from-b.url").exists()  # the file is there on A...
        assert not handler.seen("from-b.url")  # ...but inotify on A never said so
        assert not handler.seen(".from-b.url.tmp")
    finally:
        observer.stop()
        observer.join(5)

    config = load_config(None, inbox=str(inbox_a), outbox=str(area.host_a / "outbox"))
    kind, why = choose_observer(config)
    assert kind == "polling"
    assert "fuse.sshfs" in why

    fault_server.add("/t.tar.gz", tar_bytes({"a.txt": b"A" * 100}, compression="gz"))
    d = _daemon(
        make_daemon, tmp_path, area.host_a, "host-a", observer="auto", rescan_interval=600
    )  # no rescan help: the polling observer must see it
    wait_for(lambda: "polling observer" in d.log(), message="the daemon's observer line")
    assert "fuse.sshfs" in d.log()
    _drop(inbox_b, "job-b", fault_server.url("/t.tar.gz"))
    sc = d.wait_status("job-b")
    assert sc["status"] == "ok", sc
    assert sc["host"] == "host-a"
    assert _files(area.export / "outbox" / "job-b") == {"a.txt": b"A" * 100}


def test_polling_takes_a_file_only_once_it_settled(
    netshare: NetShare, fault_server, make_daemon, tmp_path
):
    """A job file written slowly in place through host B is not taken half-written."""
    area = netshare.area("settle")
    fault_server.add("/slowly-written.tar.gz", tar_bytes({"s": b"settled"}, compression="gz"))
    # settle_time far above the writer's pauses: a loaded machine stretches a pause,
    # and a file unchanged for settle_time may rightly be taken
    d = _daemon(
        make_daemon,
        tmp_path,
        area.host_a,
        "host-a",
        observer="auto",
        poll_interval=0.2,
        settle_time=3.0,
        rescan_interval=600,
    )
    url = fault_server.url("/slowly-written.tar.gz")
    job = area.host_b / "inbox" / "slow.url"
    with open(job, "wb", buffering=0) as fh:  # no temporary name: in place, in pieces
        for i in range(0, len(url), 6):
            fh.write(url[i : i + 6].encode())
            time.sleep(0.3)  # pacing: more than poll_interval, far less than settle_time
        fh.write(b"\n")
    sc = d.wait_status("slow")
    assert sc["status"] == "ok", sc
    assert [r.path for r in fault_server.requests] == ["/slowly-written.tar.gz"]


# -- 2. three daemons, 300 jobs ------------------------------------------------------


@pytest.mark.timeout(1200)
def test_three_hosts_300_jobs_each_published_once(
    netshare: NetShare, fault_server, make_daemon, tmp_path
):
    area = netshare.area("many")
    payloads = {
        f"/j{i}.tar.gz": {"data.txt": f"job {i}\n".encode() * 50, "sub/n": b"%d" % i}
        for i in range(300)
    }
    for path, files in payloads.items():
        fault_server.add(path, tar_bytes(files, compression="gz"))
    hosts = ("host-a", "host-b", "host-x")
    daemons = [
        _daemon(make_daemon, tmp_path, view, host, workers=4)
        for view, host in zip(area.views(), hosts, strict=True)
    ]
    views = [d.inbox for d in daemons]
    for i in range(300):
        _drop(views[i % 3], f"j{i}", fault_server.url(f"/j{i}.tar.gz"))

    inbox = area.export / "inbox"

    def finished() -> int:
        return sum(
            1
            for i in range(300)
            if (sc := _sidecar(inbox, f"j{i}")) and sc["status"] in ("ok", "failed")
        )

    try:
        wait_for(lambda: finished() == 300, 900, 0.5, message="300 jobs to finish")
    except pytest.fail.Exception:
        print(f"finished: {finished()}")
        for d in daemons:
            print(d.log()[-3000:])
        raise
    # every daemon looks at the whole inbox once more and then has nothing left to do
    # (its delayed looks at jobs other hosts held included): a late duplicate had its
    # chance to happen
    wait_looked(*daemons)
    wait_idle(*daemons)
    # exactly once, not fairness: which host ran how many jobs is up to the scheduler
    published_by = {host: publishes(d) for host, d in zip(hosts, daemons, strict=True)}
    by_host: Counter[str] = Counter()
    for i in range(300):
        name = f"j{i}"
        sc = _sidecar(inbox, name)
        assert sc is not None
        check_sidecar(sc)
        assert sc["status"] == "ok", sc
        by_host[sc["host"]] += 1
        times = {h: c[name] for h, c in published_by.items() if c[name]}
        # published once, by the host its sidecar names
        assert times == {sc["host"]: 1}, f"{name}: published {times}, sidecar says {sc['host']}"
        assert _files(area.export / "outbox" / name) == payloads[f"/{name}.tar.gz"], name
    assert sum(sum(c.values()) for c in published_by.values()) == 300
    assert sorted(p.name for p in (area.export / "outbox").iterdir()) == sorted(
        f"j{i}" for i in range(300)
    )
    assert not list((area.export / "work" / "staging").iterdir())
    leases = area.export / "work" / "leases"
    wait_for(
        lambda: not list(leases.iterdir()),
        message=f"every lease to be given back: {sorted(os.listdir(leases))[:10]}",
    )
    for d in daemons:
        assert d.proc is not None and d.proc.poll() is None, d.log()[-2000:]
        assert "Traceback" not in d.log(), d.log()
    print(f"jobs by host: {dict(by_host)}")


def _sidecar(inbox: Path, name: str) -> dict[str, Any] | None:
    import json

    try:
        return json.loads((inbox / f"{name}.status.json").read_bytes())  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None


# -- 3. a host dies: another takes its jobs over and resumes them ----------------------


def test_killed_host_jobs_taken_over_and_resumed(
    netshare: NetShare, fault_server, make_daemon, tmp_path
):
    area = netshare.area("takeover")
    size, rate = 240_000, 60_000  # 4 s per download
    payloads = {}
    for i in range(3):
        payloads[i] = {"big.bin": bytes([i]) * 50 + bytes(range(256)) * (size // 256)}
        fault_server.add(f"/k{i}.tar", tar_bytes(payloads[i]), rate=rate)
    a = _daemon(make_daemon, tmp_path, area.host_a, "host-a", workers=4)
    for i in range(3):
        _drop(a.inbox, f"k{i}", fault_server.url(f"/k{i}.tar"))
    for i in range(3):

        def downloading(i: int = i) -> bool:
            sc = a.sidecar(f"k{i}")
            return sc is not None and sc["status"] == "downloading" and sc["bytes_done"] >= 30_000

        wait_for(downloading, message=f"k{i} to be downloading on A")
    b = _daemon(make_daemon, tmp_path, area.host_b, "host-b", workers=4)
    a.kill()  # kill -9, leases held, partial files left
    killed = time.monotonic()
    for i in range(3):
        # takeover waits behind B's queue: measured up to 49 s on a loaded machine
        sc = b.wait_status(f"k{i}", timeout=300)
        assert sc["status"] == "ok", sc
        assert sc["host"] == "host-b"
        assert _files(area.export / "outbox" / f"k{i}") == payloads[i]
        ranges = _ranges(fault_server, f"/k{i}.tar")
        # A's GET from zero; then B resumes from A's partial file, never from zero (how
        # many tries that takes on a loaded machine is not part of the promise)
        assert ranges[0] is None and len(ranges) >= 2, ranges
        assert all(r is not None and re.fullmatch(r"bytes=[1-9]\d*-", r) for r in ranges[1:]), (
            ranges
        )
    assert time.monotonic() - killed >= TTL - 0.5  # not before the leases went stale
    assert "broke the stale lease of host-a" in b.log()
    jobs = ("k0", "k1", "k2")
    assert publishes(a, b, expect=jobs) == Counter({"k0": 1, "k1": 1, "k2": 1})
    assert publishes(b, expect=jobs) == Counter({"k0": 1, "k1": 1, "k2": 1})


# -- 4. fencing: a paused host wakes up and must not publish ---------------------------


def test_paused_host_is_fenced_off(netshare: NetShare, fault_server, make_daemon, tmp_path):
    area = netshare.area("fencing")
    old = {"v.txt": b"old version " * 20_000}
    new = {"v.txt": b"NEW version " * 20_000}
    fault_server.add("/f.tar", tar_bytes(old), rate=60_000)  # about 4 s
    a = _daemon(make_daemon, tmp_path, area.host_a, "host-a")
    _drop(a.inbox, "f", fault_server.url("/f.tar"))
    wait_for(
        lambda: (
            (sc := a.sidecar("f")) and sc["status"] == "downloading" and sc["bytes_done"] >= 20_000
        ),
        message="f to be downloading on A",
    )
    a.signal(signal.SIGSTOP)
    try:
        # while A sleeps, the file on the server changes: B's copy is the new one, and
        # A's connection (still open) would deliver the old one if A went on unfenced
        fault_server.replace("/f.tar", tar_bytes(new))
        fault_server.resources["/f.tar"].rate = None
        b = _daemon(make_daemon, tmp_path, area.host_b, "host-b")
        sc = b.wait_status("f", timeout=300)
        assert sc["status"] == "ok", sc
        assert sc["host"] == "host-b"
        assert _files(area.export / "outbox" / "f") == new
    finally:
        a.signal(signal.SIGCONT)
    wait_for(lambda: "f: lost the lease" in a.log(), message="A to notice it lost the lease")
    # A had the rest of the old file coming: it has stopped that job, looked at f again
    # later (it requeues a job whose lease it lost) and is done with it: every chance
    # to publish
    wait_idle(a)
    assert a.proc is not None and a.proc.poll() is None
    assert _files(area.export / "outbox" / "f") == new
    got = b.sidecar("f")
    assert got is not None and got["status"] == "ok" and got["host"] == "host-b"
    assert publishes(b, expect=("f",)) == Counter({"f": 1})
    assert publishes(a) == Counter()
    assert "broke the stale lease of host-a" in b.log()


# -- 5. the lease itself, on two mounts ----------------------------------------------


def _managers(area_dir: tuple[Path, Path], ttl: float) -> tuple[LeaseManager, LeaseManager]:
    for d in area_dir:
        (d / "leases").mkdir(parents=True, exist_ok=True)
    return (
        LeaseManager(area_dir[0] / "leases", host_id="host-a", ttl=ttl),
        LeaseManager(area_dir[1] / "leases", host_id="host-b", ttl=ttl),
    )


def test_exclusive_create_race_has_one_winner(netshare: NetShare):
    area = netshare.area("race")
    a, b = _managers((area.host_a, area.host_b), ttl=30)
    for round_ in range(20):
        job = f"race{round_}"
        won: list[Lease] = []
        barrier = threading.Barrier(8)

        def take(
            manager: LeaseManager,
            job: str = job,
            won: list[Lease] = won,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            lease = manager.acquire(job)
            if lease is not None:
                won.append(lease)

        threads = [threading.Thread(target=take, args=(m,)) for m in (a, b) * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1, f"round {round_}: {len(won)} winners"
        won[0].check()


def test_live_lease_survives_a_skewed_clock_and_a_dead_one_is_broken(netshare: NetShare):
    """The heartbeat is the lease's bytes changing, not its mtime against our clock."""
    area = netshare.area("skew")
    # a ttl a loaded machine does not starve this thread of (A's lease would rightly
    # count as lost by A's own clock)
    ttl = TTL
    a, b = _managers((area.host_a, area.host_b), ttl=ttl)
    lease = a.acquire("job")
    assert lease is not None
    hour_ago = time.time() - 3600
    for _ in range(6):  # 1.5 ttl at least: A renews, but its clock is an hour behind
        lease.renew()
        os.utime(lease.path, (hour_ago, hour_ago))
        assert b.acquire("job") is None  # B saw new bytes since its last look
        time.sleep(ttl / 4)  # pacing only: B's verdict does not depend on it
    lease.check()
    # A stops renewing (a dead host): B takes the lease once it has not changed for ttl
    os.utime(lease.path, (time.time() + 3600, time.time() + 3600))  # or an hour ahead
    taken = wait_for(lambda: b.acquire("job"), interval=0.1, message="B to break the lease")
    assert taken.info["host"] == "host-b"
    with pytest.raises(LeaseLostError):
        lease.check()
    b.release(taken)
    assert not (area.export / "leases" / "job.lease").exists()


# -- 6. the bed itself: no listener, no service, always taken down ----------------------


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def _bed_processes(root: Path) -> list[int]:
    """Processes whose command line or working directory is in the bed's ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append(int(entry.name))
    return found


def _sockets_of(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_the_bed_listens_on_no_port(netshare: NetShare):
    """The bed is sshfs talking to sftp-server over pipes: no sshd, nothing listening."""
    (netshare.host_a / "probe").write_text("through A")
    assert (netshare.host_b / "probe").read_text() == "through A"  # it does share
    pids = _bed_processes(netshare.root)
    assert pids, "found no process of the bed"
    names = {Path(os.readlink(f"/proc/{pid}/exe")).name for pid in pids}
    assert names == {"sshfs", "sftp-server"}, names
    listening = _listening_inodes()
    for pid in pids:
        assert not _sockets_of(pid) & listening, f"pid {pid} listens on a port"
    (netshare.export / "probe").unlink()


@pytest.mark.usefixtures("netshare")  # skipped where the bed cannot be had
def test_the_bed_is_taken_down_when_a_test_fails(tmp_path):
    root = tmp_path / "bed"
    root.mkdir()
    with pytest.raises(ZeroDivisionError), share_bed(root) as (share, pids):  # noqa: PT012
        (share.host_a / "f").write_text("x")
        assert is_mounted(share.host_a) and is_mounted(share.host_b)
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        1 / 0  # noqa: B018 - a failing test
    assert not is_mounted(root / "host-a") and not is_mounted(root / "host-b")
    # every process of the bed has ended and been reaped
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], pids
    assert (root / "export" / "f").read_text() == "x"


# -- 7. queue control across hosts: a pause written through the other mount ---------------


def test_pause_and_resume_through_the_other_hosts_mount(
    netshare: NetShare, fault_server, make_daemon, tmp_path
):
    area = netshare.area("pause")
    data = os.urandom(2_000_000)
    res = fault_server.add("/p.bin", data, rate=100_000)
    a = _daemon(make_daemon, tmp_path, area.host_a, "host-a", workers=1)
    _drop(a.inbox, "p", fault_server.url("/p.bin"))
    wait_for(
        lambda: (a.sidecar("p") or {}).get("bytes_done", 0) > 100_000,
        message="p to be downloading on A",
    )
    b_inbox = area.host_b / "inbox"
    out = subprocess.run(
        [sys.executable, "-m", "dropfetch", "pause", "p", "--inbox", str(b_inbox)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    sc = a.wait_status("p", "paused")  # A polls the share and lets the job go
    assert sc["host"] == "host-a" and sc["bytes_done"] > 100_000, sc
    [partial] = (area.export / "work" / "partial").glob("*.part")
    kept = partial.stat().st_size
    assert partial.read_bytes() == data[:kept]
    res.rate = None
    out = subprocess.run(
        [sys.executable, "-m", "dropfetch", "resume", "p", "--inbox", str(b_inbox)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    sc = a.wait_status("p")
    assert sc["status"] == "ok", sc
    assert _ranges(fault_server, "/p.bin")[-1] == f"bytes={kept}-"
    assert (area.export / "outbox" / "p" / "p.bin").read_bytes() == data
