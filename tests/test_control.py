"""Queue control without a daemon: the request files of ``dropfetch pause``, ``resume``
and ``retry`` (what they write, what they refuse, hostile entries under their names),
and how the intake reports them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dropfetch import control
from dropfetch.config import Config, config_from_mapping
from dropfetch.intake import Entry, Kind, scan_all
from dropfetch.jobpaths import is_request, job_paths
from dropfetch.settle import SettleTracker
from dropfetch.status import Sidecar, Status

URL = "https://example.org/a.tar.gz\n"


def _config(tmp_path: Path) -> Config:
    (tmp_path / "inbox").mkdir()
    return config_from_mapping({"inbox": "inbox", "outbox": "outbox"}, base=tmp_path)


def _job(config: Config, name: str = "j", status: Status | None = None, **fields: object) -> None:
    (config.inbox / f"{name}.url").write_text(URL)
    if status is not None:
        sc = Sidecar(id=name, job=f"{name}.url", job_sha256="0" * 64, status=status)
        for key, value in fields.items():
            setattr(sc, key, value)
        (config.inbox / f"{name}.status.json").write_bytes(sc.to_json())


@pytest.mark.parametrize("status", [None, Status.QUEUED, Status.DOWNLOADING, Status.WAITING])
def test_pause_writes_a_request_and_resume_removes_it(tmp_path, status):
    config = _config(tmp_path)
    _job(config, status=status)
    paths = job_paths(config, "j")
    assert "pausing" in control.pause(config, "j")
    assert paths.paused() and paths.pause == config.inbox / "j.pause"
    assert "already" in control.pause(config, "j")
    assert "resuming" in control.resume(config, "j")
    assert not os.path.lexists(paths.pause)
    with pytest.raises(control.ControlError, match="not paused"):
        control.resume(config, "j")


@pytest.mark.parametrize("status", [Status.OK, Status.FAILED])
def test_a_finished_job_cannot_be_paused(tmp_path, status):
    config = _config(tmp_path)
    _job(config, status=status)
    with pytest.raises(control.ControlError, match="nothing left to pause"):
        control.pause(config, "j")
    assert not os.path.lexists(config.inbox / "j.pause")


@pytest.mark.parametrize("action", [control.pause, control.resume, control.retry])
def test_an_unknown_job_is_refused(tmp_path, action):
    config = _config(tmp_path)
    with pytest.raises(control.UnknownJobError):
        action(config, "nope")
    assert os.listdir(config.inbox) == []


def test_retry_of_a_waiting_job_is_a_request_that_keeps_the_sidecar(tmp_path):
    config = _config(tmp_path)
    _job(config, status=Status.WAITING, attempt=2)
    before = (config.inbox / "j.status.json").read_bytes()
    assert "attempt 3" in control.retry(config, "j")
    paths = job_paths(config, "j")
    assert (config.inbox / "j.status.json").read_bytes() == before
    assert paths.take_retry()  # the holder uses it up
    assert not os.path.lexists(paths.retry) and not paths.take_retry()


@pytest.mark.parametrize("status", [Status.PAUSED, Status.DOWNLOADING, Status.QUEUED])
def test_retry_refuses_a_job_that_is_not_finished_or_waiting(tmp_path, status):
    config = _config(tmp_path)
    _job(config, status=status)
    with pytest.raises(control.ControlError, match="can be retried") as info:
        control.retry(config, "j")
    assert ("resume" in info.value.message) == (status is Status.PAUSED)
    assert not os.path.lexists(config.inbox / "j.retry")


def _hostile(path: Path, kind: str, target: Path) -> None:
    if kind == "symlink":
        target.write_text("not yours")
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_request_name_that_is_not_a_regular_file_is_no_request(tmp_path, kind):
    """Never opened (a FIFO would block a reader), never followed (a link)."""
    config = _config(tmp_path)
    _job(config, status=Status.DOWNLOADING)
    paths = job_paths(config, "j")
    _hostile(paths.pause, kind, tmp_path / "elsewhere")
    _hostile(paths.retry, kind, tmp_path / "elsewhere2")
    assert not is_request(paths.pause) and not paths.paused()
    assert not paths.take_retry()
    if kind == "directory":  # cannot be replaced: a clear refusal
        with pytest.raises(control.ControlError, match="cannot write the request"):
            control.pause(config, "j")
    else:  # replaced by a real request: the link's target is untouched
        control.pause(config, "j")
        assert is_request(paths.pause)
        if kind == "symlink":
            assert (tmp_path / "elsewhere").read_text() == "not yours"
    paths.drop_requests()  # the purge removes only regular files
    assert not is_request(paths.pause)
    assert os.path.lexists(paths.pause) == (kind == "directory")


def test_a_request_is_reported_at_once_unless_its_job_file_is_settling(tmp_path):
    reports: list[str] = []
    (tmp_path / "a.url").write_text(URL)
    tracker = SettleTracker(tmp_path, reports.append, settle_time=600, watch_opens=False)
    tracker.take(Kind.CHANGED, "a", entry=Entry.REQUEST)
    tracker.take(Kind.READY, "a", entry=Entry.REQUEST)  # each request counts, even unchanged
    assert reports == ["a", "a"]
    (tmp_path / "b.url").write_text(URL)
    tracker.take(Kind.CHANGED, "b")  # settling: the request waits for it
    tracker.take(Kind.CHANGED, "b", entry=Entry.REQUEST)
    assert reports == ["a", "a"] and tracker.busy()


def test_a_rescan_reports_request_files_that_came_or_went_since_the_last_one(tmp_path):
    """Correctness never depends on events: a missed pause or resume is found by the
    next rescan (and only a change is reported, not every request every time)."""
    reports: list[str] = []
    (tmp_path / "a.url").write_text(URL)
    (tmp_path / "b.url").write_text(URL)
    tracker = SettleTracker(tmp_path, reports.append, settle_time=0, watch_opens=False)
    tracker.scanned(*scan_all(tmp_path, recursive=False))
    assert sorted(reports) == ["a", "b"]
    reports.clear()
    (tmp_path / "a.pause").write_text("")
    tracker.scanned(*scan_all(tmp_path, recursive=False))
    assert reports == ["a"]
    tracker.scanned(*scan_all(tmp_path, recursive=False))
    assert reports == ["a"]  # unchanged: not again
    (tmp_path / "a.pause").unlink()
    (tmp_path / "b.retry").write_text("")
    tracker.scanned(*scan_all(tmp_path, recursive=False))
    assert reports == ["a", "a", "b"]


def test_scan_all_lists_request_files_apart(tmp_path):
    for name in ["a.url", "a.pause", "b.retry", "a.status.json", ".c.pause"]:
        (tmp_path / name).write_text("")
    jobs, sidecars, requests = scan_all(tmp_path, recursive=False)
    assert (jobs, sidecars) == ({"a"}, {"a"})
    assert requests == {("a", str(tmp_path / "a.pause")), ("b", str(tmp_path / "b.retry"))}
