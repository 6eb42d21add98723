"""Checksums: ``checksum: ALGO:HEX`` in job files, the digests of a download, and the
comparison (pure code, real hashlib)."""

from __future__ import annotations

import hashlib
import threading

import pytest

from dropfetch.checksums import ALGORITHMS, Checksum, Digests, parse_checksum, verify
from dropfetch.errors import BadJobError, ChecksumMismatchError
from dropfetch.jobfile import parse_job
from dropfetch.resume import Meta, Partial, write_meta

URL = "https://mirror.example/os/debian-7.tar.gz"
DATA = b"the bytes of the download\n" * 100


def digest(algo: str, data: bytes = DATA) -> str:
    return hashlib.new(algo, data).hexdigest()


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_checksum_option_for_every_algorithm(algo):
    hexd = digest(algo)
    for text in (f"{algo}:{hexd}", f"{algo.upper()}:{hexd.upper()}", f" {algo} : {hexd} "):
        spec = parse_job(f"url: {URL}\nchecksum: '{text}'\n".encode())
        assert spec.checksum == Checksum(algo, hexd)
        assert spec.checksums == (Checksum(algo, hexd),)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("sha256:" + "0" * 63, "sha256 digest is 64 hexadecimal digits"),
        ("sha512:" + "0" * 64, "sha512 digest is 128 hexadecimal digits"),
        ("md5:" + "0" * 40, "md5 digest is 32 hexadecimal digits"),
        ("sha1:" + "g" * 40, "sha1 digest is 40 hexadecimal digits"),
        ("blake2b:" + "0" * 64, "blake2b digest is 128 hexadecimal digits"),
        ("crc32:deadbeef", "unknown algorithm 'crc32'"),
        ("0" * 64, "must be ALGO:HEX"),
    ],
)
def test_bad_checksum_option(value, words):
    with pytest.raises(BadJobError) as info:
        parse_job(f"url: {URL}\nchecksum: '{value}'\n".encode())
    assert words in info.value.message


def test_checksum_not_a_string():
    with pytest.raises(BadJobError, match="ALGO:HEX"):
        parse_checksum(["sha256", "00"])


def test_sha256_and_checksum_together():
    sha = digest("sha256")
    same = parse_job(f"url: {URL}\nsha256: {sha}\nchecksum: SHA256:{sha.upper()}\n".encode())
    assert same.checksums == (Checksum("sha256", sha),)
    both = parse_job(f"url: {URL}\nsha256: {sha}\nchecksum: md5:{digest('md5')}\n".encode())
    assert both.checksums == (Checksum("sha256", sha), Checksum("md5", digest("md5")))
    with pytest.raises(BadJobError, match="disagree"):
        parse_job(f"url: {URL}\nsha256: {sha}\nchecksum: sha256:{'0' * 64}\n".encode())


def test_digests_sha256_always_and_one_more():
    d = Digests(["sha512"])
    d.update(DATA[:10])
    d.update(memoryview(DATA)[10:])
    assert d.hexdigest() == digest("sha256")
    assert d.hexdigests() == {"sha256": digest("sha256"), "sha512": digest("sha512")}
    assert Digests(["sha256"]).algorithms == ("sha256",)
    assert d.fresh().hexdigests()["sha512"] == hashlib.sha512().hexdigest()


def test_verify():
    verify([Checksum("md5", digest("md5"))], {"sha256": "x", "md5": digest("md5")})
    with pytest.raises(ChecksumMismatchError) as info:
        verify([Checksum("sha1", "0" * 40)], {"sha256": "x", "sha1": digest("sha1")})
    assert "SHA-1" in info.value.message and digest("sha1") in info.value.message


def test_resumed_partial_is_rehashed_with_every_algorithm(tmp_path):
    path = tmp_path / "job.part"
    path.write_bytes(DATA[:1000])
    write_meta(path.with_name("job.part.meta"), Meta(URL, '"v1"', None, len(DATA)))
    partial = Partial.load(path, URL, threading.Event(), resume=True, algorithms=("blake2b",))
    assert partial.size == 1000
    assert partial.hasher.hexdigests()["blake2b"] == digest("blake2b", DATA[:1000])
    partial.restart()
    assert partial.hasher.hexdigests()["blake2b"] == hashlib.blake2b().hexdigest()


def test_checksum_url_and_mirrors_options():
    from dropfetch.errors import BadUrlError

    m1, m2 = "https://m1.example/a.iso", "https://m2.example/b/a.iso"
    spec = parse_job(f"url: {URL}\nchecksum_url: {URL}.sha256\nmirrors: [{m1}, {m2}]\n".encode())
    assert spec.checksum_url == URL + ".sha256"
    assert spec.mirrors == (m1, m2) and spec.urls == (URL, m1, m2)
    assert parse_job(f"url: {URL}\nmirrors: {m1}\n".encode()).mirrors == (m1,)
    bad = [
        ("mirrors: {a: 1}", BadJobError, "list of URLs"),
        ("mirrors: [[x]]", BadJobError, "list of URLs"),
        ("mirrors: [" + ", ".join([m1] * 21) + "]", BadJobError, "more than 20"),
        ("mirrors: [ftp://m.example/a]", BadUrlError, "http"),
        ("mirrors: ['https://m.example/a b']", BadJobError, "percent-encode"),
        ("checksum_url: [x]", BadJobError, "checksum_url must be a URL"),
        ("checksum_url: file:///etc/passwd", BadUrlError, "http"),
    ]
    for line, kind, words in bad:
        with pytest.raises(kind) as info:
            parse_job(f"url: {URL}\n{line}\n".encode())
        assert words in info.value.message, line
