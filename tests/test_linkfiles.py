"""Link files of every desktop (SPEC §6): macOS .webloc (XML and binary property lists),
freedesktop .desktop (Type=Link), Windows Internet Shortcuts in the ANSI code page with
an [InternetShortcut.W] section in UTF-7; suffixes in any case; one job file per name.
Pure parsing first, then the lookup on real directories, then real daemons."""

from __future__ import annotations

import http.client
import json
import os
import plistlib
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archives import zip_bytes
from dropfetch import control
from dropfetch.config import Config, config_from_mapping
from dropfetch.errors import BadJobError, BadUrlError, NameConflictError
from dropfetch.events import EventBus
from dropfetch.httpapi import HttpFrontEnd
from dropfetch.intake import Entry, Kind, job_id, scan_all
from dropfetch.jobfile import job_name, job_suffix, parse_job, split_job_file
from dropfetch.jobpaths import find_job_files, job_file, job_paths
from dropfetch.lifecycle import Deadline
from dropfetch.linkfiles import desktop_url, shortcut_url, webloc_url
from dropfetch.metrics import Metrics
from dropfetch.settle import SettleTracker
from dropfetch.submit import write_job
from harness import wait_for

URL = "https://mirror.example/os/debian-7.tar.gz"

# what Safari writes when a link is dragged to the Finder
SAFARI_WEBLOC = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
\t<key>URL</key>
\t<string>{URL}</string>
</dict>
</plist>
""".encode()

# what KDE's Dolphin / GNOME write for a dragged link
KDE_DESKTOP = f"""[Desktop Entry]
Encoding=UTF-8
Icon=text-html
Name=Debian 7
Name[de]=Debian 7 (Vorlage)
Type=Link
URL={URL}
"""


def _bplist(objects: list[bytes], refsize: int = 1) -> bytes:
    """A binary property list made by hand (object 0 is the top), for what plistlib
    itself never writes: cycles and impossible counts."""
    body = b"bplist00"
    offsets = []
    for obj in objects:
        offsets.append(len(body))
        body += obj
    table = len(body)
    body += bytes(offsets)
    return body + struct.pack(">6xBBQQQ", 1, refsize, len(objects), 0, table)


# -- .webloc -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        plistlib.dumps({"URL": URL}, fmt=plistlib.FMT_BINARY),
        plistlib.dumps({"URL": URL}, fmt=plistlib.FMT_XML),
        SAFARI_WEBLOC,
        plistlib.dumps({"URL": URL, "Title": "x", "Other": [1, 2]}, fmt=plistlib.FMT_BINARY),
    ],
)
def test_webloc(data):
    assert webloc_url(data) == URL
    assert parse_job(data, ".webloc").url == URL


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (plistlib.dumps([URL], fmt=plistlib.FMT_BINARY), "no dictionary"),
        (plistlib.dumps({"url": URL}, fmt=plistlib.FMT_XML), "no URL key"),
        (plistlib.dumps({"URL": 7}, fmt=plistlib.FMT_BINARY), "no URL key"),
        (SAFARI_WEBLOC[:-20], "not a valid property list"),
        (b"bplist00garbage", "not a valid property list"),
        (b"", "not a valid property list"),
        (_bplist([b"\xa1\x00"]), "no dictionary"),  # an array that holds itself
        (_bplist([b"\xd1\x01\x00", b"\x53URL"]), "no URL key"),  # {URL: itself}
        (_bplist([b"\xaf\x13" + b"\xff" * 8]), "not a valid property list"),  # 2**64-1 items
        # billion laughs: plistlib refuses every entity declaration
        (
            b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><plist version="1.0"><dict>'
            b"<key>URL</key><string>&b;</string></dict></plist>",
            "not a valid property list",
        ),
    ],
)
def test_bad_webloc(data, words):
    with pytest.raises(BadJobError) as info:
        parse_job(data, ".webloc")
    assert words in info.value.message and info.value.code == "bad_job"


def test_webloc_huge_is_refused_before_parsing():
    data = plistlib.dumps({"URL": URL, "pad": "x" * 70_000}, fmt=plistlib.FMT_BINARY)
    with pytest.raises(BadJobError, match="larger than 64 KiB"):
        parse_job(data, ".webloc")


def test_webloc_url_is_checked():
    with pytest.raises(BadUrlError):
        parse_job(plistlib.dumps({"URL": "file:///etc/passwd"}), ".webloc")


# -- .desktop ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        KDE_DESKTOP,
        KDE_DESKTOP.replace("\n", "\r\n"),
        f"# made by hand\n\n[Desktop Entry]\nType = Link\nURL = {URL}\n[Other]\nURL=x\n",
        f"[Desktop Entry]\nName=x\nType=Link\nURL[de]={URL}\n",  # only a localized URL
        f"[Desktop Entry]\nType=Link\nURL[de]=https://de.example/\nURL={URL}\n",
    ],
)
def test_desktop(text):
    assert desktop_url(text) == URL
    assert parse_job(text.encode(), ".desktop").url == URL


def test_desktop_escapes():
    assert desktop_url("[Desktop Entry]\nType=Link\nURL=a\\sb\\\\c\\td\\x\n") == "a b\\c\td\\x"
    # \s is a space: the URL check refuses it like any other
    with pytest.raises(BadJobError, match="spaces"):
        parse_job(b"[Desktop Entry]\nType=Link\nURL=https://a.example/x\\sy\n", ".desktop")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "[Desktop Entry]\nType=Application\nExec=rm -rf ~\nURL=https://a.example/\n",
            "Type=Application",
        ),
        ("[Desktop Entry]\nURL=https://a.example/\n", "no Type="),
        ("[Desktop Entry]\ntype=Link\nURL=https://a.example/\n", "no Type="),  # keys have case
        ("[Desktop Entry]\nType=Link\nName=x\n", "no URL="),
        ("[Desktop Action x]\nType=Link\nURL=https://a.example/\n", "no [Desktop Entry]"),
        (f"url: {URL}\n", "no [Desktop Entry]"),
    ],
)
def test_bad_desktop(text, words):
    with pytest.raises(BadJobError) as info:
        parse_job(text.encode(), ".desktop")
    assert words in info.value.message


def test_desktop_must_be_utf8():
    with pytest.raises(BadJobError, match="not UTF-8"):
        parse_job(b"[Desktop Entry]\nType=Link\nURL=https://a.example/caf\xe9\n", ".desktop")


# -- Windows Internet Shortcuts -------------------------------------------------------

HEADER = "[{000214A0-0000-0000-C000-000000000046}]\r\nProp3=19,11\r\n"


def _windows(url_ansi: bytes, wide: str | None = None) -> bytes:
    """A shortcut as Explorer writes it: CRLF, the ANSI URL in cp1252, then for a URL
    the code page cannot hold, [InternetShortcut.W] with the URL in UTF-7."""
    data = (HEADER + "[InternetShortcut]\r\nIDList=\r\n").encode() + b"URL=" + url_ansi + b"\r\n"
    if wide is not None:
        data += b"[InternetShortcut.W]\r\nURL=" + wide.encode("utf-7") + b"\r\n"
    return data


def test_shortcut_ansi_code_page():
    data = _windows("https://a.example/café.zip".encode("cp1252"))
    assert b"\xe9" in data
    assert parse_job(data).url == "https://a.example/café.zip"


def test_shortcut_wide_section_wins():
    url = "https://bücher.example/straße/été.zip"  # an IDN host, a path with é
    wide = url.encode("utf-7")
    assert b"+AP" in wide and b"-" in wide  # really UTF-7
    data = _windows(url.encode("cp1252"), url)  # both lines, as Explorer writes them
    assert parse_job(data).url == url
    # a URL the code page cannot hold: the ANSI line has '?', the wide one the truth
    cyrillic = "https://a.example/файл.zip"
    data = _windows(cyrillic.encode("cp1252", "replace"), cyrillic)
    assert b"?" in data.split(b"[InternetShortcut.W]")[0]
    assert parse_job(data).url == cyrillic
    assert shortcut_url(data, None) == cyrillic


def test_shortcut_utf8_with_bom_and_wide_section():
    url = "https://a.example/日本.zip"
    data = b"\xef\xbb\xbf" + _windows(b"https://a.example/??.zip", url)
    assert parse_job(data).url == url


def test_shortcut_bad_utf7():
    data = _windows(b"https://a.example/x") + b"[InternetShortcut.W]\r\nURL=+\xe9\xe9-\r\n"
    with pytest.raises(BadJobError, match="not valid UTF-7"):
        parse_job(data.replace(b"\xe9", b"!"))


def test_shortcut_without_url():
    with pytest.raises(BadJobError, match=r"no URL= line in its \[InternetShortcut\]"):
        parse_job(b"[InternetShortcut]\r\nIDList=\r\n[InternetShortcut.W]\r\nIconIndex=0\r\n")


def test_ansi_only_for_shortcuts():
    # a plain or YAML .url that is not UTF-8 is refused as before, with the offset
    for data in (b"https://a.example/caf\xe9\n", b"url: https://a.example/caf\xe9\n"):
        with pytest.raises(BadJobError, match=r"bad byte at offset (21|26)"):
            parse_job(data)


# -- names and the lookup ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("a.url", ("a", ".url")),
        ("a.URL", ("a", ".url")),
        ("a.Url", ("a", ".url")),
        ("Debian 7.webloc", ("Debian 7", ".webloc")),
        ("x.WEBLOC", ("x", ".webloc")),
        ("x.Desktop", ("x", ".desktop")),
        ("x.webloc.url", ("x.webloc", ".url")),
        (".x.webloc", None),
        ("x.desktop~", None),
        ("x.webloc.part", None),
        ("x.desktop.tmp", None),
        (".desktop", None),
        ("x.status.json", None),
    ],
)
def test_split_job_file(name, split):
    assert split_job_file(name) == split
    if split is not None:
        assert job_name(name) == split[0] and job_suffix(name) == split[1]


def test_intake_ids(tmp_path):
    assert job_id(tmp_path, str(tmp_path / "a.WebLoc"), recursive=False) == ("a", Entry.JOB)
    assert job_id(tmp_path, str(tmp_path / "s" / "b.desktop"), recursive=True) == (
        "s/b",
        Entry.JOB,
    )
    assert job_id(tmp_path, str(tmp_path / "a.webloc~"), recursive=False) is None


def test_find_job_files(tmp_path):
    assert find_job_files(tmp_path, "a") == []
    assert job_file(tmp_path, "a") == tmp_path / "a.url"  # where submit would write it
    (tmp_path / "a.WEBLOC").write_bytes(b"x")
    (tmp_path / "ab.url").write_bytes(b"x")  # a longer name is another job
    (tmp_path / "a.webloc.tmp").write_bytes(b"x")
    assert find_job_files(tmp_path, "a") == [tmp_path / "a.WEBLOC"]
    (tmp_path / "a.desktop").write_bytes(b"x")  # a lower-case spelling is looked for first
    assert find_job_files(tmp_path, "a") == [tmp_path / "a.desktop"]
    (tmp_path / "a.url").write_bytes(b"x")
    assert find_job_files(tmp_path, "a") == [tmp_path / "a.url", tmp_path / "a.desktop"]
    sub = tmp_path / "s"
    sub.mkdir()
    (sub / "b.Url").write_bytes(b"x")
    (sub / "b.URL").write_bytes(b"x")
    assert find_job_files(tmp_path, "s/b") == [sub / "b.URL", sub / "b.Url"]
    (sub / "c.uRl").write_bytes(b"x")  # a spelling only a listing finds
    (sub / "c.url.part").write_bytes(b"x")
    assert find_job_files(tmp_path, "s/c") == [sub / "c.uRl"]
    assert job_file(tmp_path, "s/c") == sub / "c.uRl"
    (sub / "c.WebLoc").write_bytes(b"x")
    assert find_job_files(tmp_path, "s/c") == [sub / "c.WebLoc", sub / "c.uRl"]


def test_submit_refuses_a_name_a_link_file_has(tmp_path):
    (tmp_path / "a.webloc").write_bytes(plistlib.dumps({"URL": URL}))
    with pytest.raises(NameConflictError, match="exists already"):
        write_job(tmp_path, "a", URL.encode())
    assert not (tmp_path / "a.url").exists()


# -- real daemons --------------------------------------------------------------------

SMALL = {"a.txt": b"alpha\n", "dir/b.bin": b"\x00\x01" * 3000}


def _kinds(url: str) -> list[tuple[str, str, bytes]]:
    """(name, suffix, bytes) of each desktop's link file for ``url``."""
    return [
        ("mac-bin", ".webloc", plistlib.dumps({"URL": url}, fmt=plistlib.FMT_BINARY)),
        ("mac-xml", ".WebLoc", SAFARI_WEBLOC.replace(URL.encode(), url.encode())),
        ("kde", ".desktop", KDE_DESKTOP.replace(URL, url).encode()),
        ("win", ".URL", _windows(url.encode("cp1252"), url)),
    ]


def test_every_desktop_link_file_runs(fault_server, make_daemon):
    fault_server.add("/caf%C3%A9.zip", zip_bytes(SMALL))
    d = make_daemon()
    url = fault_server.url("/café.zip")
    for name, suffix, data in _kinds(url):
        d.drop(name, data, suffix=suffix)
    for name, suffix, _ in _kinds(url):
        sc = d.wait_status(name)
        assert sc["status"] == "ok", sc
        assert sc["job"] == name + suffix
        assert sc["files"] == sorted(SMALL)
        assert (d.outbox / name / "a.txt").read_bytes() == b"alpha\n"


def test_removing_a_webloc_purges_and_a_conflict_fails(fault_server, make_daemon):
    fault_server.add("/w.zip", zip_bytes(SMALL))
    d = make_daemon()
    job = d.drop("mac", plistlib.dumps({"URL": fault_server.url("/w.zip")}), suffix=".webloc")
    assert d.wait_status("mac")["status"] == "ok"
    job.unlink()
    wait_for(
        lambda: not d.sidecar_path("mac").exists() and not (d.outbox / "mac").exists(),
        message="the purge",
    )
    # two job files of one name: the job fails and says both names
    d.drop(
        "two", f"[Desktop Entry]\nType=Link\nURL={fault_server.url('/w.zip')}\n", suffix=".desktop"
    )
    d.drop("two", fault_server.url("/w.zip") + "\n")
    sc = d.wait_status("two", "failed")
    assert sc["error"]["code"] == "bad_job"
    assert "two.url, two.desktop" in sc["error"]["message"]
    (d.inbox / "two.desktop").unlink()
    wait_for(lambda: (d.sidecar("two") or {}).get("status") == "ok", message="the one left runs")
    assert d.sidecar("two")["job"] == "two.url"


def test_desktop_application_is_never_run(fault_server, make_daemon, tmp_path):
    marker = tmp_path / "ran"
    d = make_daemon()
    d.drop(
        "app",
        f"[Desktop Entry]\nType=Application\nExec=touch {marker}\nURL={fault_server.url('/x')}\n",
        suffix=".desktop",
    )
    sc = d.wait_status("app", "failed")
    assert sc["error"]["code"] == "bad_job" and "Type=Application" in sc["error"]["message"]
    assert not marker.exists() and not fault_server.requests


# -- anything at all (property test) ------------------------------------------------

_TEXT = st.text(max_size=80)
_XML_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=80)
_LINK_FILES = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda v: plistlib.dumps({"URL": v}, fmt=plistlib.FMT_BINARY), _TEXT),
    st.builds(lambda v: plistlib.dumps({"URL": v}), _XML_TEXT),
    st.builds(
        lambda b, n: plistlib.dumps(b, fmt=plistlib.FMT_BINARY)[:n], _TEXT, st.integers(0, 99)
    ),
    st.builds(lambda k, v: f"[Desktop Entry]\nType=Link\n{k}={v}\n".encode(), _TEXT, _TEXT),
    st.builds(
        lambda a, w: b"[InternetShortcut]\r\nURL=" + a + b"\r\n[InternetShortcut.W]\r\nURL=" + w,
        st.binary(max_size=60),
        st.binary(max_size=60),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_LINK_FILES, st.sampled_from([".url", ".webloc", ".desktop"]))
def test_link_files_raise_only_job_errors(data, suffix):
    try:
        spec = parse_job(data, suffix)
    except (BadJobError, BadUrlError) as exc:
        message = exc.message
        assert message
        return
    assert spec.url.startswith(("http://", "https://"))


# -- every place that finds a job's file: control, status, HTTP --------------------


def _inbox_config(tmp_path: Path, **extra: object) -> Config:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    return config_from_mapping({"inbox": "inbox", "outbox": "outbox", **extra}, base=tmp_path)


def test_control_finds_link_files(tmp_path):
    config = _inbox_config(tmp_path)
    job = config.inbox / "mac.WEBLOC"
    job.write_bytes(plistlib.dumps({"URL": URL}, fmt=plistlib.FMT_BINARY))
    assert job_paths(config, "mac").job == job
    assert "pausing" in control.pause(config, "mac")
    assert (config.inbox / "mac.pause").is_file()
    assert "resuming" in control.resume(config, "mac")
    assert "queued again" in control.retry(config, "mac")
    assert "removed" in control.delete(config, "mac")
    assert not job.exists()
    with pytest.raises(control.UnknownJobError):
        control.pause(config, "mac")


def test_status_command_shows_link_files_pending(tmp_path):
    config = _inbox_config(tmp_path)
    (config.inbox / "kde.desktop").write_text(KDE_DESKTOP)
    (config.inbox / "win.Url").write_bytes(_windows(URL.encode()))
    (config.inbox / "mac.webloc.part").write_bytes(b"x")  # ignored
    for args in ((), ("kde", "win")):
        out = subprocess.run(
            [sys.executable, "-m", "dropfetch", "status", *args, "--inbox", str(config.inbox)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "100"},
        )
        assert out.returncode == 0, out.stderr
        rows = [line.split() for line in out.stdout.splitlines()[1:]]
        assert [(r[0], r[1]) for r in rows] == [("kde", "pending"), ("win", "pending")], out.stdout


def _http(port: int, method: str, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_http_get_and_delete_of_link_files(tmp_path):
    config = _inbox_config(tmp_path, http={"listen": "127.0.0.1:0"})
    (config.inbox / "mac.webloc").write_bytes(plistlib.dumps({"URL": URL}))
    (config.inbox / "kde.Desktop").write_text(KDE_DESKTOP)
    server = HttpFrontEnd(config, Metrics(config.inbox), EventBus())
    server.start()
    try:
        port = server.address[1]
        for name, job in (("mac", "mac.webloc"), ("kde", "kde.Desktop")):
            status, sc = _http(port, "GET", f"/archive/{name}")
            assert status == 200, sc
            assert (sc["id"], sc["job"], sc["url"], sc["status"]) == (name, job, URL, "queued")
        status, sc = _http(port, "DELETE", "/archive/mac")
        assert status == 202 and sc["job"] == "mac.webloc" and sc["status"] == "deleting"
        assert not (config.inbox / "mac.webloc").exists()
        assert _http(port, "GET", "/archive/mac")[0] == 404
    finally:
        assert server.stop(Deadline(30))


def test_a_second_job_file_of_a_name_is_a_change_a_rescan_reports(tmp_path):
    reports: list[str] = []
    (tmp_path / "a.webloc").write_bytes(plistlib.dumps({"URL": URL}))
    (tmp_path / "b.DESKTOP").write_text(KDE_DESKTOP)
    tracker = SettleTracker(tmp_path, reports.append, settle_time=0, watch_opens=False)
    tracker.scanned(*scan_all(tmp_path, recursive=False))
    assert sorted(reports) == ["a", "b"]
    tracker.scanned(*scan_all(tmp_path, recursive=False))
    assert sorted(reports) == ["a", "b"]  # unchanged: not again
    (tmp_path / "a.desktop").write_text(KDE_DESKTOP)  # a conflict: the run must see it
    tracker.scanned(*scan_all(tmp_path, recursive=False))
    assert sorted(reports) == ["a", "a", "b"]
    (tmp_path / "a.desktop").unlink()
    tracker.take(Kind.READY, "a")
    assert sorted(reports) == ["a", "a", "a", "b"]
