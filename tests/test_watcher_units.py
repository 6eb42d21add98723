"""The watcher in-process (issue 11): a real Watcher with a real observer on a tmp_path
inbox, reporting into a queue; no daemon. Absence is shown by order, never by sleeping:
a later file that is reported proves the watcher had its chance with the earlier one."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from dropfetch import settle
from dropfetch.config import Config
from dropfetch.fsutil import temp_name
from dropfetch.intake import Entry, EventQueue, Kind, job_id, scan
from dropfetch.lifecycle import Deadline
from dropfetch.settle import OpenFiles
from dropfetch.watcher import Watcher
from harness import wait_for

WAIT = 30.0  # generous: the machine is shared
OBSERVERS = ["inotify", "polling"]


class Reports:
    """The watcher's report callback: job ids, with the thread that reported each."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.got: list[str] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()  # cleared: a report blocks until it is set again
        self.gate.set()

    def __call__(self, job_id: str) -> None:
        self._q.put((job_id, threading.current_thread().name))
        self.gate.wait(WAIT)

    def drain(self) -> list[str]:
        """What has been reported so far, without waiting."""
        while True:
            try:
                got, thread = self._q.get_nowait()
            except queue.Empty:
                return self.got
            self.got.append(got)
            self.threads.add(thread)

    def wait(self, job_id: str, times: int = 1, timeout: float = WAIT) -> list[str]:
        """Block until ``job_id`` has been reported ``times`` times; what came so far."""
        deadline = Deadline(timeout)
        while self.got.count(job_id) < times:
            try:
                got, thread = self._q.get(timeout=max(0.01, deadline.left()))
            except queue.Empty:
                pytest.fail(f"{job_id!r} not reported {times}x within {timeout} s: {self.got}")
            self.got.append(got)
            self.threads.add(thread)
        return self.got


def config(inbox: Path, **kw: Any) -> Config:
    kw.setdefault("observer", "inotify")
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("settle_time", 0.2)
    kw.setdefault("rescan_interval", 3600.0)  # the first rescan only: events do the work
    return Config(inbox=inbox, outbox=inbox.parent / "out", **kw)


@contextmanager
def watching(inbox: Path, **kw: Any) -> Iterator[tuple[Watcher, Reports]]:
    inbox.mkdir(parents=True, exist_ok=True)
    reports = Reports()
    w = Watcher(config(inbox, **kw), reports)
    w.start()
    try:
        wait_for(lambda: w.rescans >= 1, WAIT, message="the first rescan")
        yield w, reports
    finally:
        assert w.stop(Deadline(WAIT))
    # every report came from the watcher's own intake thread, none from the observer's
    assert reports.threads <= {"dropfetch-watcher"}, reports.threads


def move_in(inbox: Path, name: str, text: str = "https://example.org/x.zip\n") -> None:
    """Written under a temporary name in the inbox, then renamed into place."""
    tmp = temp_name(inbox / name)
    tmp.write_text(text)
    os.rename(tmp, inbox / name)


def from_outside(inbox: Path, name: str) -> Path:
    outside = inbox.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / name).write_text("https://example.org/y.zip\n")
    return outside / name


# -- what is reported, and when -------------------------------------------------------------


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_renamed_in_job_file_is_reported_at_once(tmp_path, observer):
    inbox = tmp_path / "in"
    # settle_time 1 h: only "renamed in: at once" can report it (polling: a new entry)
    kw = {"settle_time": 3600.0} if observer == "inotify" else {}
    with watching(inbox, observer=observer, **kw) as (_, reports):
        move_in(inbox, "a.url")
        assert reports.wait("a") == ["a"]


def test_a_job_file_written_and_closed_is_reported_at_once(tmp_path):
    inbox = tmp_path / "in"
    with watching(inbox, settle_time=3600.0) as (_, reports):
        with open(inbox / "b.url", "w") as fh:
            fh.write("https://example.org/b.zip\n")
        assert reports.wait("b") == ["b"]


@pytest.mark.parametrize("observer", OBSERVERS)
def test_linked_and_moved_in_files_wait_for_the_settle_time(tmp_path, observer):
    inbox = tmp_path / "in"
    with watching(inbox, observer=observer, settle_time=3600.0) as (w, reports):
        os.link(from_outside(inbox, "linked.url"), inbox / "linked.url")
        os.rename(from_outside(inbox, "moved.url"), inbox / "moved.url")
        if observer == "inotify":
            move_in(inbox, "probe.url")  # reported at once, after the two events above
            assert reports.wait("probe") == ["probe"]
        else:
            # the polling observer settles everything: a later rescan has seen them
            w.apply(replace(w.config, rescan_interval=0.1))
            wait_for(lambda: w.rescans >= 3, WAIT, message="two more rescans")
            assert reports.drain() == []
        w.apply(replace(w.config, settle_time=0.2))  # now they settle
        reports.wait("linked")
        reports.wait("moved")


def test_a_file_open_for_writing_is_reported_only_once_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(settle, "is_open_for_writing", lambda _path: False)  # IN_OPEN alone
    inbox = tmp_path / "in"
    with watching(inbox, rescan_interval=0.2) as (w, reports):
        with open(inbox / "typing.url", "w") as fh:
            fh.write("https://example.org/")
            fh.flush()
            os.rename(from_outside(inbox, "probe.url"), inbox / "probe.url")  # settles
            reports.wait("probe")
            seen = w.rescans
            wait_for(lambda: w.rescans >= seen + 2, WAIT, message="two more rescans")
            os.rename(from_outside(inbox, "probe2.url"), inbox / "probe2.url")
            assert reports.wait("probe2") == ["probe", "probe2"]
            fh.write("typing.zip\n")
        assert reports.wait("typing") == ["probe", "probe2", "typing"]


def test_a_writer_that_opened_before_the_watch_is_found_in_proc(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(settle, "OPEN_NOTICE_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="dropfetch")
    inbox = tmp_path / "in"
    inbox.mkdir()
    with open(inbox / "early.url", "w") as fh:  # no IN_OPEN: the watch is not there yet
        fh.write("https://example.org/")
        fh.flush()
        with watching(inbox, rescan_interval=0.2) as (w, reports):
            wait_for(
                lambda: "the job file has been open for" in caplog.text,
                WAIT,
                message="the notice of a long open",
            )
            seen = w.rescans
            wait_for(lambda: w.rescans >= seen + 2, WAIT, message="two more rescans")
            os.rename(from_outside(inbox, "probe.url"), inbox / "probe.url")
            assert reports.wait("probe") == ["probe"]
            fh.write("early.zip\n")
            fh.close()
            assert reports.wait("early") == ["probe", "early"]
    assert caplog.text.count("early: the job file has been open for") == 1


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_removed_job_file_is_reported(tmp_path, observer):
    inbox = tmp_path / "in"
    with watching(inbox, observer=observer) as (_, reports):
        move_in(inbox, "gone.url")
        reports.wait("gone")
        (inbox / "gone.url").unlink()
        assert reports.wait("gone", times=2) == ["gone", "gone"]


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_removed_sidecar_is_reported(tmp_path, observer):
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "job.url").write_text("https://example.org/x.zip\n")
    (inbox / "job.status.json").write_text("{}")
    with watching(inbox, observer=observer) as (_, reports):
        reports.wait("job")  # the first rescan
        (inbox / "job.status.json").unlink()
        assert reports.wait("job", times=2) == ["job", "job"]


@pytest.mark.parametrize("observer", OBSERVERS)
def test_hidden_temporary_and_other_names_are_ignored(tmp_path, observer):
    inbox = tmp_path / "in"
    with watching(inbox, observer=observer, settle_time=0.0) as (_, reports):
        for name in [
            ".hidden.url",
            temp_name(inbox / "t.url").name,
            "notes.txt",
            ".url",
            "x.url.part",
            ".x.status.json",
        ]:
            (inbox / name).write_text("https://example.org/x.zip\n")
        (inbox / "dir.url").mkdir()
        move_in(inbox, "last.url")
        assert reports.wait("last") == ["last"]


@pytest.mark.parametrize("observer", OBSERVERS)
def test_recursive_reports_one_level_down_as_sub_slash_name(tmp_path, observer):
    inbox = tmp_path / "in"
    for sub in ("SUB/deeper", ".hid"):
        (inbox / sub).mkdir(parents=True)
    with watching(inbox, observer=observer, recursive=True) as (_, reports):
        move_in(inbox / "SUB" / "deeper", "too-deep.url")
        move_in(inbox / ".hid", "hidden-dir.url")
        move_in(inbox / "SUB", "x.url")
        assert reports.wait("SUB/x") == ["SUB/x"]
        move_in(inbox, "top.url")
        assert reports.wait("top") == ["SUB/x", "top"]


def test_a_rescan_finds_what_the_events_missed(tmp_path, monkeypatch):
    """As after an inotify queue overflow: the handler gets nothing."""
    monkeypatch.setattr(EventQueue, "on_any_event", lambda _self, _event: None)
    inbox = tmp_path / "in"
    with watching(inbox, rescan_interval=0.2, settle_time=0.0) as (_, reports):
        move_in(inbox, "missed.url")
        assert reports.wait("missed") == ["missed"]


@pytest.mark.parametrize("observer", OBSERVERS)
def test_the_inbox_going_away_pauses_and_its_return_resumes(tmp_path, observer, caplog):
    caplog.set_level(logging.INFO, logger="dropfetch")
    inbox = tmp_path / "in"
    with watching(inbox, observer=observer, rescan_interval=0.2) as (w, reports):
        first = w.observer
        shutil.rmtree(inbox)
        wait_for(lambda: w.paused and w.observer is None, WAIT, message="the pause")
        assert w.healthy()  # paused is not broken
        inbox.mkdir()
        (inbox / "while-stopped.url").write_text("https://example.org/x.zip\n")
        assert reports.wait("while-stopped") == ["while-stopped"]  # by the rescan
        wait_for(lambda: not w.paused and w.observer is not None, WAIT, message="the resume")
        assert w.observer is not first and w.healthy()
        move_in(inbox, "after.url")  # the new observer delivers events
        assert reports.wait("after") == ["while-stopped", "after"]
    assert "is gone" in caplog.text and "is back; resuming" in caplog.text


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_burst_is_all_reported_while_the_report_is_stuck(tmp_path, monkeypatch, observer):
    """2000 job files arrive while the intake thread is stuck in a report: the observer
    is not held up (every event reaches the queue meanwhile), and none is missed."""
    handled: list[str] = []
    original = EventQueue.on_any_event

    def counting(self: EventQueue, event: Any) -> None:
        handled.append(os.fsdecode(event.src_path))
        original(self, event)

    monkeypatch.setattr(EventQueue, "on_any_event", counting)
    inbox = tmp_path / "in"
    names = [f"burst{i:04d}" for i in range(2000)]
    with watching(inbox, observer=observer, settle_time=0.0) as (_, reports):
        reports.gate.clear()
        move_in(inbox, "first.url")  # the intake thread blocks in this one's report
        for name in names:
            (inbox / f"{name}.url").write_text("https://example.org/x.zip\n")
        want = {str(inbox / f"{n}.url") for n in names}
        wait_for(lambda: want <= set(handled), WAIT, message="every event at the handler")
        assert len(reports.drain()) == 1  # still stuck in that report
        reports.gate.set()
        for name in names:
            reports.wait(name)
        assert set(reports.got) == {"first", *names}


# -- apply (SIGHUP) ------------------------------------------------------------------------


def test_apply_restarts_the_polling_observer_with_the_new_interval(tmp_path):
    inbox = tmp_path / "in"
    with watching(inbox, observer="polling", poll_interval=30.0) as (w, reports):
        old = w.observer
        assert old is not None and old.timeout == 30.0
        seen = w.rescans
        w.apply(replace(w.config, poll_interval=0.1, inbox=tmp_path / "elsewhere"))
        wait_for(
            lambda: w.observer is not old and w.observer is not None, WAIT, message="a new observer"
        )
        assert w.observer is not None and w.observer.timeout == 0.1
        assert not old.is_alive()
        assert w.config.inbox == inbox  # needs a restart: kept
        wait_for(lambda: w.rescans > seen, WAIT, message="the rescan after the swap")
        move_in(inbox, "after.url")
        assert reports.wait("after") == ["after"]


def test_apply_reschedules_the_next_rescan_from_the_new_interval(tmp_path):
    inbox = tmp_path / "in"
    with watching(inbox, rescan_interval=3600.0) as (w, _):
        assert w.rescans == 1
        w.apply(replace(w.config, rescan_interval=0.1))
        wait_for(lambda: w.rescans >= 3, WAIT, message="rescans at the new interval")


def test_apply_keeps_the_inotify_observer(tmp_path):
    inbox = tmp_path / "in"
    with watching(inbox, settle_time=3600.0) as (w, reports):
        old = w.observer
        w.apply(replace(w.config, poll_interval=0.5, settle_time=0.0))
        os.rename(from_outside(inbox, "settles.url"), inbox / "settles.url")
        assert reports.wait("settles") == ["settles"]  # the new settle_time applies
        assert w.observer is old


# -- the pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "recursive", "expected"),
    [
        ("a.url", False, ("a", Entry.JOB)),
        ("a.status.json", False, ("a", Entry.SIDECAR)),
        ("SUB/a.url", False, None),
        ("SUB/a.url", True, ("SUB/a", Entry.JOB)),
        ("SUB/a.status.json", True, ("SUB/a", Entry.SIDECAR)),
        ("SUB/deeper/a.url", True, None),
        (".hid/a.url", True, None),
        (".a.url", False, None),
        (".a.status.json", False, None),
        ("a.pause", False, ("a", Entry.REQUEST)),
        ("a.retry", False, ("a", Entry.REQUEST)),
        ("SUB/a.pause", True, ("SUB/a", Entry.REQUEST)),
        (".a.pause", False, None),
        (".pause", False, None),
        ("a.paused", False, None),
        (".url", False, None),
        ("a.txt", False, None),
        ("", False, None),
    ],
)
def test_job_id_maps_inbox_paths(tmp_path, rel, recursive, expected):
    path = str(tmp_path / rel) if rel else str(tmp_path)
    assert job_id(tmp_path, path, recursive=recursive) == expected
    assert job_id(tmp_path, "/elsewhere/a.url", recursive=recursive) is None


def test_scan_lists_job_files_and_sidecars(tmp_path):
    for rel in [
        "a.url",
        "b.status.json",
        "a.status.json",
        "S/c.url",
        ".h/d.url",
        "x.txt",
        "z.pause",
    ]:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("")
    assert scan(tmp_path, recursive=False) == ({"a"}, {"a", "b"})
    assert scan(tmp_path, recursive=True) == ({"a", "S/c"}, {"a", "b"})
    assert scan(tmp_path / "missing", recursive=False) == (set(), set())


def test_the_event_queue_maps_kinds_and_coalesces_repeated_changes():
    wakes: list[int] = []
    q = EventQueue(lambda: wakes.append(1))
    for event in [
        FileCreatedEvent("/i/a.url"),
        FileModifiedEvent("/i/a.url"),
        FileOpenedEvent("/i/a.url"),
        FileModifiedEvent("/i/a.url"),
        FileClosedEvent("/i/a.url"),
        FileClosedNoWriteEvent("/i/b.url"),
        FileDeletedEvent("/i/b.url"),
        FileMovedEvent("/i/.t", "/i/c.url"),
    ]:
        q.on_any_event(event)
    assert len(wakes) == 8
    assert q.drain() == [
        (Kind.CHANGED, "/i/a.url"),
        (Kind.OPENED, "/i/a.url"),
        (Kind.CLOSED, "/i/a.url"),
        (Kind.CLOSED_NOWRITE, "/i/b.url"),
        (Kind.READY, "/i/b.url"),
        (Kind.READY, "/i/.t"),
        (Kind.READY, "/i/c.url"),
    ]
    assert q.drain() == []


def test_the_event_queue_loses_nothing_from_many_threads():
    q = EventQueue(lambda: None)
    drained: list[tuple[Kind, str]] = []
    done = threading.Event()

    def put(t: int) -> None:
        for i in range(5000):
            q.on_any_event(FileDeletedEvent(f"/i/{t}-{i}.url"))

    def take() -> None:
        while not done.is_set():
            drained.extend(q.drain())
        drained.extend(q.drain())

    taker = threading.Thread(target=take)
    taker.start()
    putters = [threading.Thread(target=put, args=(t,)) for t in range(4)]
    for t in putters:
        t.start()
    for t in putters:
        t.join()
    done.set()
    taker.join()
    assert sorted(p for _, p in drained) == sorted(
        f"/i/{t}-{i}.url" for t in range(4) for i in range(5000)
    )


def test_open_files_count_opens_and_a_close_after_writing_clears_them():
    o = OpenFiles()
    o.opened("a", 1.0)
    o.opened("a", 2.0)
    o.closed("a", wrote=False)
    assert "a" in o  # one open left
    assert o.notice("a", 1.0 + settle.OPEN_NOTICE_SECONDS - 1) is None
    assert o.notice("a", 1.0 + settle.OPEN_NOTICE_SECONDS) == settle.OPEN_NOTICE_SECONDS
    assert o.notice("a", 1.0 + 2 * settle.OPEN_NOTICE_SECONDS) is None  # said once
    o.opened("a", 3.0)
    o.closed("a", wrote=True)  # a touch mends a count left wrong by lost events
    assert "a" not in o
    o.assume_open("b", 5.0)
    o.keep_only({"c"})
    assert "b" not in o


def test_the_event_queue_never_touches_the_filesystem(monkeypatch):
    """What runs on the observer thread: no stat, no listing, no open."""

    def refuse(*args: Any, **_kwargs: Any) -> None:
        raise AssertionError(f"filesystem access on the observer thread: {args}")

    q = EventQueue(lambda: None)
    events = [
        FileCreatedEvent("/i/a.url"),
        FileModifiedEvent("/i/a.url"),
        FileOpenedEvent("/i/a.url"),
        FileClosedEvent("/i/a.url"),
        FileClosedNoWriteEvent("/i/a.url"),
        FileDeletedEvent("/i/a.url"),
        FileMovedEvent("/i/.t", "/i/a.url"),
        DirCreatedEvent("/i/S"),
    ]
    for name in ("stat", "lstat", "scandir", "open", "listdir"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(os.path, "lexists", refuse)
    for event in events:
        q.on_any_event(event)
    monkeypatch.undo()
    assert [k for k, _ in q.drain()] == [
        Kind.CHANGED,
        Kind.OPENED,
        Kind.CLOSED,
        Kind.CLOSED_NOWRITE,
        Kind.READY,
        Kind.READY,
        Kind.READY,
    ]  # the second CHANGED coalesced
