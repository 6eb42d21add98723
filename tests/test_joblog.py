"""Issue 12: a log a person can follow at INFO (``dropfetch.joblog``), and no internal
name (staging tokens, partial files, work_dir paths) in it."""

from __future__ import annotations

import itertools
import logging
import os
import re
from pathlib import Path

from archives import tar_bytes
from dropfetch.events import JobFinished, JobStarted, Phase, Progress, StatusChanged
from dropfetch.joblog import PROGRESS_EVERY, JobLog, progress_due
from dropfetch.status import Sidecar, Status
from dropfetch.units import human_size
from harness import wait_for

STAGING_NAME = re.compile(r"[^\s@/]+@[^\s@/]+@\d+@\d+")  # KEY@HOST@PID@N


def test_progress_is_due_once_every_ten_seconds():
    assert progress_due(None, 0.0)  # the first: the size line
    assert not progress_due(100.0, 100.0)
    assert not progress_due(100.0, 100.0 + PROGRESS_EVERY - 0.001)
    assert progress_due(100.0, 100.0 + PROGRESS_EVERY)
    assert progress_due(100.0, 500.0)
    assert not progress_due(0.0, 4.0, every=5.0) and progress_due(0.0, 5.0, every=5.0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Lines(logging.Handler):
    """Each record with the (fake) clock's time it was logged at."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__(logging.INFO)
        self.clock = clock
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.clock.now, record.getMessage()))


def test_a_long_download_logs_start_size_progress_every_10_s_and_the_end(tmp_path):
    clock = _Clock()
    lines = _Lines(clock)
    log = logging.getLogger("dropfetch.joblog")
    log.addHandler(lines)
    log.setLevel(logging.INFO)
    try:
        joblog = JobLog(lambda: tmp_path / "outbox", clock=clock)
        sc = Sidecar(id="big", job="big.url", job_sha256="a" * 64, url="https://***@h/big.tar?***")
        joblog.on_event(StatusChanged(sc))
        joblog.on_event(JobStarted("big", 1))
        total = 100 * 2**20
        for step in range(121):  # 0.25 s apart: 30 s of progress
            clock.now = 1000.0 + step * 0.25
            joblog.on_event(Progress("big", Phase.DOWNLOAD, step * total // 120, total, 3.5e6))
            joblog.on_event(Progress("big", Phase.UNPACK, 5, 10, None))  # never logged
        clock.now = 1032.0
        done = Sidecar(
            id="big",
            job="big.url",
            job_sha256="a" * 64,
            status=Status.OK,
            archive={"format": "tar", "size": total, "sha256": "b" * 64},
            output="big",
            files=["a", "b", "c"],
        )
        joblog.on_event(JobFinished("big", Status.OK, done))
    finally:
        log.removeHandler(lines)
    texts = [text for _, text in lines.lines]
    assert texts[0] == "big: started: https://***@h/big.tar?***"
    assert texts[1] == "big: downloading, 100.0 MiB"
    progress = [(t, text) for t, text in lines.lines if "% (" in text]
    assert len(progress) == 3  # at 10, 20 and 30 s
    times = [lines.lines[1][0]] + [t for t, _ in progress]
    assert all(b - a >= PROGRESS_EVERY for a, b in itertools.pairwise(times))
    assert progress[0][1] == "big: 33% (33.3 MiB of 100.0 MiB) at 3.3 MiB/s"
    assert texts[-1] == (
        f"big: published 3 file(s) to {tmp_path / 'outbox' / 'big'}: 100.0 MiB in 32.0 s "
        "(3.1 MiB/s)"
    )
    assert len(texts) == 6


def _purged(d: object, name: str) -> bool:
    return not (d.inbox / f"{name}.status.json").exists()  # type: ignore[attr-defined]


def test_the_daemon_log_at_info_says_what_happens_and_no_internal_name(fault_server, make_daemon):
    body = tar_bytes({f"f{i}.bin": os.urandom(40_000) for i in range(10)})
    fault_server.add("/slow.tar", body, rate=200_000)  # about 2 s
    fault_server.add("/flaky.tar", tar_bytes({"x": b"x"}), statuses=[503])
    fault_server.add("/gone.tar", tar_bytes({"y": b"y"}))
    d = make_daemon()
    for name in ("slow", "flaky", "gone"):
        d.drop(name, fault_server.url(f"/{name}.tar"))
    d.drop("nothing", fault_server.url("/nothing.tar"))
    for name in ("slow", "flaky", "gone"):
        assert d.wait_status(name)["status"] == "ok"
    assert d.wait_status("nothing")["status"] == "failed"
    (d.inbox / "gone.url").unlink()
    wait_for(lambda: _purged(d, "gone"), message="the purge")
    assert d.stop() == 0
    log = d.log()
    lines = [line for line in log.splitlines() if " dropfetch" in line]
    url = fault_server.url("/slow.tar")

    def said(pattern: str) -> list[str]:
        return [line for line in lines if re.search(pattern, line)]

    assert len(said(r"slow: started: " + re.escape(url))) == 1
    size = human_size(len(body))
    assert len(said(r"slow: downloading, " + re.escape(size) + "$")) == 1
    end = said(r"slow: published ")
    assert len(end) == 1, lines
    assert f"10 file(s) to {d.outbox / 'slow'}: {size} in " in end[0] and "/s)" in end[0]
    assert len(said(r"flaky: started: ")) == 1 and len(said(r"flaky: started \(attempt 2\)")) == 1
    assert len(said(r"flaky: attempt 1 failed \(http_503")) == 1
    assert len(said(r"flaky: published 1 file\(s\)")) == 1
    assert len(said(r"nothing: failed \(http_404\)")) == 1 and not said("nothing: published")
    assert len(said(r"gone: job removed")) == 1, log[-3000:]  # one line per purge
    assert " DEBUG " not in log  # the default level: INFO
    assert not STAGING_NAME.search(log), STAGING_NAME.search(log)
    assert str(d.work) not in log and ".part" not in log and "staging" not in log


def test_log_lines_of_the_job_name_first(tmp_path: Path) -> None:
    """Every joblog line starts with the job name (the JSON log's ``job`` field)."""
    joblog = JobLog(lambda: tmp_path, clock=_Clock())
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Keep(logging.INFO)
    log = logging.getLogger("dropfetch.joblog")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        joblog.on_event(JobStarted("j", 2))
        joblog.on_event(Progress("j", Phase.DOWNLOAD, 10, None, None))
        sc = Sidecar(id="j", job="j.url", job_sha256="a" * 64, status=Status.OK, files=["f"])
        joblog.on_event(JobFinished("j", Status.OK, sc))
    finally:
        log.removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "j: started (attempt 2): ?",
        "j: downloading, size unknown",
        f"j: published 1 file(s) to {tmp_path / 'j'}: size unknown in 0.0 s",
    ]
    assert all(isinstance(r.msg, str) and r.msg.startswith("%s:") for r in records)
