"""Credentials: a job's ``headers``, ``download.netrc``, and the origin rule (never to
another origin after a redirect); the secret appears nowhere it should not."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dropfetch.config import ConfigError, DownloadConfig, config_from_mapping
from dropfetch.credentials import load_netrc, origin, request_headers
from dropfetch.download import Downloader
from dropfetch.errors import BadJobError
from dropfetch.jobfile import OPTIONS, parse_job
from dropfetch.submit import header_lines, job_content
from faultserver import FaultServer
from harness import DEBUG_LOG, wait_for
from proxyserver import Proxy

SECRET = "s3cr3t-T0KEN-9f1c"  # noqa: S105 - the string the test looks for
NETRC_SECRET = "n3trc-PASS-77ab"  # noqa: S105
PROXY_SECRET = "pr0xy-PASS-c4e2"  # noqa: S105
OPEN = DownloadConfig(block_networks=(), timeout_connect=5, timeout_read=5)


def _netrc(tmp_path: Path, host: str = "127.0.0.1", mode: int = 0o600) -> Path:
    path = tmp_path / "netrc"
    path.write_text(f"machine {host}\n  login alice\n  password {NETRC_SECRET}\n")
    path.chmod(mode)
    return path


def _basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


# --- the headers option ----------------------------------------------------------------


def test_headers_option_parsed_and_hidden_from_repr() -> None:
    spec = parse_job(
        f"url: https://example.org/a.tgz\nheaders:\n  Authorization: Bearer {SECRET}\n"
        "  Cookie: a=1; b=2\n".encode()
    )
    assert spec.headers == (("Authorization", f"Bearer {SECRET}"), ("Cookie", "a=1; b=2"))
    assert SECRET not in repr(spec)
    assert "headers" in OPTIONS


@pytest.mark.parametrize(
    "headers",
    [
        f"[Authorization: {SECRET}]",  # a list, not a mapping
        f'{{"Authorization {SECRET}": x}}',  # not a token (a mistyped line)
        f'{{Host: "{SECRET}"}}',
        f'{{range: "{SECRET}"}}',
        f'{{Content-Length: "{SECRET}"}}',
        f'{{Transfer-Encoding: "{SECRET}"}}',
        f'{{Connection: "{SECRET}"}}',
        f'{{X-A: "{SECRET}\\r\\nX-B: 1"}}',
        f'{{X-A: "{SECRET}\\n"}}',
        f'{{X-A: "{SECRET}\\0"}}',
        f'{{X-A: "{SECRET}\\u20ac"}}',  # not Latin-1
        f"{{X-A: [{SECRET}]}}",
    ],
)
def test_bad_headers_are_bad_job_without_the_value(headers: str) -> None:
    with pytest.raises(BadJobError) as info:
        parse_job(f"url: https://example.org/a\nheaders: {headers}\n".encode())
    assert info.value.code == "bad_job"
    assert SECRET not in info.value.message


def test_header_lines_for_submit_and_the_page() -> None:
    assert header_lines(["Authorization: Bearer x:y", "", " Cookie :a=1 "]) == {
        "Authorization": "Bearer x:y",
        "Cookie": "a=1",
    }
    with pytest.raises(BadJobError) as info:
        header_lines([f"Authorization {SECRET}"])
    assert SECRET not in info.value.message
    content = job_content("https://example.org/a.zip", headers={"X-Token": SECRET})
    assert parse_job(content).headers == (("X-Token", SECRET),)


# --- the origin rule -------------------------------------------------------------------


def test_origin_rule() -> None:
    job = "https://files.example.org/a.zip"
    own = (("X-Token", SECRET),)
    creds = {"files.example.org": ("alice", NETRC_SECRET)}
    same = request_headers(job, "https://FILES.example.org:443/b.zip?x=1", own, creds)
    assert same == {"X-Token": SECRET, "Authorization": _basic("alice", NETRC_SECRET)}
    for elsewhere in (
        "https://cdn.example.org/a.zip",  # another host
        "https://files.example.org:8443/a.zip",  # another port
        "http://files.example.org/a.zip",  # a downgrade
    ):
        assert request_headers(job, elsewhere, own, creds) == {}, elsewhere
    # the job's own Authorization wins over the netrc's; "default" is used for others
    mine = (("authorization", "Bearer x"),)
    assert request_headers(job, job, mine, creds) == {"authorization": "Bearer x"}
    assert request_headers(job, job, (), {"default": ("bob", "pw")}) == {
        "Authorization": _basic("bob", "pw")
    }
    assert origin("http://h/x") == ("http", "h", 80)


# --- netrc -----------------------------------------------------------------------------


def test_load_netrc(tmp_path: Path) -> None:
    assert load_netrc(_netrc(tmp_path)) == {"127.0.0.1": ("alice", NETRC_SECRET)}
    insecure = _netrc(tmp_path, mode=0o644)
    with pytest.raises(ValueError, match="insecure") as info:
        load_netrc(insecure)
    assert str(insecure) in str(info.value)
    with pytest.raises(ValueError, match="cannot read"):
        load_netrc(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.write_text(f"machine h login a password {NETRC_SECRET} bogus {SECRET}\n")
    broken.chmod(0o600)
    with pytest.raises(ValueError, match="cannot be parsed") as info:
        load_netrc(broken)
    assert SECRET not in str(info.value) and NETRC_SECRET not in str(info.value)


def test_netrc_config_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _netrc(tmp_path)
    cfg = config_from_mapping({"download": {"netrc": "netrc"}}, base=tmp_path)
    assert cfg.download.netrc == good
    assert config_from_mapping({"download": {"netrc": False}}).download.netrc is None
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".netrc").write_text("machine h login a password p\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    assert config_from_mapping({"download": {"netrc": True}}).download.netrc == Path(
        tmp_path / "home" / ".netrc"
    )
    good.chmod(0o640)
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"download": {"netrc": str(good)}}, where="cfg.yaml")
    message = str(info.value)
    assert "cfg.yaml: key download.netrc" in message and str(good) in message
    assert NETRC_SECRET not in message
    with pytest.raises(ConfigError, match=r"key download\.netrc"):
        config_from_mapping({"download": {"netrc": str(tmp_path / "nope")}})


# --- the downloader: to the origin, never elsewhere --------------------------------------


def test_headers_and_netrc_go_to_the_origin_only(tmp_path: Path) -> None:
    import dataclasses

    with FaultServer() as first, FaultServer() as other:
        other.add("/f.bin", b"payload")
        need = {"X-Token": SECRET, "Authorization": _basic("alice", NETRC_SECRET)}
        first.add("/start", redirect_to=first.url("/hop"), require_headers=need)
        first.add("/hop", redirect_to=other.url("/f.bin"), require_headers=need)
        config = dataclasses.replace(OPEN, netrc=_netrc(tmp_path))
        with Downloader(config) as d:
            got = d.fetch(first.url("/start"), tmp_path / "f.part", headers=(("X-Token", SECRET),))
        assert got.path.read_bytes() == b"payload"
        assert [r.path for r in first.requests] == ["/start", "/hop"]  # no 401
        (sent,) = other.requests
        assert sent.header("X-Token") is None and sent.header("Authorization") is None
        assert SECRET not in json.dumps(sent.headers) and "alice" not in str(sent.headers)


# --- end to end: the secret is nowhere -------------------------------------------------


def test_secret_appears_nowhere(make_daemon, tmp_path: Path) -> None:
    from test_frontend import free_port

    port = free_port()
    with FaultServer() as first, FaultServer() as other, Proxy() as proxy:
        other.add("/f.bin", b"the file\n")
        need = {"X-Token": SECRET, "Authorization": _basic("alice", NETRC_SECRET)}
        first.add("/f.bin", redirect_to=other.url("/f.bin"), require_headers=need)
        d = make_daemon(
            **DEBUG_LOG,
            download={"netrc": str(_netrc(tmp_path)), "proxy": proxy.url(f"bob:{PROXY_SECRET}")},
            http={"listen": f"127.0.0.1:{port}"},
        )
        job = f"url: {first.url('/f.bin')}\nextract: false\nheaders:\n  X-Token: {SECRET}\n"
        d.drop("good", job)
        d.drop("bad", f'url: {first.url("/f.bin")}\nheaders:\n  X-A: "{SECRET}\\n"\n')
        assert d.wait_status("good")["status"] == "ok"
        assert d.wait_status("bad")["error"]["code"] == "bad_job"
        assert first.requests[0].header("X-Token") == SECRET
        (sent,) = other.requests
        assert sent.header("X-Token") is None and sent.header("Authorization") is None
        assert len(proxy.passed) == 2  # both hops went through the proxy
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(base + "/archive") is not None, message="the HTTP front end")
        answers = [_get(base + p) or "" for p in ("/archive", "/archive/good", "/metrics")]
    env = {**os.environ}
    views = [
        subprocess.run(
            [sys.executable, "-m", "dropfetch", "status", *mode, "--inbox", str(d.inbox)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        ).stdout
        for mode in ([], ["--json"])
    ]
    assert "good" in views[0] and '"good"' in views[1]
    d.stop()
    sidecars = [p.read_text() for p in d.inbox.glob("*.status.json")]
    places = {"log": d.log(), "sidecars": "".join(sidecars), "views": "".join(views)}
    places["http"] = "".join(answers)
    assert "DEBUG" in places["log"]
    for where, text in places.items():
        for secret in (
            SECRET,
            NETRC_SECRET,
            PROXY_SECRET,
            base64.b64encode(b"alice:" + NETRC_SECRET.encode()),
        ):
            shown = secret if isinstance(secret, str) else secret.decode()
            assert shown not in text, where


def _get(url: str) -> str | None:
    try:
        resp = requests.get(url, timeout=30)
    except requests.RequestException:
        return None
    return resp.text if resp.status_code == 200 else None


def test_submit_header_is_repeatable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dropfetch.cli import main

    inbox = tmp_path / "inbox"
    argv = ["submit", "https://example.org/a.zip", "--inbox", str(inbox)]
    assert main([*argv, "--header", f"X-Token: {SECRET}", "--header", "Cookie: a=1"]) == 0
    assert parse_job((inbox / "a.url").read_bytes()).headers == (
        ("X-Token", SECRET),
        ("Cookie", "a=1"),
    )
    assert main([*argv, "--name", "b", "--header", f"Host: {SECRET}"]) == 2
    err = capsys.readouterr().err
    assert "Host" in err and SECRET not in err and not (inbox / "b.url").exists()
