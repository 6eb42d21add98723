"""Property tests: whatever the bytes, extract() fails only with a known domain error and
never writes outside its destination."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropfetch.config import ExtractConfig
from dropfetch.errors import DropfetchError
from dropfetch.extract import ArchiveFormat, extract, sniff
from hostile import T, tar_bytes

ARCHIVE_CODES = {
    "corrupt_archive",
    "unsafe_archive",
    "archive_limits",
    "encrypted_archive",
    "unsupported_archive",
}
CONFIG = ExtractConfig(max_total_size=64 << 20, max_files=1000)
PROPS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _members() -> list[T]:
    return [
        T("./", "dir"),
        T("./docs", "dir"),
        T("./docs/readme", data=b"read me\n" * 50),
        T("./docs/latest", "sym", target="readme"),
        T("./docs/hard", "hard", target="docs/readme"),
        T("./bin/tool", data=bytes(range(256)) * 8, mode=0o755),
        T("./empty", "dir"),
    ]


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("docs/", b"")
        zf.writestr("docs/readme", b"read me\n" * 50)
        zf.writestr("bin/tool", bytes(range(256)) * 8)
        info = zipfile.ZipInfo("docs/latest")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        zf.writestr(info, b"readme")
    return buf.getvalue()


BASES: dict[ArchiveFormat, bytes] = {
    ArchiveFormat.TAR: tar_bytes(_members()),
    ArchiveFormat.TAR_GZ: tar_bytes(_members(), compress="gz"),
    ArchiveFormat.TAR_XZ: tar_bytes(_members(), compress="xz"),
    ArchiveFormat.TAR_ZST: tar_bytes(_members(), compress="zst"),
    ArchiveFormat.ZIP: _zip(),
    ArchiveFormat.GZ: gzip.compress(b"single file\n" * 100),
}


def _tree_digest(root: Path, exclude: Path) -> list[tuple[str, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == exclude:
            dirnames[:] = []
            continue
        for name in sorted(dirnames + filenames):
            p = here / name
            if p == exclude:
                continue
            digest = (
                hashlib.sha256(p.read_bytes()).hexdigest()
                if p.is_file() and not p.is_symlink()
                else str(p.lstat().st_mode)
            )
            out.append((str(p.relative_to(root)), digest))
    return sorted(out)


@contextmanager
def _layout() -> Iterator[tuple[Path, Path, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "sentinel").mkdir()
        (root / "sentinel" / "file1").write_bytes(b"precious\n")
        dest = root / "work" / "staging" / "job"
        dest.mkdir(parents=True)
        yield root, dest, root / "work" / "archive"


def _check_extract(data: bytes, fmt: ArchiveFormat | None) -> None:
    with _layout() as (root, dest, archive):
        archive.write_bytes(data)
        fmt = fmt or sniff(archive)
        if fmt is ArchiveFormat.FILE:
            return
        before = _tree_digest(root, dest)
        error: DropfetchError | None = None
        files: list[str] = []
        try:
            files = extract(archive, dest, fmt=fmt, config=CONFIG, single_name="job")
        except DropfetchError as exc:
            error = exc
        if error is not None:
            assert error.code in ARCHIVE_CODES, (error.code, error)
        assert files == sorted(files)
        for name in files:
            assert (dest / name).is_file()
        assert _tree_digest(root, dest) == before
        real_dest = os.path.realpath(dest)
        for p in dest.rglob("*"):
            if p.is_symlink():
                assert os.path.realpath(p).startswith(real_dest + "/")


MAGICS = [
    b"",
    b"\x1f\x8b\x08\x00",
    b"BZh91AY&SY",
    b"\xfd7zXZ\x00",
    b"\x28\xb5\x2f\xfd",
    b"PK\x03\x04",
    b"PK\x05\x06",
]


@PROPS
@given(st.sampled_from(MAGICS), st.binary(max_size=4096))
def test_random_bytes(magic: bytes, tail: bytes) -> None:
    _check_extract(magic + tail, None)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[ArchiveFormat, bytes]:
    fmt = draw(st.sampled_from(sorted(BASES)))
    data = bytearray(BASES[fmt])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[i : i + draw(st.integers(1, 16))]
    return fmt, bytes(data)


@PROPS
@given(mutated())
def test_mutated_archives(case: tuple[ArchiveFormat, bytes]) -> None:
    fmt, data = case
    _check_extract(data, fmt)
    _check_extract(data, None)


def test_bases_extract_cleanly() -> None:
    for fmt, data in BASES.items():
        with _layout() as (_root, dest, archive):
            archive.write_bytes(data)
            assert sniff(archive) is fmt
            assert extract(archive, dest, fmt=fmt, config=CONFIG, single_name="job")
