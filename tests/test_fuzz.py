"""Differential fuzzing of extract() against real tools (docs/FUZZ.md), and regression
tests for the extract.py bugs it found.

200 fixed seeds (base FUZZ_SEED, default fuzz_extract.DEFAULT_SEED); a failure names its
seed: replay it with ``python tests/fuzz_extract.py --replay SEED``.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import struct
import subprocess
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import zstandard

import fuzz_7z_rar
import fuzz_extract
from archives7z import rar5_blocks, rar5_file_name, rar5_join, rar5_rename, seven_zz
from dropfetch.config import ExtractConfig
from dropfetch.errors import CorruptArchiveError
from dropfetch.extract import extract, sniff
from rarfiles import rar_file

TOOLS = ("tar", "bsdtar", "zip", "unzip")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
needs_tools = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {MISSING}")
SEED = int(os.environ.get("FUZZ_SEED", str(fuzz_extract.DEFAULT_SEED)))
CASES = 200


@needs_tools
@pytest.mark.parametrize("seed", range(SEED, SEED + CASES))
def test_fuzz_case(seed: int, tmp_path: Path) -> None:
    res = fuzz_extract.run_case(seed, tmp_path)
    assert not res.is_bug, res.report()
    fuzz_extract.cleanup(tmp_path)


def test_fuzz_classes_are_reached(tmp_path: Path) -> None:
    """The harness can tell a match from a mismatch: a wrong reference tree is a BUG."""
    res = fuzz_extract.Result(
        1, fuzz_extract.Made("gnutar", ["tar"], "tar", ""), [], reference="gnutar", dropfetch="ok"
    )
    ref = {"a": ("file", 0o644, 1, "x", 0)}
    cls, detail = fuzz_extract.classify(res, res.made, True, ref, {}, {}, {}, tmp_path, 0)
    assert cls == "BUG:different-tree"
    assert "'a'" in detail
    cls, _ = fuzz_extract.classify(res, res.made, True, ref, {}, dict(ref), {}, tmp_path, 0)
    assert cls == "match"


# --- regressions found by the fuzz ------------------------------------------------


def run(archive: Path, tmp_path: Path, name: str = "dest") -> tuple[Path, list[str]]:
    dest = tmp_path / name
    dest.mkdir()
    return dest, extract(
        archive, dest, fmt=sniff(archive), config=ExtractConfig(), single_name="job"
    )


def gnu_tar(tmp_path: Path, *args: str, files: dict[str, bytes] | None = None) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, data in (files or {}).items():
        (src / name).write_bytes(data)
    archive = tmp_path / "a.tar"
    subprocess.run(
        ["tar", "-C", str(src), "--sort=name", *args, "-cf", str(archive), "."], check=True
    )
    return archive


def member_offsets(raw: bytes) -> list[int]:
    groups = fuzz_extract.tar_groups(raw)
    assert groups
    offsets, at = [], 0
    for g in groups:
        offsets.append(at)
        at += len(b"".join(g.ext) + g.main)
    return [*offsets, at]


THREE = {"a": b"alpha\n" * 100, "b": b"bravo\n" * 100, "c": b"charlie\n" * 100}


@needs_tools
@pytest.mark.parametrize("fmt", ["gnu", "pax", "ustar"])
def test_damaged_header_after_the_first_is_corrupt(tmp_path: Path, fmt: str) -> None:
    # tarfile took a bad checksum for the end and published a part
    archive = gnu_tar(tmp_path, f"--format={fmt}", files=THREE)
    raw = bytearray(archive.read_bytes())
    at = member_offsets(bytes(raw))[2]
    raw[at + 3] ^= 0x10  # a name byte: the checksum no longer matches
    archive.write_bytes(bytes(raw))
    assert subprocess.run(["tar", "-tf", str(archive)], capture_output=True).returncode != 0
    with pytest.raises(CorruptArchiveError, match="damaged"):
        run(archive, tmp_path)


@needs_tools
def test_header_cut_short_is_corrupt_and_a_cut_at_a_member_is_not(tmp_path: Path) -> None:
    archive = gnu_tar(tmp_path, files=THREE)
    raw = archive.read_bytes()
    ends = member_offsets(raw)
    archive.write_bytes(raw[: ends[3] + 100])
    with pytest.raises(CorruptArchiveError):
        run(archive, tmp_path)
    # no end-of-archive blocks at all: GNU tar and bsdtar take it as complete, so do we
    archive.write_bytes(raw[: ends[-1]])
    _, files = run(archive, tmp_path, "dest2")
    assert files == ["a", "b", "c"]


@needs_tools
@pytest.mark.parametrize(
    ("flag", "cut"), [("-z", 1), ("-z", 6), ("-J", 1), ("--zstd", 2), ("-j", 1)]
)
def test_compressed_stream_is_read_to_its_end(tmp_path: Path, flag: str, cut: int) -> None:
    # the checksum at the end of the stream (and the stream's end) used to go unread
    archive = gnu_tar(tmp_path, flag, files=THREE)
    raw = bytearray(archive.read_bytes())
    if cut == 1:
        raw[-1] ^= 0xFF
    else:
        del raw[-cut:]
    archive.write_bytes(bytes(raw))
    assert subprocess.run(["tar", "-tf", str(archive)], capture_output=True).returncode != 0
    with pytest.raises(CorruptArchiveError):
        run(archive, tmp_path)


def make_sparse(path: Path) -> bytes:
    with open(path, "wb") as f:
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"tail")
    return path.read_bytes()


@needs_tools
@pytest.mark.parametrize("name", ["é中文名.img", "naïve café", "ascii.img"])
def test_pax_sparse_file_keeps_a_non_ascii_name(tmp_path: Path, name: str) -> None:
    # GNU tar adds path=./GNUSparseFile.N/NAME next to GNU.sparse.name for such names
    src = tmp_path / "src"
    src.mkdir()
    data = make_sparse(src / name)
    archive = tmp_path / "a.tar"
    subprocess.run(
        ["tar", "-C", str(src), "--format=pax", "--sparse", "-cf", str(archive), name], check=True
    )
    dest, files = run(archive, tmp_path)
    assert files == [name]
    assert (dest / name).read_bytes() == data


@needs_tools
def test_sparse_map_that_does_not_match_the_data_is_corrupt(tmp_path: Path) -> None:
    # a v7 header turned into type 'S': no map, 10240 bytes of data; tarfile wrote an
    # empty file where tar and bsdtar write the data
    archive = gnu_tar(tmp_path, "--format=v7", files={"f": os.urandom(10240)})
    raw = archive.read_bytes()
    groups = fuzz_extract.tar_groups(raw)
    assert groups
    target = next(g for g in groups if fuzz_extract.group_name(g) == b"./f")
    fuzz_extract.set_header(target, type=b"S")
    archive.write_bytes(fuzz_extract.join_tar(groups))
    with tarfile.open(archive) as tf:
        # typeshed has bytes | None; tarfile makes it a list of (offset, size) pairs
        sparse: Any = tf.getmember("./f").sparse
        assert all(n == 0 for _, n in sparse)
    with pytest.raises(CorruptArchiveError, match="sparse map"):
        run(archive, tmp_path)


@needs_tools
def test_zip_mode_zero_is_kept_like_tar(tmp_path: Path) -> None:
    # a stored mode of 0 was taken for "no mode" and became 0644 (tar's gives 0600)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "secret").write_bytes(b"x")
    (src / "d" / "secret").chmod(0)
    (src / "plain").write_bytes(b"y")
    archive = tmp_path / "a.zip"
    subprocess.run(["zip", "-qr", str(archive), "."], cwd=src, check=True)
    dest, files = run(archive, tmp_path)
    assert files == ["d/secret", "plain"]
    assert stat.S_IMODE((dest / "d" / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "plain").stat().st_mode) == 0o644


@pytest.mark.parametrize("cut", [1, 4, 10, 200])
def test_zstd_cut_short_is_corrupt(tmp_path: Path, cut: int) -> None:
    # python-zstandard's reader ends quietly where its input ends, even mid-frame: a
    # truncated .zst download was published whole (or empty)
    c = zstandard.ZstdCompressor(write_checksum=True)
    data = c.compress(os.urandom(3000) * 20) + c.compress(b"second frame\n")
    archive = tmp_path / "f.zst"
    archive.write_bytes(data[:-cut])
    with pytest.raises(CorruptArchiveError, match="cut short"):
        run(archive, tmp_path)


def test_zstd_frames_skippable_and_flushed_blocks(tmp_path: Path) -> None:
    c = zstandard.ZstdCompressor(write_checksum=True)
    buf = io.BytesIO()
    with c.stream_writer(buf, closefd=False) as w:
        w.write(b"abc" * 100_000)
        w.flush()
        w.write(b"tail")
    skippable = struct.pack("<II", 0x184D2A5A, 3) + b"abc"
    data = buf.getvalue() + skippable + zstandard.ZstdCompressor(level=19).compress(bytes(1 << 20))
    archive = tmp_path / "f.zst"
    archive.write_bytes(data)
    dest, files = run(archive, tmp_path)
    assert files == ["job"]
    assert (dest / "job").read_bytes() == b"abc" * 100_000 + b"tail" + bytes(1 << 20)


@needs_tools
def test_regular_file_named_like_a_directory_is_corrupt(tmp_path: Path) -> None:
    # GNU tar and bsdtar take a type-0 member named 'd//' for a directory and read its
    # data as headers; dropfetch wrote a file 'd' and went on: refuse instead
    archive = gnu_tar(tmp_path, "--format=gnu", files={"d": b"x" * 2000, "e": b"e"})
    groups = fuzz_extract.tar_groups(archive.read_bytes())
    assert groups
    target = next(g for g in groups if fuzz_extract.group_name(g) == b"./d")
    fuzz_extract.set_field(target, "name", b"./d//")
    archive.write_bytes(fuzz_extract.join_tar(groups))
    with pytest.raises(CorruptArchiveError, match="directory's name"):
        run(archive, tmp_path)


@needs_tools
@pytest.mark.parametrize("name", [b"bad\xff\xfe", b"d\xe9j\xe0", b"x\xc3", b"ok/\x80tail"])
def test_zip_utf8_flag_on_a_name_that_is_not_utf8_says_so(tmp_path: Path, name: bytes) -> None:
    # bsdtar --format=zip sets the UTF-8 flag on every name, valid or not; zipfile then
    # cannot read the directory: the message said only "'utf-8' codec can't decode"
    src = tmp_path / "src"
    (src / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
    (src / os.fsdecode(name)).write_bytes(b"data\n")
    archive = tmp_path / "a.zip"
    subprocess.run(
        ["bsdtar", "-c", "-f", str(archive), "--format=zip", "-C", str(src), "."],
        check=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    with pytest.raises(CorruptArchiveError, match="says its names are UTF-8") as caught:
        run(archive, tmp_path)
    with pytest.raises(UnicodeDecodeError) as undecodable:
        name.decode()
    assert f"byte 0x{name[undecodable.value.start]:02x}" in caught.value.message
    assert subprocess.run(["unzip", "-tq", str(archive)], capture_output=True).returncode == 0


# --- the 7z and RAR cases' own tools --------------------------------------------------


def test_families_keep_most_seeds_tar_and_zip() -> None:
    families = Counter(fuzz_7z_rar.family(s) for s in range(SEED, SEED + 2000))
    assert set(families) == {"tar-zip", "7z", "rar"}
    assert families["tar-zip"] > 1500 and families["7z"] > 150 and families["rar"] > 100


@pytest.mark.skipif(shutil.which("7zz") is None, reason="7zz is not installed")
def test_7z_crcs_fixed_after_a_header_change_and_a_rename_is_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_bytes(b"hello\n")
    archive = seven_zz(src, tmp_path / "a.7z", "-mhc=off")
    raw = archive.read_bytes()
    assert fuzz_7z_rar.fix_7z_crcs(raw) == raw
    span = fuzz_7z_rar._7z_header_span(raw)  # noqa: SLF001
    assert span is not None
    renamed = fuzz_7z_rar._rename_7z(random.Random(3), raw, *span)  # noqa: SLF001
    assert renamed is not None
    archive.write_bytes(fuzz_7z_rar.fix_7z_crcs(renamed[0]))
    listing = subprocess.run(["7zz", "l", "-slt", str(archive)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stdout
    assert "hello.txt" not in listing.stdout
    assert "Path = " + renamed[1].split("-> ")[1].split("'")[1] in listing.stdout


def test_rar5_rename_keeps_a_valid_archive(tmp_path: Path) -> None:
    raw = rar_file("rar5-subdirs.rar").read_bytes()
    assert rar5_join(rar5_blocks(raw)) == raw
    out = tmp_path / "renamed.rar"
    out.write_bytes(rar5_rename(raw, "sub/dir1/file1.txt", "../../escape.txt"))
    names = [rar5_file_name(b)[0] for b in rar5_blocks(out.read_bytes()) if b.kind == 2]
    assert "../../escape.txt" in names and "sub/dir1/file1.txt" not in names
    if shutil.which("lsar"):  # every header CRC and data CRC right
        test = subprocess.run(["lsar", "-t", str(out)], capture_output=True)
        assert b"10 passed, 0 failed" in test.stdout, test.stdout


@pytest.mark.skipif(shutil.which("7zz") is None, reason="7zz is not installed")
def test_7z_with_damaged_data_is_corrupt(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(5000))
    archive = seven_zz(src, tmp_path / "a.7z", "-m0=copy")
    raw = bytearray(archive.read_bytes())
    raw[32 + 100] ^= 1  # a byte of the stored data: its CRC no longer matches
    archive.write_bytes(bytes(raw))
    assert subprocess.run(["7zz", "t", str(archive)], capture_output=True).returncode != 0
    with pytest.raises(CorruptArchiveError):
        run(archive, tmp_path)
