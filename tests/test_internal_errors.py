"""A bug in dropfetch that hits a job: the job is retried, then fails; it never stays
`downloading` forever, and the daemon goes on."""

from __future__ import annotations

from archives import zip_bytes


def test_a_bug_mid_job_is_retried_then_fails_and_leaves_nothing(make_daemon, fault_server):
    fault_server.add("/a.zip", zip_bytes({"a.txt": b"a"}))
    d = make_daemon(start=False, download={"max_attempts": 2, "backoff_initial": 0.1,
                                           "backoff_max": 0.2})
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
