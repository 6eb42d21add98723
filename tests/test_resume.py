"""The resume rule as tables: which partial files are continued (:func:`resumable`,
:meth:`Partial.load`) and what each 200/206/416 answer does to them (:func:`decide`).

End to end, against a real server: tests/test_download.py, tests/test_server_answers.py,
tests/test_faults.py and tests/test_streaming.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from dropfetch.errors import CancelledError
from dropfetch.resume import (
    Action,
    Answer,
    Asked,
    ContentRange,
    Meta,
    Partial,
    decide,
    meta_path,
    parse_content_range,
    parse_unsatisfied_range,
    read_meta,
    resumable,
    write_meta,
)

URL = "http://example.test/f.zip"
APPEND, REPLACE, COMPLETE = Action.APPEND, Action.REPLACE, Action.COMPLETE
START_OVER, ERROR, HTTP_ERROR = Action.START_OVER, Action.ERROR, Action.HTTP_ERROR


def cr(first: int, last: int, total: int | None) -> ContentRange:
    return ContentRange(first, last, total)


# (asked, answer) -> (action, offset, length, total); offset/length/total only for
# the actions that write or complete
DECISIONS = [
    # 206
    pytest.param(
        Asked(40, 100),
        Answer(206, cr(40, 99, 100), length=60),
        (APPEND, 40, 60, 100),
        id="206-matching-range",
    ),
    pytest.param(
        Asked(40, None),
        Answer(206, cr(40, 99, 100)),
        (APPEND, 40, 60, 100),
        id="206-chunked-total-unknown-before",
    ),
    pytest.param(
        Asked(40, 100),
        Answer(206, cr(40, 99, None), length=60),
        (APPEND, 40, 60, None),
        id="206-total-star",
    ),
    pytest.param(
        Asked(0),
        Answer(206, cr(0, 99, 100), length=100),
        (APPEND, 0, 100, 100),
        id="206-whole-file-without-range",
    ),
    pytest.param(
        Asked(40, 100), Answer(206, cr(0, 99, 100), length=100), (ERROR,), id="206-wrong-offset"
    ),
    pytest.param(
        Asked(40, 100), Answer(206, cr(41, 99, 100), length=59), (ERROR,), id="206-offset-one-off"
    ),
    pytest.param(
        Asked(0), Answer(206, cr(40, 99, 100), length=60), (ERROR,), id="206-range-not-asked-for"
    ),
    pytest.param(
        Asked(40, 100), Answer(206, cr(40, 119, 120), length=80), (ERROR,), id="206-different-total"
    ),
    pytest.param(
        Asked(40, 100), Answer(206, cr(40, 59, 100), length=20), (ERROR,), id="206-not-to-the-end"
    ),
    pytest.param(
        Asked(40, 100),
        Answer(206, cr(40, 99, 100), length=10),
        (ERROR,),
        id="206-content-length-disagrees",
    ),
    pytest.param(Asked(40, 100), Answer(206), (ERROR,), id="206-no-content-range"),
    pytest.param(Asked(40, 100), Answer(206, unsatisfied=100), (ERROR,), id="206-with-a-416-range"),
    # 200
    pytest.param(
        Asked(40, 100), Answer(200, length=100), (REPLACE, 0, 100, 100), id="200-while-resuming"
    ),
    pytest.param(
        Asked(40, 100),
        Answer(200, length=120),
        (REPLACE, 0, 120, 120),
        id="200-validator-changed-new-version",
    ),
    pytest.param(Asked(0), Answer(200, length=100), (REPLACE, 0, 100, 100), id="200-fresh"),
    pytest.param(Asked(0), Answer(200), (REPLACE, 0, None, None), id="200-chunked"),
    pytest.param(
        Asked(0),
        Answer(200, cr(40, 99, 100), length=100),
        (REPLACE, 0, 100, 100),
        id="200-content-range-ignored",
    ),
    # 416
    pytest.param(
        Asked(100, 100),
        Answer(416, unsatisfied=100),
        (COMPLETE, 100, 0, 100),
        id="416-size-is-what-we-have",
    ),
    pytest.param(
        Asked(100, None),
        Answer(416, unsatisfied=100),
        (COMPLETE, 100, 0, 100),
        id="416-size-is-what-we-have-total-unknown",
    ),
    pytest.param(
        Asked(100, 100), Answer(416, unsatisfied=120), (START_OVER,), id="416-different-size"
    ),
    pytest.param(
        Asked(40, 100),
        Answer(416, unsatisfied=40),
        (START_OVER,),
        id="416-size-is-ours-but-not-the-old-total",
    ),
    pytest.param(Asked(100, 100), Answer(416), (START_OVER,), id="416-without-header"),
    pytest.param(
        Asked(100, 100), Answer(416, cr(0, 99, 100)), (START_OVER,), id="416-with-a-206-range"
    ),
    pytest.param(Asked(0), Answer(416, unsatisfied=0), (HTTP_ERROR,), id="416-without-range-asked"),
    # other statuses bring no file, resuming or not
    pytest.param(Asked(0), Answer(404), (HTTP_ERROR,), id="404"),
    pytest.param(Asked(40, 100), Answer(503, length=5), (HTTP_ERROR,), id="503-resuming"),
    pytest.param(Asked(40, 100), Answer(204), (HTTP_ERROR,), id="204"),
    pytest.param(Asked(0), Answer(99), (HTTP_ERROR,), id="status-not-http"),
]


@pytest.mark.parametrize(("asked", "answer", "expected"), DECISIONS)
def test_decide(asked: Asked, answer: Answer, expected: tuple[object, ...]) -> None:
    decision = decide(asked, answer)
    assert decision.action is expected[0], decision.reason
    if len(expected) > 1:
        assert (decision.offset, decision.length, decision.total) == expected[1:]
    assert decision.reason


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 0-9/10", cr(0, 9, 10)),
        ("bytes 40-99/*", cr(40, 99, None)),
        ("BYTES 40-99/100", cr(40, 99, 100)),
        ("  bytes  40-99/100  ", cr(40, 99, 100)),
        ("bytes */100", None),
        ("bytes 40-99", None),
        ("bytes -1-99/100", None),
        ("bytes 4\uff10-99/100", None),  # a fullwidth digit is not a digit here
        ("items 0-9/10", None),
        ("bytes 0-9/10, bytes 20-29/30", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_content_range(header: str | None, expected: ContentRange | None) -> None:
    assert parse_content_range(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes */100", 100),
        (" BYTES */7 ", 7),
        ("bytes */*", None),
        ("bytes */-1", None),
        ("bytes 0-9/10", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_unsatisfied_range(header: str | None, expected: int | None) -> None:
    assert parse_unsatisfied_range(header) == expected


# (meta, url) -> (resumable, If-Range validator)
VALIDATORS = [
    pytest.param(Meta(URL, '"abc"', None, 10), URL, (True, '"abc"'), id="strong-etag"),
    pytest.param(
        Meta(URL, '"abc"', "Tue, 01 Dec 2026 10:00:00 GMT", 10),
        URL,
        (True, '"abc"'),
        id="strong-etag-wins",
    ),
    pytest.param(
        Meta(URL, None, "Tue, 01 Dec 2026 10:00:00 GMT", None),
        URL,
        (True, "Tue, 01 Dec 2026 10:00:00 GMT"),
        id="last-modified-only",
    ),
    pytest.param(
        Meta(URL, 'W/"abc"', "Tue, 01 Dec 2026 10:00:00 GMT", 10),
        URL,
        (True, "Tue, 01 Dec 2026 10:00:00 GMT"),
        id="weak-etag-falls-back",
    ),
    pytest.param(Meta(URL, 'W/"abc"', None, 10), URL, (False, None), id="weak-etag-only"),
    pytest.param(Meta(URL, None, None, 10), URL, (False, None), id="no-validator"),
    pytest.param(Meta(URL, "", "", 10), URL, (False, None), id="empty-validators"),
    pytest.param(
        Meta(URL + "?v=2", '"abc"', None, 10), URL, (False, '"abc"'), id="meta-for-another-url"
    ),
]


@pytest.mark.parametrize(("meta", "url", "expected"), VALIDATORS)
def test_validator_and_resumable(
    meta: Meta,
    url: str,
    expected: tuple[bool, str | None],
) -> None:
    assert (resumable(meta, url), meta.validator) == expected


def test_nothing_to_resume_without_meta() -> None:
    assert not resumable(None, URL)


# --- the partial file, on disk ---------------------------------------------------------


def make_partial(tmp_path: Path, data: bytes | None, meta: object) -> Path:
    path = tmp_path / "job.part"
    if data is not None:
        path.write_bytes(data)
    if meta is not None:
        meta_path(path).write_text(json.dumps(meta))
    return path


def load(path: Path, *, resume: bool = True) -> Partial:
    return Partial.load(path, URL, threading.Event(), resume=resume)


def test_a_resumable_partial_is_rehashed(tmp_path: Path) -> None:
    data = b"x" * 3_000_000  # more than one read
    path = make_partial(
        tmp_path, data, {"url": URL, "etag": '"e1"', "last_modified": None, "total": 5_000_000}
    )
    partial = load(path)
    assert partial.size == len(data)
    assert partial.hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert partial.validator == '"e1"'
    assert partial.asked() == Asked(len(data), 5_000_000)
    assert path.exists() and meta_path(path).exists()


@pytest.mark.parametrize(
    ("data", "meta"),
    [
        pytest.param(b"abc", None, id="no-meta"),
        pytest.param(b"abc", {"url": URL + "?other", "etag": '"e1"'}, id="meta-for-another-url"),
        pytest.param(b"abc", {"url": URL, "etag": 'W/"e1"'}, id="meta-without-validator"),
        pytest.param(b"abc", "not an object", id="meta-not-an-object"),
        pytest.param(b"", {"url": URL, "etag": '"e1"'}, id="empty-partial"),
        pytest.param(None, {"url": URL, "etag": '"e1"'}, id="meta-without-partial"),
    ],
)
def test_a_partial_that_cannot_be_resumed_is_removed(
    tmp_path: Path,
    data: bytes | None,
    meta: object,
) -> None:
    path = make_partial(tmp_path, data, meta)
    partial = load(path)
    assert (partial.size, partial.meta, partial.validator) == (0, None, None)
    assert partial.asked() == Asked(0, None)
    assert partial.hasher.hexdigest() == hashlib.sha256().hexdigest()
    assert not path.exists()
    assert not meta_path(path).exists()


def test_no_resume_removes_even_a_resumable_partial(tmp_path: Path) -> None:
    path = make_partial(tmp_path, b"abc", {"url": URL, "etag": '"e1"'})
    assert load(path, resume=False).size == 0
    assert not path.exists() and not meta_path(path).exists()


def test_a_cancel_stops_the_rehash(tmp_path: Path) -> None:
    path = make_partial(tmp_path, b"abc", {"url": URL, "etag": '"e1"'})
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        Partial.load(path, URL, cancel, resume=True)
    assert path.read_bytes() == b"abc"  # kept for a later attempt


def test_restart_forgets_the_bytes_but_keeps_the_file(tmp_path: Path) -> None:
    path = make_partial(tmp_path, b"abc", {"url": URL, "etag": '"e1"', "total": 9})
    partial = load(path)
    partial.restart()
    assert (partial.size, partial.meta, partial.asked()) == (0, None, Asked())
    assert partial.hasher.hexdigest() == hashlib.sha256().hexdigest()
    assert path.exists()
    partial.discard()
    assert not path.exists() and not meta_path(path).exists()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"url": URL, "etag": '"e"', "last_modified": "d", "total": 5}, Meta(URL, '"e"', "d", 5)),
        ({"url": URL}, Meta(URL, None, None, None)),
        (
            {"url": URL, "etag": 5, "last_modified": ["d"], "total": "5"},
            Meta(URL, None, None, None),
        ),
        ({"url": URL, "total": True}, Meta(URL, None, None, None)),
        ({"etag": '"e"'}, None),
        ([URL], None),
    ],
)
def test_read_meta(tmp_path: Path, raw: object, expected: Meta | None) -> None:
    path = tmp_path / "m.meta"
    path.write_text(json.dumps(raw))
    assert read_meta(path) == expected


def test_meta_round_trip_and_broken_files(tmp_path: Path) -> None:
    meta = Meta(URL, '"e"', "Tue, 01 Dec 2026 10:00:00 GMT", 123)
    write_meta(tmp_path / "a.meta", meta)
    assert read_meta(tmp_path / "a.meta") == meta
    (tmp_path / "b.meta").write_bytes(b"\xff{not json")
    assert read_meta(tmp_path / "b.meta") is None
    assert read_meta(tmp_path / "missing.meta") is None
