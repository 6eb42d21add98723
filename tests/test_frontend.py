"""Issue 7: the HTTP front end, metrics, hooks, categories, JSON logs, the status view."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from archives import OS_TEMPLATE, tar_bytes, zip_bytes
from dropfetch.status import Sidecar, Status
from dropfetch.view import render_plain, rich_table
from harness import DEBUG_LOG, check_sidecar, status_on_a_terminal, wait_for, wait_looked


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api(make_daemon, tmp_path):
    port = free_port()
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    d = make_daemon(
        http={"listen": f"127.0.0.1:{port}", "token_file": str(token)},
        status={"update_interval": 0.05},
    )
    base = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.headers["Authorization"] = "Bearer s3cret-token"
    wait_for(lambda: _up(session, base), message="the HTTP front end")
    yield d, base, session
    session.close()


def _up(session: requests.Session, base: str) -> bool:
    try:
        return session.get(base + "/archive", timeout=30).status_code == 200
    except (requests.ConnectionError, requests.Timeout):
        return False


def _metrics(session: requests.Session, base: str) -> dict[tuple[str, tuple], float]:
    text = session.get(base + "/metrics", timeout=30).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_http_api_seed_contract(api, fault_server):
    d, base, s = api
    body = tar_bytes({"big.bin": os.urandom(2_000_000)}, compression="gz")
    fault_server.add("/os/debian-7.tar.gz", body, rate=1_000_000)
    r = s.post(base + "/archive", json={"url": fault_server.url("/os/debian-7.tar.gz")}, timeout=30)
    assert r.status_code == 201, r.text
    job_id = check_sidecar(r.json())["id"]  # the queued sidecar of the job it wrote
    assert job_id == "debian-7"
    # a second POST of the same URL gets a unique name
    r2 = s.post(base + "/archive", json={"url": fault_server.url("/missing.zip")}, timeout=30)
    r3 = s.post(base + "/archive", json={"url": fault_server.url("/missing.zip")}, timeout=30)
    assert (r2.json()["id"], r3.json()["id"]) == ("missing", "missing-2")

    def downloading() -> dict | None:
        got = s.get(f"{base}/archive/{job_id}", timeout=30).json()
        return got if got["status"] == "downloading" and got["progress"] else None

    mid = wait_for(downloading, message="downloading with progress")
    check_sidecar(mid)
    assert 0 < mid["progress"] <= 100
    done = wait_for(
        lambda: (g := s.get(f"{base}/archive/{job_id}", timeout=30).json())["status"] == "ok" and g,
        message="ok",
    )
    assert check_sidecar(done)["files"] == ["big.bin"]
    listing = s.get(base + "/archive", timeout=30).json()
    assert job_id in {check_sidecar(x)["id"] for x in listing}

    r = s.delete(f"{base}/archive/{job_id}", timeout=30)
    assert r.status_code == 202
    assert check_sidecar(r.json())["status"] == "deleting"
    wait_for(
        lambda: s.get(f"{base}/archive/{job_id}", timeout=30).status_code == 404,
        message="404 after DELETE",
    )
    assert not (d.outbox / job_id).exists()
    assert not d.sidecar_path(job_id).exists()
    assert s.delete(f"{base}/archive/{job_id}", timeout=30).status_code == 404


def test_http_api_errors(api):
    _, base, s = api
    assert requests.get(base + "/archive", timeout=30).status_code == 401
    wrong = requests.get(base + "/archive", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401 and "error" in wrong.json()
    bad = s.post(
        base + "/archive",
        data=b"{not json",
        timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    assert s.post(base + "/archive", json=["x"], timeout=30).status_code == 400
    assert s.post(base + "/archive", json={"url": "ftp://x/y"}, timeout=30).status_code == 400
    assert s.post(base + "/archive", json={"url": 5}, timeout=30).status_code == 400
    big = s.post(base + "/archive", data=b"x" * 70_000, timeout=30)
    assert big.status_code == 413
    unknown = s.get(base + "/archive/no-such-job", timeout=30)
    assert unknown.status_code == 404 and "error" in unknown.json()
    assert s.get(base + "/nope", timeout=30).status_code == 404


def test_metrics_move(api, fault_server):
    d, base, s = api
    fault_server.add("/a.zip", zip_bytes({"a": b"a" * 50_000}))
    before = _metrics(s, base)
    assert ("dropfetch_jobs", (("status", "ok"),)) in before
    s.post(base + "/archive", json={"url": fault_server.url("/a.zip")}, timeout=30)
    s.post(base + "/archive", json={"url": fault_server.url("/nothing.zip")}, timeout=30)
    d.wait_status("a", "ok")
    d.wait_status("nothing", "failed")
    for name, status in (("a", "ok"), ("nothing", "failed")):  # as the front end shows them
        assert check_sidecar(s.get(f"{base}/archive/{name}", timeout=30).json())["status"] == status
    after = _metrics(s, base)
    assert after[("dropfetch_jobs", (("status", "ok"),))] == 1
    assert after[("dropfetch_jobs", (("status", "failed"),))] == 1
    assert after[("dropfetch_downloaded_bytes_total", ())] >= len(zip_bytes({"a": b"a" * 50_000}))
    assert after[("dropfetch_failures_total", (("code", "http_404"),))] == 1
    assert after[("dropfetch_download_seconds_count", ())] >= 1
    assert after[("dropfetch_extract_seconds_count", ())] >= 1


def _hook_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_hooks_environment(make_daemon, fault_server, tmp_path):
    out = tmp_path / "hook-out"
    script = _hook_script(tmp_path, f'env | grep ^DROPFETCH_ | sort > "{out}.$DROPFETCH_ID"\n')
    fault_server.add("/x.zip", zip_bytes({"f": b"1"}))
    d = make_daemon(hooks={"on_done": [str(script)], "on_failed": [str(script), "failed"]})
    d.drop("good", fault_server.url("/x.zip"))
    d.drop("bad", fault_server.url("/404.zip"))
    d.wait_status("good", "ok")
    d.wait_status("bad", "failed")
    good = wait_for(lambda: Path(f"{out}.good").exists() and Path(f"{out}.good").read_text())
    env = dict(line.split("=", 1) for line in good.splitlines())
    assert env["DROPFETCH_ID"] == "good"
    assert env["DROPFETCH_STATUS"] == "ok"
    assert env["DROPFETCH_OUTPUT"] == str(d.outbox / "good")
    assert env["DROPFETCH_SIDECAR"] == str(d.inbox / "good.status.json")
    bad = wait_for(lambda: Path(f"{out}.bad").exists() and Path(f"{out}.bad").read_text())
    assert "DROPFETCH_STATUS=failed" in bad and "DROPFETCH_ERROR_CODE=http_404" in bad


def test_failing_and_hanging_hooks_do_not_change_the_result(make_daemon, fault_server, tmp_path):
    failing = _hook_script(tmp_path, "echo boom >&2; exit 3\n")
    hanging = tmp_path / "hang.sh"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(0o755)
    fault_server.add("/x.zip", zip_bytes({"f": b"1"}))
    d = make_daemon(hooks={"on_done": [str(failing)], "on_failed": [str(hanging)], "timeout": 1})
    d.drop("one", fault_server.url("/x.zip"))
    d.drop("two", fault_server.url("/404.zip"))
    assert d.wait_status("one")["status"] == "ok"
    assert d.wait_status("two")["status"] == "failed"
    wait_for(lambda: "exited 3: boom" in d.log(), message="the failing hook's log line")
    wait_for(lambda: "timed out after 1 s" in d.log(), message="the hook timeout")
    assert d.sidecar("one")["status"] == "ok"
    assert d.sidecar("two")["error"]["code"] == "http_404"


def test_recursive_categories(make_daemon, fault_server):
    fault_server.add("/t.tar.gz", tar_bytes(OS_TEMPLATE, compression="gz"))
    d = make_daemon(recursive=True, rescan_interval=0.5, **DEBUG_LOG)
    d.drop("debian", fault_server.url("/t.tar.gz"), directory=d.inbox / "os")
    d.drop("top", fault_server.url("/t.tar.gz"))
    d.drop("deep", fault_server.url("/t.tar.gz"), directory=d.inbox / "a" / "b")
    sc = wait_for(
        lambda: (
            (p := d.inbox / "os" / "debian.status.json").exists()
            and json.loads(p.read_text())["status"] == "ok"
            and json.loads(p.read_text())
        )
    )
    check_sidecar(sc)
    assert sc["id"] == "os/debian" and sc["output"] == "os/debian"
    assert sorted(OS_TEMPLATE) == sorted(
        str(p.relative_to(d.outbox / "os" / "debian"))
        for p in (d.outbox / "os" / "debian").rglob("*")
        if p.is_file()
    )
    assert d.wait_status("top")["status"] == "ok"
    wait_looked(d)  # a whole rescan since, which would have found it
    assert not (d.inbox / "a" / "b" / "deep.status.json").exists()  # one level only
    (d.inbox / "os" / "debian.url").unlink()
    wait_for(lambda: not (d.outbox / "os" / "debian").exists(), message="purge in a category")


def test_json_logs(make_daemon, fault_server):
    fault_server.add("/x.zip", zip_bytes({"f": b"1"}))
    d = make_daemon(log={"format": "json"})
    d.drop("js", fault_server.url("/x.zip"))
    d.wait_status("js", "ok")
    wait_for(lambda: "published" in d.log())
    records = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    assert all({"time", "level", "job", "event"} <= set(r) for r in records)
    published = [r for r in records if "published" in r["event"]]
    assert published and published[0]["job"] == "js" and published[0]["level"] == "info"


def _sidecars() -> list[Sidecar]:
    a = Sidecar(
        id="alpha",
        job="alpha.url",
        job_sha256="a" * 64,
        status=Status.OK,
        files=["x"],
        output="alpha",
        progress=100,
    )
    b = Sidecar(
        id="beta",
        job="beta.url",
        job_sha256="b" * 64,
        status=Status.DOWNLOADING,
        progress=42,
        bytes_done=42,
        bytes_total=100,
        speed=2_000_000.0,
        eta=3.0,
        host="node-a",
    )
    c = Sidecar(
        id="gamma",
        job="gamma.url",
        job_sha256="c" * 64,
        status=Status.FAILED,
        error={"code": "http_404", "message": "the server says 404"},
    )
    return [a, b, c]


def test_status_view_rich_and_plain():
    console = Console(record=True, width=160, force_terminal=True, color_system="truecolor")
    console.print(rich_table(_sidecars()))
    text = console.export_text(clear=False)
    lines = [
        line for line in text.splitlines() if any(n in line for n in ("alpha", "beta", "gamma"))
    ]
    assert [n for line in lines for n in ("alpha", "beta", "gamma") if n in line] == [
        "beta",
        "gamma",
        "alpha",
    ]  # active first
    assert "downloading 42%" in text and "1.9 MiB/s" in text and "node-a" in text
    assert "http_404: the server says 404" in text
    assert "\x1b[" in console.export_text(styles=True)
    plain = render_plain(_sidecars())
    assert "\x1b" not in plain
    assert plain.splitlines()[1].startswith("beta") and "42%" in plain


def test_status_command_plain_and_json(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for sc in _sidecars():
        (inbox / f"{sc.id}.status.json").write_bytes(sc.to_json())
    run = [sys.executable, "-m", "dropfetch", "status", "--inbox", str(inbox)]
    plain = subprocess.run(run, capture_output=True, text=True, timeout=30, check=True).stdout
    assert "beta" in plain and "\x1b" not in plain
    js = json.loads(
        subprocess.run(
            [*run, "--json"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    )
    assert [x["id"] for x in js] == ["alpha", "beta", "gamma"]
    for item in js:
        check_sidecar(item)


def test_status_through_a_pty(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for sc in _sidecars():
        (inbox / f"{sc.id}.status.json").write_bytes(sc.to_json())
    out = status_on_a_terminal(inbox, 160)
    assert "\x1b[" in out  # colours: rich saw a terminal
    assert "━" in out or "╸" in out  # a drawn progress bar
    assert "beta" in out and "alpha" in out


def test_submit_options_and_stdin(tmp_path):
    inbox = tmp_path / "inbox"
    base = [sys.executable, "-m", "dropfetch", "submit", "--inbox", str(inbox)]
    sha = "ab" * 32
    done = subprocess.run(
        [
            *base,
            "https://example.org/x/tool.tar.gz",
            "--name",
            "t",
            "--sha256",
            sha,
            "--no-extract",
            "--filename",
            "t.tgz",
            "--keep-archive",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == str(inbox / "t.url")
    from dropfetch.jobfile import parse_job

    spec = parse_job((inbox / "t.url").read_bytes())
    assert (spec.sha256, spec.extract, spec.filename, spec.keep_archive) == (
        sha,
        False,
        "t.tgz",
        True,
    )
    urls = "https://example.org/a.zip\n# comment\n\nhttps://example.org/dir/b-1.0.tar.xz\n"
    done = subprocess.run(base, input=urls, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(inbox / "a.url"), str(inbox / "b-1.0.url")]
    assert (inbox / "a.url").read_text() == "https://example.org/a.zip\n"
    again = subprocess.run(base, input=urls, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "exists already" in again.stderr
    bad = subprocess.run(
        [*base, "ftp://example.org/x"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "http" in bad.stderr
    assert sorted(p.name for p in inbox.iterdir()) == ["a.url", "b-1.0.url", "t.url"]


def _event_stream(base: str, token: str) -> tuple[socket.socket, bytes]:
    """GET /events on a raw socket: the socket and what came after the answer's head."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head
    return sock, rest


def test_events_show_a_job_go_downloading_then_ok(api, fault_server):
    """Issue 12: the stream of a real daemon shows its job's sidecars as they are
    written, downloading (with progress) before ok, each valid under the schema; the
    seed's GET /arhive shows the same job in the seed's shapes."""
    d, base, s = api
    fault_server.add("/ev.tar.gz", tar_bytes({"f.bin": os.urandom(1_000_000)}), rate=1_000_000)
    sock, buf = _event_stream(base, "s3cret-token")
    seen: list[dict] = []
    try:
        r = s.post(base + "/arhive", json={"url": fault_server.url("/ev.tar.gz")}, timeout=30)
        assert r.status_code == 200 and r.json() == {"id": "ev"}
        while not seen or seen[-1]["status"] != "ok":
            while b"\n\n" not in buf:
                chunk = sock.recv(65536)
                assert chunk, "the stream ended"
                buf += chunk
            block, _, buf = buf.partition(b"\n\n")
            if block.startswith(b"data: "):
                sc = check_sidecar(json.loads(block[len(b"data: ") :]))
                if sc["id"] == "ev":
                    seen.append(sc)
                    if sc["status"] == "downloading" and sc["progress"]:
                        shape = s.get(base + "/arhive", json={"id": "ev"}, timeout=30).json()
                        assert set(shape) == {"id", "status", "progress"}
    finally:
        sock.close()
    statuses = [sc["status"] for sc in seen]
    assert "downloading" in statuses and statuses.index("downloading") < statuses.index("ok")
    assert any(sc["progress"] for sc in seen if sc["status"] == "downloading")
    assert seen[-1]["files"] == ["f.bin"]
    shape = s.get(base + "/arhive", json={"id": "ev"}, timeout=30).json()
    assert shape == {"id": "ev", "status": "ok", "files": ["f.bin"]}
    r = s.delete(base + "/arhive", json={"id": "ev"}, timeout=30)
    assert r.status_code == 200 and r.json() == {"id": "ev", "status": "deleting"}
    wait_for(lambda: not (d.outbox / "ev").exists(), message="the output removed")


def test_an_open_event_stream_ends_at_sigterm(api):
    """Issue 12: a daemon stopped with a client on /events ends the stream (EOF) and
    exits 0 within its shutdown deadline."""
    d, base, _ = api
    sock, buf = _event_stream(base, "s3cret-token")
    try:
        while b"retry: " not in buf:
            buf += sock.recv(65536)
        assert d.proc is not None
        d.signal(signal.SIGTERM)
        while sock.recv(65536):  # to the end of the stream
            pass
        assert d.proc.wait(60) == 0, d.log()[-3000:]
        assert "Traceback" not in d.log() and "did not stop" not in d.log(), d.log()[-3000:]
    finally:
        sock.close()
