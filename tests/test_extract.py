"""extract.py: sniffing, every format, real tools' archives, and the hostile corpus."""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from dropfetch.config import ExtractConfig
from dropfetch.errors import (
    CancelledError,
    CorruptArchiveError,
    DiskFullError,
    DropfetchError,
    IOFailureError,
)
from dropfetch.extract import ArchiveFormat, extract, single_file_name, sniff
from hostile import CASES, Case, T, Target, compress_bytes, tar_bytes

# --- layout and snapshots ------------------------------------------------------------


@dataclass
class Layout:
    tmp: Path
    dest: Path
    sentinel: Path
    archive: Path

    @property
    def target(self) -> Target:
        return Target(dest=self.dest, sentinel=self.sentinel)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    sentinel = tmp_path / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "file1").write_bytes(b"precious one\n")
    (sentinel / "sub" / "file2").write_bytes(b"precious two\n")
    dest = tmp_path / "work" / "staging" / "job"
    dest.mkdir(parents=True)
    return Layout(
        tmp=tmp_path, dest=dest, sentinel=sentinel, archive=tmp_path / "work" / "download.bin"
    )


def snapshot(root: Path, *, exclude: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` but ``exclude``: type, mode, content hash or target."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == exclude:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = here / name
            if p == exclude:
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[str(p)] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[str(p)] = (
                    "file",
                    st.st_mode,
                    st.st_nlink,
                    hashlib.sha256(p.read_bytes()).hexdigest(),
                )
            else:
                out[str(p)] = ("other", st.st_mode)
    return out


def links_stay_inside(dest: Path) -> None:
    root = os.path.realpath(dest)
    for p in dest.rglob("*"):
        if p.is_symlink():
            real = os.path.realpath(p)
            assert real == root or real.startswith(root + "/"), (p, real)


def run(
    layout: Layout,
    data: bytes | None = None,
    *,
    config: ExtractConfig | None = None,
    single_name: str = "job",
    **kwargs: Any,
) -> list[str]:
    if data is not None:
        layout.archive.write_bytes(data)
    fmt = sniff(layout.archive)
    return extract(
        layout.archive,
        layout.dest,
        fmt=fmt,
        config=config or ExtractConfig(),
        single_name=single_name,
        **kwargs,
    )


# --- the hostile corpus --------------------------------------------------------------


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile(case: Case, layout: Layout) -> None:
    layout.archive.write_bytes(case.build(layout.target))
    before = snapshot(layout.tmp, exclude=layout.dest)
    fmt = sniff(layout.archive)
    assert fmt is not ArchiveFormat.FILE
    config = ExtractConfig(**case.config)
    if case.expected == "ok":
        files = extract(layout.archive, layout.dest, fmt=fmt, config=config, single_name="job")
        assert files == sorted(files)
        if case.check is not None:
            case.check(layout.dest)
        links_stay_inside(layout.dest)
    else:
        with pytest.raises(DropfetchError) as info:
            extract(layout.archive, layout.dest, fmt=fmt, config=config, single_name="job")
        assert info.value.code == case.expected, info.value
        assert info.value.message
    assert snapshot(layout.tmp, exclude=layout.dest) == before
    links_stay_inside(layout.dest)


def test_unsafe_message_names_the_member(layout: Layout) -> None:
    with pytest.raises(DropfetchError, match=r"\.\./\.\./\.\./sentinel/pwned"):
        run(layout, tar_bytes([T("../../../sentinel/pwned")]))


def test_link_message_names_link_and_target(layout: Layout) -> None:
    with pytest.raises(DropfetchError, match=r"link l -> /etc points outside the output"):
        run(layout, tar_bytes([T("l", "sym", target="/etc")]))


# --- sniffing ------------------------------------------------------------------------

TREE = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 40, "sub/deeper/c": b""}


def tree_tar(compress: str | None) -> bytes:
    members = [T("./", "dir", mode=0o755), T("./empty", "dir", mode=0o755)]
    members += [T("./" + name, data=data) for name, data in TREE.items()]
    return tar_bytes(members, compress=compress)


def tree_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("empty/", b"")
        for name, data in TREE.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("compress", "fmt"),
    [
        (None, ArchiveFormat.TAR),
        ("gz", ArchiveFormat.TAR_GZ),
        ("bz2", ArchiveFormat.TAR_BZ2),
        ("xz", ArchiveFormat.TAR_XZ),
        ("zst", ArchiveFormat.TAR_ZST),
    ],
)
def test_every_tar_format(layout: Layout, compress: str | None, fmt: ArchiveFormat) -> None:
    layout.archive.write_bytes(tree_tar(compress))
    assert sniff(layout.archive) is fmt
    assert fmt.is_archive and not fmt.is_compressed_single
    files = run(layout)
    assert files == sorted(TREE)
    for name, data in TREE.items():
        assert (layout.dest / name).read_bytes() == data
    assert (layout.dest / "empty").is_dir()
    assert (layout.dest / "a.txt").stat().st_mtime == 1_700_000_000


def test_zip(layout: Layout) -> None:
    layout.archive.write_bytes(tree_zip())
    assert sniff(layout.archive) is ArchiveFormat.ZIP
    assert run(layout) == sorted(TREE)
    for name, data in TREE.items():
        assert (layout.dest / name).read_bytes() == data
    assert (layout.dest / "empty").is_dir()


def test_empty_zip(layout: Layout) -> None:
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    assert buf.getvalue().startswith(b"PK\x05\x06")
    assert run(layout, buf.getvalue()) == []


SINGLE = [
    ("gz", ArchiveFormat.GZ, gzip.compress),
    ("bz2", ArchiveFormat.BZ2, bz2.compress),
    ("xz", ArchiveFormat.XZ, lzma.compress),
    ("zst", ArchiveFormat.ZST, lambda d: zstandard.ZstdCompressor().compress(d)),
]


@pytest.mark.parametrize(("suffix", "fmt", "compress"), SINGLE, ids=[s[0] for s in SINGLE])
def test_single_file_formats(
    layout: Layout, suffix: str, fmt: ArchiveFormat, compress: Any
) -> None:
    payload = b"just one file\n" * 1000
    layout.archive.write_bytes(compress(payload))
    assert sniff(layout.archive) is fmt
    assert fmt.is_compressed_single and not fmt.is_archive
    name = single_file_name(f"notes.txt.{suffix}", fmt, "job")
    assert name == "notes.txt"
    assert run(layout, single_name=name) == ["notes.txt"]
    assert (layout.dest / "notes.txt").read_bytes() == payload


def test_multi_member_gzip_and_multi_frame_zstd(layout: Layout) -> None:
    layout.archive.write_bytes(gzip.compress(b"one ") + gzip.compress(b"two"))
    assert run(layout) == ["job"]
    assert (layout.dest / "job").read_bytes() == b"one two"
    other = layout.tmp / "z"
    other.mkdir()
    c = zstandard.ZstdCompressor()
    (layout.tmp / "z.zst").write_bytes(c.compress(b"one ") + c.compress(b"two"))
    extract(
        layout.tmp / "z.zst", other, fmt=ArchiveFormat.ZST, config=ExtractConfig(), single_name="z"
    )
    assert (other / "z").read_bytes() == b"one two"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"x",
        os.urandom(10_000),
        b"<!DOCTYPE html><html><body>Not found</body></html>\n" * 20,
        b"PK\x01\x02 not a zip start",
        bytes(10240),
    ],
    ids=["empty", "one-byte", "random", "html", "pk-cd", "zeros"],
)
def test_sniff_plain_files(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "f.tar.gz"
    p.write_bytes(data)
    assert sniff(p) is ArchiveFormat.FILE


def test_sniff_broken_gzip_is_gz_then_corrupt(layout: Layout) -> None:
    layout.archive.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(2000))
    assert sniff(layout.archive) is ArchiveFormat.GZ
    with pytest.raises(CorruptArchiveError, match="damaged or incomplete"):
        run(layout)


def test_sniff_ignores_misleading_name(tmp_path: Path) -> None:
    for name in ("page.html", "download.zip", "x.gz", "noext"):
        p = tmp_path / name
        p.write_bytes(tree_tar("gz"))
        assert sniff(p) is ArchiveFormat.TAR_GZ
    p = tmp_path / "archive.tar.gz"
    p.write_bytes(gzip.compress(b"just text, no tar header here " * 40))
    assert sniff(p) is ArchiveFormat.GZ


def test_v7_tar_without_ustar_magic(layout: Layout) -> None:
    data = tar_bytes([T("old.txt", data=b"v7")], fmt=tarfile.USTAR_FORMAT)
    block = bytearray(data[:512])
    block[257:265] = bytes(8)
    block[148:156] = b"        "
    block[148:156] = b"%06o\x00 " % sum(block)
    layout.archive.write_bytes(bytes(block) + data[512:])
    assert sniff(layout.archive) is ArchiveFormat.TAR
    assert run(layout) == ["old.txt"]


def test_inner_gz_is_not_decompressed_twice(layout: Layout) -> None:
    inner = gzip.compress(b"inner payload")
    assert run(layout, tar_bytes([T("x.gz", data=inner)], compress="gz")) == ["x.gz"]
    assert (layout.dest / "x.gz").read_bytes() == inner


def test_os_template(layout: Layout) -> None:
    names = [
        "metainfo.xml",
        "initrd.gz",
        "install.cfg",
        "linux",
        "pxelinux.0/pxelinux.0",
        "pxelinux.0/ldlinux.c32",
        "pxelinux.conf",
    ]
    members = [T("pxelinux.0", "dir")] + [
        T(n, data=gzip.compress(b"ramdisk") if n.endswith(".gz") else n.encode()) for n in names
    ]
    assert run(layout, tar_bytes(members, compress="gz")) == sorted(names)


def test_root_members_and_duplicates(layout: Layout) -> None:
    data = tar_bytes(
        [
            T(".", "dir"),
            T("./", "dir"),
            T("./a", data=b"first"),
            T("a", data=b"second"),
            T(".//b//", "dir"),
            T("./b/./c", data=b"c"),
        ]
    )
    assert run(layout, data) == ["a", "b/c"]
    assert (layout.dest / "a").read_bytes() == b"second"


def test_modes(layout: Layout) -> None:
    data = tar_bytes(
        [
            T("locked", "dir", mode=0o000),
            T("locked/f", mode=0o000),
            T("exe", mode=0o4777),
            T("ww", mode=0o666),
        ]
    )
    assert run(layout, data) == ["exe", "locked/f", "ww"]
    mode = lambda p: stat.S_IMODE((layout.dest / p).stat().st_mode)  # noqa: E731
    assert mode("locked") == 0o700
    assert mode("locked/f") == 0o600
    assert mode("exe") == 0o755
    assert mode("ww") == 0o644


# --- archives made by real tools ----------------------------------------------------


def make_tree(src: Path) -> None:
    (src / "usr" / "bin").mkdir(parents=True)
    (src / "usr" / "bin" / "x").write_bytes(b"#!/bin/sh\necho x\n")
    (src / "usr" / "bin" / "x").chmod(0o755)
    (src / "empty").mkdir()
    (src / "docs").mkdir()
    (src / "docs" / "readme").write_text("read me\n")
    os.link(src / "docs" / "readme", src / "docs" / "README")
    (src / "docs" / "latest").symlink_to("readme")
    long_dir = src / ("long-directory-name-" * 5)
    long_dir.mkdir()
    (long_dir / ("f" * 120)).write_bytes(b"long")


EXPECTED_REAL = sorted(
    ["usr/bin/x", "docs/readme", "docs/README", "long-directory-name-" * 5 + "/" + "f" * 120]
)


def check_real_tree(dest: Path, files: list[str]) -> None:
    assert files == EXPECTED_REAL
    assert (dest / "empty").is_dir()
    assert os.readlink(dest / "docs" / "latest") == "readme"
    assert (dest / "docs" / "latest").read_text() == "read me\n"
    assert (dest / "docs" / "README").read_text() == "read me\n"
    assert os.access(dest / "usr" / "bin" / "x", os.X_OK)


@pytest.mark.parametrize(
    "args",
    [
        ["-cf"],
        ["-czf"],
        ["-cjf"],
        ["-cJf"],
        ["--zstd", "-cf"],
        ["--format=pax", "-czf"],
        ["--format=gnu", "-cf"],
    ],
    ids=["tar", "gz", "bz2", "xz", "zst", "pax", "gnu"],
)
def test_gnu_tar(layout: Layout, args: list[str]) -> None:
    if shutil.which("tar") is None:
        pytest.skip("tar not installed")
    src = layout.tmp / "src"
    src.mkdir()
    make_tree(src)
    proc = subprocess.run(
        ["tar", "-C", str(src), *args, str(layout.archive), "."], capture_output=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"tar cannot do {args}: {proc.stderr.decode()}")
    check_real_tree(layout.dest, run(layout))


def test_gnu_tar_sparse(layout: Layout) -> None:
    if shutil.which("tar") is None:
        pytest.skip("tar not installed")
    src = layout.tmp / "src"
    src.mkdir()
    with open(src / "sparse.img", "wb") as f:
        f.write(b"head")
        f.seek(8 << 20)
        f.write(b"tail")
    for fmt in ("gnu", "pax"):
        archive = layout.tmp / f"sparse-{fmt}.tar"
        subprocess.run(
            ["tar", "-C", str(src), f"--format={fmt}", "-S", "-cf", str(archive), "sparse.img"],
            check=True,
        )
        dest = layout.tmp / f"out-{fmt}"
        dest.mkdir()
        assert extract(
            archive, dest, fmt=sniff(archive), config=ExtractConfig(), single_name="x"
        ) == ["sparse.img"]
        assert (dest / "sparse.img").read_bytes() == (src / "sparse.img").read_bytes()


def test_bsdtar(layout: Layout) -> None:
    if shutil.which("bsdtar") is None:
        pytest.skip("bsdtar not installed")
    src = layout.tmp / "src"
    src.mkdir()
    make_tree(src)
    subprocess.run(["bsdtar", "-C", str(src), "-czf", str(layout.archive), "."], check=True)
    check_real_tree(layout.dest, run(layout))


def test_zip_command(layout: Layout) -> None:
    if shutil.which("zip") is None:
        pytest.skip("zip not installed")
    src = layout.tmp / "src"
    src.mkdir()
    make_tree(src)
    archive = layout.tmp / "a.zip"
    subprocess.run(["zip", "-qry", str(archive), "."], cwd=src, check=True)
    layout.archive.write_bytes(archive.read_bytes())
    files = run(layout)
    # zip stores hard links as two copies
    assert files == EXPECTED_REAL
    assert os.readlink(layout.dest / "docs" / "latest") == "readme"
    assert (layout.dest / "empty").is_dir()
    assert os.access(layout.dest / "usr" / "bin" / "x", os.X_OK)


def test_zip_command_streaming_data_descriptors(layout: Layout) -> None:
    if shutil.which("zip") is None:
        pytest.skip("zip not installed")
    src = layout.tmp / "src"
    src.mkdir()
    (src / "a").write_bytes(b"streamed " * 1000)
    (src / "d").mkdir()
    (src / "d" / "b").write_bytes(os.urandom(5000))
    # writing to a pipe makes zip use data descriptors (flag bit 3)
    out = subprocess.run(["zip", "-qr", "-", "."], cwd=src, capture_output=True, check=True).stdout
    assert zipfile.ZipFile(io.BytesIO(out)).infolist()[0].flag_bits & 0x08
    assert run(layout, out) == ["a", "d/b"]
    assert (layout.dest / "d" / "b").read_bytes() == (src / "d" / "b").read_bytes()


# --- progress, cancellation, errors on the destination ------------------------------


def test_progress_reports_archive_bytes(layout: Layout) -> None:
    data = tar_bytes([T("big", data=os.urandom(3 << 20))], compress="gz")
    calls: list[tuple[int, int]] = []
    run(layout, data, on_progress=lambda done, total: calls.append((done, total)))
    assert calls
    assert calls[-1] == (len(data), len(data))
    assert all(total == len(data) and 0 <= done <= total for done, total in calls)


def test_cancel_before_start(layout: Layout) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        run(layout, tree_tar("gz"), cancel=cancel)


def test_cancel_during_extraction(layout: Layout) -> None:
    cancel = threading.Event()
    data = tar_bytes([T(f"f{i}", data=os.urandom(1 << 20)) for i in range(6)])
    with pytest.raises(CancelledError):
        run(layout, data, cancel=cancel, on_progress=lambda _done, _total: cancel.set())


def test_disk_full_and_io_error(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    layout.archive.write_bytes(tree_tar("gz"))

    def full(_fd: int, _data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(DiskFullError):
        run(layout)
    monkeypatch.undo()
    shutil.rmtree(layout.dest)
    layout.dest.mkdir()

    def broken(_fd: int, _data: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(IOFailureError):
        run(layout)


def test_file_format_and_dirty_dest_are_programming_errors(layout: Layout) -> None:
    layout.archive.write_bytes(b"plain")
    with pytest.raises(ValueError):
        extract(
            layout.archive,
            layout.dest,
            fmt=ArchiveFormat.FILE,
            config=ExtractConfig(),
            single_name="x",
        )
    (layout.dest / "junk").write_bytes(b"")
    with pytest.raises(ValueError):
        extract(
            layout.archive,
            layout.dest,
            fmt=ArchiveFormat.GZ,
            config=ExtractConfig(),
            single_name="x",
        )


def test_symlink_skip_logs_names(layout: Layout, caplog: pytest.LogCaptureFixture) -> None:
    data = tar_bytes([T("f"), T("l", "sym", target="f")])
    assert run(layout, data, config=ExtractConfig(symlinks="skip")) == ["f"]
    assert not (layout.dest / "l").exists()
    assert "left out 1 symbolic links" in caplog.text and " l" in caplog.text


def test_ratio_not_checked_below_grace(layout: Layout) -> None:
    # 32 MiB of zeros is far over ratio 10, but below the 64 MiB grace of SPEC §5
    data = compress_bytes(bytes(32 << 20), "gz")
    assert run(layout, data, config=ExtractConfig(max_ratio=10)) == ["job"]


# --- single_file_name ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url_name", "fmt", "expected"),
    [
        ("notes.txt.gz", ArchiveFormat.GZ, "notes.txt"),
        ("NOTES.TXT.GZ", ArchiveFormat.GZ, "NOTES.TXT"),
        ("disk.img.xz", ArchiveFormat.XZ, "disk.img"),
        ("disk.img.zst", ArchiveFormat.ZST, "disk.img"),
        ("data.bz2", ArchiveFormat.BZ2, "data"),
        ("data", ArchiveFormat.GZ, "data"),
        (".gz", ArchiveFormat.GZ, "job"),
        ("..gz", ArchiveFormat.GZ, "job"),
        (None, ArchiveFormat.GZ, "job"),
        ("", ArchiveFormat.XZ, "job"),
        ("a\x00b.gz", ArchiveFormat.GZ, "job"),
        ("x.tar.gz", ArchiveFormat.TAR_GZ, "job"),
    ],
)
def test_single_file_name(url_name: str | None, fmt: ArchiveFormat, expected: str) -> None:
    assert single_file_name(url_name, fmt, "job") == expected
