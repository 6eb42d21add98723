"""Issue 10, pure parts: the one reader of inbox files, quoting of job content, temporary
names, lease keys and staging names."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropfetch.errors import BadJobError, BadUrlError, NotRegularFileError
from dropfetch.fsutil import (
    is_abandoned_temp,
    is_open_for_writing,
    is_temporary_name,
    read_regular,
    temp_name,
)
from dropfetch.jobfile import MAX_JOB_BYTES, is_job_file, parse_job
from dropfetch.jobpaths import job_paths
from dropfetch.leases import lease_key
from dropfetch.names import parse_staging_name, staging_name
from dropfetch.status import Sidecar, read_sidecar, read_sidecars
from inboxkit import CTRL, SECRET, longest_shared, make_entries, within

# -- bullet 1: one reader -------------------------------------------------------------------


def test_read_regular_refuses_every_other_kind_without_blocking(tmp_path):
    kinds = make_entries(tmp_path / "in")
    assert len(kinds) >= 7
    for name, words in kinds.items():
        with pytest.raises(NotRegularFileError) as info:
            within(5, functools.partial(read_regular, tmp_path / "in" / name, MAX_JOB_BYTES))
        assert info.value.code == "bad_job"
        assert info.value.message == f"{name} {words}"
        assert SECRET not in info.value.message
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "in" / "missing", 10)


def test_read_regular_reads_at_most_limit_plus_one(tmp_path):
    sparse = tmp_path / "big"
    with open(sparse, "wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB, no blocks
    assert len(read_regular(sparse, MAX_JOB_BYTES)) == MAX_JOB_BYTES + 1
    (tmp_path / "small").write_bytes(b"x" * 10)
    assert read_regular(tmp_path / "small", 10) == b"x" * 10
    assert read_regular(tmp_path / "small", 4) == b"xxxxx"


def test_sidecar_readers_skip_what_is_not_a_regular_file(tmp_path, caplog):
    inbox = tmp_path / "in"
    kinds = make_entries(inbox)
    for name in kinds:
        os.rename(inbox / name, inbox / f"{name}.status.json")
    good = Sidecar(id="good", job="good.url", job_sha256="0" * 64)
    (inbox / "good.status.json").write_bytes(good.to_json())
    for name in kinds:
        assert within(5, functools.partial(read_sidecar, inbox / f"{name}.status.json")) is None
        assert f"{name}.status.json {kinds[name]}" in caplog.text
    assert [s.id for s in within(5, lambda: read_sidecars(inbox))] == ["good"]
    assert SECRET not in caplog.text


# -- bullet 2: job content is quoted as a short, escaped fragment at most -------------------

HOSTILE_CONTENT = [
    SECRET + CTRL,
    f"{SECRET}{CTRL}\nhttp://example.org/x",
    f"url: [{SECRET}{CTRL}",
    f"url: [{SECRET}",
    f"url: '{SECRET}",
    f'url: "\\q{SECRET}"',
    f"url: http://example.org/\n{SECRET}: 1\n",
    f"url: http://example.org/\nextract: {SECRET}\n",
    f"url: http://example.org/\nkeep_archive: {SECRET}\n",
    f"url: http://example.org/\nfilename: a/{SECRET}\n",
    f"url: http://example.org/\nfilename: {SECRET}\\x\n",
    f"url: {SECRET}\n",
    f"url: ftp://{SECRET}/\n",
    f"[InternetShortcut]\nURL={SECRET}\n",
    f"[InternetShortcut]\nURL=http://h:{SECRET}/\n",
    f"http://[{SECRET}/x",
    f"http://h:99{'9' * 100}/{SECRET}",
    f"{SECRET}://host/x",
    f"https:///{SECRET}",
    f"url: !{SECRET} x\n",
    f"url: &{SECRET} x\n",
    f"%{SECRET} x: y\n",
]


def check_message(message: str, content: str) -> None:
    assert longest_shared(message, content) <= 60, message
    assert message.isprintable(), message


@pytest.mark.parametrize("content", HOSTILE_CONTENT)
def test_messages_quote_at_most_a_short_escaped_fragment(content):
    with pytest.raises((BadJobError, BadUrlError)) as info:
        parse_job(content.encode())
    check_message(info.value.message, content)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            "{}",
            "url: {}",
            "url: [{}",
            "url: x\n{}: 1",
            "url: x\nextract: {}",
            "url: x\nfilename: a/{}",
            "[InternetShortcut]\nURL={}",
            "http://h:{}/",
            "url: '{}",
            'url: "{}"',
            "{}://x/",
        ]
    ),
    st.text(min_size=61, max_size=200),
)
def test_no_message_carries_more_than_a_fragment(template, text):
    content = template.format(text)
    try:
        parse_job(content.encode("utf-8", "surrogatepass"))
    except (BadJobError, BadUrlError) as exc:
        check_message(exc.message, content)


# -- bullet 4: temporary names by their exact pattern --------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "rel.dftmp.v2.url",
        "a.dftmp.host.12.3.url",
        "x.dftmp..url",
        "dftmp.url",
        "a.dftmp.b.url",
        "v.dftmp.1.2.url",
        "node.dftmp.h.1.2x.url",
    ],
)
def test_names_with_dftmp_are_jobs(name):
    assert is_job_file(name)
    assert not is_temporary_name(name)


@pytest.mark.parametrize(
    "target", ["x.url", "x.status.json", "a.dftmp.b.url", "s@h@1@2", "é.status.json", "k.part.meta"]
)
def test_temp_name_is_recognised_exactly(target):
    name = temp_name(Path("/d") / target).name
    assert is_temporary_name(name) and not is_job_file(name)
    assert not is_abandoned_temp(name)  # our own pid
    dead = name.replace(f".{os.getpid()}.", ".999999999.")
    assert is_temporary_name(dead) and is_abandoned_temp(dead)
    for near in (name[1:], name + "x", name.replace(".dftmp.", ".dftmpx."), name + ".url"):
        assert not is_temporary_name(near), near


# -- bullet 5: lease keys and staging names --------------------------------------------------


def test_lease_key_of_a_name_equal_to_another_key():
    long_name = "n" * 300
    hashed = lease_key(long_name)
    assert "~" in hashed
    assert lease_key(hashed) != hashed  # the job named like the key gets its own key
    assert lease_key("a%2Fb") != lease_key("a/b")
    assert lease_key("a@b") != lease_key("a%40b")
    assert lease_key("a~b") != lease_key("a%7Eb")
    assert lease_key("x" * 161) != lease_key("x" * 162)


_NAMES = st.text(st.sampled_from("ab%/@~.2FE4é名\udcff"), min_size=1, max_size=120) | st.text(
    min_size=1, max_size=400
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_NAMES, min_size=2, max_size=8, unique=True))
def test_lease_key_is_injective_and_file_safe(names):
    keys = [lease_key(n) for n in names]
    assert len(set(keys)) == len(keys)
    for name, key in zip(names, keys, strict=True):
        assert "/" not in key and "@" not in key and not key.startswith(".")
        assert len(key.encode("utf-8", "surrogateescape")) <= 160
        if "~" not in key:  # a short key decodes back to its id
            assert unquote(key, errors="surrogateescape") == name


@settings(max_examples=300, deadline=None)
@given(_NAMES, st.text(min_size=1, max_size=40), st.integers(0, 2**22), st.integers(0, 2**63))
def test_staging_name_round_trips(job_id, host, pid, stamp):
    name = staging_name(lease_key(job_id), lease_key(host), pid, stamp)
    assert "/" not in name
    assert parse_staging_name(name) == (lease_key(job_id), lease_key(host), pid)


@pytest.mark.parametrize(
    ("a", "b", "host"),
    [("a", "a@h", "h@x"), ("a@b", "a", "node"), ("x", "x@1", "1@2@3"), ("s/t", "s%2Ft", "h")],
)
def test_staging_dirs_never_shared(tmp_path, a, b, host):
    from dropfetch.config import load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"inbox: {tmp_path / 'in'}\noutbox: {tmp_path / 'out'}\n")
    config = load_config(cfg_file)
    pa, pb = job_paths(config, a), job_paths(config, b)
    pa.staging_dir.mkdir(parents=True)
    mine = pa.staging_dir / staging_name(pa.key, lease_key(host), 123, 456)
    mine.mkdir()
    assert pa.staging_dirs() == [mine]
    assert pb.staging_dirs() == []
    assert len({pa.partial, pb.partial}) == 2 and pa.key != pb.key


def test_sockets_made_by_bind_are_refused_too(tmp_path):
    path = tmp_path / "s.url"
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.bind(str(path))
        except OSError:
            pytest.skip("the path is too long for a unix socket")
        with pytest.raises(NotRegularFileError, match="is a socket"):
            within(5, lambda: read_regular(path, 10))


@pytest.mark.parametrize(
    "target",
    ["名" * 66 + ".status.json", "n" * 200 + ".url", "x" * 254, "\udcff" * 200 + ".status.json"],
)
def test_temp_name_fits_a_file_name_with_a_long_host(tmp_path, monkeypatch, target):
    from dropfetch import fsutil

    monkeypatch.setattr(fsutil, "_HOST", "h" * 64)
    path = temp_name(tmp_path / target)
    assert len(os.fsencode(path.name)) <= 255
    assert is_temporary_name(path.name) and not is_abandoned_temp(path.name)
    path.write_bytes(b"")  # a name the filesystem takes


def test_is_open_for_writing_sees_writers_of_this_host(tmp_path):
    path = tmp_path / "x.url"
    path.write_text("http://example.com/x\n")
    assert not is_open_for_writing(path)
    with open(path, "rb"):
        assert not is_open_for_writing(path)  # a reader is no writer
    with open(path, "a"):
        assert is_open_for_writing(path)
    with open(path, "r+b"):
        assert is_open_for_writing(path)
    # another process holding it open for writing (a shell's `cat > x.url`)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; f = open(sys.argv[1], 'a'); print(flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        assert is_open_for_writing(path)
    finally:
        proc.communicate(b"")
    assert not is_open_for_writing(path)
    assert not is_open_for_writing(tmp_path / "missing")


def test_a_fifo_where_a_lease_should_be_never_blocks(tmp_path):
    from dropfetch.leases import LeaseManager

    leases = LeaseManager(tmp_path / "leases", host_id="h", ttl=0.2)
    (tmp_path / "leases").mkdir()
    os.mkfifo(leases.path_for("job"))
    assert leases.acquire("job") is None  # held by "something": not broken at first sight
    deadline = time.monotonic() + 30
    lease = None
    while lease is None and time.monotonic() < deadline:  # stale after ttl: broken, taken
        time.sleep(0.05)
        lease = leases.acquire("job")
    assert lease is not None
    leases.release(lease)
