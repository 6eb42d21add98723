"""Signals and the service manager, end to end (issue 3, SPEC §4 and §10).

SIGTERM: graceful stop that keeps the partial file; a second SIGTERM (SIGINT) stops at
once with 143 (130). SIGHUP: reload (workers, poll_interval), a bad file keeps the old
configuration, a restart key keeps its old value, -v survives. sd_notify over a
datagram socket of the test's own. Disk space waits. Missing directories.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from archives import tar_bytes, zip_bytes
from harness import DEBUG_LOG, FAST_TICK, wait_for, wait_looked

SLOW = 3_000_000  # bytes; at 100 kB/s a transfer lasts 30 s, far longer than the tests need


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, directory: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = str(directory / "notify.sock")
        if len(path) >= 100:  # sun_path is short: use the abstract namespace instead
            path = f"@dropfetch-test-{os.getpid()}-{id(self)}"
        self.sock.bind(path.replace("@", "\0", 1) if path.startswith("@") else path)
        self.sock.settimeout(0.2)
        self.address = path
        self.messages: list[str] = []

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.address}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def receive(self) -> None:
        """Take every datagram that has arrived (waits up to 0.2 s for the first)."""
        try:
            while True:
                try:
                    data = self.sock.recv(4096)
                except (TimeoutError, BlockingIOError):
                    return
                self.messages.append(data.decode())
                self.sock.settimeout(0)
        finally:
            self.sock.settimeout(0.2)

    def wait_for(
        self,
        predicate: Callable[[str], bool],
        timeout: float = 20.0,
        message: str = "a notify message",
    ) -> str:
        """The first message (seen so far or arriving) that satisfies ``predicate``."""

        def check() -> str | None:
            self.receive()
            return next((m for m in self.messages if predicate(m)), None)

        return wait_for(check, timeout, interval=0.0, message=message)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)


@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


def _partials(d) -> list[Path]:
    return sorted(p for p in (d.work / "partial").iterdir() if p.suffix == ".part")


def _status_count(d, names, status: str) -> int:
    return sum(1 for n in names if (d.sidecar(n) or {}).get("status") == status)


# -- SIGTERM ------------------------------------------------------------------------------


def test_sigterm_keeps_the_partial_and_the_next_start_resumes(fault_server, make_daemon):
    data = os.urandom(SLOW)
    res = fault_server.add("/slow.bin", data, rate=100_000)
    d = make_daemon(shutdown_timeout=10)
    d.drop("slow", fault_server.url("/slow.bin"))
    wait_for(
        lambda: (d.sidecar("slow") or {}).get("bytes_done", 0) > 200_000,
        message="the download to be under way",
    )
    d.signal(signal.SIGTERM)
    assert d.proc is not None
    assert d.proc.wait(60) == 0
    d.kill()
    # within shutdown_timeout, by the daemon's own clock (the test's would count the
    # start-up and exit of the interpreter, and this machine's load)
    took = re.search(r"stopped in ([\d.]+) s", d.log())
    assert took is not None and float(took.group(1)) <= 10, d.log()[-2000:]
    sc = d.sidecar("slow")
    assert sc["status"] == "queued", sc
    assert sc["error"] is None
    assert sc["attempt"] == 0  # a stop is not a failed attempt
    [partial] = _partials(d)
    kept = partial.stat().st_size
    assert 200_000 <= kept < len(data)
    assert partial.read_bytes() == data[:kept]
    assert not (d.outbox / "slow").exists()
    assert "partial download kept" in d.log()

    res.rate = None
    d.start()
    sc = d.wait_status("slow")
    assert sc["status"] == "ok", sc
    assert sc["attempt"] == 1
    assert fault_server.requests_for("/slow.bin")[-1].header("Range") == f"bytes={kept}-"
    assert (d.outbox / "slow" / "slow.bin").read_bytes() == data
    assert not _partials(d)


def _second_signal_stops_at_once(fault_server, make_daemon, sig: int) -> int:
    fault_server.add("/a.tar", tar_bytes({"a.txt": b"a"}))
    # the worker is held (test hook) where no cancel reaches it: a graceful stop would
    # wait the whole shutdown_timeout
    d = make_daemon(shutdown_timeout=600, start=False)
    d.start(env={"DROPFETCH_TEST_PAUSE": "publish"})
    d.drop("held", fault_server.url("/a.tar"))
    wait_for(lambda: "DROPFETCH_TEST_PAUSE=publish" in d.log(), message="the worker to pause")
    assert d.proc is not None
    d.signal(sig)
    wait_for(lambda: "stopping: no new jobs" in d.log(), message="the graceful stop to begin")
    assert d.proc.poll() is None  # waiting for the held worker (up to 600 s)
    d.signal(sig)
    code = d.proc.wait(60)  # at once, not after the graceful stop's 600 s
    assert "second signal" in d.log()
    assert "stopped in" not in d.log()  # the graceful stop never finished
    return code


def test_second_sigterm_stops_at_once(fault_server, make_daemon):
    # not 0: the stop was not graceful (128 + SIGTERM, as a shell reports it)
    assert _second_signal_stops_at_once(fault_server, make_daemon, signal.SIGTERM) == 143


def test_second_sigint_stops_at_once(fault_server, make_daemon):
    assert _second_signal_stops_at_once(fault_server, make_daemon, signal.SIGINT) == 130


# -- SIGHUP -------------------------------------------------------------------------------


def test_sighup_changes_the_number_of_workers(fault_server, make_daemon):
    names = [f"job{i}" for i in range(4)]
    for n in names:
        fault_server.add(f"/{n}.bin", os.urandom(SLOW), rate=100_000)
    d = make_daemon(workers=1, start=False, **DEBUG_LOG)
    d.start(env=FAST_TICK)
    for n in names:
        d.drop(n, fault_server.url(f"/{n}.bin"))
    wait_for(lambda: _status_count(d, names, "downloading") == 1, message="one download")
    # one worker: the daemon knows all four jobs (it says so twice) and runs one
    since = len(d.status_lines())
    wait_for(
        lambda: d.status_lines()[since:][-2:] == [(1, 3), (1, 3)],
        message="two status lines saying 1 running, 3 queued",
    )
    assert _status_count(d, names, "downloading") == 1
    assert len(fault_server.requests) == 1

    d.config["workers"] = 3
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_for(lambda: _status_count(d, names, "downloading") == 3, message="three downloads at once")
    assert "configuration reloaded" in d.log()
    assert d.proc is not None and d.proc.poll() is None


def test_sighup_with_a_bad_config_keeps_the_old_one(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes({"x.txt": b"x"}))
    d = make_daemon(workers=2)
    good = d.config_path.read_text()
    d.config_path.write_text(good + "workers: -3\nno_such_key: 1\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "keeping the old configuration" in d.log(), message="the reload error")
    assert str(d.config_path) in d.log()
    assert d.proc is not None and d.proc.poll() is None
    d.drop("after", fault_server.url("/x.zip"))
    assert d.wait_status("after")["status"] == "ok"
    # the good file again: reloads fine
    d.config_path.write_text(good)
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log(), message="the reload")


def test_sighup_keeps_the_old_value_of_a_restart_key(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes({"x.txt": b"x"}))
    d = make_daemon(lease={"host_id": "first-host"})
    d.config["lease"] = {"host_id": "second-host"}
    d.config["workers"] = 3
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log(), message="the reload")
    log = d.log()
    assert "SIGHUP: lease.host_id change(s) need a restart; keeping the old value(s)" in log
    assert "applied: workers" in log and "applied: workers, lease" not in log
    d.drop("after", fault_server.url("/x.zip"))
    sc = d.wait_status("after")
    assert sc["status"] == "ok", sc
    assert sc["host"] == "first-host"


def test_sighup_keeps_the_command_lines_verbosity(make_daemon):
    d = make_daemon(start=False)  # the file says info, the command line -v
    d.start("-v", env=FAST_TICK)
    wait_for(d.status_lines, message="a DEBUG status line (-v)")
    d.config["log"] = {"level": "warning"}
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log(), message="the reload (an INFO line)")
    assert "applied: log.level" in d.log()
    seen = len(d.status_lines())
    wait_for(lambda: len(d.status_lines()) > seen, message="DEBUG lines after the reload")


def test_sighup_applies_a_new_poll_interval(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes({"x.txt": b"x"}))
    # neither the observer (every 600 s) nor a rescan (every 600 s) would see a new job
    # within the test's wait: only the reloaded poll_interval does
    d = make_daemon(observer="polling", poll_interval=600, rescan_interval=600, **DEBUG_LOG)
    wait_for(lambda: d.rescans() >= 1, message="the first rescan")
    d.config["poll_interval"] = 0.1
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log(), message="the reload")
    assert "applied: poll_interval" in d.log()
    # the watcher restarts its polling observer, then rescans once (what changed while
    # no observer ran); the next rescan is 600 s away
    wait_for(lambda: d.rescans() >= 2, message="the rescan after the observer's restart")
    d.drop("after", fault_server.url("/x.zip"))
    sc = d.wait_status("after")
    assert sc["status"] == "ok", sc
    assert d.rescans() == 2  # seen by the polling observer, not by a rescan


# -- sd_notify ----------------------------------------------------------------------------


def test_sd_notify_protocol(make_daemon, notify_socket):
    d = make_daemon(start=False)
    d.start(env=notify_socket.env(watchdog_usec=400_000))
    ready = notify_socket.wait_for(lambda m: "READY=1" in m.splitlines(), message="READY=1")
    assert any(line.startswith("STATUS=") for line in ready.splitlines())
    status = notify_socket.wait_for(lambda m: m.startswith("STATUS=") or "\nSTATUS=" in m)
    assert "running" in status and "queued" in status
    notify_socket.wait_for(lambda m: "WATCHDOG=1" in m.splitlines(), message="WATCHDOG=1")

    def pings() -> int:
        notify_socket.receive()
        return sum("WATCHDOG=1" in m.splitlines() for m in notify_socket.messages)

    before = pings()  # they keep coming, at about half the watchdog interval
    wait_for(lambda: pings() >= before + 3, message="more watchdog pings")
    assert d.stop() == 0
    notify_socket.wait_for(lambda m: "STOPPING=1" in m.splitlines(), message="STOPPING=1")


def test_no_notify_socket_is_fine(make_daemon):
    d = make_daemon(start=False)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    d.start(env=env)
    assert d.stop() == 0


# -- disk space ---------------------------------------------------------------------------


def test_disk_full_waits_then_resumes_when_the_limit_is_lowered(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes({"x.txt": b"x" * 1000}))
    d = make_daemon(min_free_space="1000TiB", download={"backoff_initial": 0.2, "backoff_max": 0.5})
    d.drop("space", fault_server.url("/x.zip"))
    sc = d.wait_status("space", "waiting")
    assert sc["error"]["code"] == "disk_full", sc
    assert "min_free_space" in sc["error"]["message"]
    assert sc["next_attempt_at"] is not None
    seen = {sc["next_attempt_at"]}

    def retried() -> bool:  # each retry that finds the disk full sets a new time
        now = d.sidecar("space")
        if now is not None and now["status"] == "waiting":
            seen.add(now["next_attempt_at"])
        return len(seen) >= 3

    wait_for(retried, message="two more retries")
    sc = d.sidecar("space")  # still waiting, attempts not used up
    assert sc["status"] == "waiting" and sc["attempt"] <= 1, sc
    assert not fault_server.requests  # nothing was downloaded

    d.config["min_free_space"] = 0
    d.write_config()
    d.signal(signal.SIGHUP)
    sc = d.wait_status("space")
    assert sc["status"] == "ok", sc
    assert sc["attempt"] == 1
    assert d.output_files("space") == ["x.txt"]


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    try:
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def test_announced_size_that_does_not_fit_waits_until_space_is_freed(
    fault_server, make_daemon, tmp_path
):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "16m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 10 * 2**20)
        data = os.urandom(8 * 2**20)
        fault_server.add("/big.bin", data)
        d = make_daemon(
            base=mnt, min_free_space="1MiB", download={"backoff_initial": 0.3, "backoff_max": 0.5}
        )
        d.drop("big", fault_server.url("/big.bin"))
        sc = d.wait_status("big", "waiting")
        assert sc["error"]["code"] == "disk_full", sc
        # refused on the announced size: nothing was written towards a full disk
        assert sum(p.stat().st_size for p in _partials(d)) == 0
        filler.unlink()
        sc = d.wait_status("big")
        assert sc["status"] == "ok", sc
        assert (d.outbox / "big" / "big.bin").read_bytes() == data
        d.kill()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


# -- missing directories ------------------------------------------------------------------


@pytest.mark.e2e  # `dropfetch run`
def test_create_dirs_false_refuses_to_start_without_the_inbox(tmp_path):
    inbox = tmp_path / "share" / "inbox"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"inbox": str(inbox), "outbox": str(tmp_path / "out"), "create_dirs": False})
    )
    (tmp_path / "out").mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "dropfetch", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # 1, a runtime failure (not 2, a configuration error): under systemd the service is
    # restarted until the share is mounted
    assert out.returncode == 1
    assert str(inbox) in out.stderr
    assert "create_dirs" in out.stderr
    assert not inbox.exists()


def test_inbox_removed_while_running_pauses_and_resumes(fault_server, make_daemon):
    fault_server.add("/x.zip", zip_bytes({"x.txt": b"x"}))
    d = make_daemon(create_dirs=False, rescan_interval=0.5, start=False, **DEBUG_LOG)
    d.inbox.mkdir()
    d.outbox.mkdir()
    d.start()
    d.drop("before", fault_server.url("/x.zip"))
    d.wait_status("before", "ok")
    # the directory goes away at once, as with an unmount (an rmtree would first delete
    # the job files one by one, which the daemon rightly takes as removed jobs)
    d.inbox.rename(d.base / "gone")
    shutil.rmtree(d.base / "gone")
    wait_for(lambda: "paus" in d.log() and "is gone" in d.log(), message="the pause")
    wait_looked(d)  # it went on looking for the inbox, and is still there
    assert d.proc is not None and d.proc.poll() is None
    d.inbox.mkdir()
    wait_for(lambda: "is back" in d.log(), message="the resume")
    d.drop("after", fault_server.url("/x.zip"))
    assert d.wait_status("after")["status"] == "ok"
    assert d.proc.poll() is None


def test_inbox_unmounted_during_a_download_is_not_a_removal(fault_server, make_daemon):
    data = os.urandom(1_000_000)
    res = fault_server.add("/slow.bin", data, rate=200_000)
    d = make_daemon(create_dirs=False, rescan_interval=0.5, start=False)
    d.inbox.mkdir()
    d.outbox.mkdir()
    d.start()
    d.drop("slow", fault_server.url("/slow.bin"))
    wait_for(
        lambda: (d.sidecar("slow") or {}).get("bytes_done", 0) > 100_000,
        message="the download under way",
    )
    away = d.base / "unmounted"
    d.inbox.rename(away)  # like an unmount: the job files are not deleted, just gone
    wait_for(lambda: "is gone" in d.log(), message="the pause")
    wait_for(lambda: "the job waits for it" in d.log(), message="the job to wait")
    assert [p.suffix for p in _partials(d)] == [".part"]  # kept
    res.rate = None
    away.rename(d.inbox)
    sc = d.wait_status("slow")
    assert sc["status"] == "ok", sc
    assert (d.outbox / "slow" / "slow.bin").read_bytes() == data
    assert "job removed" not in d.log()
    resumed = fault_server.requests_for("/slow.bin")[-1].header("Range")
    assert resumed is not None and resumed != "bytes=0-"
