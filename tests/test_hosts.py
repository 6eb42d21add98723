"""Hosts that die, attempt counting, fenced publishing and output ownership (SPEC §7, §8).

Several daemons with distinct ``lease.host_id`` on one local directory are several
hosts on a shared directory as far as the lease logic goes; the takeover test also
runs on the sshfs bed (tests/netshare.py) where it is available.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from archives import tar_bytes
from dropfetch import fsutil
from dropfetch.config import load_config
from dropfetch.fsutil import publish_dir
from dropfetch.jobfile import job_sha256
from dropfetch.jobqueue import JobQueue
from dropfetch.jobrun import JobRun
from dropfetch.leases import Lease, LeaseManager
from dropfetch.pool import WorkerPool
from dropfetch.status import Sidecar, Status
from harness import Daemon, publishes, wait_for
from netshare import NetShare, netshare_fixture  # noqa: F401 - the fixture

TTL = 3.0
FAST: dict[str, Any] = {
    "poll_interval": 0.5,
    "settle_time": 0.2,
    "rescan_interval": 2,
    "shutdown_timeout": 5,
}


def _host(
    make_daemon: Any,
    tmp_path: Path,
    view: Path,
    host: str,
    *,
    start: bool = True,
    env: dict[str, str] | None = None,
    **extra: Any,
) -> Daemon:
    """A daemon of its own ``host_id`` (config and log local) on the shared ``view``."""
    base = tmp_path / host
    base.mkdir(exist_ok=True)
    config = {
        **FAST,
        "inbox": str(view / "inbox"),
        "outbox": str(view / "outbox"),
        "work_dir": str(view / "work"),
        **extra,
    }
    config["lease"] = {"ttl": TTL, **extra.get("lease", {}), "host_id": host}
    config["log"] = {"level": "debug"}
    d: Daemon = make_daemon(start=False, base=base, **config)
    d.inbox, d.outbox = view / "inbox", view / "outbox"
    return d.start(env=env) if start else d


def _logged(d: Daemon, text: str) -> bool:
    return text in d.log()


def _holder(work: Path, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((work / "leases" / f"{name}.lease").read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- 1. takeover is fast --------------------------------------------------------------


def test_urgent_entries_go_before_a_backlog() -> None:
    q = JobQueue()
    for i in range(100):
        q.put(f"backlog{i}")
    due = time.monotonic() + 0.2
    q.put("takeover", delay=0.2, urgent=True)
    assert q.get(timeout=0) == "backlog0"  # not due yet: the backlog goes on meanwhile
    wait_for(lambda: time.monotonic() > due + 0.01, message="the urgent entry to be due")
    assert q.get(timeout=0) == "takeover"  # due later than the backlog, taken first
    assert len(q) == 99
    # an id is queued once: the earlier due time wins, urgency sticks
    q.put("backlog5", delay=5, urgent=True)
    assert q.get(timeout=0) == "backlog5"
    assert q.get(timeout=0) == "backlog1"


def test_finished_jobs_are_recognised_without_taking_a_lease(tmp_path):
    """A rescan of many finished jobs costs a sidecar read each, no lease round trip,
    so it does not compete with takeovers (and does not load a shared lease dir)."""
    config = load_config(None, inbox=str(tmp_path / "inbox"), outbox=str(tmp_path / "outbox"))
    config.inbox.mkdir()
    (config.work / "leases").mkdir(parents=True)
    asked: list[str] = []

    class Held(LeaseManager):
        def acquire(self, job_id: str) -> Lease | None:
            asked.append(job_id)
            return None  # as if another host held every lease

    pool = WorkerPool(config, Held(config.work / "leases", host_id="h", ttl=TTL))
    for i in range(200):
        data = b"http://127.0.0.1:1/%d\n" % i
        (config.inbox / f"j{i}.url").write_bytes(data)
        sidecar = Sidecar(
            id=f"j{i}",
            job=f"j{i}.url",
            job_sha256=job_sha256(data),
            status=Status.OK if i % 2 else Status.FAILED,
            attempt=1,
        )
        (config.inbox / f"j{i}.status.json").write_bytes(sidecar.to_json())
    (config.inbox / "j7.url").write_bytes(b"http://127.0.0.1:1/new-version\n")
    for i in range(200):
        JobRun(pool.context(), f"j{i}").run(None)  # type: ignore[arg-type]
    assert asked == ["j7"]  # only the job whose file changed since it finished
    assert len(pool.queue) == 1


def _takeover(
    make_daemon: Any, tmp_path: Path, fault_server: Any, views: tuple[Path, Path, Path]
) -> None:
    contents = {f"h{i}": {"big.bin": bytes([i]) * 400_000} for i in range(2)}
    held = {name: tar_bytes(files) for name, files in contents.items()}
    fillers = {f"f{i:02d}": tar_bytes({"n.txt": bytes([i]) * 70_000}) for i in range(48)}
    for name, body in held.items():
        fault_server.add(f"/{name}.tar", body, rate=40_000)  # 10 s: A holds them
    for name, body in fillers.items():
        fault_server.add(f"/{name}.tar", body, rate=70_000)  # about 1 s each
    a = _host(make_daemon, tmp_path, views[0], "host-a", workers=2)
    for name in held:
        a.drop(name, fault_server.url(f"/{name}.tar"))
    for name in held:

        def downloading(n: str = name) -> bool:
            sc = a.sidecar(n)
            return (
                sc is not None
                and sc["status"] == "downloading"
                and sc["host"] == "host-a"
                and sc["bytes_done"] > 0
            )

        wait_for(downloading, 30, message=f"{name} downloading on host-a")
    b = _host(make_daemon, tmp_path, views[1], "host-b", workers=2)
    c = _host(make_daemon, tmp_path, views[2], "host-c", workers=2)
    for d in (b, c):  # the steady state: every host has seen the jobs (held elsewhere)
        for name in held:
            wait_for(
                functools.partial(_logged, d, f"{name}: the lease is another holder's"),
                30,
                message=f"{name} seen held by another host",
            )
    for name in fillers:  # a backlog for B and C: every re-look must not wait behind it
        b.drop(name, fault_server.url(f"/{name}.tar"))
    wait_for(
        lambda: sum(1 for n in fillers if (b.sidecar(n) or {}).get("status") == "downloading") >= 3,
        30,
        message="B and C busy with the backlog",
    )
    a.kill()  # kill -9 with two leases held
    killed = time.monotonic()
    taken: dict[str, float] = {}

    def new_holders() -> bool:
        for name in held:
            h = _holder(views[1] / "work", name)
            if name not in taken and h is not None and h.get("host") != "host-a":
                taken[name] = time.monotonic() - killed
        return len(taken) == len(held)

    bound = 1.5 * TTL + 4.0
    wait_for(
        new_holders,
        bound,
        0.05,
        message=f"every job of the killed host to get a new holder within {bound} s "
        f"(so far {taken})",
    )
    left = sum(1 for n in fillers if (b.sidecar(n) or {}).get("status") not in ("ok",))
    print(
        f"takeover after kill -9 (ttl {TTL}): {sorted(taken.values())} s; "
        f"{left} backlog jobs not finished yet"
    )
    for name in [*held, *fillers]:
        sc = b.wait_status(name, timeout=120)
        assert sc["status"] == "ok", sc
    for name in held:
        got = b.sidecar(name)
        assert got is not None and got["host"] in ("host-b", "host-c"), got
        assert got["attempt"] == 1, got  # the kill was no failed attempt
        ranges = [r.header("Range") for r in fault_server.requests_for(f"/{name}.tar")]
        assert len(ranges) == 2 and ranges[0] is None and ranges[1], ranges  # resumed
        assert _files(views[1] / "outbox" / name) == contents[name]
    counts = publishes(a, b, c, expect=(*held, *fillers))
    assert counts == Counter(dict.fromkeys([*held, *fillers], 1)), counts
    for name in fillers:
        assert len(fault_server.requests_for(f"/{name}.tar")) == 1, name


def test_killed_hosts_jobs_are_taken_over_within_ttl_despite_a_backlog(
    fault_server, make_daemon, tmp_path
):
    shared = tmp_path / "shared"
    shared.mkdir()
    _takeover(make_daemon, tmp_path, fault_server, (shared, shared, shared))


@pytest.mark.netshare
def test_takeover_within_ttl_on_the_sshfs_bed(
    netshare: NetShare, fault_server, make_daemon, tmp_path
):
    area = netshare.area("fast-takeover")
    _takeover(make_daemon, tmp_path, fault_server, area.views())


def test_restart_takes_back_its_own_dead_leases_before_other_work(
    fault_server, make_daemon, tmp_path
):
    body = tar_bytes({"big.bin": os.urandom(600_000)})
    res = fault_server.add("/held.tar", body, rate=60_000)
    for i in range(8):
        fault_server.add(f"/a{i}.tar", tar_bytes({"x": b"%d" % i * 50_000}), rate=40_000)
    d = _host(make_daemon, tmp_path, tmp_path / "data", "host-a", workers=1, lease={"ttl": 30})
    d.drop("zz-held", fault_server.url("/held.tar"))
    wait_for(
        lambda: (d.sidecar("zz-held") or {}).get("bytes_done", 0) > 50_000,
        30,
        message="zz-held downloading",
    )
    assert d.proc is not None
    old_pid = d.proc.pid
    d.kill()
    for i in range(8):  # a backlog, sorted before the held job, each slow
        d.drop(f"a{i}", fault_server.url(f"/a{i}.tar"))
    d.start()
    new = wait_for(
        lambda: (h := _holder(d.work, "zz-held")) and h["pid"] != old_pid and h,
        20,
        0.05,
        message="the restarted daemon to take back its dead lease",
    )
    assert new["host"] == "host-a" and d.proc is not None and new["pid"] == d.proc.pid
    # one worker: the lease of the dead process went first, before any of the backlog
    assert not any(r.path.startswith("/a") for r in fault_server.requests)
    res.rate = None
    sc = d.wait_status("zz-held", timeout=60)
    assert sc["status"] == "ok" and sc["attempt"] == 1, sc


# -- 2. abandoned temporary files ------------------------------------------------------


def test_start_removes_own_abandoned_temporaries_everywhere(make_daemon):
    d = make_daemon(start=False, recursive=True)
    work = d.work
    dirs = [d.inbox, d.inbox / "cat", d.outbox, work / "partial", work / "leases"]
    for p in dirs:
        p.mkdir(parents=True, exist_ok=True)
    host, dead, live = fsutil._HOST, _dead_pid(), os.getpid()  # noqa: SLF001 - the name format under test
    abandoned, kept = [], []
    for i, p in enumerate(dirs):
        stem = {
            0: "job.status.json",
            1: "sub.status.json",
            2: "job.tar.gz",
            3: "job.part.meta",
            4: "job.lease.broken",
        }[i]
        abandoned.append(p / f".{stem}.dftmp.{host}.{dead}.{i}")
        kept.append(p / f".{stem}.dftmp.{host}.{live}.{i}")  # a live process's
        kept.append(p / f".{stem}.dftmp.other-host.{dead}.{i}")  # another host's
    for p in abandoned + kept:
        p.write_bytes(b"{}")
    # a staging token revoked (renamed aside) by a process that died before removing it
    (work / "staging").mkdir()
    (work / "staging" / f".revoked.dftmp.{host}.{dead}.9" / "out").mkdir(parents=True)
    staged_kept = [f".revoked.dftmp.{host}.{live}.9", f".revoked.dftmp.other-host.{dead}.9"]
    for name in staged_kept:
        (work / "staging" / name).mkdir()
    d.start()
    wait_for(lambda: "dropfetch running" in d.log(), message="the start-up to finish")
    left = [p for p in abandoned if p.exists()]
    assert not left, left
    assert all(p.exists() for p in kept)
    assert sorted(p.name for p in (work / "staging").iterdir()) == sorted(staged_kept)


# -- 3. attempts ---------------------------------------------------------------------


def test_kill_mid_download_again_and_again_is_not_a_failed_attempt(fault_server, make_daemon):
    body = tar_bytes({"big.bin": os.urandom(1_500_000)})
    res = fault_server.add("/big.tar", body, rate=150_000)
    d = make_daemon(download={"max_attempts": 3})  # 4 kills: fewer than 2 * 3 starts
    d.drop("big", fault_server.url("/big.tar"))
    done = 0
    for _ in range(4):

        def progressed(done: int = done) -> bool:
            return (d.sidecar("big") or {}).get("bytes_done", 0) > done + 50_000

        wait_for(progressed, 30, message="the download to make progress")
        done = (d.sidecar("big") or {})["bytes_done"]
        d.kill()
        d.start()
    res.rate = None
    sc = d.wait_status("big", timeout=60)
    assert sc["status"] == "ok", sc
    assert sc["attempt"] == 1, sc
    assert len(fault_server.requests_for("/big.tar")) == 5
    assert not list((d.work / "partial").iterdir())  # the start count went with the job


def test_a_job_that_crashes_the_daemon_every_time_fails_after_a_bound(fault_server, make_daemon):
    fault_server.add("/crash.tar", tar_bytes({"a": b"a"}))
    fault_server.add("/fine.tar", tar_bytes({"b": b"b"}))
    d = make_daemon(start=False, workers=1, download={"max_attempts": 2})
    env = {"DROPFETCH_TEST_CRASH": "publish"}
    d.drop("crash", fault_server.url("/crash.tar"))
    deaths = 0
    for _ in range(10):
        d.start(env=env)
        wait_for(
            lambda: (
                d.proc.poll() is not None or (d.sidecar("crash") or {}).get("status") == "failed"
            ),
            60,
            message="the daemon to crash or the job to fail",
        )
        if d.proc.poll() is None:
            break
        assert d.proc.returncode == -signal.SIGKILL
        deaths += 1
        d.kill()
    sc = d.sidecar("crash")
    assert sc is not None and sc["status"] == "failed", sc
    assert deaths == 4  # STARTS_PER_ATTEMPT * max_attempts starts cut short, then failed
    assert sc["error"]["code"] == "io_error"
    assert "4 times in a row" in sc["error"]["message"], sc
    assert sc["attempt"] == 1  # no try ended in an error
    assert len(fault_server.requests_for("/crash.tar")) == 4
    assert not (d.outbox / "crash").exists()
    assert d.proc.poll() is None  # the daemon serves on


# -- 4. fenced publishing ------------------------------------------------------------


@pytest.mark.parametrize("exchange", [True, False])
def test_publish_out_of_a_revoked_token_touches_nothing(tmp_path, exchange):
    """The new holder renamed the old holder's staging token away: the old holder's
    publish (paused after its last lease check) fails and leaves the output alone."""
    outbox = tmp_path / "outbox"
    (outbox / "job").mkdir(parents=True)
    (outbox / "job" / "b.txt").write_text("the new holder's")
    token = tmp_path / "staging" / "job@host-a@1@1"
    (token / "out").mkdir(parents=True)
    (token / "out" / "a.txt").write_text("the stale holder's")
    token.rename(tmp_path / "staging" / "revoked")
    with pytest.raises(FileNotFoundError):
        publish_dir(token / "out", outbox / "job", token / "old", exchange=exchange)
    assert _files(outbox) == {"job/b.txt": b"the new holder's"}
    # and the no-target case: nothing appears
    with pytest.raises(FileNotFoundError):
        publish_dir(token / "out", outbox / "other", token / "old", exchange=exchange)
    assert sorted(p.name for p in outbox.iterdir()) == ["job"]


@pytest.mark.parametrize("exchange", [True, False])
def test_publish_never_replaces_a_file(tmp_path, exchange):
    """An output is a directory: a file in its place (another job's kept archive) stays."""
    (tmp_path / "outbox").mkdir()
    kept = tmp_path / "outbox" / "X.tar.gz"
    kept.write_bytes(b"the kept archive of job X")
    (tmp_path / "token" / "out").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        publish_dir(tmp_path / "token" / "out", kept, tmp_path / "token" / "old", exchange=exchange)
    assert kept.read_bytes() == b"the kept archive of job X"


@pytest.mark.parametrize("exchange", ["1", "0"])
def test_host_paused_between_lease_check_and_publish_is_fenced(
    fault_server, make_daemon, tmp_path, exchange
):
    shared = tmp_path / "shared"
    old = tar_bytes({"v.txt": b"old version"})
    new = tar_bytes({"v.txt": b"NEW version", "w.txt": b"w"})
    fault_server.add("/f.tar", old)
    env = {
        "DROPFETCH_TEST_PAUSE": "publish",
        "DROPFETCH_TEST_PAUSE_SECONDS": str(2 * TTL),
        "DROPFETCH_TEST_NO_EXCHANGE": "0" if exchange == "1" else "1",
    }
    a = _host(make_daemon, tmp_path, shared, "host-a", env=env)
    a.drop("f", fault_server.url("/f.tar"))
    wait_for(
        lambda: "DROPFETCH_TEST_PAUSE=publish" in a.log(),
        30,
        message="A held after its last lease check",
    )
    a.signal(signal.SIGSTOP)
    try:
        fault_server.replace("/f.tar", new)
        b = _host(
            make_daemon,
            tmp_path,
            shared,
            "host-b",
            env={"DROPFETCH_TEST_NO_EXCHANGE": env["DROPFETCH_TEST_NO_EXCHANGE"]},
        )
        sc = b.wait_status("f", timeout=40)
        assert sc["status"] == "ok" and sc["host"] == "host-b", sc
        published = _files(shared / "outbox")
        assert published == {"f/v.txt": b"NEW version", "f/w.txt": b"w"}
    finally:
        a.signal(signal.SIGCONT)
    wait_for(lambda: "f: lost the lease" in a.log(), 30, message="A to find it lost the job")
    assert "staging was revoked" in a.log()  # found out by its publish renames failing
    assert a.proc is not None and a.proc.poll() is None
    assert _files(shared / "outbox") == published  # nothing moved aside or replaced
    assert sorted(p.name for p in (shared / "outbox").iterdir()) == ["f"]
    assert publishes(b, expect=("f",)) == Counter({"f": 1}) and publishes(a) == Counter()
    got = b.sidecar("f")
    assert got is not None and got["status"] == "ok" and got["host"] == "host-b", got
    wait_for(
        lambda: not list((shared / "work" / "staging").iterdir()), 10, message="no staging left"
    )


# -- 5. outputs belong to one job --------------------------------------------------------


def _removed(d: Daemon, name: str) -> None:
    (d.inbox / f"{name}.url").unlink()
    wait_for(lambda: d.sidecar(name) is None, 30, message=f"{name} purged")


def test_kept_archive_and_a_job_of_that_name_conflict_both_orders(fault_server, make_daemon):
    fault_server.add("/x.tar.gz", tar_bytes({"in.txt": b"x"}, compression="gz"))
    fault_server.add("/plain.bin", b"plain " * 100)
    d = make_daemon(keep_archive=True)
    # the archive first: outbox/X and its kept outbox/X.tar.gz, then a job X.tar.gz
    d.drop("X", fault_server.url("/x.tar.gz"))
    assert d.wait_status("X")["status"] == "ok"
    assert (d.outbox / "X.tar.gz").is_file()
    d.drop("X.tar.gz", fault_server.url("/plain.bin"))
    sc = d.wait_status("X.tar.gz")
    assert sc["status"] == "failed" and sc["error"]["code"] == "name_conflict", sc
    assert "'X'" in sc["error"]["message"], sc
    assert (d.outbox / "X.tar.gz").is_file()  # the kept archive, untouched
    _removed(d, "X.tar.gz")
    assert (d.outbox / "X.tar.gz").is_file() and (d.outbox / "X" / "in.txt").is_file()
    _removed(d, "X")
    assert not (d.outbox / "X").exists() and not (d.outbox / "X.tar.gz").exists()

    # the job first: outbox/Y.tar.gz is its output directory, then Y would keep its archive
    d.drop("Y.tar.gz", fault_server.url("/plain.bin"))
    assert d.wait_status("Y.tar.gz")["status"] == "ok"
    d.drop("Y", fault_server.url("/x.tar.gz"))
    sc = d.wait_status("Y")
    assert sc["status"] == "failed" and sc["error"]["code"] == "name_conflict", sc
    assert "'Y.tar.gz'" in sc["error"]["message"], sc
    assert not (d.outbox / "Y").exists()  # nothing of Y published
    assert _files(d.outbox / "Y.tar.gz") == {"plain.bin": b"plain " * 100}
    _removed(d, "Y")
    assert _files(d.outbox / "Y.tar.gz") == {"plain.bin": b"plain " * 100}
    _removed(d, "Y.tar.gz")
    assert not (d.outbox / "Y.tar.gz").exists()


def test_category_and_a_top_level_job_of_that_name_conflict_both_orders(fault_server, make_daemon):
    fault_server.add("/a.tar", tar_bytes({"a.txt": b"a"}))
    fault_server.add("/top.tar", tar_bytes({"top.txt": b"top"}))
    d = make_daemon(recursive=True)
    # the category first
    d.drop("a", fault_server.url("/a.tar"), directory=d.inbox / "C")
    assert d.wait_status("C/a")["status"] == "ok"
    d.drop("C", fault_server.url("/top.tar"))
    sc = d.wait_status("C")
    assert sc["status"] == "failed" and sc["error"]["code"] == "name_conflict", sc
    assert "inbox/C/" in sc["error"]["message"], sc
    assert _files(d.outbox / "C") == {"a/a.txt": b"a"}
    _removed(d, "C")
    assert _files(d.outbox / "C") == {"a/a.txt": b"a"}
    _removed(d, "C/a")
    assert not (d.outbox / "C" / "a").exists()

    # the top-level job first
    d.drop("D", fault_server.url("/top.tar"))
    assert d.wait_status("D")["status"] == "ok"
    d.drop("a", fault_server.url("/a.tar"), directory=d.inbox / "D")
    sc = d.wait_status("D/a")
    assert sc["status"] == "failed" and sc["error"]["code"] == "name_conflict", sc
    assert "'D'" in sc["error"]["message"], sc
    assert _files(d.outbox / "D") == {"top.txt": b"top"}
    _removed(d, "D/a")
    assert _files(d.outbox / "D") == {"top.txt": b"top"}
    _removed(d, "D")
    assert not (d.outbox / "D").exists()
