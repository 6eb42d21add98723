"""What is not an archive (issue 14): documents and packages delivered as they are,
``extract: true``, and an archive's name over bytes that are none (archive.delivery,
archive.arrived). Unit tests on real files; tests/test_not_archives.py runs the daemon."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from archives import tar_bytes, zip_bytes
from dropfetch.archive.arrived import SHOWN_CHARS, what_arrived
from dropfetch.archive.delivery import (
    ARCHIVE_SUFFIXES,
    DOCUMENT_SUFFIXES,
    decide,
    delivery_format,
    is_document_name,
    promised_archive,
    refusal,
)
from dropfetch.archive.formats import ArchiveFormat
from dropfetch.config import ExtractConfig
from dropfetch.download import Transfer
from dropfetch.errors import CorruptArchiveError
from dropfetch.stream import TarStream

SPEC_DOCUMENTS = [
    ".docx",
    ".docm",
    ".xlsx",
    ".xlsm",
    ".pptx",
    ".odt",
    ".ods",
    ".odp",
    ".odg",
    ".epub",
    ".jar",
    ".war",
    ".ear",
    ".apk",
    ".aab",
    ".ipa",
    ".whl",
    ".egg",
    ".nupkg",
    ".vsix",
    ".xpi",
    ".crx",
    ".kmz",
    ".3mf",
    ".appx",
    ".msix",
]
SPEC_ARCHIVES = [
    ".zip",
    ".tar",
    ".tgz",
    ".tar.gz",
    ".tbz2",
    ".tar.bz2",
    ".txz",
    ".tar.xz",
    ".tzst",
    ".tar.zst",
    ".7z",
    ".rar",
]
LOGIN = (
    b"\xef\xbb\xbf\n  <!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
    b"<title>Sign in \xe2\x80\x93 Example</title></head><body><form>...</form></body></html>\n"
)


def _cases(name: str) -> list[str]:
    stem, dot, suffix = name.rpartition(".")
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(suffix))
    return [f"x{name}", f"X{name.upper()}", f"report.v2{stem}{dot}{mixed}"]


def test_the_lists_are_the_specs() -> None:
    assert sorted(DOCUMENT_SUFFIXES) == sorted(SPEC_DOCUMENTS)
    assert sorted(ARCHIVE_SUFFIXES) == sorted(SPEC_ARCHIVES)


@pytest.mark.parametrize("suffix", SPEC_DOCUMENTS)
def test_every_document_suffix_in_any_case(suffix: str) -> None:
    for name in _cases(suffix):
        assert is_document_name(name), name
        assert promised_archive(name) is None, name
        assert decide(ArchiveFormat.ZIP, name, forced=False) is ArchiveFormat.FILE, name
        assert decide(ArchiveFormat.ZIP, name, forced=True) is ArchiveFormat.ZIP, name
        assert decide(ArchiveFormat.FILE, name, forced=False) is ArchiveFormat.FILE, name
        assert decide(ArchiveFormat.FILE, name, forced=True) is None, name


@pytest.mark.parametrize("suffix", SPEC_ARCHIVES)
def test_every_archive_suffix_in_any_case(suffix: str) -> None:
    kind = {".tgz": "tar.gz", ".tbz2": "tar.bz2", ".txz": "tar.xz", ".tzst": "tar.zst"}.get(
        suffix, suffix[1:]
    )
    for name in _cases(suffix):
        assert promised_archive(name) == ("RAR" if kind == "rar" else kind), name
        assert not is_document_name(name), name
        for forced in (False, True):
            assert decide(ArchiveFormat.FILE, name, forced=forced) is None, name
            assert decide(ArchiveFormat.GZ, name, forced=forced) is None, name
            assert decide(ArchiveFormat.ZIP, name, forced=forced) is ArchiveFormat.ZIP, name
            assert decide(ArchiveFormat.TAR_XZ, name, forced=forced) is ArchiveFormat.TAR_XZ


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        "report.html",
        "download",
        "notes.txt.gz",
        "x.GZ",
        "x.bz2",
        "x.xz",
        "x.zst",
        "docx",
        "x.docx.part",
        "x.jarx",
        "xdocx",
        "x.zip.html",
        "x.tar.gz.sig",
        "x.tbz",
    ],
)
def test_names_that_say_nothing(name: str | None) -> None:
    assert not is_document_name(name)
    assert promised_archive(name) is None
    assert decide(ArchiveFormat.FILE, name, forced=False) is ArchiveFormat.FILE
    assert decide(ArchiveFormat.GZ, name, forced=False) is ArchiveFormat.GZ
    assert decide(ArchiveFormat.ZIP, name, forced=False) is ArchiveFormat.ZIP
    assert decide(ArchiveFormat.FILE, name, forced=True) is None
    assert decide(ArchiveFormat.GZ, name, forced=True) is ArchiveFormat.GZ


def test_a_document_wrapped_in_an_archive_name_is_the_archive() -> None:
    assert promised_archive("slides.pptx.zip") == "zip"
    assert not is_document_name("slides.pptx.zip")
    assert is_document_name("bundle.zip.jar")


# --- what arrived -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"", "an empty file"),
        (LOGIN, "an HTML page (title: 'Sign in \u2013 Example')"),
        (b"<html><head><title>\n  A &amp; B\n</title>", "an HTML page (title: 'A & B')"),
        (b"\t<!-- cdn -->\r\n<HTML><BODY>Forbidden</BODY></HTML>", "an HTML page"),
        (b"<head><title></title></head>", "an HTML page"),
        (
            b"<?xml version='1.0'?>\n<!DOCTYPE html PUBLIC '-//W3C//DTD XHTML 1.0//EN'><html>",
            "an HTML page",
        ),
        (
            b'{"error": "unauthorized", "code": 401}',
            'a JSON document (\'{"error": "unauthorized", "code": 401}\')',
        ),
        (b'  [\n {"id": 1}\n]', "a JSON document ('[ {\"id\": 1} ]')"),
        (
            b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code></Error>',
            "an XML document ('<Error><Code>AccessDenied</Code></Error>')",
        ),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "an SVG image"),
        (b"Access denied\n", "a text file ('Access denied')"),
        (
            b"caf\xe9 ferm\xe9 for maintenance",
            "a text file ('caf\u00e9 ferm\u00e9 for maintenance')",
        ),
        (b"  \n\n", "a text file of blank lines"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "a PDF document"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
        (b"GIF89a\x01\x00\x01\x00", "a GIF image"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "a WebP image"),
        (b"\x7fELF\x02\x01\x01", "an ELF program"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_what_arrived(head: bytes, expected: str) -> None:
    assert what_arrived(head, len(head)) == expected


def test_what_arrived_counts_what_it_does_not_know() -> None:
    data = bytes(range(256)) * 4
    assert what_arrived(data, 123456) == "123456 bytes of unrecognised data"
    assert what_arrived(data) == "unrecognised data"
    assert what_arrived(b"\x01", 1) == "1 byte of unrecognised data"
    assert what_arrived(bytes(100), 100) == "100 bytes, all zero"
    assert what_arrived(os.urandom(4096), 9999).endswith("bytes of unrecognised data")


def test_what_arrived_shows_text_escaped_and_short() -> None:
    hostile = b"Denied \x1b[31mred\x1b[0m \xe2\x80\xae gnp.exe " + b"word " * 100
    what = what_arrived(hostile, len(hostile))
    assert what.startswith("a text file ('Denied \\x1b[31mred\\x1b[0m \\u202e gnp.exe word ")
    assert what.endswith(" …')")
    quoted = what[len("a text file ('") : -len("')")]
    assert len(quoted) <= SHOWN_CHARS + 2
    assert "\x1b" not in what and "\u202e" not in what
    title = b"<title>" + b"\xe2\x80\x8f" * 200 + b"</title>"  # escapes are never cut in half
    what = what_arrived(b"<html>" + title + b"<body>" + b"text " * 1000, 500)
    assert what.startswith("an HTML page (title: '\\u200f") and what.endswith("\\u200f …')")


def test_a_utf8_character_cut_at_the_head_is_still_text() -> None:
    head = ("é" * 2048).encode()[:4095]
    assert what_arrived(head, 10**6).startswith("a text file ('éééé")


# --- the messages and delivery_format on real files ---------------------------------


def test_refusal_messages() -> None:
    login = "an HTML page (title: 'Sign in')"
    assert refusal(login, "tar.gz") == (
        "the server sent an HTML page (title: 'Sign in'), not a tar.gz archive: "
        "usually a login or error page; check the URL"
    )
    assert refusal("a text file ('Access denied')", "7z") == (
        "the server sent a text file ('Access denied'), not a 7z archive: "
        "usually an error message; check the URL"
    )
    assert (
        refusal("a PNG image", "zip")
        == "the server sent a PNG image, not a zip archive; check the URL"
    )
    assert refusal("an empty file", None) == (
        "extract: true, but the download is an empty file, not an archive; check the URL"
    )


def _fails(path: Path, name: str | None, *, forced: bool = False) -> str:
    with pytest.raises(CorruptArchiveError) as info:
        delivery_format(path, name, forced=forced)
    assert info.value.code == "corrupt_archive"
    return info.value.message


def test_login_page_under_archive_names(tmp_path: Path) -> None:
    path = tmp_path / "download"
    path.write_bytes(LOGIN)
    for name, kind in [
        ("x.tar.gz", "tar.gz"),
        ("X.TGZ", "tar.gz"),
        ("x.zip", "zip"),
        ("x.7z", "7z"),
        ("x.RAR", "RAR"),
        ("x.tar", "tar"),
    ]:
        assert _fails(path, name) == (
            "the server sent an HTML page (title: 'Sign in \u2013 Example'), not a "
            f"{kind} archive: usually a login or error page; check the URL"
        )
    assert delivery_format(path, "login.html", forced=False) is ArchiveFormat.FILE
    assert delivery_format(path, None, forced=False) is ArchiveFormat.FILE
    assert delivery_format(path, "login.jar", forced=False) is ArchiveFormat.FILE
    assert "extract: true, but the download is an HTML page" in _fails(path, None, forced=True)
    assert "extract: true" in _fails(path, "x.docx", forced=True)


def test_compressed_page_under_a_tar_name(tmp_path: Path) -> None:
    path = tmp_path / "download"
    compressions: list[tuple[Callable[[bytes], bytes], str]] = [
        (gzip.compress, "gzip"),
        (bz2.compress, "bzip2"),
        (lzma.compress, "xz"),
        (zstandard.ZstdCompressor().compress, "zstd"),
    ]
    for compress, label in compressions:
        path.write_bytes(compress(LOGIN))
        message = _fails(path, "x.tar.gz")
        assert message.startswith(
            f"the server sent {label} data that decompresses to an HTML page "
            "(title: 'Sign in \u2013 Example'), not a tar.gz archive: usually a login"
        ), message
        assert delivery_format(path, "page.html.gz", forced=False).is_compressed_single
        assert delivery_format(path, "page.html.gz", forced=True).is_compressed_single
    path.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(2000))
    assert _fails(path, "x.tgz").startswith(
        "the server sent gzip data that does not decompress (damaged or cut short), "
        "not a tar.gz archive"
    )


def test_plain_text_under_a_compressed_name_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "download"
    path.write_bytes(b"already decompressed on the way\n")
    for name in ("notes.txt.gz", "x.bz2", "x.XZ", "x.zst"):
        assert delivery_format(path, name, forced=False) is ArchiveFormat.FILE


def test_empty_downloads(tmp_path: Path) -> None:
    path = tmp_path / "download"
    path.write_bytes(b"")
    assert delivery_format(path, "empty.tar", forced=False) is ArchiveFormat.TAR
    assert delivery_format(path, "empty.tar", forced=True) is ArchiveFormat.TAR
    assert delivery_format(path, "empty.txt", forced=False) is ArchiveFormat.FILE
    assert _fails(path, "empty.zip") == (
        "the server sent an empty file, not a zip archive; check the URL"
    )
    path.write_bytes(bytes(10240))  # GNU tar's empty archive
    assert delivery_format(path, "empty.tar", forced=False) is ArchiveFormat.TAR
    assert _fails(path, "empty.7z") == (
        "the server sent 10240 bytes, all zero, not a 7z archive; check the URL"
    )
    path.write_bytes(gzip.compress(b""))
    assert delivery_format(path, "empty.tar.gz", forced=False) is ArchiveFormat.TAR_GZ


def test_real_archives_go_by_their_bytes_whatever_the_name(tmp_path: Path) -> None:
    path = tmp_path / "download"
    path.write_bytes(tar_bytes({"a.txt": b"a\n"}, compression="gz"))
    with tarfile.open(path) as tf:
        assert tf.getnames() == ["a.txt"]
    for name in ("x.zip", "x.tar.gz", "x.7z", None, "blob"):
        assert delivery_format(path, name, forced=False) is ArchiveFormat.TAR_GZ
    assert delivery_format(path, "x.jar", forced=False) is ArchiveFormat.FILE
    assert delivery_format(path, "x.jar", forced=True) is ArchiveFormat.TAR_GZ
    path.write_bytes(zip_bytes({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n"}))
    assert delivery_format(path, "app.APK", forced=False) is ArchiveFormat.FILE
    assert delivery_format(path, "app.apk", forced=True) is ArchiveFormat.ZIP
    assert delivery_format(path, "app.zip", forced=False) is ArchiveFormat.ZIP


# --- the same rule while downloading (stream.TarStream) -----------------------------


def _stream_in(tmp_path: Path, data: bytes) -> tuple[TarStream, Path, Path]:
    """Download ``data`` into a partial file in pieces, feeding a TarStream as the
    downloader does; the partial file and the stream's staging directory."""
    partial, staging = tmp_path / "x.part", tmp_path / "out"
    staging.mkdir(parents=True)
    stream = TarStream(partial, staging, ExtractConfig(), threading.Event(), lambda _d, _t: None)
    with open(partial, "wb") as f:
        for pos in range(0, len(data), 16384):
            f.write(data[pos : pos + 16384])
            f.flush()
            stream.feed(Transfer(min(pos + 16384, len(data)), len(data), None, 0))
    return stream, partial, staging


def test_the_stream_never_extracts_a_page_under_a_tar_name(tmp_path: Path) -> None:
    page = LOGIN.replace(b"</body>", b"<p>" + b"lorem ipsum " * 20_000 + b"</p></body>")
    stream, partial, staging = _stream_in(tmp_path, page)
    assert stream.fmt is ArchiveFormat.FILE  # it looked, past its 64 KiB
    assert _fails(partial, "x.tar").startswith("the server sent an HTML page (title: 'Sign in")
    assert stream.result(ArchiveFormat.FILE) is None
    assert not list(staging.iterdir())


def test_a_streamed_tar_under_a_document_name_is_discarded(tmp_path: Path) -> None:
    files = {f"f{i}.bin": os.urandom(30_000) for i in range(10)}
    stream, partial, staging = _stream_in(tmp_path, tar_bytes(files))
    assert stream.fmt is ArchiveFormat.TAR
    fmt = delivery_format(partial, "tool.jar", forced=False)
    assert fmt is ArchiveFormat.FILE
    assert stream.result(fmt) is None  # extracted while downloading, then thrown away
    assert not list(staging.iterdir())
    stream, partial, staging = _stream_in(tmp_path / "forced", tar_bytes(files))
    fmt = delivery_format(partial, "tool.jar", forced=True)
    assert stream.result(fmt) == sorted(files)
    assert {p.name: p.read_bytes() for p in staging.iterdir()} == files
