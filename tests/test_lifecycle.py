"""One shutdown deadline for every component (issue 11): lifecycle.stop_all and Deadline
with fake components on real threads, and a daemon whose every part is stuck at once."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from archives import tar_bytes
from dropfetch.config import Config
from dropfetch.lifecycle import Deadline, start_all, stop_all
from harness import wait_for


class Fake:
    """A component whose stop() blocks until ``release`` is set (when ``stuck``)."""

    def __init__(
        self, name: str, calls: list[str], *, stuck: bool = False, result: bool = True
    ) -> None:
        self.name = name
        self.calls = calls
        self.stuck = stuck
        self.result = result
        self.release = threading.Event()
        self.entered = threading.Event()
        self.left = threading.Event()

    def start(self) -> None:
        self.calls.append(f"start {self.name}")

    def stop(self, _deadline: Deadline) -> bool:
        self.calls.append(f"stop {self.name}")
        self.entered.set()
        try:
            if self.stuck:
                self.release.wait(600)  # ignores the deadline, like a stuck join
            return self.result
        finally:
            self.left.set()

    def healthy(self) -> bool:
        return True

    def apply(self, config: Config) -> None:
        pass


def test_deadline_counts_down_and_expires():
    assert Deadline(0).expired()
    assert Deadline(0).left() == 0.0
    d = Deadline(600)
    assert not d.expired()
    assert 0 < d.left() <= 600


def test_deadline_join_says_whether_the_threads_ended():
    gate = threading.Event()
    t = threading.Thread(target=gate.wait, args=(600,))
    t.start()
    try:
        assert Deadline(0.2).join([t]) is False  # still blocked on the gate
        assert t.is_alive()
    finally:
        gate.set()
    assert Deadline(600).join([t]) is True
    assert not t.is_alive()


def test_start_all_in_order_stop_all_in_reverse():
    calls: list[str] = []
    parts = [Fake("a", calls), Fake("b", calls), Fake("c", calls)]
    start_all(parts)
    assert stop_all(parts, Deadline(600)) is True
    assert calls == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


def test_stop_all_leaves_stuck_components_behind_and_names_them(caplog):
    calls: list[str] = []
    parts = [
        Fake("hooks", calls, stuck=True),
        Fake("pool", calls, stuck=True),
        Fake("http", calls, stuck=True),
    ]
    caplog.set_level(logging.WARNING, logger="dropfetch")
    try:
        deadline = Deadline(0.5)
        assert stop_all(parts, deadline) is False
        assert deadline.expired()
        # every stop was called, none has returned: stop_all did not wait for them
        assert calls == ["stop http", "stop pool", "stop hooks"]
        assert all(p.entered.is_set() and not p.left.is_set() for p in parts)
        for name in ("hooks", "pool", "http"):
            assert f"{name} did not stop within shutdown_timeout" in caplog.text
    finally:
        for p in parts:
            p.release.set()
        for p in parts:
            assert p.left.wait(60)


def test_stop_all_one_stuck_the_others_still_stop(caplog):
    calls: list[str] = []
    stuck = Fake("pool", calls, stuck=True)
    parts = [Fake("hooks", calls), stuck, Fake("http", calls)]
    caplog.set_level(logging.WARNING, logger="dropfetch")
    try:
        assert stop_all(parts, Deadline(0.5)) is False
        assert calls == ["stop http", "stop pool", "stop hooks"]
        assert parts[0].left.is_set() and parts[2].left.is_set()
        assert "pool did not stop" in caplog.text
        assert "hooks did not stop" not in caplog.text
    finally:
        stuck.release.set()
        assert stuck.left.wait(60)


def test_a_stop_that_says_it_failed_counts_as_not_in_time(caplog):
    calls: list[str] = []
    caplog.set_level(logging.WARNING, logger="dropfetch")
    assert stop_all([Fake("leases", calls, result=False)], Deadline(600)) is False
    assert "leases did not stop" in caplog.text


# -- end to end: every component stuck at once ----------------------------------------

SHUTDOWN = 3.0  # shutdown_timeout of the daemon under test
MARGIN = 7.0  # a bound for a loaded machine (interpreter exit, log flush), not a speed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gone(pid: int) -> bool:
    """No such process any more (a zombie that nobody reaps yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_sigterm_with_every_component_stuck_exits_within_shutdown_timeout(
    fault_server, make_daemon, tmp_path: Path
):
    fault_server.add("/held.tar", tar_bytes({"a.txt": b"a"}))  # paused before publishing
    stalled = fault_server.add(
        "/stall.bin", os.urandom(200_000), stall_after=10_000, stall_seconds=120
    )
    # (/missing is not added: a 404, the job fails at once and its hook runs)
    pidfile = tmp_path / "hook.pid"
    hook = [
        "/bin/sh",
        "-c",
        f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; "
        "trap '' TERM; sleep 120; sleep 120",
    ]
    port = _free_port()
    d = make_daemon(
        start=False,
        workers=3,
        shutdown_timeout=SHUTDOWN,
        http={"listen": f"127.0.0.1:{port}"},
        hooks={"on_failed": hook, "timeout": 600},
        download={"timeout_read": 300},
    )
    d.start(env={"DROPFETCH_TEST_PAUSE": "publish", "DROPFETCH_TEST_PAUSE_SECONDS": "120"})
    d.drop("held", fault_server.url("/held.tar"))
    d.drop("stall", fault_server.url("/stall.bin"))
    d.drop("missing", fault_server.url("/missing"))
    wait_for(lambda: "DROPFETCH_TEST_PAUSE=publish" in d.log(), message="the worker to pause")
    wait_for(lambda: stalled.stalls_done >= 1, message="the download to stall")
    assert d.wait_status("missing")["status"] == "failed"
    wait_for(pidfile.exists, message="the hook to run")
    hook_pid = int(pidfile.read_text())
    wait_for(
        lambda: f"HTTP front end on http://127.0.0.1:{port}" in d.log(),
        message="the HTTP front end",
    )
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        client.sendall(b"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")  # never ends
        assert d.proc is not None and d.proc.poll() is None
        start = time.monotonic()
        d.signal(signal.SIGTERM)
        code = d.proc.wait(SHUTDOWN + 120)
        took = time.monotonic() - start
    finally:
        client.close()
    log = d.log()
    assert code == 0, log[-3000:]
    assert took <= SHUTDOWN + MARGIN, (took, log[-3000:])
    assert "worker pool did not stop within shutdown_timeout" in log, log[-3000:]
    assert "missing: hook (pid" in log and "killed" in log, log[-3000:]
    assert "stopped in" in log
    wait_for(lambda: _gone(hook_pid), message="the hook process to be gone")


def test_a_stuck_hook_is_killed_at_the_deadline_and_the_stop_reports_it(
    fault_server, make_daemon, tmp_path: Path
):
    """Only the hook is stuck: the rest stops at once, the hook is killed at the deadline."""
    pidfile = tmp_path / "hook.pid"
    hook = [
        "/bin/sh",
        "-c",
        f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; "
        "trap '' TERM INT; sleep 120; sleep 120",
    ]
    d = make_daemon(shutdown_timeout=SHUTDOWN, hooks={"on_failed": hook, "timeout": 600})
    d.drop("missing", fault_server.url("/missing"))
    assert d.wait_status("missing")["status"] == "failed"
    wait_for(pidfile.exists, message="the hook to run")
    hook_pid = int(pidfile.read_text())
    assert d.proc is not None
    d.signal(signal.SIGTERM)
    assert d.proc.wait(SHUTDOWN + 120) == 0
    log = d.log()
    assert "missing: hook (pid" in log and "still running at the shutdown deadline" in log
    assert "hooks did not stop within shutdown_timeout" in log
    wait_for(lambda: _gone(hook_pid), message="the hook process to be gone")


def test_components_stopped_after_the_deadline_are_named_as_such(caplog):
    calls: list[str] = []
    stuck = Fake("pool", calls, stuck=True)
    caplog.set_level(logging.WARNING, logger="dropfetch")
    try:
        # the quick one is stopped first and in time; the one after the stuck pool
        # finds no time left, and the log says so
        assert (
            stop_all(
                [Fake("leases", calls, result=False), stuck, Fake("http", calls)], Deadline(0.5)
            )
            is False
        )
        assert "http did not stop" not in caplog.text
        assert "pool did not stop within shutdown_timeout; leaving it" in caplog.text
        assert "leases did not stop within shutdown_timeout (none of it was left)" in caplog.text
    finally:
        stuck.release.set()
        assert stuck.left.wait(60)
