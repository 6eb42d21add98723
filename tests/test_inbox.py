"""Issue 10 end to end: inbox entries and job files, with a real daemon."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import requests

from archives import zip_bytes
from harness import Daemon, wait_for
from inboxkit import CTRL, SECRET, longest_shared, make_entries

ZIP = zip_bytes({"f.txt": b"1"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def all_text(d: Daemon) -> str:
    """The log and every sidecar, as a reader of them would see it."""
    parts = [d.log()]
    parts += [
        p.read_text(errors="replace")
        for p in d.inbox.glob("*.status.json")
        if p.is_file() and not p.is_symlink()
    ]
    return "\n".join(parts)


def test_non_regular_entries_fail_as_bad_job_and_everything_goes_on(
    make_daemon, fault_server, tmp_path
):
    fault_server.add("/x.zip", ZIP)
    port = free_port()
    d = make_daemon(start=False, http={"listen": f"127.0.0.1:{port}"}, workers=2)
    d.inbox.mkdir(parents=True)
    kinds = make_entries(tmp_path / "made")
    for name in kinds:  # every kind of entry under a job file's name
        os.rename(tmp_path / "made" / name, d.inbox / f"{name}.url")
    # and under sidecars' names: with no job file, and next to a good job
    os.mkfifo(d.inbox / "orphan.status.json")
    os.symlink(tmp_path / "made-outside" / "secret.txt", d.inbox / "lnk.status.json")
    os.mkfifo(d.inbox / "good2.status.json")
    (d.inbox / "blocked.status.json").mkdir()  # no sidecar can be written for this job
    d.start()
    d.drop("blocked", fault_server.url("/x.zip"))
    d.drop("good2", fault_server.url("/x.zip"))
    d.drop("good", fault_server.url("/x.zip"))
    assert d.wait_status("good", timeout=60)["status"] == "ok"
    assert d.wait_status("good2", timeout=60)["status"] == "ok"
    for name, words in kinds.items():
        sc = d.wait_status(name, timeout=60)
        assert (sc["status"], sc["error"]["code"]) == ("failed", "bad_job"), (name, sc)
        assert sc["error"]["message"].startswith(f"{name}.url {words}; "), sc
        assert sc["job"] == f"{name}.url"
    # the listings answer, without the entries that are not sidecars
    listed = requests.get(f"http://127.0.0.1:{port}/archive", timeout=20).json()
    assert {j["id"] for j in listed} == {"good", "good2", *kinds}
    out = subprocess.run(
        [sys.executable, "-m", "dropfetch", "status", "--json", "--inbox", str(d.inbox)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {j["id"] for j in json.loads(out.stdout)} == {"good", "good2", *kinds}
    one = requests.get(f"http://127.0.0.1:{port}/archive/orphan", timeout=20)
    assert one.status_code == 404
    wait_for(
        lambda: "orphan.status.json is a FIFO, not a regular file" in d.log(),
        message="the log line about the FIFO sidecar",
    )
    wait_for(
        lambda: "blocked: blocked.status.json is a directory" in d.log(),
        message="the log line about the directory in a sidecar's place",
    )
    assert "unexpected error" not in d.log()
    assert longest_shared(all_text(d), SECRET) < 20
    assert sorted(p.name for p in d.outbox.iterdir() if not p.name.startswith(".")) == [
        "good",
        "good2",
    ]


def test_a_huge_sparse_job_file_is_not_read_whole(make_daemon):
    d = make_daemon()
    with open(d.inbox / "big.url", "wb") as fh:
        fh.truncate(1 << 30)
    sc = d.wait_status("big", timeout=60)
    assert sc["error"]["code"] == "bad_job" and "64 KiB" in sc["error"]["message"], sc
    assert d.proc is not None
    status = Path(f"/proc/{d.proc.pid}/status").read_text()
    peak_kib = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    )
    assert peak_kib < 300 * 1024, f"peak RSS {peak_kib} KiB"


def test_job_content_is_never_quoted_beyond_a_fragment(make_daemon, fault_server):
    port = fault_server.port
    contents = {
        "plain": SECRET + CTRL,
        "yaml": f"url: [{SECRET}{CTRL}",
        "yaml2": f"url: [{SECRET}",
        "key": f"url: http://127.0.0.1:{port}/x.zip\n{SECRET}: 1\n",
        "extract": f"url: http://127.0.0.1:{port}/x.zip\nextract: {SECRET}\n",
        "filename": f"url: http://127.0.0.1:{port}/x.zip\nfilename: a/{SECRET}\n",
        "shortcut": f"[InternetShortcut]\r\nURL={SECRET}\r\n",
        "port": f"http://127.0.0.1:{SECRET}/x.zip",
        "scheme": f"{SECRET}://127.0.0.1/x.zip",
    }
    d = make_daemon(log={"level": "debug"})
    for name, content in contents.items():
        d.drop(name, content)
    for name in contents:
        sc = d.wait_status(name)
        assert sc["status"] == "failed" and sc["error"]["code"] in ("bad_job", "bad_url"), sc
        assert sc["error"]["message"].isprintable()
    text = all_text(d)
    assert longest_shared(text, SECRET) <= 60
    assert "\x1b" not in text and "\x07" not in text
    assert fault_server.requests == []


def _move_in(d: Daemon, name: str, content: str, outside: Path) -> None:
    """A job file moved in from outside the inbox: settled by time, not by a close."""
    outside.mkdir(exist_ok=True)
    (outside / f"{name}.url").write_text(content)
    os.rename(outside / f"{name}.url", d.inbox / f"{name}.url")


def test_a_job_file_open_for_writing_is_taken_only_when_closed(make_daemon, fault_server, tmp_path):
    fault_server.add("/slow/the-complete-name.zip", ZIP)
    fault_server.add("/probe.zip", ZIP)
    d = make_daemon(observer="inotify", settle_time=0.3, rescan_interval=0.5)
    url = fault_server.url("/slow/the-complete-name.zip")
    pieces = ["", "# typed by a person\n", url[:-20], url[-20:-6], url[-6:] + "\n"]
    with open(d.inbox / "slow.url", "w") as fh:  # cat > inbox/slow.url
        for i, piece in enumerate(pieces):
            fh.write(piece)
            fh.flush()
            # the settle time and rescans pass while the file is open: a job file moved in
            # after this write is settled (0.3 s) and done before the next write
            _move_in(d, f"probe{i}", fault_server.url("/probe.zip"), tmp_path / "outside")
            assert d.wait_status(f"probe{i}")["status"] == "ok"
            assert d.sidecar("slow") is None, d.sidecar("slow")
    sc = d.wait_status("slow")
    assert sc["status"] == "ok" and sc["attempt"] == 1, sc
    slow = [r.path for r in fault_server.requests if r.path.startswith("/sl")]
    assert slow and set(slow) == {"/slow/the-complete-name.zip"}, slow
    assert "slow: failed" not in d.log()


def test_a_job_file_already_open_when_the_daemon_starts_waits_for_its_close(
    make_daemon, fault_server, tmp_path
):
    """inotify saw no IN_OPEN for a writer that began before the watch: /proc tells."""
    fault_server.add("/slow/the-complete-name.zip", ZIP)
    fault_server.add("/probe.zip", ZIP)
    d = make_daemon(start=False, observer="inotify", settle_time=0.3, rescan_interval=0.5)
    d.inbox.mkdir(parents=True, exist_ok=True)
    url = fault_server.url("/slow/the-complete-name.zip")
    with open(d.inbox / "slow.url", "w") as fh:
        fh.write(url[:-12])
        fh.flush()
        d.start()
        for i in range(2):  # settle time and rescans pass; the half-written file waits
            _move_in(d, f"probe{i}", fault_server.url("/probe.zip"), tmp_path / "outside")
            assert d.wait_status(f"probe{i}")["status"] == "ok"
            assert d.sidecar("slow") is None, d.sidecar("slow")
        fh.write(url[-12:] + "\n")
    sc = d.wait_status("slow")
    assert sc["status"] == "ok" and sc["attempt"] == 1, sc
    slow = [r.path for r in fault_server.requests if r.path.startswith("/sl")]
    assert set(slow) == {"/slow/the-complete-name.zip"}, slow


def test_names_with_dftmp_all_get_a_sidecar(make_daemon, fault_server):
    fault_server.add("/x.zip", ZIP)
    d = make_daemon()
    names = ["rel.dftmp.v2", "a.dftmp.host.12.3", "x.dftmp.", "dftmp", "v.dftmp.1.2"]
    for name in names:
        d.drop(name, fault_server.url("/x.zip"))
    for name in names:
        assert d.wait_status(name)["status"] == "ok", name
    assert sorted(p.name for p in d.outbox.iterdir() if not p.name.startswith(".")) == sorted(names)


def test_names_that_once_shared_a_lease_run_apart(make_daemon, fault_server):
    fault_server.add("/a.zip", zip_bytes({"a.txt": b"a"}))
    fault_server.add("/b.zip", zip_bytes({"b.txt": b"b"}))
    d = make_daemon()
    long_name = "n" * 190
    old_key = long_name[:100] + "~" + hashlib.sha256(long_name.encode()).hexdigest()[:16]
    pairs = {
        long_name: "/a.zip",
        old_key: "/b.zip",
        "p@node": "/a.zip",
        "p": "/b.zip",
        "q%2Fr": "/a.zip",
        "q~r": "/b.zip",
        "q%7Er": "/a.zip",
    }
    for name, path in pairs.items():
        d.drop(name, fault_server.url(path))
    for name, path in pairs.items():
        sc = d.wait_status(name)
        assert sc["status"] == "ok", (name, sc)
        assert sc["files"] == [path[1] + ".txt"], (name, sc)
    assert not list((d.work / "staging").iterdir())


def test_a_job_file_back_during_its_purge_runs_again_at_once(make_daemon, fault_server):
    fault_server.add("/v1.zip", zip_bytes({"v1.txt": b"1"}))
    fault_server.add("/v2.zip", zip_bytes({"v2.txt": b"2"}))
    d = make_daemon(start=False, rescan_interval=600)
    # the purge stops 5 s after "deleting": the new job file comes within milliseconds
    d.start(env={"DROPFETCH_TEST_PAUSE": "purge", "DROPFETCH_TEST_PAUSE_SECONDS": "5"})
    job = d.drop("again", fault_server.url("/v1.zip"))
    assert d.wait_status("again")["status"] == "ok"
    job.unlink()
    d.wait_status("again", "deleting")
    new = (fault_server.url("/v2.zip") + "\n").encode()
    d.drop("again", new)
    sc = d.wait_status("again", "ok", timeout=120)
    assert sc["job_sha256"] == hashlib.sha256(new).hexdigest(), sc
    assert d.output_files("again") == ["v2.txt"]


def test_delete_and_resubmit_within_milliseconds(make_daemon, fault_server):
    d = make_daemon(rescan_interval=600)
    for i in range(6):
        fault_server.add(f"/r{i}.zip", zip_bytes({f"r{i}.txt": b"x" * i}))
    job = d.drop("again", fault_server.url("/r0.zip"))
    assert d.wait_status("again")["status"] == "ok"
    for i in range(1, 6):
        job.unlink()
        new = (fault_server.url(f"/r{i}.zip") + "\n").encode()
        d.drop("again", new)
        want = hashlib.sha256(new).hexdigest()

        def done(w: str = want) -> bool:
            sc = d.sidecar("again")
            return sc is not None and sc["job_sha256"] == w and sc["status"] == "ok"

        wait_for(done, timeout=60, message=f"round {i} to be ok")
        assert d.output_files("again") == [f"r{i}.txt"]
