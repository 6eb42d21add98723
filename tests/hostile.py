"""Hostile archives, built at test time (no binary blobs in the repository).

Each :class:`Case` builds its bytes for a given :class:`Target` (where the staging
directory and the sentinel tree are, so escapes aim at the sentinel) and says what
``extract`` must do: an error code, or ``"ok"`` with an optional check of the result.

The layout the tests use: ``tmp/sentinel/`` holds files that must never change;
``tmp/work/staging/job`` is the destination, so ``../../../sentinel/x`` from inside it
lands in the sentinel.
"""

from __future__ import annotations

import errno
import functools
import gzip
import io
import os
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import archives
from archives7z import S, rar5_rename, seven_z_bytes, seven_z_raw, seven_z_zeros, seven_zz
from rarfiles import rar_file

UP = "../../../"  # from tmp/work/staging/job back to tmp/


@dataclass(frozen=True)
class Target:
    dest: Path
    sentinel: Path


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Target], bytes]
    expected: str  # an error code, or "ok"
    config: dict[str, Any] = field(default_factory=dict)
    check: Callable[[Path], None] | None = None


# --- tar building --------------------------------------------------------------------


@dataclass(frozen=True)
class T:
    """One tar member: kind is file, dir, sym, hard, chr, blk, fifo, cont."""

    name: str
    kind: str = "file"
    data: bytes = b"pwned\n"
    target: str = ""
    mode: int = 0o644
    pax: dict[str, str] | None = None


_KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "sym": tarfile.SYMTYPE,
    "hard": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "cont": tarfile.CONTTYPE,
}


def tar_bytes(
    members: Sequence[T], *, compress: str | None = None, fmt: int = tarfile.GNU_FORMAT
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _KINDS[m.kind]
            info.mode = m.mode
            info.mtime = 1_700_000_000
            if m.pax:
                info.pax_headers = dict(m.pax)
            if m.kind in ("file", "cont"):
                info.size = len(m.data)
                tf.addfile(info, io.BytesIO(m.data))
            else:
                info.linkname = m.target
                if m.kind in ("chr", "blk"):
                    info.devmajor, info.devminor = 1, 3
                tf.addfile(info)
    return compress_bytes(buf.getvalue(), compress)


def compress_bytes(data: bytes, compress: str | None) -> bytes:
    return archives.compress(data, compress)


@functools.cache
def gzip_zeros(size: int) -> bytes:
    """``size`` zero bytes, gzipped in a stream (never held uncompressed)."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [co.compress(chunk) for _ in range(size >> 20)]
    parts.append(co.flush())
    return b"".join(parts)


@functools.cache
def tar_gz_zeros(size: int) -> bytes:
    """A tar.gz with one member of ``size`` zero bytes."""
    info = tarfile.TarInfo("zeros.img")
    info.size = size
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [co.compress(info.tobuf(tarfile.GNU_FORMAT))]
    chunk = bytes(1 << 20)
    parts += [co.compress(chunk) for _ in range(size >> 20)]
    parts.append(co.compress(bytes(1024)))
    parts.append(co.flush())
    return b"".join(parts)


# --- zip building by hand ------------------------------------------------------------


@dataclass
class Z:
    """One zip entry as written by hand; ``cd_*`` fields make the directory lie."""

    name: bytes
    data: bytes = b"pwned\n"
    method: int = zipfile.ZIP_STORED
    flags: int = 0
    cd_flags: int | None = None
    cd_name: bytes | None = None
    cd_usize: int | None = None
    external_attr: int = (stat.S_IFREG | 0o644) << 16
    create_system: int = 3


_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sBBHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")


def _compress_zip(data: bytes, method: int) -> bytes:
    if method == zipfile.ZIP_STORED:
        return data
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(data) + co.flush()


def zip_raw(entries: Sequence[Z]) -> bytes:
    out = io.BytesIO()
    central = []
    for e in entries:
        offset = out.tell()
        comp = _compress_zip(e.data, e.method)
        crc = zlib.crc32(e.data)
        out.write(
            _LOCAL.pack(
                b"PK\x03\x04",
                20,
                e.flags,
                e.method,
                0,
                0x21,
                crc,
                len(comp),
                len(e.data),
                len(e.name),
                0,
            )
        )
        out.write(e.name)
        out.write(comp)
        name = e.cd_name if e.cd_name is not None else e.name
        central.append(
            _CENTRAL.pack(
                b"PK\x01\x02",
                30,
                e.create_system,
                20,
                e.flags if e.cd_flags is None else e.cd_flags,
                e.method,
                0,
                0x21,
                crc,
                len(comp),
                len(e.data) if e.cd_usize is None else e.cd_usize,
                len(name),
                0,
                0,
                0,
                0,
                e.external_attr,
                offset,
            )
            + name
        )
    cd_offset = out.tell()
    cd = b"".join(central)
    out.write(cd)
    out.write(_EOCD.pack(b"PK\x05\x06", 0, 0, len(central), len(central), len(cd), cd_offset, 0))
    return out.getvalue()


def zip_overlap_quoted() -> bytes:
    """David Fifield's overlapping-entries bomb: entry A's deflate data quotes entry B's
    local header in a stored block, then runs on into B's data (the shared kernel)."""
    kernel_plain = bytes(4 << 20)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = co.compress(kernel_plain) + co.flush()
    name_a, name_b = b"A", b"B"
    crc_b = zlib.crc32(kernel_plain)
    lh_b = (
        _LOCAL.pack(
            b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc_b, len(kernel), len(kernel_plain), len(name_b), 0
        )
        + name_b
    )
    quote = b"\x00" + struct.pack("<HH", len(lh_b), len(lh_b) ^ 0xFFFF)
    data_a = quote + lh_b + kernel
    plain_a = lh_b + kernel_plain
    crc_a = zlib.crc32(plain_a)
    lh_a = (
        _LOCAL.pack(
            b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc_a, len(data_a), len(plain_a), len(name_a), 0
        )
        + name_a
    )
    body = lh_a + data_a
    offset_b = len(lh_a) + len(quote)
    attr = (stat.S_IFREG | 0o644) << 16
    cd = (
        _CENTRAL.pack(
            b"PK\x01\x02",
            30,
            3,
            20,
            0,
            8,
            0,
            0x21,
            crc_a,
            len(data_a),
            len(plain_a),
            1,
            0,
            0,
            0,
            0,
            attr,
            0,
        )
        + name_a
        + _CENTRAL.pack(
            b"PK\x01\x02",
            30,
            3,
            20,
            0,
            8,
            0,
            0x21,
            crc_b,
            len(kernel),
            len(kernel_plain),
            1,
            0,
            0,
            0,
            0,
            attr,
            offset_b,
        )
        + name_b
    )
    return body + cd + _EOCD.pack(b"PK\x05\x06", 0, 0, 2, 2, len(cd), len(body), 0)


def zip_same_offset_twice() -> bytes:
    """Two directory entries with the same name pointing at one local entry."""
    one = zip_raw([Z(b"kernel.bin", bytes(1 << 20), method=zipfile.ZIP_DEFLATED)])
    eocd_at = one.rindex(b"PK\x05\x06")
    cd_at = one.index(b"PK\x01\x02")
    cd = one[cd_at:eocd_at]
    body = one[:cd_at]
    cd2 = cd + cd
    return body + cd2 + _EOCD.pack(b"PK\x05\x06", 0, 0, 2, 2, len(cd2), len(body), 0)


@functools.cache
def zip_zeros(size: int) -> bytes:
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("zeros.img", "w", force_zip64=True) as f,
    ):
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    return buf.getvalue()


def zip_from_zipfile(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --- checks for cases that must succeed ----------------------------------------------


def _mode_is_safe(dest: Path) -> None:
    for path in dest.rglob("*"):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), path
        assert not st.st_mode & 0o022, (path, oct(st.st_mode))


def _expect_files(*names: str) -> Callable[[Path], None]:
    def check(dest: Path) -> None:
        found = sorted(
            str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and not p.is_symlink()
        )
        assert found == sorted(names), found
        _mode_is_safe(dest)

    return check


def _links_are(dest: Path, links: dict[str, str]) -> None:
    found = {str(p.relative_to(dest)): os.readlink(p) for p in dest.rglob("*") if p.is_symlink()}
    assert found == links, found


def _loops(dest: Path, links: dict[str, str]) -> None:
    """Exactly these links, each of which the kernel finds no end to."""
    _links_are(dest, links)
    for name in links:
        errno_seen = None
        try:
            os.stat(dest / name)
        except OSError as exc:
            errno_seen = exc.errno
        assert errno_seen == errno.ELOOP, (name, errno_seen)


def _no_links(dest: Path) -> None:
    assert not [p for p in dest.rglob("*") if p.is_symlink()]


def _only_f_no_links(dest: Path) -> None:
    _expect_files("f")(dest)
    _no_links(dest)


# --- the 2025 tarfile filter bypass (CVE-2025-4517) ----------------------------------


def realpath_overflow(t: Target) -> bytes:
    """CPython's test_realpath_limit_attack: dirs and links whose expansion overflows
    PATH_MAX so ``os.path.realpath`` stops resolving; then a link out through them, a
    hard link through it and files written through it."""
    steps = "abcdefghijklmnop"
    dest_len = len(str(t.dest)) + 1
    component = "d" * ((4096 - dest_len) // (len(steps) + 1))
    members: list[T] = []
    path = ""
    for step in steps:
        members.append(T(os.path.join(path, component), "dir", mode=0o777))
        members.append(T(os.path.join(path, step), "sym", target=component))
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append(T(linkpath, "sym", target=os.path.join(*[".."] * len(steps))))
    members.append(T("escape", "sym", target=os.path.join(linkpath, "..")))
    members.append(T("flaglink", "hard", target="escape/sentinel/file1"))
    members.append(T("flaglink", data=b"overwrite"))
    members.append(T("escape/sentinel/newfile", data=b"new"))
    return tar_bytes(members)


def realpath_overflow_links_only(t: Target) -> bytes:
    """Deep real directories reached through root-level links, then one link whose
    target climbs out through them: no member is ever placed under a link."""
    dest_len = len(str(t.dest)) + 1
    component = "d" * ((4096 - dest_len) // 17)
    members: list[T] = []
    path = ""
    for i in range(16):
        path = os.path.join(path, component)
        members.append(T(path, "dir"))
        members.append(T(f"l{i}", "sym", target=path))
    members.append(T("escape", "sym", target="l15/" + "../" * 17 + "sentinel"))
    return tar_bytes(members)


# --- the corpus ----------------------------------------------------------------------


def _traversal_targets(t: Target) -> str:
    return str(t.sentinel / "pwned")


CASES: list[Case] = [
    # names
    Case("tar_dotdot", lambda _t: tar_bytes([T(UP + "sentinel/pwned")]), "unsafe_archive"),
    Case("tar_dotdot_inner", lambda _t: tar_bytes([T("a/b/../../../x")]), "unsafe_archive"),
    Case("tar_absolute", lambda t: tar_bytes([T(_traversal_targets(t))]), "unsafe_archive"),
    Case("tar_drive_letter", lambda _t: tar_bytes([T("C:/Windows/evil")]), "unsafe_archive"),
    Case(
        "tar_backslash_dotdot",
        lambda _t: tar_bytes([T("..\\..\\..\\sentinel\\pwned")]),
        "unsafe_archive",
    ),
    Case(
        "tar_nul_in_pax_name",
        lambda _t: tar_bytes([T("x", pax={"path": "ok\x00../../evil"})], fmt=tarfile.PAX_FORMAT),
        "unsafe_archive",
    ),
    Case("tar_newline_in_name", lambda _t: tar_bytes([T("a\nb")]), "unsafe_archive"),
    # the one control-character rule (names.CONTROL): C1 and bidi controls as C0
    Case("tar_rlo_in_name", lambda _t: tar_bytes([T("invoice\u202efdp.exe")]), "unsafe_archive"),
    Case("tar_c1_in_name", lambda _t: tar_bytes([T("a\x9bb")]), "unsafe_archive"),
    Case(
        "tar_isolate_in_link_target",
        lambda _t: tar_bytes([T("f"), T("l", "sym", target="f\u2066")]),
        "unsafe_archive",
    ),
    Case(
        "zip_rlo_in_name",
        lambda _t: zip_raw([Z("invoice\u202efdp.exe".encode(), flags=0x800)]),
        "unsafe_archive",
    ),
    Case("tar_name_too_long", lambda _t: tar_bytes([T("a/" * 2100 + "x")]), "unsafe_archive"),
    Case("tar_component_too_long", lambda _t: tar_bytes([T("x" * 300)]), "unsafe_archive"),
    # member types
    Case("tar_char_device", lambda _t: tar_bytes([T("null", "chr")]), "unsafe_archive"),
    Case("tar_block_device", lambda _t: tar_bytes([T("sda", "blk")]), "unsafe_archive"),
    Case("tar_fifo", lambda _t: tar_bytes([T("pipe", "fifo")]), "unsafe_archive"),
    Case("tar_contiguous", lambda _t: tar_bytes([T("cont", "cont")]), "unsafe_archive"),
    Case(
        "tar_setuid_bits_dropped",
        lambda _t: tar_bytes(
            [T("bin", "dir", mode=0o7777), T("bin/su", mode=0o6777), T("sticky", mode=0o1666)]
        ),
        "ok",
        check=_expect_files("bin/su", "sticky"),
    ),
    # symlinks
    Case(
        "tar_symlink_escape_then_write",
        lambda _t: tar_bytes([T("l", "sym", target=UP + "sentinel"), T("l/pwned")]),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_absolute_then_write",
        lambda t: tar_bytes([T("l", "sym", target=str(t.sentinel)), T("l/pwned")]),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_escape_alone",
        lambda _t: tar_bytes([T("l", "sym", target=UP + "sentinel/file1")]),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_absolute_alone",
        lambda _t: tar_bytes([T("l", "sym", target="/etc")]),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_then_file_same_name",
        lambda _t: tar_bytes(
            [T("f", "sym", target=UP + "sentinel/file1"), T("f", data=b"overwrite")]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_chain_escape",
        lambda _t: tar_bytes(
            [
                T("sub", "dir"),
                T("sub/l1", "sym", target=".."),
                T("l2", "sym", target="sub/l1/.."),
                T("l3", "sym", target="l2/sentinel"),
            ]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_through_link_dotdot",  # lexically c/d/sentinel, really ../sentinel
        lambda _t: tar_bytes(
            [
                T("c/d", "dir"),
                T("c/d/up", "sym", target="../.."),
                T("a", "sym", target="c/d/up/../sentinel"),
            ]
        ),
        "unsafe_archive",
    ),
    # links that loop lead nowhere (ELOOP on any system): kept, as unzip, bsdtar and 7z
    # keep them. The path is walked on past the loop, as os.path.realpath does: a '..'
    # past the root after it, or before it, fails; a chain that ends is judged as ever
    Case(
        "tar_symlink_loop",
        lambda _t: tar_bytes([T("a", "sym", target="b"), T("b", "sym", target="a")]),
        "ok",
        check=lambda d: _loops(d, {"a": "b", "b": "a"}),
    ),
    Case(
        "tar_symlink_self_loop",
        lambda _t: tar_bytes([T("d/self", "sym", target="self")]),
        "ok",
        check=lambda d: _loops(d, {"d/self": "self"}),
    ),
    Case(
        "tar_symlink_loop_dotdot_inside",
        lambda _t: tar_bytes(
            [
                T("d/a", "sym", target="b/.."),
                T("d/b", "sym", target="a"),
                T("d/c", "sym", target="a/x/../.."),
            ]
        ),
        "ok",
        check=lambda d: _loops(d, {"d/a": "b/..", "d/b": "a", "d/c": "a/x/../.."}),
    ),
    Case(
        "tar_symlink_loop_then_dotdot",  # a loop, then b/../.. past the root
        lambda _t: tar_bytes([T("a", "sym", target="b/../.."), T("b", "sym", target="a")]),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_through_loop_to_sentinel",  # realpath would give the sentinel
        lambda _t: tar_bytes(
            [T("s", "sym", target="s"), T("x", "sym", target="s/" + UP + "sentinel/file1")]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_nested_loop_then_escape",
        lambda _t: tar_bytes(
            [
                T("d/a", "sym", target="b/x"),
                T("d/b", "sym", target="a/.."),
                T("e", "sym", target="d/a/../../" + UP + "sentinel"),
            ]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_escape_before_loop",
        lambda _t: tar_bytes([T("a", "sym", target="../b"), T("b", "sym", target="a")]),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_reused_then_escape",  # d/l twice in a row is no loop: c is ../..
        lambda _t: tar_bytes(
            [T("d/l", "sym", target="."), T("d/c", "sym", target="l/l/../../" + UP + "sentinel")]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_reused_in_target_then_escape",  # m -> l/.. twice: each ends
        lambda _t: tar_bytes(
            [
                T("d/l", "sym", target="."),
                T("d/m", "sym", target="l/.."),
                T("d/e/c", "sym", target="../m/m/" + UP + "sentinel"),
            ]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_loop_then_write",
        lambda _t: tar_bytes([T("a", "sym", target="b"), T("b", "sym", target="a"), T("a/pwned")]),
        "unsafe_archive",
    ),
    Case(
        "tar_symlink_long_chain_escape",  # 41 links, no loop: refused at the limit
        lambda _t: tar_bytes(
            [T(f"l{i}", "sym", target=f"l{i + 1}") for i in range(41)]
            + [T("l41", "sym", target=UP + "sentinel")]
        ),
        "unsafe_archive",
    ),
    Case(
        "zip_symlink_loop_then_dotdot",
        lambda _t: zip_raw(
            [
                Z(b"a", b"b/../..", external_attr=(stat.S_IFLNK | 0o777) << 16),
                Z(b"b", b"a", external_attr=(stat.S_IFLNK | 0o777) << 16),
            ]
        ),
        "unsafe_archive",
    ),
    Case(
        "zip_symlink_loop",
        lambda _t: zip_raw(
            [
                Z(b"a", b"b", external_attr=(stat.S_IFLNK | 0o777) << 16),
                Z(b"b", b"a", external_attr=(stat.S_IFLNK | 0o777) << 16),
            ]
        ),
        "ok",
        check=lambda d: _loops(d, {"a": "b", "b": "a"}),
    ),
    Case(
        "tar_dir_replaced_by_symlink_then_write",
        lambda _t: tar_bytes([T("d", "dir"), T("d", "sym", target=UP + "sentinel"), T("d/pwned")]),
        "unsafe_archive",
    ),
    Case("tar_file_under_file", lambda _t: tar_bytes([T("f"), T("f/g")]), "unsafe_archive"),
    Case("tar_file_replacing_dir", lambda _t: tar_bytes([T("d/x"), T("d")]), "unsafe_archive"),
    Case("tar_cve_2025_4517_realpath_overflow", realpath_overflow, "unsafe_archive"),
    Case("tar_realpath_overflow_links_only", realpath_overflow_links_only, "unsafe_archive"),
    Case(
        "tar_symlinks_fail_mode",
        lambda _t: tar_bytes([T("f"), T("l", "sym", target="f")]),
        "unsafe_archive",
        config={"symlinks": "fail"},
    ),
    Case(
        "tar_symlinks_skip_mode",
        lambda _t: tar_bytes([T("f"), T("l", "sym", target=UP + "sentinel/file1")]),
        "ok",
        config={"symlinks": "skip"},
        check=_only_f_no_links,
    ),
    Case(
        "tar_symlink_inside_ok",
        lambda _t: tar_bytes(
            [T("d/f"), T("d/l", "sym", target="f"), T("top", "sym", target="d/../d/f")]
        ),
        "ok",
        check=_expect_files("d/f"),
    ),
    Case(
        "tar_empty_named_symlinks",  # gh-149486: a chain of links named ""
        lambda _t: tar_bytes(
            [
                T("", "sym", target=".."),
                T("", "sym", target="../.."),
                T("x", "sym", target="sentinel"),
            ]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_jwilk_dirsymlink2a",  # 'par' -> 'cur/..' with 'cur' -> '.'
        lambda _t: tar_bytes(
            [T("cur", "sym", target="."), T("par", "sym", target="cur/.."), T("par/sentinel/pwned")]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_jwilk_dirsymlink2a_links_only",
        lambda _t: tar_bytes([T("cur", "sym", target="."), T("par", "sym", target="cur/..")]),
        "unsafe_archive",
    ),
    # hard links
    Case(
        "tar_hardlink_name_escapes",
        lambda _t: tar_bytes([T("f"), T(UP + "sentinel/h", "hard", target="f")]),
        "unsafe_archive",
    ),
    Case(
        "tar_hardlink_to_escaping_symlink_then_write",  # gh-157190 / gh-151558
        lambda _t: tar_bytes(
            [
                T("s", "sym", target=UP + "sentinel/file1"),
                T("h", "hard", target="s"),
                T("h", data=b"overwrite"),
            ]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_hardlink_etc_passwd",
        lambda _t: tar_bytes([T("h", "hard", target="/etc/passwd")]),
        "unsafe_archive",
    ),
    Case(
        "tar_hardlink_dotdot",
        lambda _t: tar_bytes([T("h", "hard", target=UP + "sentinel/file1")]),
        "unsafe_archive",
    ),
    Case(
        "tar_hardlink_absolute_sentinel",
        lambda t: tar_bytes([T("h", "hard", target=str(t.sentinel / "file1"))]),
        "unsafe_archive",
    ),
    # a hard link to a symbolic link is that link again (cp -al trees), under the same
    # rules as any link: inside, skipped, or refused by extract.symlinks
    Case(
        "tar_hardlink_to_symlink",
        lambda _t: tar_bytes([T("f"), T("s", "sym", target="f"), T("h", "hard", target="s")]),
        "ok",
        check=lambda d: _links_are(d, {"s": "f", "h": "f"}),
    ),
    Case(
        "tar_hardlink_to_symlink_fail_mode",
        lambda _t: tar_bytes([T("f"), T("s", "sym", target="f"), T("h", "hard", target="s")]),
        "unsafe_archive",
        config={"symlinks": "fail"},
    ),
    Case(
        "tar_hardlink_to_symlink_skip_mode",
        lambda _t: tar_bytes([T("f"), T("s", "sym", target="f"), T("h", "hard", target="s")]),
        "ok",
        config={"symlinks": "skip"},
        check=_only_f_no_links,
    ),
    Case(
        "tar_hardlink_to_symlink_elsewhere_escapes",  # a/s -> ../f is inside; h -> ../f not
        lambda _t: tar_bytes(
            [T("f"), T("a/s", "sym", target="../f"), T("h", "hard", target="a/s")]
        ),
        "unsafe_archive",
    ),
    Case(
        "tar_hardlink_to_symlink_then_write_through",
        lambda _t: tar_bytes([T("s", "sym", target="."), T("h", "hard", target="s"), T("h/f")]),
        "unsafe_archive",
    ),
    Case(
        "tar_hardlink_to_missing",
        lambda _t: tar_bytes([T("h", "hard", target="nothing")]),
        "unsafe_archive",
    ),
    Case(
        "tar_hardlink_then_overwrite_ok",
        lambda _t: tar_bytes(
            [T("f", data=b"one"), T("h", "hard", target="f"), T("h", data=b"two")]
        ),
        "ok",
        check=_expect_files("f", "h"),
    ),
    # limits
    Case(
        "gzip_bomb_single",
        lambda _t: gzip_zeros(200 << 20),
        "archive_limits",
        config={"max_ratio": 10},
    ),
    Case(
        "tar_gz_bomb",
        lambda _t: tar_gz_zeros(200 << 20),
        "archive_limits",
        config={"max_ratio": 10},
    ),
    Case(
        "tar_gz_total_size",
        lambda _t: tar_bytes([T("big", data=bytes(2 << 20))], compress="gz"),
        "archive_limits",
        config={"max_total_size": 1 << 20},
    ),
    Case(
        "tar_too_many_members",
        lambda _t: tar_bytes([T(f"f{i}") for i in range(50)]),
        "archive_limits",
        config={"max_files": 10},
    ),
    Case(
        "tar_too_many_dirs",
        lambda _t: tar_bytes([T(f"d{i}", "dir") for i in range(50)]),
        "archive_limits",
        config={"max_files": 10},
    ),
    Case(
        "tar_huge_pax_header",
        lambda _t: tar_bytes(
            [T("x", pax={"comment": "y" * (2 << 20)})], fmt=tarfile.PAX_FORMAT, compress="gz"
        ),
        "archive_limits",
    ),
    Case("tar_chained_longname_headers", lambda _t: _chained_headers(3000, b"L"), "archive_limits"),
    Case(
        "tar_chained_pax_global_headers", lambda _t: _chained_headers(3000, b"g"), "archive_limits"
    ),
    Case(
        "tar_a_few_chained_headers_ok",
        lambda _t: _chained_headers(5, b"L"),
        "ok",
        check=_expect_files("f"),
    ),
    Case(
        "zip_bomb_ratio",
        lambda _t: zip_zeros(100 << 20),
        "archive_limits",
        config={"max_ratio": 10},
    ),
    Case(
        "zip_too_many_members",
        lambda _t: zip_from_zipfile({f"f{i}": b"x" for i in range(50)}),
        "archive_limits",
        config={"max_files": 10},
    ),
    # damaged
    Case(
        "tar_gz_truncated",
        lambda _t: tar_bytes([T("f", data=os.urandom(100_000))], compress="gz")[:50_000],
        "corrupt_archive",
    ),
    Case(
        "tar_gz_flipped",
        lambda _t: _flip(tar_bytes([T("f", data=b"abc" * 50_000)], compress="gz")),
        "corrupt_archive",
    ),
    Case(
        "tar_truncated_plain",
        lambda _t: tar_bytes([T("f", data=os.urandom(10_000))])[:5_000],
        "corrupt_archive",
    ),
    Case(
        "gz_single_truncated",
        lambda _t: gzip.compress(os.urandom(100_000))[:60_000],
        "corrupt_archive",
    ),
    Case(
        "zip_truncated",
        lambda _t: zip_from_zipfile({"f": os.urandom(10_000)})[:4_000],
        "corrupt_archive",
    ),
    Case(
        "zip_lying_central_directory",
        lambda _t: zip_raw([Z(b"f", b"x" * 1000, method=zipfile.ZIP_DEFLATED, cd_usize=10)]),
        "corrupt_archive",
    ),
    Case("zip_name_mismatch", lambda _t: zip_raw([Z(b"evil", cd_name=b"good")]), "corrupt_archive"),
    Case("zip_bad_crc", lambda _t: _zip_bad_crc(), "corrupt_archive"),
    # zip specifics
    Case("zip_overlapping_quoted", lambda _t: zip_overlap_quoted(), "unsafe_archive"),
    Case("zip_same_entry_twice", lambda _t: zip_same_offset_twice(), "unsafe_archive"),
    Case("zip_encrypted", lambda _t: zip_raw([Z(b"secret", flags=1)]), "encrypted_archive"),
    Case(
        "zip_encrypted_local_only",
        lambda _t: zip_raw([Z(b"secret", flags=1, cd_flags=0)]),
        "encrypted_archive",
    ),
    Case("zip_dotdot", lambda _t: zip_raw([Z((UP + "sentinel/pwned").encode())]), "unsafe_archive"),
    Case("zip_absolute", lambda t: zip_raw([Z(_traversal_targets(t).encode())]), "unsafe_archive"),
    Case(
        "zip_backslash_dotdot",
        lambda _t: zip_raw([Z(b"..\\..\\..\\sentinel\\pwned")]),
        "unsafe_archive",
    ),
    Case("zip_backslash_absolute", lambda _t: zip_raw([Z(b"\\Windows\\evil")]), "unsafe_archive"),
    Case("zip_drive_letter", lambda _t: zip_raw([Z(b"C:\\evil.txt")]), "unsafe_archive"),
    Case("zip_nul_in_name", lambda _t: zip_raw([Z(b"evil\x00.txt")]), "unsafe_archive"),
    Case(
        "zip_symlink_escape_then_write",
        lambda _t: zip_raw(
            [
                Z(b"l", (UP + "sentinel").encode(), external_attr=(stat.S_IFLNK | 0o777) << 16),
                Z(b"l/pwned"),
            ]
        ),
        "unsafe_archive",
    ),
    Case(
        "zip_symlink_absolute",
        lambda _t: zip_raw([Z(b"l", b"/etc", external_attr=(stat.S_IFLNK | 0o777) << 16)]),
        "unsafe_archive",
    ),
    # zip type bits other than link and directory: the entry's data, as a regular file
    # (unzip does so); never a device or a FIFO
    Case(
        "zip_char_device",
        lambda _t: zip_raw([Z(b"null", b"", external_attr=(stat.S_IFCHR | 0o666) << 16)]),
        "ok",
        check=_expect_files("null"),
    ),
    Case(
        "zip_fifo",
        lambda _t: zip_raw([Z(b"p", b"", external_attr=(stat.S_IFIFO | 0o666) << 16)]),
        "ok",
        check=_expect_files("p"),
    ),
    Case(
        "zip_fifo_with_data_setuid",
        lambda _t: zip_raw([Z(b"p", b"data\n", external_attr=(stat.S_IFIFO | 0o6777) << 16)]),
        "ok",
        check=_expect_files("p"),
    ),
    Case(
        "zip_socket_and_block_device",
        lambda _t: zip_raw(
            [
                Z(b"s", b"x", external_attr=(stat.S_IFSOCK | 0o644) << 16),
                Z(b"b", b"y", external_attr=(stat.S_IFBLK | 0o644) << 16),
            ]
        ),
        "ok",
        check=_expect_files("b", "s"),
    ),
    Case(
        "zip_fifo_over_escaping_symlink",
        lambda _t: zip_raw(
            [
                Z(b"l", (UP + "sentinel").encode(), external_attr=(stat.S_IFLNK | 0o777) << 16),
                Z(b"l/p", external_attr=(stat.S_IFIFO | 0o644) << 16),
            ]
        ),
        "unsafe_archive",
    ),
    Case(
        "zip_setuid_dropped",
        lambda _t: zip_raw([Z(b"run", external_attr=(stat.S_IFREG | 0o6777) << 16)]),
        "ok",
        check=_expect_files("run"),
    ),
    Case(
        "zip_symlink_inside_ok",
        lambda _t: zip_raw(
            [Z(b"d/f"), Z(b"d/l", b"f", external_attr=(stat.S_IFLNK | 0o777) << 16)]
        ),
        "ok",
        check=_expect_files("d/f"),
    ),
]


def _chained_headers(count: int, kind: bytes) -> bytes:
    """``count`` GNU long-name ('L') or pax global ('g') headers in a row, then a file
    'f': tarfile reads each next header by recursing."""
    out = io.BytesIO()
    payload = b"f\0" if kind == b"L" else b"6 a=b\n"
    for _ in range(count):
        info = tarfile.TarInfo("././@LongLink" if kind == b"L" else "pax_global_header")
        info.type = kind
        info.size = len(payload)
        out.write(info.tobuf(tarfile.USTAR_FORMAT))
        out.write(payload.ljust(512, b"\0"))
    info = tarfile.TarInfo("f")
    info.size = 1
    out.write(info.tobuf(tarfile.USTAR_FORMAT) + b"x".ljust(512, b"\0") + bytes(1024))
    return out.getvalue()


def _flip(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]


def _zip_bad_crc() -> bytes:
    data = bytearray(zip_raw([Z(b"f", b"hello world" * 10)]))
    at = data.index(b"hello world")
    data[at] ^= 0x20
    return bytes(data)


# --- 7z and RAR ----------------------------------------------------------------------


@functools.cache
def seven_z_random(size: int) -> bytes:
    """A 7z made by 7zz (solid LZMA2) of three files of random bytes, ``size`` in all."""
    with tempfile.TemporaryDirectory(prefix="dropfetch-hostile-") as tmp:
        src = Path(tmp) / "src"
        (src / "d").mkdir(parents=True)
        for i in range(3):
            (src / "d" / f"f{i}").write_bytes(os.urandom(size // 3))
        return seven_zz(src, Path(tmp) / "a.7z", "-mx=1").read_bytes()


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def _real_rar(name: str) -> bytes:
    return rar_file(name).read_bytes()


def _rar5_renamed(new: str) -> bytes:
    return rar5_rename(_real_rar("rar5-subdirs.rar"), "sub/dir2/file2.txt", new)


GIB = 1 << 30

CASES += [
    # names
    Case("7z_dotdot", lambda _t: seven_z_bytes([S(UP + "sentinel/pwned")]), "unsafe_archive"),
    Case("7z_parent", lambda _t: seven_z_bytes([S("ok"), S("../evil")]), "unsafe_archive"),
    Case("7z_absolute", lambda _t: seven_z_bytes([S("/abs/evil")]), "unsafe_archive"),
    Case(
        "7z_absolute_sentinel",
        lambda t: seven_z_bytes([S(_traversal_targets(t))]),
        "unsafe_archive",
    ),
    Case("7z_dotdot_inner", lambda _t: seven_z_bytes([S("a/../../evil")]), "unsafe_archive"),
    Case("7z_backslash_dotdot", lambda _t: seven_z_bytes([S("..\\..\\evil")]), "unsafe_archive"),
    # links, devices, modes
    Case(
        "7z_symlink_etc_passwd",
        lambda _t: seven_z_bytes([S("l", "sym", target="/etc/passwd")]),
        "unsafe_archive",
    ),
    Case(
        "7z_symlink_dotdot",
        lambda _t: seven_z_bytes([S("l", "sym", target="../..")]),
        "unsafe_archive",
    ),
    Case(
        "7z_symlink_tmp_then_write",
        lambda _t: seven_z_bytes([S("link", "sym", target="/tmp"), S("link/x")]),
        "unsafe_archive",
    ),
    Case(
        "7z_symlink_sentinel_then_write",
        lambda t: seven_z_bytes([S("link", "sym", target=str(t.sentinel)), S("link/pwned")]),
        "unsafe_archive",
    ),
    Case(
        "7z_symlink_up_then_write",
        lambda _t: seven_z_bytes([S("link", "sym", target=UP + "sentinel"), S("link/pwned")]),
        "unsafe_archive",
    ),
    Case(
        "7z_symlink_inside_ok",
        lambda _t: seven_z_bytes([S("d/f"), S("d/l", "sym", target="f")]),
        "ok",
        check=lambda d: _links_are(d, {"d/l": "f"}),
    ),
    Case(  # 7z has no hard links: libarchive's writer keeps the entry as a plain file
        "7z_hardlink_dotdot_is_a_file",
        lambda _t: seven_z_bytes([S("h", hardlink=UP + "sentinel/file1")]),
        "ok",
        check=_expect_files("h"),
    ),
    # a FIFO in a 7z is its data, as a regular file (as 7zz x, and as zip's); devices no
    Case("7z_fifo", lambda _t: seven_z_bytes([S("p", "fifo")]), "ok", check=_expect_files("p")),
    Case("7z_char_device", lambda _t: seven_z_bytes([S("null", "chr")]), "unsafe_archive"),
    Case("7z_block_device", lambda _t: seven_z_bytes([S("sda", "blk")]), "unsafe_archive"),
    Case(
        "7z_setuid_bits_dropped",
        lambda _t: seven_z_bytes(
            [S("bin", "dir", mode=0o7777), S("bin/su", mode=0o6777), S("sticky", mode=0o1666)]
        ),
        "ok",
        check=_expect_files("bin/su", "sticky"),
    ),
    # limits
    Case("7z_bomb_1gib_zeros", lambda _t: seven_z_zeros(GIB), "archive_limits"),
    Case(
        "7z_bomb_total_size",
        lambda _t: seven_z_zeros(GIB),
        "archive_limits",
        config={"max_total_size": 64 << 20},
    ),
    Case(
        "7z_too_many_files",
        lambda _t: seven_z_bytes([S(f"f{i}", data=b"") for i in range(1500)]),
        "archive_limits",
        config={"max_files": 1000},
    ),
    # damaged
    Case("7z_truncated", lambda _t: _cut(seven_z_random(300_000), 0.6), "corrupt_archive"),
    Case("7z_header_cut", lambda _t: seven_z_random(300_000)[:-12], "corrupt_archive"),
    Case(
        "7z_header_claims_50gib",
        lambda _t: seven_z_raw([("a", b"a" * 100, 100), ("big", b"x" * 1000, 50 * GIB)]),
        "corrupt_archive",
    ),
    # RAR: rarfile's real test archives (tests/rarfiles.py), and RAR 5 headers rewritten
    Case(
        "rar5_evil_symlink_traversal",
        lambda _t: _real_rar("rar5-evil-symlink-traversal.rar"),
        "unsafe_archive",
    ),
    Case("rar5_dotdot", lambda _t: _rar5_renamed(UP + "sentinel/pwned"), "unsafe_archive"),
    Case("rar5_absolute", lambda t: _rar5_renamed(_traversal_targets(t)), "unsafe_archive"),
    Case("rar5_dotdot_inner", lambda _t: _rar5_renamed("sub/../../x"), "unsafe_archive"),
    Case("rar5_truncated", lambda _t: _cut(_real_rar("rar5-subdirs.rar"), 0.5), "corrupt_archive"),
    Case("rar4_truncated", lambda _t: _cut(_real_rar("rar3-subdirs.rar"), 0.5), "corrupt_archive"),
    Case(
        "rar4_solid_truncated",
        lambda _t: _cut(_real_rar("rar3-solid.rar"), 0.5),
        "corrupt_archive",
    ),
]


def cases_by_name() -> dict[str, Case]:
    return {c.name: c for c in CASES}
