"""Crash safety end to end (SPEC §8): ``kill -9`` at each phase of a job, then a restart.

Every job must end exactly once with the right content, and nothing may be left
behind: no staging, no partial files, no temporary files, no leases. The phases are
hit deterministically: a throttled server for "mid-download", an archive of many small
files for "mid-extract", the ``DROPFETCH_TEST_PAUSE`` hook (testhooks.py) for "between
extract and publish" and "mid-purge", and the sd_notify STATUS line for "queued".
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from archives import tar_bytes, zip_bytes
from harness import wait_for
from test_signals import NotifySocket

SMALL = {"a.txt": b"alpha\n", "dir/b.bin": os.urandom(4000)}


@functools.cache
def _many_files() -> dict[str, bytes]:
    # 30000 small files: extraction takes seconds, long enough to be killed in the middle
    return {f"d{i // 1000:02d}/f{i:05d}.txt": b"%d\n" % i * 20 for i in range(30_000)}


@functools.cache
def _many_files_archive() -> bytes:
    return tar_bytes(_many_files(), compression="gz")


def _temporaries(root: Path) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if ".dftmp." in p.name
        or (p.name.endswith((".tmp", ".part", ".broken")) and ".dropfetch" not in p.parts)
    ]


def assert_no_debris(d, jobs: list[str]) -> None:
    """One output per job and nothing else: no staging, partials, temporaries, leases."""
    assert sorted(p.name for p in d.outbox.iterdir() if p.name != ".dropfetch") == sorted(jobs)
    assert sorted(p.name for p in d.inbox.iterdir()) == sorted(
        f"{j}{suffix}" for j in jobs for suffix in (".url", ".status.json")
    )
    assert not list((d.work / "staging").iterdir())
    assert not list((d.work / "partial").iterdir())
    wait_for(lambda: not list((d.work / "leases").iterdir()), message="the leases released")
    assert not _temporaries(d.inbox)
    assert not _temporaries(d.outbox)


def _kill(d) -> None:
    assert d.proc is not None and d.proc.poll() is None, d.log()[-2000:]
    d.kill()
    assert d.proc.returncode == -9


def test_kill_while_queued(fault_server, make_daemon, tmp_path):
    slow = os.urandom(3_000_000)
    res = fault_server.add("/slow.bin", slow, rate=100_000)
    fault_server.add("/next.zip", zip_bytes(SMALL))
    notify = NotifySocket(tmp_path)
    try:
        d = make_daemon(workers=1, start=False)
        d.start(env=notify.env(watchdog_usec=200_000))
        d.drop("slow", fault_server.url("/slow.bin"))
        d.wait_status("slow", "downloading")
        d.drop("next", fault_server.url("/next.zip"))
        notify.wait_for(lambda m: "1 running, 1 queued" in m, message="'next' queued")
        _kill(d)
    finally:
        notify.close()
    assert d.sidecar("next") is None or d.sidecar("next")["status"] == "queued"
    assert not fault_server.requests_for("/next.zip")

    res.rate = None
    d.start()
    assert d.wait_status("next")["status"] == "ok"
    assert d.wait_status("slow")["status"] == "ok"
    assert d.output_files("next") == sorted(SMALL)
    assert (d.outbox / "slow" / "slow.bin").read_bytes() == slow
    assert len(fault_server.requests_for("/next.zip")) == 1
    assert_no_debris(d, ["next", "slow"])


def test_kill_mid_download_resumes_from_the_partial(fault_server, make_daemon):
    body = tar_bytes({"big.bin": os.urandom(2_500_000), "small.txt": b"s"}, compression="gz")
    res = fault_server.add("/big.tar.gz", body, rate=200_000)
    d = make_daemon()
    d.drop("big", fault_server.url("/big.tar.gz"))
    wait_for(
        lambda: (d.sidecar("big") or {}).get("bytes_done", 0) > 300_000,
        message="the download under way",
    )
    _kill(d)
    [partial] = [p for p in (d.work / "partial").iterdir() if p.suffix == ".part"]
    offset = partial.stat().st_size
    assert 0 < offset < len(body)
    assert partial.read_bytes() == body[:offset]

    res.rate = None
    d.start()
    sc = d.wait_status("big")
    assert sc["status"] == "ok", sc
    assert sc["archive"]["sha256"] == hashlib.sha256(body).hexdigest()
    last = fault_server.requests_for("/big.tar.gz")[-1]
    assert last.header("Range") == f"bytes={offset}-"
    assert last.header("If-Range") == res.etag
    assert d.output_files("big") == ["big.bin", "small.txt"]
    assert_no_debris(d, ["big"])


def test_kill_mid_extract(fault_server, make_daemon):
    body = _many_files_archive()
    fault_server.add("/many.tar.gz", body)
    d = make_daemon()
    d.drop("many", fault_server.url("/many.tar.gz"))
    d.wait_status("many", "unpacking")
    wait_for(
        lambda: any(next(p.iterdir(), None) for p in (d.work / "staging").iterdir()),
        message="extraction to write files",
    )
    _kill(d)
    assert not (d.outbox / "many").exists()
    assert d.sidecar("many")["status"] == "unpacking"

    d.start()
    sc = d.wait_status("many")
    assert sc["status"] == "ok", sc
    assert len(sc["files"]) == len(_many_files())
    for name in ("d00/f00000.txt", "d17/f17017.txt", "d29/f29999.txt"):
        assert (d.outbox / "many" / name).read_bytes() == _many_files()[name]
    # the complete download was kept: the restart asked only for what comes after it
    assert fault_server.requests_for("/many.tar.gz")[-1].header("Range") == f"bytes={len(body)}-"
    assert_no_debris(d, ["many"])


def test_kill_between_extract_and_publish(fault_server, make_daemon):
    fault_server.add("/pkg.tar.gz", tar_bytes(SMALL, compression="gz"))
    plain = os.urandom(100_000)
    fault_server.add("/report.bin", plain)
    d = make_daemon(workers=2, start=False)
    d.start(env={"DROPFETCH_TEST_PAUSE": "publish"})
    d.drop("pkg", fault_server.url("/pkg.tar.gz"))
    d.drop("report", fault_server.url("/report.bin"))
    wait_for(
        lambda: d.log().count("DROPFETCH_TEST_PAUSE=publish") == 2,
        message="both workers held before publishing",
    )
    _kill(d)
    assert not (d.outbox / "pkg").exists() and not (d.outbox / "report").exists()
    assert len(list((d.work / "staging").iterdir())) == 2  # extracted, not published

    d.start()
    assert d.wait_status("pkg")["status"] == "ok"
    assert d.wait_status("report")["status"] == "ok"
    assert d.output_files("pkg") == sorted(SMALL)
    for name, data in SMALL.items():
        assert (d.outbox / "pkg" / name).read_bytes() == data
    assert (d.outbox / "report" / "report.bin").read_bytes() == plain
    assert_no_debris(d, ["pkg", "report"])


def test_kill_between_extract_and_publish_of_a_new_version(fault_server, make_daemon):
    fault_server.add("/v1.zip", zip_bytes({"v1.txt": b"one"}))
    fault_server.add("/v2.zip", zip_bytes({"v2.txt": b"two"}))
    d = make_daemon(start=False)
    d.start(env={"DROPFETCH_TEST_PAUSE": "publish"})
    d.drop("app", fault_server.url("/v1.zip"))
    wait_for(lambda: "DROPFETCH_TEST_PAUSE=publish" in d.log(), message="the hold")
    _kill(d)
    d.start()
    d.wait_status("app", "ok")
    assert d.stop() == 0
    d.drop("app", fault_server.url("/v2.zip"))  # a new version; the old output stays meanwhile
    d.start(env={"DROPFETCH_TEST_PAUSE": "publish"})
    wait_for(lambda: d.log().count("DROPFETCH_TEST_PAUSE=publish") == 2, message="the hold")
    _kill(d)
    assert d.output_files("app") == ["v1.txt"]  # the old version, whole

    d.start()
    wait_for(
        lambda: (
            (d.sidecar("app") or {}).get("status") == "ok" and d.output_files("app") == ["v2.txt"]
        ),
        message="the new version",
    )
    assert_no_debris(d, ["app"])


def test_kill_between_the_final_rename_and_its_group_fsync(fault_server, make_daemon):
    """Killed after the `ok` sidecar is renamed into place, before the directory fsync
    it shares with other jobs: the sidecar is whole (and after a power cut, which may
    take that rename back, the job runs again and publishes the same output)."""
    fault_server.add("/pkg.tar.gz", tar_bytes(SMALL, compression="gz"))
    d = make_daemon(start=False)
    d.start(env={"DROPFETCH_TEST_CRASH": "group-sync"})
    d.drop("pkg", fault_server.url("/pkg.tar.gz"))
    wait_for(lambda: d.proc.poll() is not None, message="the daemon to kill itself")
    assert d.proc.returncode == -9
    d.kill()
    sc = d.sidecar("pkg")  # valid JSON, valid against the schema
    assert sc is not None and sc["status"] == "ok", sc
    assert d.output_files("pkg") == sorted(SMALL)

    d.start()  # the same job, finished: nothing to do (its dead process's lease stays
    # until the job is looked at with a lease: as after a kill at the "finished" point)
    wait_for(lambda: "taking back the lease" in d.log(), message="the job looked at again")
    assert d.wait_status("pkg")["status"] == "ok"
    assert len(fault_server.requests_for("/pkg.tar.gz")) == 1
    assert not list((d.work / "staging").iterdir())
    d.kill()

    # what a power cut may leave: the rename of `ok` taken back, the unpacking one there
    sc.update(status="unpacking", finished=None, files=[], output=None)
    d.sidecar_path("pkg").write_text(json.dumps(sc))
    d.start()
    wait_for(lambda: len(fault_server.requests_for("/pkg.tar.gz")) == 2, message="a new try")
    assert d.wait_status("pkg")["status"] == "ok"
    assert d.output_files("pkg") == sorted(SMALL)
    for name, data in SMALL.items():
        assert (d.outbox / "pkg" / name).read_bytes() == data
    assert_no_debris(d, ["pkg"])


def test_kill_mid_purge(fault_server, make_daemon):
    fault_server.add("/done.zip", zip_bytes(SMALL))
    fault_server.add("/half.bin", os.urandom(3_000_000), rate=100_000)
    fault_server.add("/other.zip", zip_bytes(SMALL))
    d = make_daemon(workers=2, start=False)
    d.start(env={"DROPFETCH_TEST_PAUSE": "purge"})
    done = d.drop("done", fault_server.url("/done.zip"))
    d.wait_status("done", "ok")
    half = d.drop("half", fault_server.url("/half.bin"))
    wait_for(
        lambda: (d.sidecar("half") or {}).get("bytes_done", 0) > 100_000,
        message="the download under way",
    )
    done.unlink()
    half.unlink()
    wait_for(lambda: d.log().count("DROPFETCH_TEST_PAUSE=purge") == 2, message="both purges held")
    _kill(d)
    assert d.sidecar("done")["status"] == "deleting"
    assert d.sidecar("half")["status"] == "deleting"
    assert (d.outbox / "done").is_dir()
    assert any(p.suffix == ".part" for p in (d.work / "partial").iterdir())

    d.start()
    wait_for(
        lambda: d.sidecar("done") is None and d.sidecar("half") is None,
        message="the purges finished",
    )
    d.drop("other", fault_server.url("/other.zip"))
    assert d.wait_status("other")["status"] == "ok"
    assert_no_debris(d, ["other"])
