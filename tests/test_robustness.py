"""What the daemon does about its own failures: a bug that hits a job (retried, then
failed; never stuck `downloading`), and a start-up layout it cannot work with."""

from __future__ import annotations

from pathlib import Path

import pytest

from archives import tar_bytes, zip_bytes
from harness import wait_for


def test_a_bug_mid_job_is_retried_then_fails_and_leaves_nothing(make_daemon, fault_server):
    fault_server.add("/a.zip", zip_bytes({"a.txt": b"a"}))
    d = make_daemon(
        start=False, download={"max_attempts": 2, "backoff_initial": 0.1, "backoff_max": 0.2}
    )
    d.start(env={"DROPFETCH_TEST_BUG": "publish"})
    d.drop("buggy", fault_server.url("/a.zip"))
    sc = d.wait_status("buggy", "failed")
    assert sc["error"]["code"] == "io_error", sc
    assert "internal error" in sc["error"]["message"], sc
    assert sc["attempt"] == 2, sc
    assert not (d.outbox / "buggy").exists()
    assert not list((d.work / "staging").iterdir())
    log = d.log()
    assert "buggy: attempt 1 failed (io_error" in log, log[-3000:]
    assert "Traceback" in log  # the details are in the log, for a bug report
    assert d.proc is not None and d.proc.poll() is None  # the daemon goes on


@pytest.mark.e2e  # `dropfetch run`
def test_work_dir_on_another_filesystem_refuses_to_start(tmp_path):
    """Outputs are published by rename: a work_dir elsewhere would make that a copy."""
    import os
    import subprocess
    import sys
    import tempfile

    import yaml

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) here")
    with tempfile.TemporaryDirectory(dir=shm) as work:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {"inbox": str(tmp_path / "in"), "outbox": str(tmp_path / "out"), "work_dir": work}
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "dropfetch", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc
    assert "not on the same filesystem as the outbox" in proc.stderr, proc.stderr


def test_a_job_file_removed_while_its_run_is_finishing_is_still_purged(make_daemon, fault_server):
    """The removal arrives after the run's last look at its cancel flag: the job is
    looked at again when the run is done (it once waited for a rescan that never came)."""
    fault_server.add("/f.zip", zip_bytes({"f.txt": b"f"}))
    d = make_daemon(start=False, rescan_interval=600)
    d.start(env={"DROPFETCH_TEST_PAUSE": "finished", "DROPFETCH_TEST_PAUSE_SECONDS": "2"})
    job = d.drop("f", fault_server.url("/f.zip"))
    assert d.wait_status("f", "ok")["files"] == ["f.txt"]
    # the hook logs its pause just after the final status is written: wait for the line
    wait_for(lambda: "DROPFETCH_TEST_PAUSE=finished" in d.log(), message="the pause")
    job.unlink()  # while the worker still holds the finished run
    wait_for(
        lambda: not d.sidecar_path("f").exists() and not (d.outbox / "f").exists(),
        message="the purge after the run ended",
    )


def test_a_worker_that_dies_is_logged_and_replaced(make_daemon, fault_server):
    """A bug in a worker's own loop, outside every job: logged with its traceback, and
    a new thread takes its place, so later jobs still run on every configured worker."""
    names = ("a", "b")
    for i, name in enumerate(names):  # 10 s each: both run at once, or the test fails
        fault_server.add(f"/{name}.tar", tar_bytes({"f": bytes([i]) * 200_000}), rate=20_000)
    d = make_daemon(start=False, workers=2)
    d.start(env={"DROPFETCH_TEST_BUG": "worker"})
    wait_for(lambda: "a new worker takes its place" in d.log(), message="the dead worker")
    log = d.log()
    assert "Traceback" in log and "DROPFETCH_TEST_BUG=worker" in log, log[-3000:]
    for name in names:
        d.drop(name, fault_server.url(f"/{name}.tar"))
    wait_for(
        lambda: all((sc := d.sidecar(n)) and sc["status"] == "downloading" for n in names),
        60,
        message="both jobs downloading at once",
    )
    for name in names:
        assert d.wait_status(name, "ok")["status"] == "ok"
    assert d.log().count("a new worker takes its place") == 1  # once per process
    assert d.proc is not None and d.proc.poll() is None
