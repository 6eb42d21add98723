"""Checksum files (checksum_url): the formats tools write, found by the download's name
(pure code; the real coreutils and shasum where the machine has them)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from dropfetch.checksumfile import find_checksum, url_leaf
from dropfetch.checksums import Checksum
from dropfetch.errors import ChecksumMismatchError

DATA = b"the download\n"
S256 = hashlib.sha256(DATA).hexdigest()
S512 = hashlib.sha512(DATA).hexdigest()
S1 = hashlib.sha1(DATA).hexdigest()  # noqa: S324
M5 = hashlib.md5(DATA).hexdigest()  # noqa: S324
B2 = hashlib.blake2b(DATA).hexdigest()
OTHER = "f" * 64
NAME = "tool-1.2.tar.gz"


@pytest.mark.parametrize(
    ("text", "source", "name", "expected"),
    [
        # coreutils sha256sum: text and binary mode, next to other files
        (f"{OTHER}  a.zip\n{S256}  {NAME}\n", "SHA256SUMS", NAME, ("sha256", S256)),
        (f"{S256} *{NAME}\n{OTHER} *b.zip\n", "SHA256SUMS", NAME, ("sha256", S256)),
        # shasum -a 512 (macOS, perl), and with -b
        (f"{S512}  {NAME}\n", "SHA512SUMS", NAME, ("sha512", S512)),
        (f"{S512} *{NAME}\n", "sums.txt", NAME, ("sha512", S512)),  # by the length
        # BSD: sha256 -r (one space), and the tag style of md5/sha256 and --tag
        (f"{S256} {NAME}\n", "x.sha256", NAME, ("sha256", S256)),
        (f"MD5 ({NAME}) = {M5}\n", "CHECKSUMS", NAME, ("md5", M5)),
        (f"SHA512 ({NAME}) = {S512}\nSHA256 (a) = {OTHER}\n", "SUMS", NAME, ("sha512", S512)),
        (f"BLAKE2b ({NAME}) = {B2}\n", "SUMS", NAME, ("blake2b", B2)),
        (f"SHA1 ({NAME})= {S1.upper()}\n", "SUMS", NAME, ("sha1", S1)),  # FreeBSD spacing
        # the tag wins over the file's name
        (f"SHA256 ({NAME}) = {S256}\n", "MD5SUMS", NAME, ("sha256", S256)),
        # names by the file's name: MD5SUMS, .md5, .sha1, B2SUMS (sha512 would be 128)
        (f"{M5}  {NAME}\n", "MD5SUMS", NAME, ("md5", M5)),
        (f"{S1}  {NAME}\n", f"{NAME}.sha1", NAME, ("sha1", S1)),
        (f"{B2}  {NAME}\n", "B2SUMS", NAME, ("blake2b", B2)),
        # one bare digest, as many .sha256 / .sha512 files hold; any case
        (f"{S256.upper()}\n", f"{NAME}.sha256", NAME, ("sha256", S256)),
        (f"{S512}", f"{NAME}.sha512", NAME, ("sha512", S512)),
        (f"{M5}\r\n", "x.md5", NAME, ("md5", M5)),
        # Windows CRLF, a BOM, comments, blank lines, ./name, a path
        (
            f"\ufeff# made on Windows\r\n\r\n{S256} *{NAME}\r\n",
            "SHA256SUMS",
            NAME,
            ("sha256", S256),
        ),
        (f"{OTHER}  ./a\n{S256}  ./{NAME}\n", "SHA256SUMS", NAME, ("sha256", S256)),
        (f"{S256}  dist/linux/{NAME}\n", "SHA256SUMS", NAME, ("sha256", S256)),
        # names with spaces and parentheses; escaped names (coreutils' leading \)
        (f"{S256}  my file (1).iso\n", "SHA256SUMS", "my file (1).iso", ("sha256", S256)),
        (f"SHA256 (my file (1).iso) = {S256}\n", "SUMS", "my file (1).iso", ("sha256", S256)),
        (f"\\{S256}  back\\\\slash\n", "SHA256SUMS", "back\\slash", ("sha256", S256)),
        # a clearsigned SHA256SUMS: the PGP lines are skipped
        (
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
            f"{S256}  {NAME}\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCAAdFiEE\n=abcd\n"
            "-----END PGP SIGNATURE-----\n",
            "SHA256SUMS",
            NAME,
            ("sha256", S256),
        ),
    ],
)
def test_formats(text, source, name, expected):
    assert find_checksum(text, name=name, source=source) == Checksum(*expected)


@pytest.mark.parametrize(
    ("text", "source", "words"),
    [
        (f"{S256}  other.tar.gz\n", "SHA256SUMS", f"no entry for '{NAME}'"),
        ("", "SHA256SUMS", f"no entry for '{NAME}'"),
        ("<html>not found</html>\n", "SHA256SUMS", "no entry"),
        (f"{S256}  {NAME}\n{OTHER}  {NAME}\n", "SHA256SUMS", "different entries"),
        (f"{S256}  {NAME}\n", "SHA512SUMS", "64 digits, but its name 'SHA512SUMS' says sha512"),
        (f"SHA384 ({NAME}) = {'a' * 96}\n", "SUMS", "does not know (its tag 'SHA384')"),
        (f"{'a' * 56}  {NAME}\n", "SUMS", "does not know (a digest of 56 digits)"),
    ],
)
def test_no_usable_entry(text, source, words):
    with pytest.raises(ChecksumMismatchError) as info:
        find_checksum(text, name=NAME, source=source)
    assert words in info.value.message


def test_url_leaf():
    assert url_leaf("https://h.example/a/my%20file.tar.gz?x=1") == "my file.tar.gz"
    assert url_leaf("https://h.example/") == ""


TOOLS = [
    (["sha256sum"], "SHA256SUMS", "sha256"),
    (["sha256sum", "--tag"], "CHECKSUMS", "sha256"),
    (["sha512sum", "-b"], "SHA512SUMS", "sha512"),
    (["md5sum", "--tag"], "sums", "md5"),
    (["b2sum"], "B2SUMS", "blake2b"),
    (["b2sum", "--tag"], "sums", "blake2b"),
    (["shasum", "-a", "512"], "x.sha512", "sha512"),
    (["shasum", "-a", "1", "-b"], "SHA1SUMS", "sha1"),
]


@pytest.mark.parametrize(("argv", "source", "algo"), TOOLS)
def test_real_tools(tmp_path, argv, source, algo):
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    names = ["a.zip", "with space (2).tar.gz", "back\\slash.bin", NAME]
    for n in names:
        (tmp_path / n).write_bytes(DATA + n.encode())
    text = subprocess.run(
        [*argv, *names], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    for n in names:
        want = hashlib.new(algo, DATA + n.encode()).hexdigest()
        assert find_checksum(text, name=n, source=source) == Checksum(algo, want), text
