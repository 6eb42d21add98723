"""SIGHUP's decision as pure functions (issue 11): changed keys, restart keys, -v/-q."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dropfetch.cli import log_level
from dropfetch.config import config_from_mapping
from dropfetch.reload import changed_keys, keep_old, needs_restart, split_reload


def _cfg(tmp_path: Path, **data):
    return config_from_mapping({"inbox": "in", "outbox": "out", **data}, base=tmp_path)


def test_changed_keys_walks_nested_sections(tmp_path):
    old = _cfg(tmp_path, lease={"host_id": "a"})
    new = _cfg(
        tmp_path,
        workers=9,
        poll_interval=0.5,
        lease={"host_id": "b"},
        http={"listen": "127.0.0.1:8008"},
        download={"max_attempts": 2},
    )
    assert changed_keys(old, new) == [
        "workers",
        "poll_interval",
        "download.max_attempts",
        "lease.host_id",
        "http.listen",
    ]
    assert changed_keys(old, old) == []


def test_the_source_is_not_a_key(tmp_path):
    old = _cfg(tmp_path)
    assert changed_keys(old, dataclasses.replace(old, source=tmp_path / "x.yaml")) == []


def test_restart_keys():
    for key in (
        "inbox",
        "outbox",
        "work_dir",
        "recursive",
        "observer",
        "create_dirs",
        "http.listen",
        "http.token_file",
        "lease.host_id",
        "log.format",
    ):
        assert needs_restart(key), key
    for key in (
        "workers",
        "poll_interval",
        "rescan_interval",
        "settle_time",
        "lease.ttl",
        "hooks.on_done",
        "log.level",
        "download.max_attempts",
        "shutdown_timeout",
        "inboxes",
        "http_x",
    ):
        assert not needs_restart(key), key


def test_split_reload_keeps_the_old_value_of_restart_keys(tmp_path):
    old = _cfg(tmp_path, lease={"host_id": "a", "ttl": 30}, log={"level": "info"})
    new = _cfg(
        tmp_path,
        workers=7,
        inbox="elsewhere",
        lease={"host_id": "b", "ttl": 9},
        http={"listen": "127.0.0.1:8008"},
        log={"level": "debug", "format": "json"},
    )
    run, applied, restart = split_reload(old, new)
    assert applied == ["workers", "lease.ttl", "log.level"]
    assert restart == ["inbox", "lease.host_id", "http.listen", "log.format"]
    assert run.workers == 7
    assert run.inbox == old.inbox
    assert run.lease.host_id == "a" and run.lease.ttl == 9
    assert run.http == old.http
    assert run.log.level == "debug" and run.log.format == "text"
    assert changed_keys(old, run) == applied


def test_keep_old_of_a_whole_section(tmp_path):
    old = _cfg(tmp_path)
    new = _cfg(tmp_path, http={"listen": "127.0.0.1:8008"})
    assert keep_old(new, old, ["http"]).http == old.http


def test_command_line_verbosity_wins_over_the_file(tmp_path):
    cfg = _cfg(tmp_path, log={"level": "error"})
    assert log_level(cfg) == "ERROR"
    assert log_level(cfg, verbose=1) == "DEBUG"
    assert log_level(cfg, quiet=1) == "WARNING"
    assert log_level(cfg, quiet=2) == "ERROR"
    assert log_level(_cfg(tmp_path, log={"level": "debug"}), quiet=1) == "WARNING"
