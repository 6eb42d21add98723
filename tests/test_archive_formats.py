"""Archives as real tools make them (issue 10), compared with what those tools unpack.

Paths too long for the filesystem, zip name encodings, zip entry types, hard links to
symbolic links, GNU tar's incremental format, empty archives, compression methods
that cannot be decoded, and names that are not UTF-8 on their way out of the daemon.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import json
import lzma
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard

from dropfetch.config import ExtractConfig
from dropfetch.errors import DropfetchError
from dropfetch.extract import ArchiveFormat, extract, sniff
from dropfetch.fsutil import display_name
from dropfetch.logs import escape
from dropfetch.status import Sidecar
from harness import check_sidecar, wait_for
from hostile import UP, T, Z, tar_bytes, zip_raw

UTF8_ENV = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (`make test-deps` installs it, as root)")


def unpack(
    archive: Path, dest: Path, config: ExtractConfig | None = None, name: str | None = None
) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    fmt = sniff(archive, name=name) if name else sniff(archive)
    return extract(archive, dest, fmt=fmt, config=config or ExtractConfig(), single_name="single")


def fails(archive: Path, dest: Path, config: ExtractConfig | None = None) -> DropfetchError:
    with pytest.raises(DropfetchError) as info:
        unpack(archive, dest, config)
    return info.value


def tree(root: Path) -> dict[bytes, tuple[Any, ...]]:
    """Every entry under ``root`` by its name's bytes: type and content or target."""
    out: dict[bytes, tuple[Any, ...]] = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, broot)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


def tar_types(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tf:
        return {m.name: m.type for m in tf}


def run_tool(args: list[str], cwd: Path, **kwargs: Any) -> None:
    cwd.mkdir(parents=True, exist_ok=True)
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=UTF8_ENV, **kwargs)


# --- 2. paths too long for the filesystem -------------------------------------------


def _name_of_length(n: int, last: str = "f") -> str:
    """A relative name of exactly ``n`` bytes: 200-byte directories, then ``last``."""
    parts: list[str] = []
    left = n - len(last)
    while left > 0:
        size = min(200, left - 1)
        if left - size - 1 in range(1, 2):  # never leave a 1-byte gap to fill
            size -= 1
        parts.append("d" * size)
        left -= size + 1
    name = "/".join([*parts, last])
    assert len(name) == n, (len(name), n)
    return name


def _room(dest: Path) -> int:
    """Bytes a member's name may have under ``dest`` within PATH_MAX (4096 with NUL)."""
    return 4096 - 1 - len(os.fsencode(dest)) - 1


@pytest.mark.parametrize("kind", ["file", "dir", "sym", "hard"])
def test_path_too_long_once_under_staging(tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "staging" / "job"
    name = _name_of_length(_room(dest) + 1)
    members = [T("target")] if kind == "hard" else []
    members.append(T(name, kind, target="target" if kind == "hard" else "x"))
    archive = tmp_path / "long.tar"
    archive.write_bytes(tar_bytes(members))
    err = fails(archive, dest)
    assert err.code == "unsafe_archive", err
    assert "too long" in err.message and name[:150] in err.message


def test_path_that_just_fits_is_fine(tmp_path: Path) -> None:
    dest = tmp_path / "staging" / "job"
    name = _name_of_length(_room(dest))
    archive = tmp_path / "fits.tar"
    archive.write_bytes(tar_bytes([T(name, data=b"fits")]))
    assert unpack(archive, dest) == [name]
    assert (dest / name).read_bytes() == b"fits"


@pytest.mark.parametrize(
    "target",
    [
        "t/" * 2048,  # 4096 bytes: one more than a link may hold
        "x" * 5000,
    ],
    ids=["4096", "5000"],
)
def test_link_target_too_long(tmp_path: Path, target: str) -> None:
    archive = tmp_path / "l.tar"
    archive.write_bytes(tar_bytes([T("l", "sym", target=target)]))
    err = fails(archive, tmp_path / "out")
    assert err.code == "unsafe_archive" and "'l'" in err.message and "too long" in err.message
    zarch = tmp_path / "l.zip"
    zarch.write_bytes(
        zip_raw([Z(b"l", target.encode(), external_attr=(stat.S_IFLNK | 0o777) << 16)])
    )
    err = fails(zarch, tmp_path / "zout")
    assert err.code == "unsafe_archive" and "'l'" in err.message and "too long" in err.message


@pytest.mark.parametrize(
    "name",
    [
        "x" * 256,
        "d/" + "é" * 128,
        "ok/" + "y" * 300 + "/f",
    ],
    ids=["256", "utf8-256-bytes", "inner"],
)
def test_component_too_long(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "c.tar"
    archive.write_bytes(tar_bytes([T(name)]))
    assert fails(archive, tmp_path / "out").code == "unsafe_archive"
    zarch = tmp_path / "c.zip"
    zarch.write_bytes(zip_raw([Z(name.encode(), flags=0x800)]))
    assert fails(zarch, tmp_path / "zout").code == "unsafe_archive"


def test_zip_path_too_long(tmp_path: Path) -> None:
    dest = tmp_path / "staging" / "job"
    name = _name_of_length(_room(dest) + 10)
    archive = tmp_path / "long.zip"
    archive.write_bytes(zip_raw([Z(name.encode())]))
    err = fails(archive, dest)
    assert err.code == "unsafe_archive" and "too long" in err.message


# --- 3. zip names without the UTF-8 flag --------------------------------------------

UTF8_NAMES = ["café/naïve.txt", "日本語/ファイル.txt", "emoji-🎉.txt", "plain.txt"]


def _zip_tree(tmp_path: Path, names: list[str | bytes]) -> Path:
    src = tmp_path / "src"
    for name in names:
        p = os.path.join(os.fsencode(src), os.fsencode(name))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(b"content of " + os.fsencode(name))
    archive = tmp_path / "info.zip"
    run_tool(["zip", "-qr", str(archive), "."], src)
    return archive


def test_info_zip_utf8_names_without_the_flag(tmp_path: Path) -> None:
    need("zip", "unzip", "bsdtar")
    archive = _zip_tree(tmp_path, list(UTF8_NAMES))
    infos = zipfile.ZipFile(archive).infolist()
    assert not any(i.flag_bits & 0x800 for i in infos)  # the class: no flag, UTF-8 bytes
    files = unpack(archive, tmp_path / "ours")
    assert files == sorted(UTF8_NAMES)
    run_tool(["unzip", "-q", str(archive)], tmp_path / "unzip")
    run_tool(["bsdtar", "-xf", str(archive)], tmp_path / "bsdtar")
    ours = tree(tmp_path / "ours")
    assert ours == tree(tmp_path / "unzip")
    assert ours == tree(tmp_path / "bsdtar")
    assert (
        tmp_path / "ours" / "café" / "naïve.txt"
    ).read_bytes() == b"content of " + "café/naïve.txt".encode()


def test_zip_names_not_utf8_from_unix_keep_their_bytes(tmp_path: Path) -> None:
    need("zip", "unzip", "bsdtar")
    names: list[str | bytes] = [b"caf\xe9.txt", b"latin\xe9/\xfcber", "ok.txt"]
    archive = _zip_tree(tmp_path, names)
    files = unpack(archive, tmp_path / "ours")
    assert sorted(os.fsencode(f) for f in files) == sorted(os.fsencode(n) for n in names)
    run_tool(["unzip", "-q", str(archive)], tmp_path / "unzip")
    run_tool(["bsdtar", "-xf", str(archive)], tmp_path / "bsdtar")
    assert tree(tmp_path / "ours") == tree(tmp_path / "unzip") == tree(tmp_path / "bsdtar")


def test_zip_names_cp437_from_dos(tmp_path: Path) -> None:
    """A DOS/Windows zip (made by system 0) without the flag: cp437, which unzip also
    reads (it writes the result in Latin-1; dropfetch writes UTF-8)."""
    need("unzip")
    raw = [b"caf\x82/na\x8bve.txt", b"\x9c\xe1.txt", b"plain.txt"]
    archive = tmp_path / "dos.zip"
    archive.write_bytes(zip_raw([Z(n, b"x", create_system=0, external_attr=0x20) for n in raw]))
    expected = sorted(n.decode("cp437") for n in raw)
    assert expected == sorted(["café/naïve.txt", "£ß.txt", "plain.txt"])
    assert unpack(archive, tmp_path / "ours") == expected
    run_tool(["unzip", "-q", str(archive)], tmp_path / "unzip")
    theirs = sorted(
        k.decode("latin-1") for k, v in tree(tmp_path / "unzip").items() if v[0] == "file"
    )
    assert theirs == expected


def test_zip_cross_check_uses_the_same_decoding(tmp_path: Path) -> None:
    """The local header must agree with the directory byte for byte, whatever the
    decoding: a UTF-8 name without the flag passes, a changed byte does not."""
    good = tmp_path / "good.zip"
    good.write_bytes(zip_raw([Z("naïve.txt".encode())]))
    assert unpack(good, tmp_path / "a") == ["naïve.txt"]
    bad = tmp_path / "bad.zip"
    bad.write_bytes(zip_raw([Z("naïve.txt".encode(), cd_name="naïvE.txt".encode())]))
    assert fails(bad, tmp_path / "b").code == "corrupt_archive"


# --- 4. zip entries with FIFO or other type bits ------------------------------------


def test_zip_of_standard_input(tmp_path: Path) -> None:
    need("zip", "unzip")
    archive = tmp_path / "stdin.zip"
    run_tool(["zip", "-q", str(archive), "-"], tmp_path, input=b"hi from a pipe\n")
    (info,) = zipfile.ZipFile(archive).infolist()
    mode = info.external_attr >> 16
    if not stat.S_ISFIFO(mode):
        pytest.skip(f"this zip writes mode {mode:o} for standard input")
    assert unpack(archive, tmp_path / "ours") == ["-"]
    run_tool(["unzip", "-q", str(archive)], tmp_path / "unzip")
    assert (
        tree(tmp_path / "ours") == tree(tmp_path / "unzip") == {b"-": ("file", b"hi from a pipe\n")}
    )


def test_zip_of_a_fifo_read_by_zip_fi(tmp_path: Path) -> None:
    need("zip", "unzip")
    src = tmp_path / "src"
    src.mkdir()
    fifo = src / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        try:
            with open(fifo, "wb") as f:
                f.write(b"fifo data\n")
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    archive = tmp_path / "fifo.zip"
    try:
        run_tool(["zip", "-q", "-FI", str(archive), "pipe"], src, timeout=60)
    finally:
        if writer.is_alive():  # zip never opened it: let the writer's open() return
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(10)
    (info,) = zipfile.ZipFile(archive).infolist()
    assert stat.S_ISFIFO(info.external_attr >> 16)
    assert unpack(archive, tmp_path / "ours") == ["pipe"]
    run_tool(["unzip", "-q", str(archive)], tmp_path / "unzip")
    assert (
        tree(tmp_path / "ours") == tree(tmp_path / "unzip") == {b"pipe": ("file", b"fifo data\n")}
    )
    assert stat.S_IMODE((tmp_path / "ours" / "pipe").stat().st_mode) == 0o644


def test_zip_symlink_bits_stay_links(tmp_path: Path) -> None:
    archive = tmp_path / "l.zip"
    archive.write_bytes(
        zip_raw([Z(b"f", b"data"), Z(b"l", b"f", external_attr=(stat.S_IFLNK | 0o777) << 16)])
    )
    assert unpack(archive, tmp_path / "out") == ["f"]
    assert os.readlink(tmp_path / "out" / "l") == "f"


# --- 5. hard links to symbolic links ------------------------------------------------


def _linked_tree(src: Path) -> None:
    (src / "a" / "sub").mkdir(parents=True)
    (src / "a" / "f").write_bytes(b"file\n")
    (src / "a" / "s").symlink_to("f")
    (src / "a" / "sub" / "up").symlink_to("../f")
    os.link(src / "a" / "s", src / "a" / "s2", follow_symlinks=False)  # same dir
    run_tool(["cp", "-al", "a", "b"], src)  # rsnapshot-style


@pytest.mark.parametrize("tool", ["gnu", "bsdtar"])
def test_hard_links_to_symlinks(tmp_path: Path, tool: str) -> None:
    need("tar", "bsdtar", "cp")
    src = tmp_path / "src"
    src.mkdir()
    _linked_tree(src)
    archive = tmp_path / "t.tar"
    prog = "tar" if tool == "gnu" else "bsdtar"
    run_tool([prog, "-cf", str(archive), "."], src)
    kinds = tar_types(archive)
    assert tarfile.LNKTYPE in {kinds.get("./b/s"), kinds.get("./a/s")}  # the class
    files = unpack(archive, tmp_path / "ours")
    assert files == ["a/f", "b/f"]
    run_tool([prog, "-xf", str(archive)], tmp_path / "theirs")
    assert tree(tmp_path / "ours") == tree(tmp_path / "theirs")
    assert os.readlink(tmp_path / "ours" / "b" / "sub" / "up") == "../f"

    assert unpack(archive, tmp_path / "skip", ExtractConfig(symlinks="skip")) == files
    assert not [k for k, v in tree(tmp_path / "skip").items() if v[0] == "link"]
    assert (
        fails(archive, tmp_path / "fail", ExtractConfig(symlinks="fail")).code == "unsafe_archive"
    )


# --- 6. GNU tar's incremental format ------------------------------------------------


def _incremental(tmp_path: Path, fmt: str, compress: list[str]) -> list[Path]:
    """A level-0 and a level-1 dump of a tree that changed in between."""
    work = tmp_path / "inc"
    (work / "dir" / "sub").mkdir(parents=True)
    (work / "dir" / "empty").mkdir()
    (work / "dir" / "a").write_text("a\n")
    (work / "dir" / "sub" / "b").write_text("b\n")
    (work / "dir" / "l").symlink_to("a")
    snap = work / "snap"
    level0 = tmp_path / "level0.tar"
    run_tool(
        [
            "tar",
            f"--format={fmt}",
            f"--listed-incremental={snap}",
            *compress,
            "-cf",
            str(level0),
            "dir",
        ],
        work,
    )
    (work / "dir" / "sub" / "c").write_text("c\n")
    (work / "dir" / "a").unlink()
    (work / "dir" / "sub").rename(work / "dir" / "moved")
    (work / "dir" / "new").mkdir()
    (work / "dir" / "new" / "n").write_text("n\n")
    level1 = tmp_path / "level1.tar"
    run_tool(
        [
            "tar",
            f"--format={fmt}",
            f"--listed-incremental={snap}",
            *compress,
            "-cf",
            str(level1),
            "dir",
        ],
        work,
    )
    return [level0, level1]


@pytest.mark.parametrize(
    ("fmt", "compress"),
    [
        ("gnu", []),
        ("oldgnu", []),
        ("gnu", ["-z"]),
        ("posix", []),
    ],
)
def test_gnu_incremental(tmp_path: Path, fmt: str, compress: list[str]) -> None:
    need("tar")
    for n, archive in enumerate(_incremental(tmp_path, fmt, compress)):
        if fmt != "posix":
            assert b"D" in set(tar_types(archive).values())  # the class: dumpdirs
        ours = tmp_path / f"ours{n}"
        unpack(archive, ours)
        run_tool(["tar", "-xf", str(archive)], tmp_path / f"plain{n}")
        run_tool(["tar", "-x", "--incremental", "-f", str(archive)], tmp_path / f"incr{n}")
        assert tree(ours) == tree(tmp_path / f"plain{n}")
        assert tree(ours) == tree(tmp_path / f"incr{n}")  # into an empty directory: same
        assert b"dir" in tree(ours)


def test_gnu_volume_label(tmp_path: Path) -> None:
    need("tar")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x\n")
    archive = tmp_path / "v.tar"
    run_tool(["tar", "-V", "backup of 2026-12-01", "-cf", str(archive), "."], src)
    assert b"V" in set(tar_types(archive).values())
    assert unpack(archive, tmp_path / "ours") == ["f"]
    run_tool(["tar", "-xf", str(archive)], tmp_path / "theirs")
    assert tree(tmp_path / "ours") == tree(tmp_path / "theirs")


def test_gnu_header_with_atime_is_not_a_name_prefix(tmp_path: Path) -> None:
    """A GNU header whose atime/ctime fields are set (bytes 345-368) keeps its name."""
    info = tarfile.TarInfo("dir/file.txt")
    info.size = 2
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    assert block[257:265] == tarfile.GNU_MAGIC
    block[345:357] = b"15303510351\0"
    block[357:369] = b"15303510352\0"
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    archive = tmp_path / "g.tar"
    archive.write_bytes(bytes(block) + b"hi".ljust(512, b"\0") + bytes(1024))
    assert unpack(archive, tmp_path / "out") == ["dir/file.txt"]
    # a ustar (POSIX) header keeps using its prefix field
    ustar = tmp_path / "u.tar"
    ustar.write_bytes(tar_bytes([T("p" * 120 + "/name.txt")], fmt=tarfile.USTAR_FORMAT))
    assert unpack(ustar, tmp_path / "u") == ["p" * 120 + "/name.txt"]


# --- 7. empty archives --------------------------------------------------------------


def _empty_archives(tmp_path: Path) -> dict[str, tuple[bytes, ArchiveFormat]]:
    """Empty archives as GNU tar, bsdtar and Python make them, by delivered name."""
    need("tar", "bsdtar")
    made = tmp_path / "empty"
    made.mkdir()
    tools = {
        "gnu.tar": ["tar", "-cf"],
        "gnu.tar.gz": ["tar", "-czf"],
        "gnu.tar.xz": ["tar", "-cJf"],
        "gnu.tar.zst": ["tar", "--zstd", "-cf"],
        "gnu.tar.bz2": ["tar", "-cjf"],
        "gnu.tgz": ["tar", "-czf"],
        "bsd.tar": ["bsdtar", "-cf"],
        "bsd.tar.gz": ["bsdtar", "-czf"],
        "bsd.zip": ["bsdtar", "--format", "zip", "-cf"],
    }
    out: dict[str, tuple[bytes, ArchiveFormat]] = {}
    for name, args in tools.items():
        run_tool([*args, str(made / name), "-T", "/dev/null"], made)
        out[name] = ((made / name).read_bytes(), ArchiveFormat.TAR)
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    out["py.zip"] = (buf.getvalue(), ArchiveFormat.ZIP)
    out["bsd.zip"] = (out["bsd.zip"][0], ArchiveFormat.ZIP)
    out["zero.tar"] = (b"", ArchiveFormat.TAR)
    out["zero.tar.gz"] = (gzip.compress(b""), ArchiveFormat.TAR_GZ)
    out["zero.tar.xz"] = (lzma.compress(b""), ArchiveFormat.TAR_XZ)
    out["zero.tar.bz2"] = (bz2.compress(b""), ArchiveFormat.TAR_BZ2)
    out["zero.tar.zst"] = (zstandard.ZstdCompressor().compress(b""), ArchiveFormat.TAR_ZST)
    formats = {
        ".tar.gz": ArchiveFormat.TAR_GZ,
        ".tgz": ArchiveFormat.TAR_GZ,
        ".tar.xz": ArchiveFormat.TAR_XZ,
        ".tar.zst": ArchiveFormat.TAR_ZST,
        ".tar.bz2": ArchiveFormat.TAR_BZ2,
    }
    for name, (data, fmt) in out.items():
        for suffix, f in formats.items():
            if name.endswith(suffix):
                out[name] = (data, f)
        del fmt
    return out


def test_empty_archives(tmp_path: Path) -> None:
    for name, (data, fmt) in _empty_archives(tmp_path).items():
        path = tmp_path / f"download-{name}"
        path.write_bytes(data)
        assert sniff(path, name=name) is fmt, name
        assert unpack(path, tmp_path / f"out-{name}", name=name) == [], name
        assert not list((tmp_path / f"out-{name}").iterdir())


@pytest.mark.parametrize(
    ("data", "name", "fmt"),
    [
        (b"", "notes.txt", ArchiveFormat.FILE),
        (bytes(10240), "disk.img", ArchiveFormat.FILE),
        (gzip.compress(b""), "x.gz", ArchiveFormat.GZ),
        (gzip.compress(bytes(10240)), None, ArchiveFormat.GZ),
        (bytes(100), "short.tar", ArchiveFormat.FILE),  # not even a block: no tar
    ],
    ids=["empty-txt", "zeros-img", "empty-gz", "gz-of-zeros-no-name", "short-tar"],
)  # a gzip
# header holds the time: ids made from the bytes would differ between xdist workers
def test_emptiness_is_a_tar_only_when_the_name_says_so(
    tmp_path: Path, data: bytes, name: str | None, fmt: ArchiveFormat
) -> None:
    path = tmp_path / "x.tar"  # the path's own name never counts
    path.write_bytes(data)
    assert sniff(path, name=name) is fmt


# --- 8. compression methods that cannot be decoded, and encryption ------------------


def _seven_zip(tmp_path: Path, method: str, *extra: str) -> Path:
    need("7z")
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "data.txt").write_bytes(b"some text to compress, " * 2000)
    archive = tmp_path / f"{method}.zip"
    run_tool(["7z", "a", "-bd", "-tzip", f"-mm={method}", *extra, str(archive), "data.txt"], src)
    return archive


@pytest.mark.parametrize(("method", "number"), [("Deflate64", 9), ("PPMd", 98)])
def test_zip_methods_7z_cannot_be_decoded(tmp_path: Path, method: str, number: int) -> None:
    archive = _seven_zip(tmp_path, method)
    assert zipfile.ZipFile(archive).infolist()[0].compress_type == number
    err = fails(archive, tmp_path / "out")
    assert err.code == "unsupported_archive", err
    assert method in err.message and "data.txt" in err.message
    assert "damaged" not in err.message and "again" not in err.message


@pytest.mark.parametrize(
    ("number", "label"),
    [
        (1, "Shrink"),
        (6, "Implode"),
        (9, "Deflate64"),
        (10, "PKWARE DCL Implode"),
        (93, "Zstandard"),
        (98, "PPMd"),
        (77, "unknown"),
    ],
)
def test_zip_methods_crafted(tmp_path: Path, number: int, label: str) -> None:
    archive = tmp_path / "m.zip"
    archive.write_bytes(zip_raw([Z(b"ok.txt"), Z(b"packed.bin", b"\x00" * 40, method=number)]))
    err = fails(archive, tmp_path / "out")
    assert err.code == "unsupported_archive" and label in err.message
    assert "packed.bin" in err.message and "extract: false" in err.message


@pytest.mark.parametrize("method", ["BZip2", "LZMA", "Deflate", "Copy"])
def test_zip_methods_that_decode(tmp_path: Path, method: str) -> None:
    archive = _seven_zip(tmp_path, method)
    assert unpack(archive, tmp_path / "out") == ["data.txt"]
    assert (tmp_path / "out" / "data.txt").read_bytes() == b"some text to compress, " * 2000


def test_info_zip_bzip2(tmp_path: Path) -> None:
    need("zip")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"bzip2 inside a zip " * 500)
    archive = tmp_path / "bz.zip"
    run_tool(["zip", "-q", "-Z", "bzip2", str(archive), "f.txt"], src)
    assert zipfile.ZipFile(archive).infolist()[0].compress_type == zipfile.ZIP_BZIP2
    assert unpack(archive, tmp_path / "out") == ["f.txt"]


@pytest.mark.parametrize("how", ["zipcrypto", "aes"])
def test_encrypted_zip_says_a_password_is_needed(tmp_path: Path, how: str) -> None:
    if how == "aes":
        archive = _seven_zip(tmp_path, "Deflate", "-pSecret", "-mem=AES256")
        assert zipfile.ZipFile(archive).infolist()[0].compress_type == 99
    else:
        need("zip")
        src = tmp_path / "src"
        src.mkdir()
        (src / "f.txt").write_text("secret")
        archive = tmp_path / "p.zip"
        run_tool(["zip", "-q", "-P", "secret", str(archive), "f.txt"], src)
    err = fails(archive, tmp_path / "out")
    assert err.code == "encrypted_archive" and "password" in err.message


# --- 9. names that are not UTF-8 ----------------------------------------------------

RAW_NAMES = [b"caf\xe9.txt", b"dir-\xff/inner\xfe.bin", b"ok.txt"]


def _raw_name_tree(src: Path) -> None:
    for raw in RAW_NAMES:
        p = os.path.join(os.fsencode(src), raw)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(raw)


@pytest.mark.parametrize(
    "args",
    [
        ["tar", "--format=gnu", "-cf"],
        ["tar", "--format=posix", "-cf"],
        ["bsdtar", "-cf"],
        ["zip", "-qr"],
    ],
    ids=["gnu", "pax", "bsdtar", "zip"],
)
def test_names_not_utf8_keep_their_bytes(tmp_path: Path, args: list[str]) -> None:
    need(args[0], "tar")
    src = tmp_path / "src"
    _raw_name_tree(src)
    archive = tmp_path / ("a.zip" if args[0] == "zip" else "a.tar")
    run_tool([*args, str(archive), "."], src)
    files = unpack(archive, tmp_path / "ours")
    assert sorted(os.fsencode(f) for f in files) == sorted(RAW_NAMES)
    expected = {raw: ("file", raw) for raw in RAW_NAMES}
    assert {k: v for k, v in tree(tmp_path / "ours").items() if v[0] == "file"} == expected
    shown = sorted(display_name(f) for f in files)
    assert shown == sorted(["caf\\xe9.txt", "dir-\\xff/inner\\xfe.bin", "ok.txt"])


def test_display_name() -> None:
    assert display_name("plain/name.txt") == "plain/name.txt"
    assert display_name("café/日本.txt") == "café/日本.txt"
    assert display_name(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert display_name(os.fsdecode(b"\xc3\xa9")) == "é"
    assert display_name("a\nb\x1b[31m") == "a\\x0ab\\x1b[31m"
    assert display_name("\ud800") == "\\ud800"  # a lone surrogate that is no byte
    for text in ("x", os.fsdecode(b"\xff\xfe"), "a\tb"):
        display_name(text).encode("utf-8")  # always encodable
        assert display_name(display_name(text)) == display_name(text)


def test_sidecar_with_undecodable_names_is_valid_utf8() -> None:
    files = sorted([os.fsdecode(b"caf\xe9.txt"), "ok.txt", "caf\\z.txt"])
    assert files[0] == "caf\\z.txt"  # sorted by the names' bytes...
    sc = Sidecar(
        id="j",
        job="j.url",
        job_sha256="0" * 64,
        files=files,
        error={"code": "unsafe_archive", "message": os.fsdecode(b"bad \xff")},
    )
    raw = sc.to_json()
    data = json.loads(raw.decode("utf-8"))  # strict: no surrogates
    assert data["files"] == ["caf\\xe9.txt", "caf\\z.txt", "ok.txt"]  # ...and as shown
    assert data["error"]["message"] == "bad \\xff"
    assert "\\udc" not in raw.decode()


def test_error_messages_use_the_same_form(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar"
    archive.write_bytes(tar_bytes([T(os.fsdecode(UP.encode() + b"caf\xe9"))]))
    err = fails(archive, tmp_path / "out")
    assert err.code == "unsafe_archive"
    # the sidecar and the log show the byte in the same form
    assert "caf\\xe9" in display_name(err.message)
    assert "caf\\xe9" in escape(err.message)
    display_name(err.message).encode("utf-8")


# --- end to end ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_empty_archives_end_to_end(fault_server, make_daemon, tmp_path: Path) -> None:
    archives = _empty_archives(tmp_path)
    for name, (data, _fmt) in archives.items():
        fault_server.add(f"/{name}", data)
    d = make_daemon(workers=2)
    jobs = {}
    for name in archives:
        job = name.replace(".", "-")
        d.drop(job, fault_server.url(f"/{name}"))
        jobs[job] = archives[name][1]
    for job, fmt in jobs.items():
        sc = d.wait_status(job, timeout=60)
        assert sc["status"] == "ok", (job, sc)
        assert sc["files"] == [], (job, sc)
        assert sc["archive"]["format"] == str(fmt), (job, sc)
        assert (d.outbox / job).is_dir() and not list((d.outbox / job).iterdir())


def test_unsupported_method_end_to_end(fault_server, make_daemon) -> None:
    fault_server.add("/d64.zip", zip_raw([Z(b"big.bin", b"\x00" * 64, method=9)]))
    d = make_daemon()
    d.drop("d64", fault_server.url("/d64.zip"))
    sc = d.wait_status("d64")
    assert sc["status"] == "failed" and sc["error"]["code"] == "unsupported_archive", sc
    assert "Deflate64" in sc["error"]["message"]
    assert not (d.outbox / "d64").exists()


def test_names_not_utf8_end_to_end_with_http(fault_server, make_daemon) -> None:
    """One job whose names are not UTF-8 once closed GET /archive without an answer,
    for every job; the sidecar, GET /archive, status --json and the log now carry
    the names in the escaped form, and the bytes on disk are the archive's."""
    good = tar_bytes([T(os.fsdecode(n), data=n) for n in RAW_NAMES], compress="gz")
    bad = tar_bytes([T(os.fsdecode(UP.encode() + b"evil-\xe9"))])
    fault_server.add("/raw.tar.gz", good)
    fault_server.add("/bad.tar", bad)
    fault_server.add("/plain.zip", zip_raw([Z(b"plain.txt")]))
    port = _free_port()
    d = make_daemon(http={"listen": f"127.0.0.1:{port}"})
    for job, path in (("raw", "/raw.tar.gz"), ("bad", "/bad.tar"), ("plain", "/plain.zip")):
        d.drop(job, fault_server.url(path))
    shown = sorted(display_name(os.fsdecode(n)) for n in RAW_NAMES)
    for job in ("raw", "bad", "plain"):
        d.wait_status(job)
    base = f"http://127.0.0.1:{port}"

    def listing() -> Any:
        try:
            r = requests.get(f"{base}/archive", timeout=10)
        except requests.ConnectionError:
            return None
        return r

    r = wait_for(listing, message="the HTTP front end")
    assert r.status_code == 200
    body = json.loads(r.content.decode("utf-8"))
    by_id = {item["id"]: item for item in body}
    assert set(by_id) == {"raw", "bad", "plain"}
    assert by_id["raw"]["files"] == shown
    assert "evil-\\xe9" in by_id["bad"]["error"]["message"]
    for item in body:
        check_sidecar(item)
    one = requests.get(f"{base}/archive/raw", timeout=10)
    assert one.status_code == 200 and json.loads(one.content.decode())["files"] == shown

    sc = d.sidecar("raw")
    assert sc is not None and sc["status"] == "ok" and sc["files"] == shown, sc
    assert d.sidecar("bad")["error"]["code"] == "unsafe_archive"  # type: ignore[index]
    assert d.sidecar("plain")["status"] == "ok"  # type: ignore[index]
    raw_sidecar = d.sidecar_path("raw").read_bytes()
    raw_sidecar.decode("utf-8")
    assert b"\\udc" not in raw_sidecar
    for raw in RAW_NAMES:
        assert os.path.isfile(os.path.join(os.fsencode(d.outbox / "raw"), raw))

    out = subprocess.run(
        [sys.executable, "-m", "dropfetch", "status", "--json", "--inbox", str(d.inbox)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    rows = json.loads(out.stdout.decode("utf-8"))
    assert {row["id"]: row["files"] for row in rows}["raw"] == shown
    log = d.log_path.read_bytes().decode("utf-8")
    assert "evil-\\xe9" in log


# --- sparse files ---------------------------------------------------------------------

SPARSE_SIZE = 5 << 20
SPARSE_DATA = {0: b"MBR!" * 1024, 3_000_000: b"mid" * 2000, SPARSE_SIZE - 4096: b"E" * 4096}


def _sparse_source(src: Path) -> Path:
    src.mkdir()
    path = src / "s.bin"
    with open(path, "wb") as f:
        f.truncate(SPARSE_SIZE)
        for offset, data in SPARSE_DATA.items():
            f.seek(offset)
            f.write(data)
    if os.stat(path).st_blocks * 512 >= SPARSE_SIZE // 4:
        pytest.skip("the filesystem of tmp_path does not keep holes")
    return path


_SPARSE_TOOLS = {
    "gnu": ["tar", "--format=gnu", "-S", "-cf"],
    "oldgnu": ["tar", "--format=oldgnu", "-S", "-cf"],
    "pax0.0": ["tar", "--format=pax", "--sparse-version=0.0", "-S", "-cf"],
    "pax0.1": ["tar", "--format=pax", "--sparse-version=0.1", "-S", "-cf"],
    "pax1.0": ["tar", "--format=pax", "--sparse-version=1.0", "-S", "-cf"],
    "gnu-gz": ["tar", "--format=gnu", "-S", "-czf"],
    "bsdtar": ["bsdtar", "--read-sparse", "-cf"],
}


@pytest.mark.parametrize("how", list(_SPARSE_TOOLS))
def test_sparse_files_keep_their_holes(tmp_path: Path, how: str) -> None:
    args = _SPARSE_TOOLS[how]
    need(args[0], "tar")
    path = _sparse_source(tmp_path / "src")
    archive = tmp_path / "s.tar"
    run_tool([*args, str(archive), "s.bin"], cwd=path.parent)
    with tarfile.open(archive) as tf:
        assert [m.sparse is not None for m in tf] == [True]
    assert archive.stat().st_size < SPARSE_SIZE // 4
    theirs = tmp_path / "gnu-out"
    theirs.mkdir()
    run_tool(["tar", "-xf", str(archive)], cwd=theirs)
    config = ExtractConfig(max_ratio=1)  # holes are not written: no ratio to speak of
    assert unpack(archive, tmp_path / "out", config) == ["s.bin"]
    ours = os.stat(tmp_path / "out" / "s.bin")
    gnu = os.stat(theirs / "s.bin")
    assert ours.st_size == gnu.st_size == SPARSE_SIZE
    assert ours.st_blocks <= gnu.st_blocks, (ours.st_blocks, gnu.st_blocks)
    assert (tmp_path / "out" / "s.bin").read_bytes() == path.read_bytes()


def _gce_image(tmp_path: Path, size: str = "300M") -> Path:
    """A GCE-style disk image: a sparse raw disk in an oldgnu tar.gz (a few hundred bytes)."""
    need("tar", "truncate")
    src = tmp_path / "img"
    src.mkdir()
    run_tool(["truncate", "-s", size, "disk.raw"], cwd=src)
    with open(src / "disk.raw", "r+b") as f:
        f.write(b"MBR")
    archive = tmp_path / "disk.tar.gz"
    run_tool(["tar", "--format=oldgnu", "-Sczf", str(archive), "disk.raw"], cwd=src)
    assert archive.stat().st_size < 4096
    return archive


def test_sparse_disk_image_passes_the_limits(tmp_path: Path) -> None:
    archive = _gce_image(tmp_path)
    assert sniff(archive) is ArchiveFormat.TAR_GZ
    assert unpack(archive, tmp_path / "out") == ["disk.raw"]  # max_ratio 1000, 100 GiB
    st = os.stat(tmp_path / "out" / "disk.raw")
    assert st.st_size == 300 << 20
    assert st.st_blocks * 512 <= 64 * 1024
    with open(tmp_path / "out" / "disk.raw", "rb") as f:
        assert f.read(4) == b"MBR\x00"


def test_sparse_holes_count_against_max_total_size(tmp_path: Path) -> None:
    archive = _gce_image(tmp_path)
    err = fails(archive, tmp_path / "out", ExtractConfig(max_total_size=200 << 20))
    assert err.code == "archive_limits" and "max_total_size" in err.message, err


def test_sparse_data_cut_short_is_corrupt(tmp_path: Path) -> None:
    need("tar")
    path = _sparse_source(tmp_path / "src")
    archive = tmp_path / "s.tar"
    run_tool(["tar", "--format=gnu", "-S", "-cf", str(archive), "s.bin"], cwd=path.parent)
    data = archive.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: 512 + 4096 + 100])
    err = fails(tmp_path / "cut.tar", tmp_path / "out")
    assert err.code == "corrupt_archive", err


def test_sparse_disk_image_end_to_end(fault_server, make_daemon, tmp_path: Path) -> None:
    fault_server.add("/disk.tar.gz", _gce_image(tmp_path).read_bytes())
    d = make_daemon()
    d.drop("gce", fault_server.url("/disk.tar.gz"))
    sc = d.wait_status("gce", timeout=120)
    assert sc["status"] == "ok" and sc["files"] == ["disk.raw"], sc
    assert sc["archive"]["format"] == "tar.gz", sc
    st = os.stat(d.outbox / "gce" / "disk.raw")
    assert st.st_size == 300 << 20 and st.st_blocks * 512 <= 64 * 1024, st


# --- zips with data before them, split zips ---------------------------------------------


def _zips(tmp_path: Path) -> dict[str, Path]:
    need("zip")
    src = tmp_path / "zsrc"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello\n")
    (src / "big.bin").write_bytes(os.urandom(300_000))
    stub = Path(sys.executable).read_bytes()[:40_000]  # an ELF stub, as `unzip -Z` sfx
    run_tool(["zip", "-q", "plain.zip", "a.txt"], cwd=src)
    plain = (src / "plain.zip").read_bytes()
    (src / "sfx.zip").write_bytes(stub + plain)
    run_tool(["zip", "-qA", "sfx.zip"], cwd=src)  # offsets adjusted, as real sfx have
    (src / "prepended.zip").write_bytes(stub + plain)  # offsets not adjusted
    run_tool(["zip", "-qz", "plain.zip"], cwd=src, input=b"a comment\n" * 500)
    (src / "commented.zip").write_bytes(stub + (src / "plain.zip").read_bytes())
    run_tool(["zip", "-qA", "commented.zip"], cwd=src)
    run_tool(["zip", "-q", "-fz", "z64.zip", "a.txt"], cwd=src)  # zip64 end records
    (src / "z64sfx.zip").write_bytes(stub + (src / "z64.zip").read_bytes())
    run_tool(["zip", "-q", "-s", "1m", "onesplit.zip", "a.txt"], cwd=src)
    run_tool(["zip", "-q", "-s", "100k", "multi.zip", "big.bin", "a.txt"], cwd=src)
    return {p.name: p for p in src.iterdir()}


@pytest.mark.parametrize(
    "name", ["sfx.zip", "prepended.zip", "commented.zip", "z64sfx.zip", "onesplit.zip"]
)
def test_zip_with_data_before_it_is_a_zip(tmp_path: Path, name: str) -> None:
    archive = _zips(tmp_path)[name]
    assert not archive.read_bytes().startswith(b"PK\x03\x04")
    need("unzip")
    unzipped = subprocess.run(
        ["unzip", "-qo", str(archive), "-d", str(tmp_path / "unzip")],
        capture_output=True,
        check=False,
    )
    assert unzipped.returncode in (0, 1), unzipped.stderr  # 1: a warning (extra bytes)
    assert sniff(archive) is ArchiveFormat.ZIP
    assert unpack(archive, tmp_path / "out") == ["a.txt"]
    assert tree(tmp_path / "out") == tree(tmp_path / "unzip")


def test_program_with_a_zip_at_its_end_keeps_its_name(tmp_path: Path) -> None:
    archive = _zips(tmp_path)["sfx.zip"]
    for name in ("sfx.zip", "SFX.ZIP"):
        assert sniff(archive, name=name) is ArchiveFormat.ZIP
    for name in ("setup.exe", "tool.pyz", "tool"):
        assert sniff(archive, name=name) is ArchiveFormat.FILE
    zipapp = tmp_path / "app.pyz"
    zipapp.write_bytes(b"#!/usr/bin/env python3\n" + zip_raw([Z(b"__main__.py", b"1\n")]))
    assert sniff(zipapp, name="app.pyz") is ArchiveFormat.FILE
    assert sniff(zipapp) is ArchiveFormat.ZIP  # the bytes alone: what unzip makes of it


def test_split_zip_parts_say_what_they_are(tmp_path: Path) -> None:
    zips = _zips(tmp_path)
    last = zips["multi.zip"]
    assert sniff(last) is ArchiveFormat.ZIP
    err = fails(last, tmp_path / "last")
    assert err.code == "unsupported_archive", err
    assert "last part (part 3) of a split zip" in err.message and "zip -s 0" in err.message
    first = zips["multi.z01"]
    assert sniff(first) is ArchiveFormat.ZIP  # the spanning marker PK\x07\x08
    err = fails(first, tmp_path / "first")
    assert err.code == "unsupported_archive" and "first part" in err.message, err
    assert sniff(zips["multi.z02"]) is ArchiveFormat.FILE  # a middle part: no marker
    # zip64: the locator counts the parts (the 16-bit fields may all be 0xFFFF)
    data = bytearray(zips["z64.zip"].read_bytes())
    locator = data.rindex(b"PK\x06\x07")
    assert data[locator + 16 : locator + 20] == (1).to_bytes(4, "little")
    data[locator + 16 : locator + 20] = (2).to_bytes(4, "little")
    (tmp_path / "z64-last.zip").write_bytes(bytes(data))
    err = fails(tmp_path / "z64-last.zip", tmp_path / "z64")
    assert err.code == "unsupported_archive" and "(part 2)" in err.message, err


_EOCD_OF_ONE = b"PK\x05\x06" + bytes(4) + b"\x01\x00\x01\x00" + (46).to_bytes(4, "little")


@pytest.mark.parametrize(
    "data",
    [
        b"<html>login</html>\n",
        b"x" * 5000 + b"PK\x05\x06" + bytes(18),  # a record of no entries after other data
        b"x" * 5000 + _EOCD_OF_ONE + bytes(6),  # a directory that is not there
        b"x" * 5000 + _EOCD_OF_ONE + bytes(4) + b"\x05\x00abc",  # comment past the end
        b"x" * 5000 + _EOCD_OF_ONE + bytes(6) + b"tail",  # the record does not end the file
    ],
    ids=["html", "no-entries", "no-directory", "short-comment", "not-at-the-end"],
)
def test_not_a_zip_despite_an_end_record(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(data)
    assert sniff(path) is ArchiveFormat.FILE


# --- symbolic link loops ----------------------------------------------------------------


def _loop_tree(src: Path) -> None:
    (src / "p" / "d").mkdir(parents=True)
    (src / "p" / "f").write_bytes(b"x\n")
    os.symlink("self", src / "p" / "self")
    os.symlink("b", src / "p" / "a")
    os.symlink("a", src / "p" / "b")
    os.symlink("../a/x", src / "p" / "d" / "into")
    os.symlink("self/..", src / "p" / "c")


@pytest.mark.parametrize("tool", ["zip", "gnu", "bsdtar", "7z"])
def test_symlink_loops_are_kept(tmp_path: Path, tool: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _loop_tree(src)
    archive = tmp_path / ("loop.zip" if tool in ("zip", "7z") else "loop.tar")
    command = {
        "zip": ["zip", "-qry"],
        "gnu": ["tar", "-cf"],
        "bsdtar": ["bsdtar", "-cf"],
        "7z": ["7z", "a", "-snl", "-bd", "-bso0"],
    }[tool]
    need(command[0])
    run_tool([*command, str(archive), "p"], cwd=src)
    assert unpack(archive, tmp_path / "out") == ["p/f"]
    assert tree(tmp_path / "out") == tree(src)
    for name in ("self", "a", "b", "d/into", "c"):
        with pytest.raises(OSError) as info:
            os.stat(tmp_path / "out" / "p" / name)
        assert info.value.errno == errno.ELOOP, name


def test_symlink_loop_with_an_escape_still_fails(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _loop_tree(src)
    os.symlink("self/../../../etc", src / "p" / "up")  # os.path.realpath: /etc
    archive = tmp_path / "loop.tar"
    run_tool(["tar", "-cf", str(archive), "p"], cwd=src)
    err = fails(archive, tmp_path / "out")
    assert err.code == "unsafe_archive" and "p/up" in err.message, err
