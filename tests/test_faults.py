"""Faults end to end: a real daemon against a misbehaving server (issue 3).

Retries, backoff and Retry-After, resume with Range/If-Range, a file that changes
between attempts, final errors, stalls and timeouts.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime

from archives import tar_bytes
from harness import wait_for

PAYLOAD = {"data/blob.bin": os.urandom(600_000), "readme.txt": b"hello\n"}


def _ts(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _ranges(fault_server, path: str) -> list[str | None]:
    return [r.header("Range") for r in fault_server.requests_for(path) if r.method == "GET"]


def test_dropped_connection_resumes_from_the_right_offset(fault_server, make_daemon):
    body = tar_bytes(PAYLOAD, compression="gz")
    cut = len(body) * 40 // 100
    fault_server.add("/drop.tar.gz", body, drop_after=cut)
    d = make_daemon()
    d.drop("drop", fault_server.url("/drop.tar.gz"))
    sc = d.wait_status("drop")
    assert sc["status"] == "ok", sc
    assert sc["attempt"] == 2
    assert sc["archive"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert _ranges(fault_server, "/drop.tar.gz") == [None, f"bytes={cut}-"]
    second = fault_server.requests_for("/drop.tar.gz")[1]
    assert second.header("If-Range") == fault_server.resources["/drop.tar.gz"].etag
    for name, data in PAYLOAD.items():
        assert (d.outbox / "drop" / name).read_bytes() == data
    assert not list((d.work / "partial").iterdir())


def test_503_503_200_ends_ok_on_attempt_3(fault_server, make_daemon):
    data = os.urandom(50_000)
    fault_server.add("/flaky.bin", data, statuses=[503, 503])
    d = make_daemon(download={"backoff_initial": 1.5, "backoff_max": 3})
    d.drop("flaky", fault_server.url("/flaky.bin"))
    waiting = d.wait_status("flaky", "waiting")
    assert waiting["attempt"] == 1
    assert waiting["error"]["code"] == "http_503"
    assert waiting["next_attempt_at"] is not None
    # after the 503 (a bound that only grows on a loaded machine, unlike a difference of
    # two times the daemon took)
    assert _ts(waiting["next_attempt_at"]) > fault_server.requests_for("/flaky.bin")[0].at
    sc = d.wait_status("flaky")
    assert sc["status"] == "ok", sc
    assert sc["attempt"] == 3
    assert sc["error"] is None and sc["next_attempt_at"] is None
    assert (d.outbox / "flaky" / "flaky.bin").read_bytes() == data
    assert len(fault_server.requests_for("/flaky.bin")) == 3


def test_retry_after_is_honoured(fault_server, make_daemon):
    fault_server.add("/busy.bin", b"x" * 1000, statuses=[503], retry_after="3")
    # backoff alone would retry within 0.1 s; Retry-After asks for 3 s
    d = make_daemon(download={"backoff_initial": 0.1, "backoff_max": 30})
    d.drop("busy", fault_server.url("/busy.bin"))
    waiting = d.wait_status("busy", "waiting")
    assert waiting["error"]["code"] == "http_503"
    assert waiting["attempt"] == 1
    first = fault_server.requests_for("/busy.bin")[0]
    # 3 s after the 503 at least (0.01: the sidecar's times are rounded)
    assert _ts(waiting["next_attempt_at"]) >= first.at + 3 - 0.01
    assert d.wait_status("busy")["status"] == "ok"
    requests = fault_server.requests_for("/busy.bin")
    assert len(requests) == 2
    # the second try did not start before the time Retry-After asked for
    assert requests[1].at >= _ts(waiting["next_attempt_at"]) - 0.01


def test_server_ignoring_range_still_gives_the_right_sha256(fault_server, make_daemon):
    data = os.urandom(800_000)
    fault_server.add("/norange.bin", data, drop_after=300_000, ignore_range=True)
    d = make_daemon()
    d.drop("norange", fault_server.url("/norange.bin"))
    sc = d.wait_status("norange")
    assert sc["status"] == "ok", sc
    assert _ranges(fault_server, "/norange.bin") == [None, "bytes=300000-"]
    assert sc["archive"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (d.outbox / "norange" / "norange.bin").read_bytes() == data


def test_file_changed_between_attempts_is_restarted_not_spliced(fault_server, make_daemon):
    old = os.urandom(500_000)
    new = os.urandom(500_000)
    res = fault_server.add("/moving.bin", old, drop_after=200_000)
    old_etag = res.etag
    d = make_daemon(download={"backoff_initial": 2, "backoff_max": 2})
    d.drop("moving", fault_server.url("/moving.bin"))
    d.wait_status("moving", "waiting")
    fault_server.replace("/moving.bin", new)
    sc = d.wait_status("moving")
    assert sc["status"] == "ok", sc
    second = fault_server.requests_for("/moving.bin")[1]
    assert second.header("Range") == "bytes=200000-"
    assert second.header("If-Range") == old_etag  # the server answers 200: the new file
    assert sc["archive"]["sha256"] == hashlib.sha256(new).hexdigest()
    assert (d.outbox / "moving" / "moving.bin").read_bytes() == new


def test_404_fails_at_once(fault_server, make_daemon):
    d = make_daemon(download={"max_attempts": 5})
    d.drop("nothing", fault_server.url("/nothing.tar.gz"))
    sc = d.wait_status("nothing")
    assert sc["status"] == "failed"
    assert sc["error"]["code"] == "http_404"
    assert sc["attempt"] == 1
    assert len(fault_server.requests_for("/nothing.tar.gz")) == 1
    assert not (d.outbox / "nothing").exists()


def test_stalled_server_fails_with_timeout_after_max_attempts(fault_server, make_daemon):
    fault_server.add("/stall.bin", os.urandom(100_000), stall_after=10_000)
    d = make_daemon(
        download={
            "timeout_read": 0.5,
            "max_attempts": 3,
            "backoff_initial": 0.1,
            "backoff_max": 0.2,
        }
    )
    d.drop("stall", fault_server.url("/stall.bin"))
    seen_waiting = wait_for(
        lambda: (d.sidecar("stall") or {}).get("status") == "waiting" and d.sidecar("stall"),
        message="a waiting sidecar",
    )
    assert seen_waiting["error"]["code"] == "timeout"
    sc = d.wait_status("stall")
    assert sc["status"] == "failed", sc
    assert sc["error"]["code"] == "timeout"
    assert sc["attempt"] == 3
    assert "timeout_read" in sc["error"]["message"]
    # each attempt resumed where the previous one stalled
    assert _ranges(fault_server, "/stall.bin") == [None, "bytes=10000-", "bytes=20000-"]
    assert not (d.outbox / "stall").exists()
    assert not list((d.work / "partial").iterdir())
