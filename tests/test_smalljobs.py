"""Per-job overhead of small jobs (issue 15): which sidecar writes are fsynced, the group
commit of final statuses' directory fsyncs, and the inbox watch that drops the daemon's
own sidecar writes. Real files, real threads, a real inotify observer; absence is shown
by order (a later event that arrives), never by sleeping."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from dropfetch import fsutil
from dropfetch.errors import NetworkError
from dropfetch.fsutil import atomic_write
from dropfetch.groupsync import GroupSync
from dropfetch.inboxobserver import _Emitter, inbox_observer, own_write
from dropfetch.intake import EVENT_TYPES
from dropfetch.status import Sidecar, Status, StatusBoard, read_sidecar
from harness import wait_for

WAIT = 30.0


class FsyncLog:
    """os.fsync, counted by kind (file or directory); ``hold`` makes directory fsyncs
    wait until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[str] = []
        self.dirs: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self._real = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.dirs.append(path)
            assert self.hold.wait(WAIT)
        else:
            self.files.append(path)
        self._real(fd)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> FsyncLog:
    return FsyncLog(monkeypatch)


def _board(inbox: Path, name: str, group: GroupSync) -> StatusBoard:
    sidecar = Sidecar(id=name, job=f"{name}.url", job_sha256="0" * 64)
    return StatusBoard(
        inbox / f"{name}.status.json", sidecar, previous=None, interval=0.0, dir_sync=group.sync
    )


def _status(path: Path) -> Status:
    sidecar = read_sidecar(path)
    assert sidecar is not None
    return sidecar.status


# -- which writes are fsynced ----------------------------------------------------------


def test_only_the_creating_and_the_final_writes_are_fsynced(tmp_path, fsyncs):
    board = _board(tmp_path, "j", GroupSync())
    board.downloading()  # creates the sidecar: fsynced
    board.progress(done=5, total=10, speed=1.0)
    board.unpacking(fmt="tar.gz", size=10, sha256="a" * 64)
    assert len(fsyncs.files) == 1 and not fsyncs.dirs
    assert _status(tmp_path / "j.status.json") is Status.UNPACKING
    board.succeeded(output="j", files=["a"], archive={"format": "tar.gz"})
    assert len(fsyncs.files) == 2  # the final one, before its rename
    assert fsyncs.dirs == [str(tmp_path)]  # and the directory after it
    assert _status(tmp_path / "j.status.json") is Status.OK


def test_a_failed_status_is_durable_too(tmp_path, fsyncs):
    board = StatusBoard(
        tmp_path / "j.status.json",
        Sidecar(id="j", job="j.url", job_sha256="0" * 64),
        previous=Status.QUEUED,  # a sidecar is there already: this write replaces it
        interval=0.0,
        dir_sync=GroupSync().sync,
    )
    board.downloading()
    assert not fsyncs.files
    board.fail(NetworkError("gone"))
    assert len(fsyncs.files) == 1 and fsyncs.dirs == [str(tmp_path)]


def test_the_start_count_is_not_fsynced(tmp_path, fsyncs):
    from dropfetch.jobpaths import count_start

    class Paths:
        starts = tmp_path / "j.starts"

    count_start(Paths, "0" * 64, max_attempts=3)  # type: ignore[arg-type]
    count_start(Paths, "0" * 64, max_attempts=3)  # type: ignore[arg-type]
    assert '"starts": 2' in Paths.starts.read_text()
    assert not fsyncs.files and not fsyncs.dirs


# -- group commit --------------------------------------------------------------------


def test_final_statuses_that_arrive_during_a_directory_fsync_share_the_next_one(tmp_path, fsyncs):
    group = GroupSync()
    boards = [_board(tmp_path, f"j{i}", group) for i in range(9)]
    for b in boards:
        b.downloading()
    fsyncs.hold.clear()  # the first directory fsync waits
    errors: list[BaseException] = []

    def finish(board: StatusBoard) -> None:
        try:
            board.succeeded(output=board.sidecar.id, files=[], archive={})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=finish, args=(boards[0],))
    first.start()
    wait_for(lambda: len(fsyncs.dirs) == 1, WAIT, message="the first directory fsync")
    rest = [threading.Thread(target=finish, args=(b,)) for b in boards[1:]]
    for t in rest:
        t.start()
    # every other final sidecar is renamed into place and waits for the directory
    wait_for(lambda: group.waiting(tmp_path) == 9, WAIT, message="8 callers waiting")
    for b in boards[1:]:
        assert _status(b.path) is Status.OK  # visible before it is durable
    fsyncs.hold.set()
    for t in [first, *rest]:
        t.join(WAIT)
        assert not t.is_alive()
    assert not errors
    assert fsyncs.dirs == [str(tmp_path)] * 2  # one for the first, one for the 8 others
    assert group.waiting(tmp_path) == 0


def test_a_caller_is_never_covered_by_an_fsync_that_began_before_it(tmp_path):
    began = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def slow_fsync(_path: Path) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            began.set()
            assert release.wait(WAIT)

    group = GroupSync(slow_fsync)
    first = threading.Thread(target=group.sync, args=(tmp_path,))
    first.start()
    assert began.wait(WAIT)
    late = threading.Thread(target=group.sync, args=(tmp_path,))
    late.start()
    wait_for(lambda: group.waiting(tmp_path) == 2, WAIT, message="the late caller waiting")
    release.set()
    first.join(WAIT)
    late.join(WAIT)
    assert calls == [0, 1]  # the late caller got an fsync of its own


def test_an_fsync_error_reaches_its_caller_and_the_next_caller_tries_again(tmp_path):
    results = iter([OSError(5, "EIO"), None])

    def flaky(_path: Path) -> None:
        error = next(results)
        if error is not None:
            raise error

    group = GroupSync(flaky)
    with pytest.raises(OSError):
        group.sync(tmp_path)
    group.sync(tmp_path)  # a new fsync, which succeeds
    assert group.waiting(tmp_path) == 0


def test_a_crash_between_the_rename_and_the_group_fsync_leaves_a_valid_sidecar(tmp_path):
    class Crash(BaseException):
        """The process dies here (as DROPFETCH_TEST_CRASH=group-sync does)."""

    def crash(_path: Path) -> None:
        raise Crash

    board = _board(tmp_path, "j", GroupSync(crash))
    board.downloading()
    with pytest.raises(Crash):
        board.succeeded(output="j", files=["a.txt"], archive={"format": "tar"})
    after = read_sidecar(tmp_path / "j.status.json")
    assert after is not None and after.status is Status.OK and after.files == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["j.status.json"]  # no temporary file


def test_publish_uses_the_directory_sync_it_is_given(tmp_path):
    synced: list[Path] = []
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "f").write_text("x")
    fsutil.publish_dir(
        tmp_path / "staging", tmp_path / "out", tmp_path / "old", sync_dir=synced.append
    )
    assert synced == [tmp_path]
    assert (tmp_path / "out" / "f").read_text() == "x"


# -- the inbox watch drops the daemon's own writes -----------------------------------


@pytest.mark.parametrize(
    ("name", "mask", "dropped"),
    [
        (b".j.status.json.dftmp.host.12.3", 0x100, True),  # IN_CREATE of the temp file
        (b".j.status.json.dftmp.host.12.3", 0x20, True),  # IN_OPEN
        (b".j.status.json.dftmp.host.12.3", 0x8, True),  # IN_CLOSE_WRITE
        (b".j.status.json.dftmp.host.12.3", 0x40, True),  # IN_MOVED_FROM
        (b"j.status.json", 0x80, True),  # IN_MOVED_TO: the rename into place
        (b"j.status.json", 0x2, True),  # IN_MODIFY
        (b"j.status.json", 0x200, False),  # IN_DELETE: retry, or a finished purge
        (b"j.status.json", 0x40, False),  # IN_MOVED_FROM: renamed away
        (b"j.url", 0x80, False),  # a job file renamed in
        (b".j.url.part", 0x40, False),  # somebody's temporary name renamed to a job file
        (b".j.url.dftmp.host.12.3", 0x100, False),  # `dropfetch submit`'s temporary file
        (b"j.pause", 0x100, False),  # a request file
        (b"sub", 0x40000100, False),  # IN_CREATE | IN_ISDIR
    ],
)
def test_own_write(name, mask, dropped):
    assert own_write(name, mask) is dropped


class Recorder(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: list[FileSystemEvent] = []
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        with self.lock:
            self.events.append(event)

    def paths(self) -> list[str]:
        with self.lock:
            found = [os.fsdecode(e.src_path) for e in self.events]
            found += [os.fsdecode(e.dest_path) for e in self.events if e.dest_path]
            return [os.path.basename(p) for p in found]


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Recorder]]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    recorder = Recorder()
    observer = inbox_observer(timeout=0.2)
    observer.schedule(recorder, str(inbox), event_filter=EVENT_TYPES)
    observer.start()
    try:
        yield inbox, recorder
    finally:
        observer.stop()
        observer.join(WAIT)


def test_the_inbox_observer_is_the_filtered_one():
    observer = inbox_observer(timeout=0.2)
    try:
        assert observer._emitter_class is _Emitter  # noqa: SLF001
    finally:
        observer.stop()


def test_own_sidecar_writes_do_not_reach_the_handler_a_job_file_does(watched):
    inbox, recorder = watched
    board = _board(inbox, "j", GroupSync())
    board.downloading()
    board.progress(done=1, total=2, speed=1.0)
    board.succeeded(output="j", files=[], archive={})
    tmp = inbox / ".new.tmp"
    tmp.write_text("http://example.invalid/x\n")
    os.rename(tmp, inbox / "new.url")
    # inotify keeps the order: once the job file's rename is seen, so were the writes
    wait_for(lambda: "new.url" in recorder.paths(), WAIT, message="the job file's event")
    seen = recorder.paths()
    assert not [p for p in seen if "status.json" in p], seen


def test_a_removed_or_renamed_sidecar_still_reaches_the_handler(watched):
    inbox, recorder = watched
    atomic_write(inbox / "a.status.json", b"{}\n")
    atomic_write(inbox / "b.status.json", b"{}\n")
    (inbox / "a.status.json").unlink()
    os.rename(inbox / "b.status.json", inbox / "b.moved")
    wait_for(lambda: "b.moved" in recorder.paths(), WAIT, message="the rename away")
    seen = recorder.paths()
    assert "a.status.json" in seen and "b.status.json" in seen
    assert not [p for p in seen if ".dftmp." in p], seen
