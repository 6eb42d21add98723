"""The pipeline's core without a daemon: the status board's transitions, the job queue,
the retry policy, and the parts of a job run that need no HTTP (the start count, the
staging revocation, who owns an outbox path, a reload during a run)."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from archives import tar_bytes
from dropfetch.config import Config, DownloadConfig, config_from_mapping
from dropfetch.context import JobContext, NameLocks
from dropfetch.errors import (
    BadUrlError,
    ChecksumMismatchError,
    DiskFullError,
    DropfetchError,
    HttpStatusError,
    InternalError,
    IOFailureError,
    NameConflictError,
    NetworkError,
)
from dropfetch.events import Event, EventBus, JobFinished, Progress
from dropfetch.jobpaths import STARTS_PER_ATTEMPT, count_start, job_paths
from dropfetch.jobqueue import JobQueue
from dropfetch.leases import LeaseManager, lease_key
from dropfetch.lifecycle import Deadline
from dropfetch.names import staging_name
from dropfetch.pool import WorkerPool
from dropfetch.removal import (
    check_owner,
    clean_own_debris,
    output_owner,
    publish_lock_names,
    removed,
    revoke_staging,
)
from dropfetch.retry import RetryAt, next_try
from dropfetch.status import (
    TRANSITIONS,
    Sidecar,
    Status,
    StatusBoard,
    TransitionError,
    read_sidecar,
)
from harness import wait_for

# -- the status board: every move through its intent methods ------------------------------

S = Status
_ERR = IOFailureError("disk on fire")
INTENTS: dict[str, tuple[Status, Callable[[StatusBoard], Any]]] = {
    "requeued": (S.QUEUED, lambda b: b.requeued()),
    "checkpoint": (S.QUEUED, lambda b: b.checkpoint()),
    "downloading": (S.DOWNLOADING, lambda b: b.downloading()),
    "unpacking": (S.UNPACKING, lambda b: b.unpacking(fmt="tar", size=10, sha256="ab")),
    "succeeded": (S.OK, lambda b: b.succeeded(output="j", files=["f"], archive={})),
    "retry_at": (S.WAITING, lambda b: b.retry_at(5.0, _ERR, attempt=1)),
    "fail": (S.FAILED, lambda b: b.fail(_ERR)),
    "deleting": (S.DELETING, lambda b: b.deleting()),
    "paused": (S.PAUSED, lambda b: b.paused(cut_short=True)),
}
FROM: list[Status | None] = [None, *Status]


def _board(tmp_path: Path, previous: Status | None, **fields: Any) -> StatusBoard:
    sidecar = Sidecar(id="j", job="j.url", job_sha256="0" * 64, **fields)
    if previous is not None:
        sidecar.status = previous
    return StatusBoard(tmp_path / "j.status.json", sidecar, previous=previous, interval=0.0)


@pytest.mark.parametrize("current", FROM, ids=str)
@pytest.mark.parametrize("intent", list(INTENTS))
def test_every_intent_follows_the_transition_table(tmp_path, current, intent):
    target, call = INTENTS[intent]
    board = _board(tmp_path, current, attempt=2)
    path = tmp_path / "j.status.json"
    if target in TRANSITIONS[current] or target is S.DELETING:
        call(board)
        on_disk = read_sidecar(path)
        assert on_disk is not None and on_disk.status is target
    else:
        with pytest.raises(TransitionError):
            call(board)
        assert not path.exists()  # a refused move writes nothing


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.OK, S.DOWNLOADING),
        (S.FAILED, S.UNPACKING),
        (S.UNPACKING, S.DOWNLOADING),
        (S.OK, S.FAILED),
        (S.DELETING, S.QUEUED),
        (None, S.UNPACKING),
        (None, S.OK),
        (S.PAUSED, S.UNPACKING),
        (S.PAUSED, S.OK),
        (S.DELETING, S.PAUSED),
    ],
)
def test_the_table_refuses_what_the_spec_forbids(current, target):
    assert target not in TRANSITIONS[current]


def test_the_intents_write_what_they_mean(tmp_path):
    seen: list[Sidecar] = []
    fenced: list[int] = []
    board = StatusBoard(
        tmp_path / "j.status.json",
        Sidecar(id="j", job="j.url", job_sha256="0" * 64, attempt=1),
        previous=None,
        interval=0.0,
        fence=lambda: fenced.append(1),
        on_change=seen.append,
    )
    board.job_url("https://example.org/a.tar")
    assert board.downloading() == 2
    assert seen[-1].url == "https://example.org/a.tar" and seen[-1].attempt == 2
    board.downloaded(size=7, sha256="cd")
    board.retry_at(30.0, DiskFullError("full"), attempt=1)
    sc = read_sidecar(tmp_path / "j.status.json")
    assert sc is not None and sc.status is S.WAITING and sc.attempt == 1
    assert sc.next_attempt_at is not None and sc.error == {"code": "disk_full", "message": "full"}
    assert sc.archive == {"format": None, "size": 7, "sha256": "cd"}
    board.downloading()
    board.checkpoint()  # a try cut short by a shutdown is not a failed one
    sc = read_sidecar(tmp_path / "j.status.json")
    assert sc is not None and sc.status is S.QUEUED and sc.attempt == 1
    assert sc.next_attempt_at is None
    board.downloading()
    board.unpacking(fmt="tar", size=7, sha256="cd")
    board.succeeded(output="j", files=["b", "a"], archive={"format": "tar"})
    sc = read_sidecar(tmp_path / "j.status.json")
    assert sc is not None and sc.status is S.OK and sc.files == ["a", "b"]
    assert sc.progress == 100 and sc.error is None and sc.finished is not None
    assert len(fenced) == len(seen) == 7  # every write fenced and reported


def test_no_module_but_status_assigns_a_sidecar_field():
    """The one door: sidecar fields change through the board's intents only."""
    import dropfetch

    fields = {f.name for f in dataclasses.fields(Sidecar)}
    found: list[str] = []
    for path in sorted(Path(dropfetch.__file__).parent.glob("*.py")):
        if path.name == "status.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[ast.expr] = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign | ast.AnnAssign)
                else []
            )
            line = getattr(node, "lineno", 0)
            found += [
                f"{path.name}:{line}"
                for t in targets
                if isinstance(t, ast.Attribute)
                and t.attr in fields
                and ("sidecar" in (v := ast.unparse(t.value).lower()) or v == "sc")
            ]
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func) == "setattr"
                and "sidecar" in ast.unparse(node.args[0]).lower()
            ):
                found.append(f"{path.name}:{line}")
    assert found == []


# -- the job queue ------------------------------------------------------------------------


def test_queue_orders_by_due_time():
    q = JobQueue()
    q.put("late", delay=0.3)
    q.put("soon", delay=0.1)
    q.put("now")
    assert [q.get(timeout=30) for _ in range(3)] == ["now", "soon", "late"]
    assert len(q) == 0


def test_queue_holds_a_delayed_entry_until_it_is_due():
    q = JobQueue()
    q.put("later", delay=600)
    assert q.get(timeout=0) is None
    assert q.get(timeout=0.05) is None  # a timeout returns None
    assert len(q) == 1


def test_queue_takes_urgent_entries_first():
    q = JobQueue()
    for i in range(5):
        q.put(f"b{i}")
    q.put("urgent", urgent=True)
    assert q.get(timeout=0) == "urgent"
    assert q.get(timeout=0) == "b0"


def test_queue_keeps_an_id_once_with_the_earlier_due_time():
    q = JobQueue()
    q.put("a", delay=600)
    q.put("a")  # earlier: replaces
    q.put("b")
    q.put("b", delay=600)  # later: ignored
    assert len(q) == 2
    assert {q.get(timeout=0), q.get(timeout=0)} == {"a", "b"}
    assert q.get(timeout=0) is None
    assert len(q) == 0


def test_queue_urgency_sticks_when_an_id_is_put_again():
    q = JobQueue()
    q.put("x")
    q.put("u", delay=0, urgent=True)
    q.put("u", delay=600)  # later and not urgent: changes nothing
    assert q.get(timeout=0) == "u"


def test_a_put_from_another_thread_wakes_a_waiting_get():
    q = JobQueue()
    got: list[str | None] = []
    waiting = threading.Event()

    def getter() -> None:
        waiting.set()
        got.append(q.get(timeout=120))

    t = threading.Thread(target=getter)
    t.start()
    waiting.wait(30)
    q.put("woken")
    t.join(60)  # far less than the get's timeout: the put woke it
    assert not t.is_alive() and got == ["woken"]


def test_a_pause_keeps_the_figures_and_does_not_count_the_try(tmp_path):
    board = _board(tmp_path, S.QUEUED, attempt=1)
    board.downloading()
    board.progress(done=40, total=100, speed=5.0)
    board.paused(cut_short=True)
    on_disk = read_sidecar(tmp_path / "j.status.json")
    assert on_disk is not None and on_disk.status is S.PAUSED
    assert (on_disk.progress, on_disk.bytes_done, on_disk.bytes_total) == (40, 40, 100)
    assert on_disk.attempt == 1 and on_disk.speed is None and on_disk.eta is None
    assert board.downloading() == 2  # the resumed try has the number the paused one had
    idle = _board(tmp_path, S.WAITING, attempt=2, next_attempt_at="2099-01-01T00:00:00.000Z")
    idle.paused(cut_short=False)
    on_disk = read_sidecar(tmp_path / "j.status.json")
    assert on_disk is not None and on_disk.attempt == 2 and on_disk.next_attempt_at is None


def test_queue_takes_high_before_normal_before_low_first_in_first_out_within():
    q = JobQueue()
    q.put("n1")
    q.put("l1", priority="low")
    q.put("n2", priority="normal")
    q.put("h1", priority="high")
    q.put("l2", priority="low")
    q.put("h2", priority="high")
    assert [q.get(timeout=0) for _ in range(6)] == ["h1", "h2", "n1", "n2", "l1", "l2"]
    assert q.get(timeout=0) is None


def test_queue_urgent_entries_go_before_high_ones():
    q = JobQueue()
    q.put("h", priority="high")
    q.put("u", urgent=True, priority="low")
    assert [q.get(timeout=0), q.get(timeout=0)] == ["u", "h"]


def test_queue_remembers_a_priority_for_later_puts_and_moves_a_queued_entry():
    q = JobQueue()
    q.put("a")
    q.put("b")
    q.prioritise("b", "high")  # queued: moves up at once
    assert q.get(timeout=0) == "b"
    q.put("b")  # a later put (a retry, a look again) keeps "high"
    q.put("c", priority="high")
    assert [q.get(timeout=0) for _ in range(3)] == ["b", "c", "a"]
    q.prioritise("c", "low")
    q.put("c")
    q.put("d")
    assert [q.get(timeout=0), q.get(timeout=0)] == ["d", "c"]
    q.put("c", priority="normal")  # back to normal: forgotten, first in first out again
    q.put("e")
    assert [q.get(timeout=0), q.get(timeout=0)] == ["c", "e"]
    assert len(q) == 0


def test_a_high_entry_not_due_yet_does_not_hold_up_due_ones():
    q = JobQueue()
    q.put("later", delay=600, priority="high")
    q.put("low", priority="low")
    assert q.get(timeout=0) == "low"
    assert len(q) == 1


# -- the retry policy (pure) -------------------------------------------------------------

CFG = DownloadConfig(max_attempts=3, backoff_initial=2.0, backoff_max=10.0)


@pytest.mark.parametrize(
    ("err", "attempt", "counted", "expected"),
    [
        (NetworkError("reset"), 1, True, RetryAt(delay=2.0, attempt=1)),
        (NetworkError("reset"), 2, True, RetryAt(delay=4.0, attempt=2)),
        (NetworkError("reset"), 3, True, None),  # attempts used up
        (HttpStatusError(503, "busy"), 2, True, RetryAt(delay=4.0, attempt=2)),
        (HttpStatusError(404, "gone"), 1, True, None),  # not retryable
        (BadUrlError("nope"), 1, False, None),
        (ChecksumMismatchError("bad"), 1, True, None),
        (NameConflictError("taken"), 0, False, None),
        (InternalError("bug"), 2, True, RetryAt(delay=4.0, attempt=2)),
        (InternalError("bug"), 3, True, None),
        # waiting for space is never a failed attempt, and never gives up
        (DiskFullError("full"), 1, True, RetryAt(delay=2.0, attempt=0)),
        (DiskFullError("full"), 3, True, RetryAt(delay=4.0, attempt=2)),
        (DiskFullError("full"), 3, False, RetryAt(delay=8.0, attempt=3)),
        (DiskFullError("full"), 9, False, RetryAt(delay=10.0, attempt=9)),
    ],
)
def test_retry_table(err, attempt, counted, expected):
    assert next_try(err, attempt=attempt, counted=counted, config=CFG, draw=1.0) == expected


@pytest.mark.parametrize(
    ("attempt", "base"), [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (40, 10.0)]
)
def test_backoff_grows_exponentially_up_to_the_cap(attempt, base):
    big = DownloadConfig(max_attempts=100, backoff_initial=2.0, backoff_max=10.0)
    top = next_try(NetworkError("x"), attempt=attempt, counted=True, config=big, draw=1.0)
    low = next_try(NetworkError("x"), attempt=attempt, counted=True, config=big, draw=0.0)
    assert top is not None and low is not None
    assert top.delay == pytest.approx(base) and low.delay == pytest.approx(base / 2)


@pytest.mark.parametrize("draw", [0.0, 0.1, 0.5, 0.73, 0.999])
def test_jitter_stays_between_half_and_all_of_the_delay(draw):
    r = next_try(NetworkError("x"), attempt=2, counted=True, config=CFG, draw=draw)
    assert r is not None and 2.0 <= r.delay <= 4.0
    assert r.delay == pytest.approx(4.0 * (0.5 + 0.5 * draw))


@pytest.mark.parametrize(("retry_after", "delay"), [(7.0, 7.0), (60.0, 10.0), (0.5, 1.0)])
def test_retry_after_raises_the_delay_up_to_backoff_max(retry_after, delay):
    err: DropfetchError = HttpStatusError(503, "busy", retry_after=retry_after)
    r = next_try(err, attempt=1, counted=True, config=CFG, draw=0.0)
    assert r is not None and r.delay == pytest.approx(delay)


# -- parts of a job run without HTTP ------------------------------------------------------


def _config(tmp_path: Path, **extra: Any) -> Config:
    data = {
        "inbox": "in",
        "outbox": "out",
        "workers": 1,
        "min_free_space": 0,
        "status": {"update_interval": 0.05},
        "download": {"block_networks": [], "backoff_initial": 0.1, "backoff_max": 0.2},
        **extra,
    }
    config = config_from_mapping(data, base=tmp_path)
    for d in (
        config.inbox,
        config.outbox,
        config.work / "partial",
        config.work / "staging",
        config.work / "leases",
    ):
        d.mkdir(parents=True, exist_ok=True)
    return config


def test_start_count_gives_up_after_too_many_cut_short_tries(tmp_path):
    paths = job_paths(_config(tmp_path), "j")
    for _ in range(STARTS_PER_ATTEMPT * 2):
        count_start(paths, "sha", max_attempts=2)
    with pytest.raises(IOFailureError, match="stopped 4 times in a row"):
        count_start(paths, "sha", max_attempts=2)
    count_start(paths, "another version", max_attempts=2)  # a new job file starts over
    assert json.loads(paths.starts.read_bytes())["starts"] == 1
    paths.forget_starts()
    assert not paths.starts.exists()


def test_revoking_staging_removes_every_token_of_the_job_only(tmp_path):
    config = _config(tmp_path)
    mine, other = job_paths(config, "a"), job_paths(config, "a@b")
    tokens = [
        mine.staging_dir / staging_name(mine.key, lease_key(h), 1, n)
        for h, n in (("h1", 1), ("h2", 2))
    ]
    kept = other.staging_dir / staging_name(other.key, lease_key("h1"), 1, 3)
    for t in [*tokens, kept]:
        (t / "out").mkdir(parents=True)
    revoke_staging(mine)
    assert mine.staging_dirs() == [] and other.staging_dirs() == [kept]
    assert sorted(p.name for p in config.work.joinpath("staging").iterdir()) == [kept.name]


def test_output_owner_and_the_name_conflict_check(tmp_path):
    config = _config(tmp_path)
    (config.inbox / "a.url").write_text("http://x/a\n")
    (config.outbox / "a").mkdir()
    (config.outbox / "a.tar").write_bytes(b"kept")
    (config.outbox / "stray").mkdir()
    assert output_owner(config, "a") == "a"
    assert output_owner(config, "a.tar") == "a"  # its kept archive
    assert output_owner(config, "stray") is None  # nobody's: debris
    assert output_owner(config, "missing") is None
    assert output_owner(config, "stray", me="stray") == "stray"
    check_owner(config, "a", config.outbox / "a.tar")  # its own paths: fine
    check_owner(config, "stray", None)
    with pytest.raises(NameConflictError, match="belongs to the job 'a'"):
        check_owner(config, "a.tar", None)  # would overwrite a's kept archive


def test_output_owner_of_a_category_with_recursive(tmp_path):
    config = _config(tmp_path, recursive=True)
    (config.inbox / "sub").mkdir()
    (config.inbox / "sub" / "x.url").write_text("http://x/x\n")
    (config.outbox / "sub" / "x").mkdir(parents=True)
    assert output_owner(config, "sub") == "sub/"
    assert output_owner(config, "sub/x") == "sub/x"
    with pytest.raises(NameConflictError, match="the jobs in inbox/sub/"):
        check_owner(config, "sub", None)


def _made_job(config: Config, name: str, *, kept: bool) -> None:
    """A finished job as a run leaves it: job file, sidecar, output (and kept archive)."""
    (config.inbox / f"{name}.url").write_text("http://x/a.tar\n")
    archive = {
        "format": "tar",
        "size": 4,
        "sha256": "ab",
        **({"kept": f"{name}.tar"} if kept else {}),
    }
    sc = Sidecar(
        id=name,
        job=f"{name}.url",
        job_sha256="0" * 64,
        status=S.OK,
        output=name,
        files=["f"],
        archive=archive,
    )
    (config.inbox / f"{name}.status.json").write_bytes(sc.to_json())
    (config.outbox / name).mkdir()
    (config.outbox / name / "f").write_text("f")
    (config.outbox / f"{name}.tar").write_bytes(b"tar!")
    paths = job_paths(config, name)
    paths.partial.write_bytes(b"part")


@pytest.mark.parametrize("mode", ["purge", "keep"])
def test_a_removed_job_is_purged_or_kept(tmp_path, mode):
    config = _config(tmp_path, on_job_removed=mode)
    ctx = JobContext(
        config,
        LeaseManager(config.work / "leases", host_id="h", ttl=30),
        JobQueue(),
        EventBus(),
        NameLocks(),
    )
    finished: list[Event] = []
    ctx.events.subscribe(finished.append)
    _made_job(config, "a", kept=True)
    _made_job(config, "b", kept=False)  # b.tar is debris, not b's: never removed
    for name in ("a", "b"):
        (config.inbox / f"{name}.url").unlink()
        removed(ctx, job_paths(config, name))
        assert not job_paths(config, name).partial.exists()  # unfinished work: always gone
    left = sorted(p.name for p in config.outbox.iterdir() if p != config.work)
    if mode == "purge":
        assert left == ["b.tar"]
        assert sorted(p.name for p in config.inbox.iterdir()) == []
        assert [e for e in finished if isinstance(e, JobFinished)] == [
            JobFinished("a", None, None),
            JobFinished("b", None, None),
        ]
    else:
        assert left == ["a", "a.tar", "b", "b.tar"]
        assert sorted(p.name for p in config.inbox.iterdir()) == ["a.status.json", "b.status.json"]
    assert list((config.work / "leases").iterdir()) == []  # the lease was released


def test_debris_at_start_is_only_this_hosts_of_gone_processes(tmp_path):
    config = _config(tmp_path)
    staging = config.work / "staging"
    host = lease_key(config.lease.host_id)
    dead = _dead_pid()
    gone = staging / staging_name("a", host, dead, 1)
    live = staging / staging_name("b", host, os.getpid(), 2)  # this very process
    other = staging / staging_name("c", lease_key("another-host"), dead, 3)
    for d in (gone, live, other):
        (d / "out").mkdir(parents=True)
    clean_own_debris(config)
    assert sorted(p.name for p in staging.iterdir()) == sorted([live.name, other.name])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_running_job_keeps_the_config_it_started_with(tmp_path, fault_server):
    """A reload (SIGHUP: ``apply``) in the middle of a download reaches the next job, not
    the running one: no mix of old and new settings in one attempt."""
    config = _config(tmp_path, keep_archive=False)
    body = tar_bytes({"f.txt": b"x" * 300_000})
    fault_server.add("/a.tar", body)
    fault_server.add("/b.tar", body)
    leases = LeaseManager(config.work / "leases", host_id="h", ttl=30)
    pool = WorkerPool(config, leases)
    finished: dict[str, JobFinished] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, Progress) and event.job_id == "a" and pool.config is config:
            pool.apply(dataclasses.replace(config, keep_archive=True))  # mid-download
        if isinstance(event, JobFinished):
            finished[event.job_id] = event

    pool.events.subscribe(on_event)
    pool.start()
    try:
        (config.inbox / "a.url").write_text(fault_server.url("/a.tar") + "\n")
        pool.submit("a")
        wait_for(lambda: "a" in finished, 60, message="job a to finish")
        assert pool.config.keep_archive  # the reload happened, during a's download
        (config.inbox / "b.url").write_text(fault_server.url("/b.tar") + "\n")
        pool.submit("b")
        wait_for(lambda: "b" in finished, 60, message="job b to finish")
    finally:
        assert pool.stop(Deadline(30))
    a, b = finished["a"].sidecar, finished["b"].sidecar
    assert a is not None and a.status is S.OK and a.archive is not None
    assert "kept" not in a.archive and not (config.outbox / "a.tar").exists()
    assert b is not None and b.status is S.OK and b.archive is not None
    assert b.archive["kept"] == "b.tar" and (config.outbox / "b.tar").read_bytes() == body


def test_a_pool_is_healthy_with_every_worker_alive(tmp_path):
    config = _config(tmp_path, workers=3)
    pool = WorkerPool(config, LeaseManager(config.work / "leases", host_id="h", ttl=30))
    pool.start()
    try:
        assert pool.healthy()
        pool.apply(dataclasses.replace(config, workers=1))  # shrinking: still healthy
        assert pool.healthy()
        wait_for(
            lambda: (
                sum(
                    t.name.startswith("dropfetch-worker") and t.is_alive()
                    for t in threading.enumerate()
                )
                == 1
            ),
            message="two workers to retire",
        )
        assert pool.healthy()
    finally:
        assert pool.stop(Deadline(30))


def test_a_worker_that_dies_is_replaced_and_the_pool_is_healthy_again(
    tmp_path, monkeypatch, caplog
):
    from dropfetch import testhooks

    monkeypatch.setattr(testhooks, "_worker_bug", threading.Lock())  # fires once here too
    monkeypatch.setenv(testhooks.TEST_BUG_ENV, "worker")
    config = _config(tmp_path, workers=2)
    pool = WorkerPool(config, LeaseManager(config.work / "leases", host_id="h", ttl=30))
    with caplog.at_level("ERROR", logger="dropfetch.pool"):
        pool.start()
        try:
            wait_for(
                lambda: "a new worker takes its place" in caplog.text,
                message="the dead worker to be logged",
            )
            wait_for(pool.healthy, message="the pool to be healthy again")
            alive = [t for t in threading.enumerate() if t.name.startswith("dropfetch-worker")]
            assert len(alive) == 2, alive
        finally:
            assert pool.stop(Deadline(30))
    record = next(r for r in caplog.records if "takes its place" in r.getMessage())
    assert record.exc_info is not None  # with the traceback


# -- publish locks: per outbox name, not pool-wide ------------------------------------


@pytest.mark.parametrize(
    ("job_id", "kept", "names"),
    [
        ("a", None, {"a"}),
        ("a", "a.tar.gz", {"a", "a.tar.gz"}),
        ("SUB/x", None, {"SUB", "SUB/x"}),
        ("SUB/x", "x.zip", {"SUB", "SUB/x", "SUB/x.zip"}),
    ],
)
def test_publish_lock_names(job_id, kept, names):
    assert publish_lock_names(job_id, None if kept is None else Path(kept)) == names


def test_name_locks_serialise_shared_names_and_not_others():
    locks = NameLocks()
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with locks.hold({"x", "x.tar.gz"}):
            order.append("first in")
            inside.set()
            release.wait(30)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(30)
    with locks.hold({"other"}):  # a disjoint name: not held up by the first publish
        order.append("other")
    shared_done = threading.Event()

    def shared() -> None:
        with locks.hold({"x.tar.gz"}):  # a job named x.tar.gz: waits for the first
            order.append("shared")
        shared_done.set()

    t2 = threading.Thread(target=shared)
    t2.start()
    wait_for(lambda: locks.users("x.tar.gz") == 2, message="the second publish waiting")
    assert not shared_done.is_set()
    release.set()
    t.join(30)
    t2.join(30)
    assert order == ["first in", "other", "first out", "shared"]
    assert [locks.users(n) for n in ("x", "x.tar.gz", "other")] == [0, 0, 0]  # table empty
