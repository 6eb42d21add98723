"""Hooks on a bounded executor (issue 11): real hook processes, no daemon."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

from dropfetch.config import config_from_mapping
from dropfetch.events import EventBus, JobFinished
from dropfetch.hooks import HOOK_BACKLOG, HOOK_WORKERS, HookRunner, hook_call
from dropfetch.lifecycle import Deadline
from dropfetch.status import Sidecar, Status
from harness import wait_for

# records its start and end in a shared file, and runs until the test releases it
HOOK = """
import os, sys, time
log, release = sys.argv[1], sys.argv[2]
def note(what):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{what} {os.environ['DROPFETCH_ID']}\\n".encode())
    os.close(fd)
note("start")
deadline = time.monotonic() + 120
while not os.path.exists(release) and time.monotonic() < deadline:
    time.sleep(0.02)
note("end")
"""


def _config(tmp_path: Path, argv: list[str], timeout: float = 60):
    return config_from_mapping(
        {
            "inbox": "in",
            "outbox": "out",
            "hooks": {"on_done": argv, "on_failed": argv, "timeout": timeout},
        },
        base=tmp_path,
    )


def _sidecar(job_id: str, status: Status = Status.OK) -> Sidecar:
    error = {"code": "http_404", "message": "gone"} if status is Status.FAILED else None
    return Sidecar(
        id=job_id,
        job=f"{job_id}.url",
        job_sha256="0" * 64,
        status=status,
        output=job_id if status is Status.OK else None,
        error=error,
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _peak(lines: list[str]) -> int:
    running = peak = 0
    for line in lines:
        running += 1 if line.startswith("start ") else -1
        peak = max(peak, running)
    return peak


def test_many_jobs_finishing_at_once_never_run_more_than_n_hooks(tmp_path):
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    log, release = tmp_path / "hooks.log", tmp_path / "release"
    runner = HookRunner(
        _config(tmp_path, [sys.executable, str(script), str(log), str(release)]), workers=3
    )
    runner.start()
    try:
        bus = EventBus()
        bus.subscribe(runner.on_event)
        finishing = [
            threading.Thread(
                target=bus.publish, args=(JobFinished(f"job{i}", Status.OK, _sidecar(f"job{i}")),)
            )
            for i in range(12)
        ]
        for t in finishing:  # twelve workers finishing at once
            t.start()
        for t in finishing:
            t.join(60)
        wait_for(lambda: len(_lines(log)) >= 3, message="three hooks to start")
        release.touch()
        wait_for(
            lambda: sum(x.startswith("end ") for x in _lines(log)) == 12,
            message="all twelve hooks to end",
        )
    finally:
        release.touch()
        assert runner.stop(Deadline(60))
    lines = _lines(log)
    assert sorted(x.split()[1] for x in lines if x.startswith("start ")) == sorted(
        f"job{i}" for i in range(12)
    )
    # three were running (each waits for the release) before any ended, never a fourth
    assert _peak(lines) == 3, lines
    assert all(x.startswith("start ") for x in lines[:3])


def test_a_full_backlog_drops_the_hook_and_says_so(tmp_path, caplog):
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    log, release = tmp_path / "hooks.log", tmp_path / "release"
    runner = HookRunner(
        _config(tmp_path, [sys.executable, str(script), str(log), str(release)]),
        workers=1,
        backlog=2,
    )
    caplog.set_level(logging.INFO, logger="dropfetch")
    try:
        runner.fire(_sidecar("first"))
        wait_for(lambda: _lines(log) == ["start first"], message="the first hook to run")
        for name in ("second", "third", "fourth"):  # one more than the backlog holds
            runner.fire(_sidecar(name))
        assert "fourth: hook" in caplog.text and "dropped" in caplog.text
        release.touch()
        wait_for(
            lambda: sum(x.startswith("end ") for x in _lines(log)) == 3,
            message="three hooks to end",
        )
    finally:
        release.touch()
        assert runner.stop(Deadline(60))
    assert "fourth" not in log.read_text()
    assert "second: hook" in caplog.text and "exited 0" in caplog.text


def test_stop_kills_a_hook_that_ignores_sigterm_at_the_deadline(tmp_path, caplog):
    pidfile = tmp_path / "pid"
    argv = [
        "/bin/sh",
        "-c",
        f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; "
        "trap '' TERM; sleep 120; sleep 120",
    ]
    runner = HookRunner(_config(tmp_path, argv, timeout=600))
    caplog.set_level(logging.INFO, logger="dropfetch")
    runner.fire(_sidecar("stuck", Status.FAILED))
    runner.fire(_sidecar("later", Status.FAILED))
    wait_for(pidfile.exists, message="the hook to start")
    assert runner.stop(Deadline(0.5)) is False
    assert "stuck: hook (pid" in caplog.text and "killed" in caplog.text
    wait_for(
        lambda: "stuck: hook /bin/sh was killed" in caplog.text,
        message="the killed hook to be reaped",
    )
    runner.fire(_sidecar("after"))  # stopped: not run
    assert "after: hook /bin/sh not run: stopping" in caplog.text


def test_hook_timeout_kills_the_hook_and_its_children(tmp_path, caplog):
    argv = ["/bin/sh", "-c", "sleep 120 & sleep 120"]
    runner = HookRunner(_config(tmp_path, argv, timeout=0.3))
    caplog.set_level(logging.INFO, logger="dropfetch")
    runner.fire(_sidecar("slow"))
    wait_for(lambda: "timed out after" in caplog.text, message="the hook's timeout")
    assert runner.stop(Deadline(60))


def test_hook_call_environment_and_choice(tmp_path):
    config = config_from_mapping(
        {"inbox": "in", "outbox": "out", "hooks": {"on_done": ["/bin/true", "--done"]}},
        base=tmp_path,
    )
    call = hook_call(config, _sidecar("a"))
    assert call is not None and call.argv == ("/bin/true", "--done")
    assert call.env["DROPFETCH_ID"] == "a"
    assert call.env["DROPFETCH_STATUS"] == "ok"
    assert call.env["DROPFETCH_OUTPUT"] == str(tmp_path / "out" / "a")
    assert call.env["DROPFETCH_SIDECAR"] == str(tmp_path / "in" / "a.status.json")
    assert call.env["DROPFETCH_ERROR_CODE"] == ""
    assert hook_call(config, _sidecar("b", Status.FAILED)) is None  # no on_failed
    assert hook_call(config, _sidecar("c", Status.WAITING)) is None
    assert HOOK_WORKERS >= 1 and HOOK_BACKLOG >= 1
