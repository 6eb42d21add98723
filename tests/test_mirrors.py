"""Mirrors, the pure parts: which URL the next try uses (retry.plan_retry and
next_source), which partial file another URL may continue (resume.resumable), and the
state beside the partial file (mirrors.load_source / save_source)."""

from __future__ import annotations

import pytest

from dropfetch.config import DownloadConfig
from dropfetch.errors import (
    BadUrlError,
    BlockedAddressError,
    ChecksumMismatchError,
    CorruptArchiveError,
    DiskFullError,
    HttpStatusError,
    InternalError,
    IOFailureError,
    NetworkError,
    TlsError,
)
from dropfetch.mirrors import load_source, save_source
from dropfetch.resume import Meta, resumable
from dropfetch.retry import RetryAt, Source, next_source, plan_retry

CFG = DownloadConfig(max_attempts=3, backoff_initial=2, backoff_max=100)
A, B = "https://a.example/f.iso", "https://b.example/pub/f.iso"


OWN = Source()


def plan(err, *, attempt, source=OWN, urls=3, counted=True):
    return plan_retry(
        err, attempt=attempt, counted=counted, config=CFG, draw=1.0, source=source, urls=urls
    )


@pytest.mark.parametrize(
    ("err", "source", "urls", "counted", "expected"),
    [
        (HttpStatusError(404, "x"), Source(), 3, True, 1),
        (HttpStatusError(503, "x"), Source(1, 1), 3, True, 2),
        (NetworkError("x"), Source(), 2, True, 1),
        (TlsError("x"), Source(), 2, True, 1),
        (BlockedAddressError("x"), Source(), 2, True, 1),
        (BadUrlError("x"), Source(), 2, True, 1),
        (ChecksumMismatchError("x"), Source(), 2, True, 1),
        # the last URL: the job fails
        (HttpStatusError(404, "x"), Source(2, 4), 3, True, None),
        (HttpStatusError(404, "x"), Source(), 1, True, None),
        # not while downloading (unpacking: the file was fine), local, or the checksum file's
        (CorruptArchiveError("x"), Source(), 3, False, None),
        (IOFailureError("x"), Source(), 3, True, None),
        (InternalError("x"), Source(), 3, True, None),
    ],
)
def test_next_source(err, source, urls, counted, expected):
    assert next_source(err, source=source, urls=urls, counted=counted) == expected


def test_the_checksum_file_is_every_mirrors():
    err = HttpStatusError(404, "the checksum file (checksum_url): ...")
    err.mirror_may_help = False
    assert next_source(err, source=Source(), urls=3, counted=True) is None


def test_attempts_count_per_url():
    # retryable: tried again on the same URL, its own tries counted from its base
    assert plan(NetworkError("x"), attempt=1) == RetryAt(2.0, 1, Source())
    assert plan(NetworkError("x"), attempt=2) == RetryAt(4.0, 2, Source())
    # the third failed try of the job's URL: retries used up -> the first mirror, at once
    assert plan(NetworkError("x"), attempt=3) == RetryAt(0.0, 3, Source(1, base=3))
    # the mirror has tries of its own (backoff from the start again), the attempt
    # recorded goes on counting the job's tries
    assert plan(NetworkError("x"), attempt=4, source=Source(1, 3)) == RetryAt(2.0, 4, Source(1, 3))
    assert plan(NetworkError("x"), attempt=5, source=Source(1, 3)) == RetryAt(4.0, 5, Source(1, 3))
    assert plan(NetworkError("x"), attempt=6, source=Source(1, 3)) == RetryAt(0.0, 6, Source(2, 6))
    # a final error moves on at once; on the last URL the job fails
    assert plan(HttpStatusError(404, "x"), attempt=7, source=Source(2, 6)) is None
    assert plan(HttpStatusError(404, "x"), attempt=1) == RetryAt(0.0, 1, Source(1, 1))
    # disk_full waits on the same URL, whatever the count
    assert plan(DiskFullError("x"), attempt=9, source=Source(1, 1)).source == Source(1, 1)


# (meta, url, same_file) -> may the partial file be continued
RESUMABLE = [
    (Meta(A, '"e1"', None, 10), A, (), True),
    (Meta(A, None, "Tue, 01 Dec 2026 10:00:00 GMT", 10), A, (), True),
    # another URL of the job: only with a strong ETag
    (Meta(A, '"e1"', None, 10), B, (A, B), True),
    (Meta(A, '"e1"', "Tue, 01 Dec 2026 10:00:00 GMT", 10), B, (A, B), True),
    (Meta(A, None, "Tue, 01 Dec 2026 10:00:00 GMT", 10), B, (A, B), False),
    (Meta(A, 'W/"e1"', "Tue, 01 Dec 2026 10:00:00 GMT", 10), B, (A, B), False),
    # a URL that is not one of the job's
    (Meta("https://c.example/f.iso", '"e1"', None, 10), B, (A, B), False),
    (Meta(A, '"e1"', None, 10), B, (), False),
]


@pytest.mark.parametrize(("meta", "url", "same", "expected"), RESUMABLE)
def test_resumable_across_mirrors(meta, url, same, expected):
    assert resumable(meta, url, same) is expected


def test_the_source_beside_the_partial_file(tmp_path):
    from dropfetch.config import load_config
    from dropfetch.jobpaths import job_paths

    (tmp_path / "c.yaml").write_text(f"inbox: {tmp_path}/in\noutbox: {tmp_path}/out\n")
    paths = job_paths(load_config(tmp_path / "c.yaml"), "job")
    paths.partial.parent.mkdir(parents=True)
    assert load_source(paths, "sha1", 3, attempts=7) == Source()
    save_source(paths, "sha1", Source(2, 7))
    assert load_source(paths, "sha1", 3, attempts=7) == Source(2, 7)
    assert load_source(paths, "another job file", 3, attempts=7) == Source()
    assert load_source(paths, "sha1", 2, attempts=7) == Source()  # the job file has fewer URLs now
    assert load_source(paths, "sha1", 3, attempts=6) == Source()  # the count was reset
    paths.mirror.write_text("{not json")
    assert load_source(paths, "sha1", 3, attempts=7) == Source()
    save_source(paths, "sha1", Source(1, 1))
    paths.drop_partial()
    assert not paths.mirror.exists()
