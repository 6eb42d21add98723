"""Queue control end to end: ``dropfetch pause`` / ``resume`` (partial kept, the worker
let go, a Range request on resume, a restart and a delete while paused), ``priority``
(a high job goes before waiting low ones; a running one is not interrupted) and
``dropfetch retry`` of a waiting job (the next try at once, the attempt count kept)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from archives import tar_bytes
from harness import DEBUG_LOG, FAST_TICK, Daemon, wait_for, wait_looked

SMALL = {"a.txt": b"alpha\n", "dir/b.txt": b"beta\n" * 100}
SLOW = 3_000_000


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropfetch", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _partials(d: Daemon) -> list[Path]:
    return sorted((d.work / "partial").glob("*.part"))


def test_pause_keeps_the_partial_lets_the_worker_go_and_resume_goes_on_with_range(
    fault_server, make_daemon
):
    data = os.urandom(SLOW)
    res = fault_server.add("/slow.bin", data, rate=100_000)
    fault_server.add("/other.tar.gz", tar_bytes(SMALL, compression="gz"))
    d = make_daemon(workers=1, shutdown_timeout=10, **DEBUG_LOG)
    d.drop("slow", fault_server.url("/slow.bin"))
    wait_for(
        lambda: (d.sidecar("slow") or {}).get("bytes_done", 0) > 200_000,
        message="the download to be under way",
    )
    out = cli("pause", "slow", "--inbox", str(d.inbox))
    assert out.returncode == 0 and "pausing" in out.stdout, out.stderr
    sc = d.wait_status("slow", "paused")
    assert sc["attempt"] == 0 and sc["error"] is None, sc  # a pause is no failed attempt
    assert sc["bytes_done"] > 200_000 and sc["bytes_total"] == SLOW
    assert (d.inbox / "slow.pause").is_file()
    wait_for(lambda: "slow: paused; partial download kept" in d.log(), message="the log line")
    [partial] = _partials(d)
    kept = partial.stat().st_size
    assert 200_000 <= kept < SLOW and partial.read_bytes() == data[:kept]
    assert not (d.work / "leases" / "slow.lease").exists()  # the lease is let go

    # the one worker is free: another job runs meanwhile
    d.drop("other", fault_server.url("/other.tar.gz"))
    assert d.wait_status("other")["status"] == "ok"
    assert d.sidecar("slow")["status"] == "paused"  # type: ignore[index]

    # a restart while paused: it stays paused, nothing is fetched
    requests = len(fault_server.requests_for("/slow.bin"))
    d.signal(signal.SIGTERM)
    assert d.proc is not None and d.proc.wait(60) == 0
    d.start(env=FAST_TICK)
    wait_looked(d)
    assert d.sidecar("slow")["status"] == "paused"  # type: ignore[index]
    assert len(fault_server.requests_for("/slow.bin")) == requests
    assert partial.stat().st_size == kept

    res.rate = None
    out = cli("resume", "slow", "--inbox", str(d.inbox))
    assert out.returncode == 0 and "resuming" in out.stdout, out.stderr
    sc = d.wait_status("slow")
    assert sc["status"] == "ok" and sc["attempt"] == 1, sc
    assert fault_server.requests_for("/slow.bin")[-1].header("Range") == f"bytes={kept}-"
    assert (d.outbox / "slow" / "slow.bin").read_bytes() == data
    assert not _partials(d) and not (d.inbox / "slow.pause").exists()
    assert cli("resume", "slow", "--inbox", str(d.inbox)).returncode == 1  # not paused


def test_a_job_paused_before_it_runs_waits_and_a_delete_purges_it(fault_server, make_daemon):
    data = os.urandom(SLOW)
    fault_server.add("/slow.bin", data, rate=100_000)
    d = make_daemon(workers=1)
    d.drop("slow", fault_server.url("/slow.bin"))
    wait_for(
        lambda: (d.sidecar("slow") or {}).get("bytes_done", 0) > 100_000,
        message="the download to be under way",
    )
    assert cli("pause", "slow", "--inbox", str(d.inbox)).returncode == 0
    d.wait_status("slow", "paused")
    # a job dropped with its pause request already there is never started
    (d.inbox / "later.pause").write_text("")
    d.drop("later", fault_server.url("/slow.bin"))
    sc = d.wait_status("later", "paused")
    assert sc["attempt"] == 0 and sc["url"] is None and sc["bytes_done"] == 0, sc
    assert len(fault_server.requests_for("/slow.bin")) == 1  # the first job's only
    # a new version of the paused job file is paused too (its own sidecar)
    first = sc["job_sha256"]
    d.drop("later", f"{fault_server.url('/slow.bin')}?v=2")
    wait_for(
        lambda: (d.sidecar("later") or {}).get("job_sha256") not in (None, first),
        message="the new version's sidecar",
    )
    assert d.sidecar("later")["status"] == "paused"  # type: ignore[index]
    assert len(fault_server.requests_for("/slow.bin")) == 1
    assert _partials(d)

    assert cli("delete", "slow", "--inbox", str(d.inbox)).returncode == 0
    wait_for(lambda: d.sidecar("slow") is None, message="the purge of the paused job")
    assert not (d.inbox / "slow.pause").exists()
    assert not _partials(d)
    (d.inbox / "later.url").unlink()
    wait_for(lambda: d.sidecar("later") is None, message="the purge of the other one")
    assert sorted(os.listdir(d.inbox)) == []


def test_a_high_job_goes_before_waiting_low_ones_and_the_running_one_goes_on(
    fault_server, make_daemon
):
    slow = os.urandom(SLOW)
    res = fault_server.add("/slow.bin", slow, rate=100_000)
    for name in ("l1", "l2", "l3", "h"):
        fault_server.add(f"/{name}.tar.gz", tar_bytes(SMALL, compression="gz"))
    d = make_daemon(start=False, workers=1, **DEBUG_LOG).start(env=FAST_TICK)
    d.drop("slow", fault_server.url("/slow.bin"))
    d.wait_status("slow", "downloading")
    for name in ("l1", "l2", "l3"):
        d.drop(name, f"url: {fault_server.url(f'/{name}.tar.gz')}\npriority: low\n")
    out = cli(
        "submit",
        fault_server.url("/h.tar.gz"),
        "--name",
        "h",
        "--priority",
        "high",
        "--inbox",
        str(d.inbox),
    )
    assert out.returncode == 0, out.stderr
    assert "priority: high" in (d.inbox / "h.url").read_text()
    # all four wait behind the running one (the daemon's own count says so)
    wait_for(
        lambda: any(q >= 4 for _, q in d.status_lines()), message="four jobs queued behind one"
    )
    assert d.sidecar("slow")["status"] == "downloading"  # type: ignore[index]
    res.rate = None  # let the running one finish
    names = ["slow", "h", "l1", "l2", "l3"]
    done = {n: d.wait_status(n) for n in names}
    assert all(sc["status"] == "ok" for sc in done.values()), done
    order = sorted(names, key=lambda n: done[n]["finished"])
    assert order == names, order
    assert done["slow"]["attempt"] == 1  # not interrupted: one request, no Range
    [only] = fault_server.requests_for("/slow.bin")
    assert only.header("Range") is None


def test_retry_of_a_waiting_job_tries_now_and_keeps_the_attempt_count(fault_server, make_daemon):
    fault_server.add("/flaky.tar.gz", tar_bytes(SMALL, compression="gz"), statuses=[503])
    d = make_daemon(download={"backoff_initial": 600, "backoff_max": 600})
    d.drop("flaky", fault_server.url("/flaky.tar.gz"))
    sc = d.wait_status("flaky", "waiting")
    assert sc["attempt"] == 1 and sc["next_attempt_at"], sc
    out = cli("retry", "flaky", "--inbox", str(d.inbox))
    assert out.returncode == 0 and "attempt 2" in out.stdout, out.stderr
    sc = d.wait_status("flaky", timeout=60)  # far less than the 300 s or more of backoff
    assert sc["status"] == "ok" and sc["attempt"] == 2, sc
    assert len(fault_server.requests_for("/flaky.tar.gz")) == 2
    assert not (d.inbox / "flaky.retry").exists()  # used up
    assert "flaky: retrying now" in d.log()


def test_a_paused_streaming_extraction_starts_again_and_the_output_is_whole(
    fault_server, make_daemon
):
    files = {f"d/f{i}.bin": os.urandom(20_000) for i in range(100)}
    body = tar_bytes(files, compression="gz")
    res = fault_server.add("/t.tar.gz", body, rate=100_000)
    d = make_daemon(workers=1)
    d.drop("t", fault_server.url("/t.tar.gz"))
    wait_for(
        lambda: (d.sidecar("t") or {}).get("bytes_done", 0) > 300_000,
        message="the download (and its extraction) to be under way",
    )
    assert cli("pause", "t", "--inbox", str(d.inbox)).returncode == 0
    d.wait_status("t", "paused")
    assert not list((d.work / "staging").iterdir())  # the try's staging is gone
    [partial] = _partials(d)
    kept = partial.stat().st_size
    res.rate = None
    assert cli("resume", "t", "--inbox", str(d.inbox)).returncode == 0
    sc = d.wait_status("t")
    assert sc["status"] == "ok" and sorted(sc["files"]) == sorted(files), sc
    assert fault_server.requests_for("/t.tar.gz")[-1].header("Range") == f"bytes={kept}-"
    assert {f: (d.outbox / "t" / f).read_bytes() for f in files} == files


def test_a_request_left_beside_a_job_that_finishes_is_dropped_with_it(fault_server, make_daemon):
    fault_server.add("/q.tar.gz", tar_bytes(SMALL, compression="gz"))
    d = make_daemon(workers=1)
    d.drop("q", fault_server.url("/q.tar.gz"))
    d.wait_status("q", "ok")
    (d.inbox / "q.retry").write_text("")  # a stale request, as a late pause would be
    assert cli("retry", "q", "--inbox", str(d.inbox)).returncode == 0  # runs it again
    wait_for(lambda: len(fault_server.requests_for("/q.tar.gz")) == 2, message="the rerun")
    d.wait_status("q", "ok")
    wait_for(lambda: not (d.inbox / "q.retry").exists(), message="the request dropped")
