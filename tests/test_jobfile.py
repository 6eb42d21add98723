"""Job files: the three forms, options, and every malformed input as bad_job (pure code)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropfetch.errors import BadJobError, BadUrlError
from dropfetch.jobfile import (
    MAX_JOB_BYTES,
    JobSpec,
    is_job_file,
    job_name,
    job_priority,
    parse_job,
)

URL = "https://mirror.example/os/debian-7.tar.gz"


@pytest.mark.parametrize(
    "data",
    [
        URL.encode(),
        f"\n\n# comment\n  {URL}  \n# more\nhttps://ignored.example/\n".encode(),
        b"\xef\xbb\xbf" + URL.encode() + b"\r\n",
        f"[InternetShortcut]\r\nURL={URL}\r\n".encode(),
        f"\ufeff[{{000214A0-0000-0000-C000-000000000046}}]\r\nProp3=19,11\r\n"
        f"[InternetShortcut]\r\nIDList=\r\nurl = {URL}\r\nIconIndex=0\r\n".encode(),
        f"url: {URL}\n".encode(),
        f"---\nurl: '{URL}'\n".encode(),
        f"{{url: '{URL}'}}".encode(),
    ],
)
def test_forms(data):
    assert parse_job(data).url == URL


def test_yaml_options():
    spec = parse_job(
        f"url: {URL}\nsha256: {'0' * 63}1\nextract: false\nkeep_archive: yes\n"
        "filename: image.iso\n".encode()
    )
    assert spec == JobSpec(
        url=URL, sha256="0" * 63 + "1", extract=False, keep_archive=True, filename="image.iso"
    )
    assert parse_job(f"url: {URL}\nsha256: {'A' * 64}\n".encode()).sha256 == "a" * 64
    assert parse_job(f"url: {URL}\nextract: auto\n".encode()).extract is True
    assert parse_job(URL.encode()).priority == "normal"
    assert parse_job(f"url: {URL}\npriority: High\n".encode()).priority == "high"
    assert parse_job(f"url: {URL}\npriority: low\n".encode()).priority == "low"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (f"url: {URL}\npriority: high\n".encode(), "high"),
        (f"{URL}\n".encode(), "normal"),
        (f"url: {URL}\n".encode(), "normal"),
        (b"url: [broken\npriority: high\n", "normal"),  # does not parse: its run fails it
        (f"url: {URL}\npriority: urgent\n".encode(), "normal"),
        (None, "normal"),
    ],
)
def test_job_priority_is_read_cheaply_and_never_raises(data, expected):
    assert job_priority(data) == expected


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"\n\n# only a comment\n", "empty"),
        (b"\xff\xfe\x00h\x00t", "UTF-16"),
        ("[InternetShortcut]\r\nURL=http://x/\r\n".encode("utf-16"), "UTF-16"),
        (b"h\x00ttp://x/", "NUL"),
        (b"\x80\x81 not utf-8", "UTF-8"),
        (b"\x00" * 10, "NUL"),
        (b"h" * (MAX_JOB_BYTES + 1), "KiB"),
        (b"https://example.org/a file.tar", "spaces"),
        (b"https://example.org/a\x07b", "control"),
        (b"url: [1, 2]\n", "url"),
        (b"url: " + URL.encode() + b"\ncolour: blue\n", "unknown option"),
        (b"url: " + URL.encode() + b"\nsha256: 1234\n", "sha256"),
        (b"url: " + URL.encode() + b"\nextract: maybe\n", "extract"),
        (b"url: " + URL.encode() + b"\nkeep_archive: 3\n", "keep_archive"),
        (b"url: " + URL.encode() + b"\npriority: urgent\n", "'high', 'normal' or 'low'"),
        (b"url: " + URL.encode() + b"\npriority: [high]\n", "priority"),
        (b"url: " + URL.encode() + b"\nfilename: ../evil\n", "bare name"),
        (b"url: " + URL.encode() + b"\nfilename: a/b\n", "bare name"),
        (b"url: " + URL.encode() + b"\nfilename: ..\n", "plain file name"),
        (b"- just\n- a list\n", None),
        (b"url: [unclosed\n", "YAML"),
        (b"a: &x [1]\nb: *x\nurl: " + URL.encode(), "anchors"),
        (b"[InternetShortcut]\nIconFile=x\n", "URL="),
    ],
)
def test_bad_job(data, words):
    with pytest.raises(BadJobError) as info:
        parse_job(data)
    if words:
        assert words.lower() in info.value.message.lower()
    assert info.value.code == "bad_job"


def test_yaml_bomb_is_refused_quickly():
    bomb = ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        bomb.append(
            f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" + ",".join([f"*{prev}"] * 9) + "]"
        )
    bomb.append(f"url: {URL}")
    with pytest.raises(BadJobError, match="anchors"):
        parse_job("\n".join(bomb).encode())


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "mirror.example/x.tar",
    ],
)
def test_bad_url(url):
    with pytest.raises(BadUrlError) as info:
        parse_job(url.encode())
    assert info.value.code == "bad_url"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.url", True),
        ("debian 7.url", True),
        (".hidden.url", False),
        ("x.url~", False),
        ("x.url.tmp", False),
        ("x.part", False),
        ("x.status.json", False),
        (".url", False),
        ("x.URL", True),  # SPEC §6: suffixes in any case
        ("x.Webloc", True),
        ("x.desktop", True),
        (".x.webloc", False),
        (".webloc", False),
        ("x.webloc.tmp", False),
        ("x.desktop~", False),
        ("x.url.part", False),
    ],
)
def test_is_job_file(name, ok):
    assert is_job_file(name) is ok


@pytest.mark.parametrize(
    "name", ["bad\x01name.url", "tab\tname.url", "x" * 201 + ".url", "é" * 101 + ".url"]
)
def test_bad_names(name):
    with pytest.raises(BadJobError):
        job_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "bad\x01name.url",
        "del\x7f.url",
        "c1\x85name.url",
        "rtl\u202egnp.exe.url",
        "isolate\u2066x.url",
        "line\u2028sep.url",
        "mark\u200ex.url",
        "alm\u061cx.url",
    ],
)
def test_control_characters_in_names_are_one_rule(name):
    """C1 and bidirectional controls are refused exactly like a C0 control."""
    with pytest.raises(BadJobError) as info:
        job_name(name)
    assert info.value.message == "the job file's name contains control characters; rename it"


@pytest.mark.parametrize(
    "name", ["日本語.url", "café crème.url", "🙂.url", "zero\u200bwidth.url", "e\u0301.url"]
)
def test_printable_names_pass(name):
    assert job_name(name) == name[:-4]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        st.builds(
            lambda k, v: f"{k}: {v}\n".encode(),
            st.sampled_from(["url", "sha256", "extract", "filename", "x"]),
            st.text(max_size=80),
        ),
        st.builds(lambda v: f"[InternetShortcut]\nURL={v}\n".encode(), st.text(max_size=80)),
    )
)
def test_parse_job_never_raises_anything_else(data):
    try:
        spec = parse_job(data)
    except (BadJobError, BadUrlError) as exc:
        message = exc.message
        assert message
        return
    assert spec.url.startswith(("http://", "https://"))
