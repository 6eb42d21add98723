"""Differential fuzzing of extract.py against GNU tar, bsdtar, unzip, 7zz and unar (docs/FUZZ.md).

A case is fully determined by its seed: a random tree (random, non-ASCII and long names,
symlinks, hard links, sparse files, empty directories, odd modes), a real tool with
random flags that archives it, and, for about half the cases, mutations of the archive
(bit flips, truncation, duplicated, reordered or dropped members, names turned into
``..`` or absolute ones, link targets rewritten, type and mode fields changed). Then
:func:`dropfetch.extract.extract` and a reference tool (GNU tar, bsdtar or unzip) both
unpack it and the trees are compared: file set, types, bytes, modes (as dropfetch masks
them), mtimes, symlink targets, hard links. Every outcome gets a class; only ``BUG:*``
classes fail; the deliberate differences are ``documented:*`` (docs/FUZZ.md).

    python tests/fuzz_extract.py --cases 1000 --seed 1      (make fuzz)
    python tests/fuzz_extract.py --replay 1234 -v           (one seed, with details)
"""

from __future__ import annotations

import argparse
import ast
import bz2
import contextlib
import dataclasses
import gzip
import hashlib
import itertools
import lzma
import os
import posixpath
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

import fuzz_7z_rar
from archives import compress
from dropfetch.config import ExtractConfig
from dropfetch.errors import DropfetchError
from dropfetch.extract import ArchiveFormat, extract, sniff
from dropfetch.names import has_control

DEFAULT_SEED = 20261201
CANARY = Path("/tmp/dropfetch-fuzz-canary")  # constant: absolute names in archives use it
CANARY_FILE = CANARY / "precious"
CANARY_DATA = b"must never change\n"
EXTRACT_TIMEOUT = 30.0
TOOL_TIMEOUT = 60.0
HASH_LIMIT = 64 << 20  # bigger files (sparse ones from mutated headers) are not read
CONFIG = ExtractConfig()
TOOL_ENV = {**os.environ, "LC_ALL": "C.UTF-8"}

# --- random trees --------------------------------------------------------------------


@dataclasses.dataclass
class Entry:
    path: str  # '/'-separated, relative to the tree's root
    kind: str  # dir file symlink hardlink fifo chardev
    data: bytes = b""
    mode: int = 0o644
    mtime: int = 0
    target: str = ""  # symlink target, or the hard link's source path
    holes: int = 0  # file size for a sparse file (data chunks at offsets in chunks)
    chunks: tuple[tuple[int, bytes], ...] = ()


UNICODE = [
    "é",
    "ü",
    "ñ",
    "日本語",
    "Ελληνικά",
    "кириллица",
    "🙂",
    "e\u0301",
    "עברית",
    "\u200bzw",
    "\uff46\uff55\uff4c\uff4c",
    "ß",
    "Ωmega",
    "中文名",
    "naïve café",
]
PUNCT = " -_.,;:'\"$&()[]{}!@#%^+=~`?*<>|"
ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
FILE_MODES = (
    [0o644] * 6
    + [0o755] * 3
    + [0o600, 0o444, 0o400, 0o700, 0o777, 0o4755, 0o2755, 0o6755, 0o1644, 0o000, 0o666]
)
DIR_MODES = [0o755] * 6 + [0o700, 0o555, 0o777, 0o1777, 0o2775, 0o500, 0o711]


@dataclasses.dataclass
class Profile:
    """What a tree may hold, given the tool."""

    unicode: bool = True
    control: bool = True
    specials: bool = True  # FIFOs and devices
    hardlink_to_symlink: bool = False
    follow: bool = False  # the tool follows symlinks: no links to directories
    non_utf8: bool = True
    deep: bool = True
    deep_levels: int = 1100  # zip and unzip take seconds a level: fewer for zips
    long_path: bool = True
    backslash: bool = True


def component(rng: random.Random, prof: Profile) -> str:
    r = rng.random()
    if r < 0.50:
        name = "".join(rng.choice(ASCII) for _ in range(rng.randint(1, 10)))
        if rng.random() < 0.3:
            name += rng.choice([".txt", ".tar.gz", ".bin", ".d", "~", ".", ".."])
        return name
    if r < 0.62:
        chars = PUNCT if prof.backslash is False else PUNCT + "\\"
        return (
            "".join(rng.choice(ASCII + chars) for _ in range(rng.randint(1, 12))).strip("/") or "p"
        )
    if r < 0.77 and prof.unicode:
        return rng.choice(UNICODE) + rng.choice(["", "-" + rng.choice(ASCII), rng.choice(UNICODE)])
    if r < 0.85:
        unit = (
            rng.choice(["x", "long-name-", "é", "日"])
            if prof.unicode
            else rng.choice(["x", "long-name-"])
        )
        limit = rng.choice([99, 100, 101, 154, 155, 156, 200, 255])
        name = ""
        while len((name + unit).encode()) <= limit:
            name += unit
        return name or "x"
    if r < 0.91:
        return rng.choice([".hidden", "..x", "x..", "...", ". x", "-dash", "--opt", "~"])
    if r < 0.94 and prof.control:
        return "ctl" + rng.choice(["\n", "\t", "\x7f", "\x1b[1m", "\r"]) + "x"
    if prof.non_utf8 and r < 0.97:
        return os.fsdecode(b"bad\xff\xfe" + rng.choice([b"\xc3", b"\x80x", b"\xe9t\xe9"]))
    return "n" + str(rng.randint(0, 999))


def file_data(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.12:
        return b""
    if r < 0.45:
        return (rng.choice(ASCII) * rng.randint(1, 40) + "\n").encode() * rng.randint(1, 50)
    size = rng.choice([1, 100, 511, 512, 513, 1024, 4096, 10240, rng.randint(1, 20000)])
    if rng.random() < 0.05:
        size = rng.randint(60_000, 200_000)
    return rng.randbytes(size)


def gen_tree(rng: random.Random, prof: Profile) -> list[Entry]:
    entries: list[Entry] = []
    taken: set[str] = {""}
    dirs = [""]

    def fresh(parent: str) -> str:
        for _ in range(20):
            name = component(rng, prof)
            if name in (".", "..") or "/" in name or "\x00" in name:
                continue
            path = f"{parent}/{name}" if parent else name
            if path not in taken:
                taken.add(path)
                return path
        path = f"{parent}/u{len(taken)}" if parent else f"u{len(taken)}"
        taken.add(path)
        return path

    for _ in range(rng.randint(0, 4)):
        parent = rng.choice(dirs)
        if parent.count("/") >= 3:
            parent = ""
        path = fresh(parent)
        dirs.append(path)
        entries.append(Entry(path, "dir", mode=rng.choice(DIR_MODES)))
    files: list[str] = []
    for _ in range(rng.randint(0 if entries else 1, 6)):
        path = fresh(rng.choice(dirs))
        files.append(path)
        if rng.random() < 0.1:
            size = rng.choice([70_000, 1 << 20, (2 << 20) + 123])
            chunks = tuple(
                sorted(
                    {
                        (rng.randrange(0, size - 10) & ~0xFFF, rng.randbytes(rng.randint(1, 5000)))
                        for _ in range(rng.randint(0, 3))
                    }
                )
            )
            entries.append(
                Entry(path, "file", mode=rng.choice(FILE_MODES), holes=size, chunks=chunks)
            )
        else:
            entries.append(Entry(path, "file", data=file_data(rng), mode=rng.choice(FILE_MODES)))
    links: list[str] = []
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 4])):
        path = fresh(rng.choice(dirs))
        links.append(path)
        entries.append(
            Entry(path, "symlink", target=link_target(rng, path, dirs, files, links, prof))
        )
    if files:
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            entries.append(Entry(fresh(rng.choice(dirs)), "hardlink", target=rng.choice(files)))
    if links and prof.hardlink_to_symlink and rng.random() < 0.5:
        entries.append(Entry(fresh(rng.choice(dirs)), "hardlink", target=rng.choice(links)))
    if prof.specials and rng.random() < 0.06:
        entries.append(Entry(fresh(rng.choice(dirs)), rng.choice(["fifo", "fifo", "chardev"])))
    if prof.deep and rng.random() < 0.05:  # slow to build, scan and remove
        entries.append(Entry(fresh("") + "/d" * prof.deep_levels + "/leaf", "file", data=b"deep\n"))
    if prof.long_path and rng.random() < 0.05:  # refused whole: rare, not to hide the rest
        entries.append(Entry(fresh("") + ("/" + "p" * 200) * 22 + "/leaf", "file", data=b"long\n"))
    for e in entries:
        e.mtime = rng.randint(315_600_000, 1_750_000_000)
    return entries


def link_target(
    rng: random.Random,
    path: str,
    dirs: list[str],
    files: list[str],
    links: list[str],
    prof: Profile,
) -> str:
    here = posixpath.dirname(path)
    depth = path.count("/")

    def rel(to: str) -> str:
        return posixpath.relpath(to or ".", here or ".")

    r = rng.random()
    if r < 0.45 and files:
        return rel(rng.choice(files))
    if r < 0.55:
        return rel(posixpath.join(rng.choice(dirs), "missing"))
    if prof.follow:
        return rel(rng.choice(files)) if files else "missing"
    if r < 0.65 and len(dirs) > 1:
        return rel(rng.choice(dirs[1:])) + rng.choice(["", "/"])
    if r < 0.72 and links:
        return rel(rng.choice(links))  # chains, and loops when one points back
    if r < 0.76:
        return rng.choice([".", "..", posixpath.basename(path)])  # '..' from the root: out
    if r < 0.86:
        return "../" * (depth + rng.randint(1, 2)) + "outside"
    if r < 0.93:
        return rng.choice(["/etc/passwd", "/tmp", str(CANARY_FILE), "/"])
    if files:
        inner = rng.choice(files)
        return rel(posixpath.dirname(inner)) + "/./" + posixpath.basename(inner)
    return "x/../y"


def build_tree(entries: list[Entry], root: Path) -> None:
    root.mkdir()
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for e in entries:
            _build(rootfd, e)
        # mtimes last, deepest first, so creating children does not change them
        for e in sorted(entries, key=lambda e: e.path.count("/"), reverse=True):
            with _at(rootfd, e.path) as (fd, name), contextlib.suppress(OSError):
                os.utime(name, (e.mtime, e.mtime), dir_fd=fd, follow_symlinks=False)
            if e.kind == "dir":
                with _at(rootfd, e.path) as (fd, name):
                    os.chmod(name, e.mode, dir_fd=fd)
    finally:
        os.close(rootfd)
    os.utime(root, (1_600_000_000, 1_600_000_000))


@contextlib.contextmanager
def _at(rootfd: int, path: str) -> Iterator[tuple[int, str]]:
    """(fd of the parent, base name), for paths longer than PATH_MAX too."""
    parts = path.split("/")
    fd = os.dup(rootfd)
    try:
        for part in parts[:-1]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd, parts[-1]
    finally:
        os.close(fd)


def _build(rootfd: int, e: Entry) -> None:
    parts = e.path.split("/")
    fd = os.dup(rootfd)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        name = parts[-1]
        if e.kind == "dir":
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
        elif e.kind == "file":
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd)
            try:
                if e.holes:
                    for off, chunk in e.chunks:
                        os.pwrite(out, chunk, off)
                    os.ftruncate(out, max(e.holes, *(o + len(c) for o, c in e.chunks), 0))
                else:
                    os.write(out, e.data)
                os.fchmod(out, e.mode)
            finally:
                os.close(out)
        elif e.kind == "symlink":
            os.symlink(e.target, name, dir_fd=fd)
        elif e.kind == "hardlink":
            with _at(rootfd, e.target) as (sfd, sname):
                os.link(sname, name, src_dir_fd=sfd, dst_dir_fd=fd, follow_symlinks=False)
        elif e.kind == "fifo":
            os.mkfifo(name, 0o644, dir_fd=fd)
        elif e.kind == "chardev":
            os.mknod(name, 0o644 | stat.S_IFCHR, os.makedev(1, 3), dir_fd=fd)
    finally:
        os.close(fd)


# --- archiving with the real tools --------------------------------------------------


@dataclasses.dataclass
class Made:
    tool: str
    argv: list[str]
    kind: str  # tar or zip
    compression: str  # '', gz, bz2, xz, zst
    rc: int = 0
    stderr: str = ""

    @property
    def flags(self) -> str:
        return " ".join(a for a in self.argv[1:] if not a.startswith("/"))


TAR_COMPRESS = {"": "", "-z": "gz", "-j": "bz2", "-J": "xz", "--zstd": "zst"}


def choose_tool(rng: random.Random) -> tuple[str, list[str], Profile]:
    """The tool, its flags, and the profile of trees it gets."""
    prof = Profile()
    r = rng.random()
    if r < 0.45:
        fmt = rng.choice(["gnu", "oldgnu", "pax", "ustar", "v7"])
        flags = [f"--format={fmt}", rng.choice(list(TAR_COMPRESS))]
        if fmt in ("gnu", "oldgnu", "pax") and rng.random() < 0.35:
            flags.append("--sparse")
        if rng.random() < 0.15:
            flags.append("--hard-dereference")
        if rng.random() < 0.3:
            flags.append("--numeric-owner")
        if rng.random() < 0.1:
            flags.append("-h")
            prof.follow = True
        if fmt in ("gnu", "oldgnu", "pax") and rng.random() < 0.15:
            flags.append("--listed-incremental")
        tool = "gnutar"
    elif r < 0.75:
        fmt = rng.choice(["pax", "ustar", "gnutar", "v7", "zip", "zip"])
        flags = [f"--format={fmt}"]
        if fmt == "zip":
            flags.append(
                rng.choice(
                    ["", "--options=zip:compression=store", "--options=zip:compression=deflate"]
                )
            )
        else:
            flags.append(rng.choice(list(TAR_COMPRESS)))
        if rng.random() < 0.1:
            flags.append("-L")
            prof.follow = True
        tool = "bsdtar"
    else:
        flags = ["-r"]
        if rng.random() < 0.8:
            flags.append("-y")
        else:
            prof.follow = True
        flags.append(rng.choice(["", "-0", "-1", "-6", "-9"]))
        for flag, p in (("-X", 0.2), ("-D", 0.15), ("-Zbzip2", 0.1), ("-Psecret", 0.05)):
            if rng.random() < p:
                flags.append(flag)
        tool = "zip"
        prof.control = False  # Info-ZIP cannot take them from the command line either
        flags.append("-FI")  # FIFOs too, with FIFO mode bits
    if tool != "zip" and "--format=zip" not in flags:
        prof.hardlink_to_symlink = True
    else:
        prof.deep_levels = 300
    if tool == "zip" and rng.random() < 0.15:
        tool = "7z"
        flags = ["-tzip", "-mm=Deflate64", "-snl"]
        prof.specials = False  # 7z would block reading a FIFO
    return tool, [f for f in flags if f], prof


def make_archive(
    rng: random.Random, tool: str, flags: list[str], src: Path, out: Path, entries: list[Entry]
) -> Made:
    top = sorted({e.path.split("/")[0] for e in entries})
    explicit = bool(top) and rng.random() < 0.4
    empty = not entries
    stdin: bytes | None = None
    if tool == "gnutar":
        flags = list(flags)
        if "--listed-incremental" in flags:
            flags.remove("--listed-incremental")
            flags.append(f"--listed-incremental={out.parent / 'snapshot'}")
        argv = ["tar", "-c", "-f", str(out), "-C", str(src), "--sort=name", *flags]
        if "--format=pax" in flags:
            argv.append("--pax-option=delete=atime,delete=ctime")
        if empty:
            argv += ["--files-from=/dev/null"]
        elif explicit:
            stdin = b"\x00".join(os.fsencode(t) for t in top)
            argv += ["--null", "--files-from=-"]
        else:
            argv.append(".")
        kind = "tar"
        compression = next((TAR_COMPRESS[f] for f in flags if f in TAR_COMPRESS), "")
    elif tool == "bsdtar":
        kind = "zip" if "--format=zip" in flags else "tar"
        compression = ""
        for f in flags:
            compression = TAR_COMPRESS.get(f, compression)
        argv = ["bsdtar", "-c", "-f", str(out), "-C", str(src), *flags]
        if empty:
            argv += ["-T", "/dev/null"]
        elif explicit:
            stdin = b"\x00".join(os.fsencode(t) for t in top)
            argv += ["--null", "-T", "-"]
        else:
            argv.append(".")
    elif tool == "zip":
        kind, compression = "zip", ""
        argv = ["zip", "-q", *flags, str(out)]
        argv += [f"./{t}" for t in top] if explicit else ["."]
    else:  # 7z
        kind, compression = "zip", ""
        argv = ["7z", "a", "-bd", "-bb0", *flags, str(out), "."]
    fifos = [src / e.path for e in entries if e.kind == "fifo"] if "-FI" in argv else []
    try:
        with feeding(fifos):
            proc = subprocess.run(
                argv,
                cwd=src,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                check=False,
                timeout=TOOL_TIMEOUT,
                env=TOOL_ENV,
            )
        rc, err = proc.returncode, proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        out.unlink(missing_ok=True)
        rc, err = -1, "timed out"
    made = Made(tool, argv, kind, compression, rc, err)
    if tool == "bsdtar" and kind == "tar" and "--format=pax" in flags and out.exists():
        # bsdtar stores each file's ctime: drop it (and atime) so the bytes are the
        # same on every run, which keeps a seed's mutations where they were
        raw = decompress(out.read_bytes(), compression)
        cleaned = strip_pax_times(raw)
        if cleaned is not None:
            out.write_bytes(compress(cleaned, compression))
    return made


@contextlib.contextmanager
def feeding(fifos: list[Path]) -> Iterator[None]:
    """Write a line into each FIFO whenever a reader opens it (zip -FI reads FIFOs: with
    no writer it would wait forever)."""
    if not fifos:
        yield
        return
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.005):
            for p in fifos:
                try:
                    fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: nobody reads it now
                    continue
                try:
                    os.write(fd, b"fed to the FIFO\n")
                except OSError:
                    pass
                finally:
                    os.close(fd)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def decompress(data: bytes, compression: str) -> bytes:
    if compression == "gz":
        return gzip.decompress(data)
    if compression == "bz2":
        return bz2.decompress(data)
    if compression == "xz":
        return lzma.decompress(data)
    if compression == "zst":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


# --- tar structure ------------------------------------------------------------------

EXT_TYPES = {b"L", b"K", b"x", b"X", b"N"}


@dataclasses.dataclass
class Group:
    """One tar member: its extended headers (GNU long names, pax) and its header+data."""

    ext: list[bytes]
    main: bytes


def _num(field: bytes) -> int:
    if field and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    digits = field.replace(b"\x00", b" ").strip()
    return int(digits, 8) if digits else 0


def _blocks(n: int) -> int:
    return (n + 511) // 512 * 512


def tar_groups(data: bytes) -> list[Group] | None:
    """The members of a well-formed tar, or None."""
    groups: list[Group] = []
    pending: list[bytes] = []
    pos = 0
    try:
        while pos + 512 <= len(data):
            hdr = data[pos : pos + 512]
            if hdr == bytes(512):
                return groups
            size = _num(hdr[124:136])
            typ = hdr[156:157]
            head = 512
            if typ == b"S" and hdr[482]:
                while True:
                    ext = data[pos + head : pos + head + 512]
                    head += 512
                    if len(ext) < 512 or not ext[504]:
                        break
            chunk = data[pos : pos + head + _blocks(size)]
            pos += len(chunk)
            if typ in EXT_TYPES:
                pending.append(chunk)
            else:
                groups.append(Group(pending, chunk))
                pending = []
    except ValueError:
        return None
    return groups


def join_tar(groups: list[Group]) -> bytes:
    body = b"".join(b"".join(g.ext) + g.main for g in groups) + bytes(1024)
    return body + bytes(-len(body) % 10240)


def _checksum(hdr: bytearray) -> bytearray:
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\x00 " % sum(hdr)
    return hdr


def pax_records(chunk: bytes) -> list[tuple[str, bytes]]:
    size = _num(chunk[124:136])
    body = chunk[512 : 512 + size]
    out: list[tuple[str, bytes]] = []
    while body:
        length, _, rest = body.partition(b" ")
        n = int(length)
        record = body[:n]
        key, _, value = record[len(length) + 1 : -1].partition(b"=")
        out.append((key.decode(errors="replace"), value))
        body = body[n:]
        if not rest:
            break
    return out


def pax_header(records: list[tuple[str, bytes]], typ: bytes = b"x") -> bytes:
    body = b""
    for key, value in records:
        rec = b" " + key.encode() + b"=" + value + b"\n"
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n = len(str(n)) + len(rec)
        body += str(n).encode() + rec
    hdr = bytearray(512)
    hdr[0:14] = b"././@PaxHeader"
    hdr[100:108] = b"0000644\x00"
    hdr[108:116] = hdr[116:124] = b"0000000\x00"
    hdr[124:136] = b"%011o\x00" % len(body)
    hdr[136:148] = b"00000000000\x00"
    hdr[156:157] = typ
    hdr[257:263] = b"ustar\x00"
    hdr[263:265] = b"00"
    return bytes(_checksum(hdr)) + body + bytes(-len(body) % 512)


def strip_pax_times(raw: bytes) -> bytes | None:
    groups = tar_groups(raw)
    if groups is None:
        return None
    for g in groups:
        new = []
        for chunk in g.ext:
            if chunk[156:157] != b"x":
                new.append(chunk)
                continue
            records = [(k, v) for k, v in pax_records(chunk) if k not in ("atime", "ctime")]
            if records:
                fresh = pax_header(records)
                hdr = bytearray(chunk[:100] + fresh[100:512])  # keeps bsdtar's header name
                new.append(bytes(_checksum(hdr)) + fresh[512:])
        g.ext = new
    return join_tar(groups)


def group_name(g: Group) -> bytes:
    for chunk in g.ext:
        if chunk[156:157] == b"x":
            for k, v in pax_records(chunk):
                if k == "path":
                    return v
        if chunk[156:157] == b"L":
            return chunk[512 : 512 + _num(chunk[124:136])].rstrip(b"\x00")
    hdr = g.main
    name = hdr[0:100].split(b"\x00")[0]
    if hdr[257:263] == b"ustar\x00" and hdr[345] and hdr[156:157] != b"S":
        name = hdr[345:500].split(b"\x00")[0] + b"/" + name
    return name


def set_field(g: Group, which: str, value: bytes) -> None:
    """Give a member a new name or link target, in every place a reader looks."""
    field, gnu_type, key = (
        (slice(0, 100), b"L", "path") if which == "name" else (slice(157, 257), b"K", "linkpath")
    )
    hdr = bytearray(g.main[:512])
    hdr[field] = value[:100].ljust(100, b"\x00")
    if which == "name" and hdr[257:263] == b"ustar\x00":
        hdr[345:500] = bytes(155)
    g.main = bytes(_checksum(hdr)) + g.main[512:]
    ext = [c for c in g.ext if c[156:157] != gnu_type]
    out = [
        pax_header([(k, v) for k, v in pax_records(c) if k != key]) if c[156:157] == b"x" else c
        for c in ext
    ]
    if len(value) > 99:
        out.append(pax_header([(key, value)]))
    g.ext = out


def set_header(g: Group, **fields: bytes) -> None:
    hdr = bytearray(g.main[:512])
    spans = {"mode": slice(100, 108), "type": slice(156, 157), "size": slice(124, 136)}
    for name, value in fields.items():
        hdr[spans[name]] = value
    g.main = bytes(_checksum(hdr)) + g.main[512:]


# --- zip structure ------------------------------------------------------------------

_CD = struct.Struct("<4s6H3L5H2L")
_LH = struct.Struct("<4s5H3L2H")
_EOCD = struct.Struct("<4s4H2LH")


@dataclasses.dataclass
class ZipEntry:
    cd: list[Any]  # the central record's fields
    name: bytes
    extra: bytes
    comment: bytes
    local: bytes  # local header + name + extra + data (+ descriptor)


def zip_entries(data: bytes) -> list[ZipEntry] | None:
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or len(data) < at + _EOCD.size:
        return None
    _sig, _disk, _cdisk, _n1, count, _cdsize, cdoff, _clen = _EOCD.unpack_from(data, at)
    if cdoff == 0xFFFFFFFF:
        return None
    entries = []
    pos = cdoff
    try:
        for _ in range(count):
            cd = list(_CD.unpack_from(data, pos))
            if cd[0] != b"PK\x01\x02":
                return None
            nlen, xlen, clen = cd[10], cd[11], cd[12]
            base = pos + _CD.size
            entries.append(
                ZipEntry(
                    cd,
                    data[base : base + nlen],
                    data[base + nlen : base + nlen + xlen],
                    data[base + nlen + xlen : base + nlen + xlen + clen],
                    b"",
                )
            )
            pos = base + nlen + xlen + clen
    except struct.error:
        return None
    starts = sorted({e.cd[16] for e in entries} | {cdoff})
    for e in entries:
        off = e.cd[16]
        if off >= cdoff:
            return None
        end = starts[starts.index(off) + 1]
        e.local = data[off:end]
        if e.local[:4] != b"PK\x03\x04":
            return None
    return entries


def join_zip(entries: list[ZipEntry], *, rename_local: bool = True) -> bytes:
    out = b""
    cds = b""
    for e in entries:
        cd = list(e.cd)
        cd[16] = len(out)
        local = e.local
        if rename_local:
            lh = list(_LH.unpack_from(local))
            old_name_end = _LH.size + lh[9]
            lh[9] = len(e.name)
            local = _LH.pack(*lh) + e.name + local[old_name_end:]
        out += local
        cd[10], cd[11], cd[12] = len(e.name), len(e.extra), len(e.comment)
        cds += _CD.pack(*cd) + e.name + e.extra + e.comment
    eocd = _EOCD.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(cds), len(out), 0)
    return out + cds + eocd


def zip_set_data(e: ZipEntry, data: bytes) -> None:
    """Replace an entry's data with ``data``, stored."""
    lh = list(_LH.unpack_from(e.local))
    crc = zlib.crc32(data)
    lh[2] &= ~0x08
    lh[3] = 0
    lh[6], lh[7], lh[8] = crc, len(data), len(data)
    e.local = _LH.pack(*lh) + e.local[_LH.size : _LH.size + lh[9] + lh[10]] + data
    e.cd[3] &= ~0x08
    e.cd[4] = 0
    e.cd[7], e.cd[8], e.cd[9] = crc, len(data), len(data)


# --- mutations ----------------------------------------------------------------------

OUTSIDE_NAMES = [
    "../{b}",
    "../../{b}",
    "../../../../{b}",
    "./../{b}",
    "d/../../{b}",
    "{n}/../../{b}",
    "..",
    "../",
    "/",
    str(CANARY) + "/{b}",
    "/{n}",
    "C:/{b}",
    "..\\{b}",
    "d\\..\\..\\{b}",
    "{n}/..",
    "./{n}",
    "{n}//",
]
LINK_TARGETS = [
    "../{b}",
    "../../../outside",
    "/etc/passwd",
    str(CANARY),
    str(CANARY_FILE),
    ".",
    "..",
    "",
    "{n}",
    "{other}",
    "a/../../{b}",
    "x" * 5000,
    "new\nline",
]


def _basename(name: bytes) -> bytes:
    return name.rstrip(b"/").rsplit(b"/", 1)[-1] or b"x"


def _fill(template: str, name: bytes, other: bytes) -> bytes:
    return (
        template.encode()
        .replace(b"{b}", _basename(name))
        .replace(b"{n}", name.rstrip(b"/"))
        .replace(b"{other}", other)
    )


def mutate_tar(rng: random.Random, raw: bytes, what: str) -> tuple[bytes, str]:
    groups = tar_groups(raw)
    if not groups:
        return flip(rng, raw), "flip (unparsed)"
    if what == "duplicate":
        i = rng.randrange(len(groups))
        groups.insert(rng.randint(i, len(groups)), dataclasses.replace(groups[i]))
        return join_tar(groups), f"duplicate member {i}"
    if what == "reorder":
        order = list(range(len(groups)))
        rng.shuffle(order)
        return join_tar([groups[i] for i in order]), f"reorder {order}"
    if what == "drop":
        i = rng.randrange(len(groups))
        del groups[i]
        return join_tar(groups), f"drop member {i}"
    g = rng.choice(groups)
    other = group_name(rng.choice(groups))
    if what == "name":
        new = _fill(rng.choice(OUTSIDE_NAMES), group_name(g), other)
        set_field(g, "name", new)
        return join_tar(groups), f"rename {group_name(g)!r}"
    if what == "link":
        links = [x for x in groups if x.main[156:157] in (b"1", b"2")]
        g = rng.choice(links or groups)
        if not links:
            set_header(g, type=rng.choice([b"1", b"2"]))
        new = _fill(rng.choice(LINK_TARGETS), group_name(g), other)
        set_field(g, "link", new)
        return join_tar(groups), f"link target of {group_name(g)!r} -> {new[:60]!r}"
    if what == "type":
        typ = rng.choice(
            [
                b"0",
                b"\x00",
                b"1",
                b"2",
                b"3",
                b"4",
                b"5",
                b"6",
                b"7",
                b"D",
                b"S",
                b"V",
                b"M",
                b"g",
                b"Z",
            ]
        )
        set_header(g, type=typ)
        return join_tar(groups), f"type of {group_name(g)!r} -> {typ!r}"
    if what == "mode":
        mode = rng.choice([0o4777, 0o7777, 0o000, 0o20644, 0o10644, 0o170777, 0o1000000])
        set_header(g, mode=(b"%07o\x00" % mode)[-8:])
        return join_tar(groups), f"mode of {group_name(g)!r} -> {oct(mode)}"
    if what == "rename-into-link":
        syms = [x for x in groups if x.main[156:157] == b"2"]
        if syms:
            s = rng.choice(syms)
            new = group_name(s).rstrip(b"/") + b"/" + _basename(group_name(g))
            set_field(g, "name", new)
            groups.remove(g)
            groups.append(g)
            return join_tar(groups), f"rename {group_name(g)!r} under link"
    i = rng.randrange(len(groups))
    return join_tar(groups), f"(no-op on member {i})"


def mutate_zip(rng: random.Random, data: bytes, what: str) -> tuple[bytes, str]:
    entries = zip_entries(data)
    if not entries:
        return flip(rng, data), "flip (unparsed)"
    e = rng.choice(entries)
    other = rng.choice(entries).name
    if what == "duplicate":
        copy = dataclasses.replace(e, cd=list(e.cd))
        entries.insert(rng.randint(0, len(entries)), copy)
        return join_zip(entries), f"duplicate entry {e.name!r}"
    if what == "duplicate-cd":
        # a second directory record for the same local entry: overlapping data
        out = join_zip(entries)
        at = out.rfind(b"PK\x05\x06")
        cd_start = _EOCD.unpack_from(out, at)[6]
        first = out[cd_start:at]
        n = len(entries)
        eocd = _EOCD.pack(b"PK\x05\x06", 0, 0, n * 2, n * 2, len(first) * 2, cd_start, 0)
        return out[:cd_start] + first + first + eocd, "duplicate central directory"
    if what == "reorder":
        rng.shuffle(entries)
        return join_zip(entries), "reorder entries"
    if what == "drop":
        entries.remove(e)
        return join_zip(entries), f"drop entry {e.name!r}"
    if what == "name":
        new = _fill(rng.choice(OUTSIDE_NAMES), e.name, other)
        old, e.name = e.name, new
        return join_zip(entries), f"rename {old!r} -> {new!r}"
    if what == "name-mismatch":
        old, e.name = e.name, _fill(rng.choice(OUTSIDE_NAMES), e.name, other)
        mixed = join_zip(entries, rename_local=False)
        return mixed, f"central name of {old!r} differs from the local one"
    if what == "link":
        new = _fill(rng.choice(LINK_TARGETS), e.name, other)
        e.cd[1] = (3 << 8) | (e.cd[1] & 0xFF)
        e.cd[15] = (0o120777 << 16) | (e.cd[15] & 0xFFFF)
        zip_set_data(e, new)
        return join_zip(entries), f"{e.name!r} made a link to {new[:60]!r}"
    if what == "mode":
        mode = rng.choice(
            [0o104755, 0o100000, 0o40755, 0o20644, 0o60644, 0o140755, 0o170777, 0o10644]
        )
        e.cd[1] = (3 << 8) | (e.cd[1] & 0xFF)
        e.cd[15] = (mode << 16) | (e.cd[15] & 0xFFFF)
        return join_zip(entries), f"mode of {e.name!r} -> {oct(mode)}"
    return join_zip(entries), "(re-packed)"


def flip(rng: random.Random, data: bytes, *, lo: int = 0) -> bytes:
    if not data:
        return data
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        i = rng.randrange(lo, len(buf)) if lo < len(buf) else rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def mutate(rng: random.Random, made: Made, data: bytes) -> tuple[bytes, list[str]]:
    done: list[str] = []
    for _ in range(rng.choice([1, 1, 1, 2])):
        if made.kind == "zip":
            what = rng.choice(
                [
                    "flip",
                    "flip-cd",
                    "truncate",
                    "duplicate",
                    "duplicate-cd",
                    "reorder",
                    "drop",
                    "name",
                    "name",
                    "name-mismatch",
                    "link",
                    "link",
                    "mode",
                ]
            )
            if what == "flip":
                data = flip(rng, data)
            elif what == "flip-cd":
                data = flip(rng, data, lo=max(data.rfind(b"PK\x01\x02") - 200, 0))
            elif what == "truncate":
                data = data[: rng.randrange(len(data) or 1)]
            else:
                data, what = mutate_zip(rng, data, what)
            done.append(what)
            continue
        what = rng.choice(
            [
                "flip",
                "flip-header",
                "truncate",
                "truncate-block",
                "duplicate",
                "reorder",
                "drop",
                "name",
                "name",
                "link",
                "link",
                "type",
                "mode",
                "rename-into-link",
            ]
            + ["flip-compressed", "truncate-compressed"] * bool(made.compression)
        )
        if what == "flip-compressed":
            data = flip(rng, data)
        elif what == "truncate-compressed":
            data = data[: rng.randrange(len(data) or 1)]
        else:
            try:
                raw = decompress(data, made.compression)
            except Exception:  # an earlier mutation broke the stream
                data = flip(rng, data)
                done.append("flip-compressed")
                continue
            if what == "flip":
                raw = flip(rng, raw)
            elif what == "flip-header" and raw:
                groups = tar_groups(raw) or []
                offsets = list(
                    itertools.accumulate([len(b"".join(g.ext) + g.main) for g in groups], initial=0)
                )[:-1]
                at = rng.choice(offsets) if offsets else 0
                buf = bytearray(raw)
                i = min(at + rng.randrange(512), len(buf) - 1)
                buf[i] ^= 1 << rng.randrange(8)
                raw = bytes(buf)
            elif what == "truncate":
                raw = raw[: rng.randrange(len(raw) or 1)]
            elif what == "truncate-block":
                raw = raw[: rng.randrange(len(raw) // 512 + 1) * 512]
            else:
                raw, what = mutate_tar(rng, raw, what)
            data = compress(raw, made.compression)
        done.append(what)
    return data, done


# --- unpacking, scanning, comparing -------------------------------------------------


class FuzzTimeoutError(BaseException):
    """extract() ran past its deadline (a BaseException so no except clause eats it)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(_signum: int, _frame: object) -> None:
        raise FuzzTimeoutError(f"extract() still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if old_delay:
            left = old_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


Node = tuple[Any, ...]


Groups = dict[str, frozenset[str]]


def scan(root: Path) -> tuple[dict[str, Node], Groups]:
    """Every entry under ``root``: its node, and for regular files the hard link group
    (the paths sharing the inode). Walks by directory fds: deep and long paths too."""
    nodes: dict[str, Node] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stack = [(os.open(root, os.O_RDONLY | os.O_DIRECTORY), "")]
    while stack:
        fd, rel = stack.pop()
        try:
            for bname in os.listdir(fd):
                name = os.fsdecode(bname)
                r = f"{rel}/{name}" if rel else name
                st = os.lstat(bname, dir_fd=fd)
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    nodes[r] = ("dir", stat.S_IMODE(mode), int(st.st_mtime))
                    stack.append((os.open(bname, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), r))
                elif stat.S_ISREG(mode):
                    digest = "(big)"
                    if st.st_size <= HASH_LIMIT:
                        ffd = os.open(bname, os.O_RDONLY, dir_fd=fd)
                        with open(ffd, "rb") as f:
                            digest = hashlib.sha256(f.read()).hexdigest()[:16]
                    nodes[r] = ("file", stat.S_IMODE(mode), st.st_size, digest, int(st.st_mtime))
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(r)
                elif stat.S_ISLNK(mode):
                    nodes[r] = ("link", os.fsdecode(os.readlink(bname, dir_fd=fd)))
                else:
                    nodes[r] = ("special", stat.S_IFMT(mode))
        finally:
            os.close(fd)
    groups = {p: frozenset(paths) for paths in inodes.values() for p in paths}
    return nodes, groups


def expected(node: Node) -> Node:
    """A reference tool's node as dropfetch writes it (modes masked, SPEC §8)."""
    if node[0] == "file":
        return ("file", (node[1] & 0o755) | 0o600, *node[2:])
    if node[0] == "dir":
        return ("dir", (node[1] & 0o755) | 0o700, *node[2:])
    return node


def snapshot(root: Path, exclude: Path) -> dict[str, Node]:
    nodes, _ = scan(root)
    skip = str(exclude.relative_to(root))
    return {k: v for k, v in nodes.items() if k != skip and not k.startswith(skip + "/")}


@dataclasses.dataclass
class Result:
    seed: int
    made: Made
    mutations: list[str]
    cls: str = ""
    detail: str = ""
    reference: str = ""
    ref_rc: int = 0
    ref_stderr: str = ""
    dropfetch: str = ""  # 'ok' or the error code
    dropfetch_message: str = ""
    archive: Path | None = None
    notes: set[str] = dataclasses.field(default_factory=set)  # documented, set up front

    @property
    def is_bug(self) -> bool:
        return self.cls.startswith("BUG")

    def report(self) -> str:
        lines = [
            f"seed {self.seed}: {self.cls}",
            f"  made by: {self.made.tool} {self.made.flags} (rc {self.made.rc})",
            f"  mutations: {', '.join(self.mutations) or 'none'}",
            f"  reference: {self.reference} rc {self.ref_rc} {self.ref_stderr.strip()[:300]!r}",
            f"  dropfetch: {self.dropfetch} {self.dropfetch_message[:300]}",
            f"  archive kept at: {self.archive}",
        ]
        if self.detail:
            lines += [
                "  diff (- reference as dropfetch should write it, + dropfetch):",
                *("    " + line for line in self.detail.splitlines()[:60]),
            ]
        # names may hold surrogates (non-UTF-8 bytes): show them as escapes
        return "\n".join(lines).encode("utf-8", "backslashreplace").decode()


def run_reference(ref: str, archive: Path, out: Path, made: Made) -> tuple[int, str]:
    if ref == "gnutar":
        argv = ["tar", "-x", "-f", str(archive), "-C", str(out), "--no-same-owner"]
    elif ref == "bsdtar":
        argv = ["bsdtar", "-x", "-f", str(archive), "-C", str(out), "--no-same-owner"]
    elif ref in ("7zz", "unar"):
        return fuzz_7z_rar.run_reference(ref, archive, out)
    else:
        argv = [
            "unzip",
            "-q",
            "-o",
            "-V",
            *(["-P", "secret"] if "-Psecret" in made.argv else []),
            str(archive),
            "-d",
            str(out),
        ]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=TOOL_TIMEOUT,
            env=TOOL_ENV,
        )
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return proc.returncode, (proc.stderr + proc.stdout).decode(errors="replace")


def run_case(seed: int, work: Path) -> Result:
    family = fuzz_7z_rar.family(seed)
    if family != "tar-zip":
        ensure_canary()
        return fuzz_7z_rar.run_case(seed, family, work)
    rng = random.Random(seed)
    ensure_canary()
    tool, flags, prof = choose_tool(rng)
    entries = gen_tree(rng, prof)
    if rng.random() < 0.03:
        entries = []
    src = work / "src"
    build_tree(entries, src)
    # named for its format, as a download would be: the name decides what the bytes
    # cannot (an empty tar is a tar only when its name says so)
    compression = next((TAR_COMPRESS[f] for f in flags if TAR_COMPRESS.get(f)), "")
    archive = work / (
        "archive.zip"
        if tool in ("zip", "7z") or "--format=zip" in flags
        else "archive.tar" + f".{compression}" * bool(compression)
    )
    made = make_archive(rng, tool, flags, src, archive, entries)
    res = Result(seed, made, [], archive=archive)
    if not archive.exists():
        res.cls = "skip:tool-wrote-nothing"
        res.detail = made.stderr
        return res
    mutated = rng.random() < 0.5
    if mutated:
        data, res.mutations = mutate(rng, made, archive.read_bytes())
        archive.write_bytes(data)
    res.reference = {
        "tar": rng.choice(["gnutar", "gnutar", "bsdtar"])
        if made.tool != "bsdtar"
        else rng.choice(["bsdtar", "bsdtar", "gnutar"]),
        "zip": rng.choice(["unzip", "unzip", "unzip", "bsdtar"]),
    }[made.kind]
    if (
        made.tool in ("zip", "7z")
        and res.reference == "unzip"
        and not all(_is_utf8(e.path) for e in entries)
    ):
        # unzip converts names that are not UTF-8 (drops bytes) when no UTF-8 flag is set;
        # dropfetch keeps the bytes, as bsdtar and 7-Zip do: bsdtar is the reference
        res.reference = "bsdtar"
        res.notes.add("unzip-converts-non-utf8-names")
    return judge(res, made, archive, work)


# the tool asked when dropfetch succeeded on a damaged archive and the reference differs
SECOND_OPINION = {"gnutar": "bsdtar", "unzip": "bsdtar", "7zz": "bsdtar", "unar": "bsdtar"}


def judge(res: Result, made: Made, archive: Path, work: Path) -> Result:
    """Unpack ``archive`` with dropfetch into ``work/a/staging/job`` and with
    ``res.reference``, check the safety rules, and classify the outcome."""
    dest = work / "a" / "staging" / "job"
    dest.mkdir(parents=True)
    before = snapshot(work, dest)
    canary_before = scan(CANARY)[0]
    fmt = sniff(archive, name=archive.name)  # as attempt.py: the delivered name
    files: list[str] | None = None
    crash = ""
    if fmt is ArchiveFormat.FILE:
        res.dropfetch = "file"
    else:
        try:
            with deadline(EXTRACT_TIMEOUT):
                files = extract(archive, dest, fmt=fmt, config=CONFIG, single_name="job")
            res.dropfetch = "ok"
        except DropfetchError as exc:
            res.dropfetch, res.dropfetch_message = exc.code, exc.message
        except FuzzTimeoutError as exc:
            crash = f"BUG:hang ({exc})"
        except Exception as exc:
            crash = f"BUG:crash {type(exc).__name__}"
            res.dropfetch_message = f"{type(exc).__name__}: {exc}"
    if res.dropfetch == "ok" and fmt.is_compressed_single:
        res.dropfetch = f"ok as a single {fmt.value} file"
    escaped = diff_nodes(before, snapshot(work, dest))
    escaped += diff_nodes(canary_before, scan(CANARY)[0])
    outside = [
        p for p, n in scan(dest)[0].items() if n[0] == "link" and not _inside(dest, dest / p)
    ]
    dest_nodes, dest_groups = scan(dest)

    refout = work / "r" / "ref" / "out"
    refout.mkdir(parents=True)
    ref_started = int(time.time()) - 1
    res.ref_rc, res.ref_stderr = run_reference(res.reference, archive, refout, made)
    ref_clean = res.ref_rc == 0 and not res.ref_stderr.strip()
    ref_nodes, ref_groups = scan(refout)

    if escaped or outside:
        res.cls = "BUG:wrote-outside-staging"
        res.detail = "\n".join(escaped + [f"link leaving the output: {p}" for p in outside])
        return res
    if crash:
        res.cls = crash
        return res
    if files is not None and files != sorted(p for p, n in dest_nodes.items() if n[0] == "file"):
        res.cls = "BUG:returned-file-list-wrong"
        res.detail = f"returned {files}"
        return res
    res.cls, res.detail = classify(
        res, made, ref_clean, ref_nodes, ref_groups, dest_nodes, dest_groups, refout, ref_started
    )
    if res.is_bug and res.mutations and res.dropfetch == "ok":
        # real tools disagree on many damaged archives: ask the other one
        other = (
            SECOND_OPINION.get(res.reference)
            or {
                "zip": "unzip",
                "tar": "gnutar",
                "7z": "7zz",
                "rar": "unar",
            }[made.kind]
        )
        out2 = work / "r" / "ref2" / "out"
        out2.mkdir(parents=True)
        started2 = int(time.time()) - 1
        rc2, err2 = run_reference(other, archive, out2, made)
        nodes2, groups2 = scan(out2)
        saved = res.reference
        res.reference = other
        cls2, _ = classify(
            res,
            made,
            rc2 == 0 and not err2.strip(),
            nodes2,
            groups2,
            dest_nodes,
            dest_groups,
            out2,
            started2,
        )
        res.reference = saved
        if not cls2.startswith("BUG") and "reference-failed" not in cls2:
            res.cls = f"mutated:tools-disagree ({other} agrees with dropfetch)"
    return res


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _inside(root: Path, p: Path) -> bool:
    real = os.path.realpath(p)
    base = os.path.realpath(root)
    return real == base or real.startswith(base + "/")


def ensure_canary() -> None:
    if not CANARY.is_dir():
        # made whole beside it, then renamed into place: cases that run at once in other
        # processes (pytest-xdist workers) never see it half made, nor made twice
        tmp = Path(tempfile.mkdtemp(prefix=f"{CANARY.name}.", dir=CANARY.parent))
        tmp.chmod(0o755)
        (tmp / CANARY_FILE.name).write_bytes(CANARY_DATA)
        try:
            os.rename(tmp, CANARY)
        except OSError:  # another process was first
            shutil.rmtree(tmp)
    if not CANARY_FILE.exists() or CANARY_FILE.read_bytes() != CANARY_DATA:
        CANARY_FILE.write_bytes(CANARY_DATA)
    for p in CANARY.iterdir():
        if p != CANARY_FILE:
            raise RuntimeError(f"{p} appeared in the canary directory: something escaped")


def diff_nodes(want: dict[str, Node], got: dict[str, Node]) -> list[str]:
    lines = []
    for p in sorted(set(want) | set(got)):
        a, b = want.get(p), got.get(p)
        if a == b:
            continue
        if b is None:
            lines.append(f"- {p!r}: {a}")
        elif a is None:
            lines.append(f"+ {p!r}: {b}")
        else:
            lines.append(f"~ {p!r}: {a} != {b}")
    return lines


def ref_special(ref_nodes: dict[str, Node], refout: Path) -> dict[str, set[str]]:
    """What in the reference's tree dropfetch refuses on purpose (docs/FUZZ.md)."""
    found: dict[str, set[str]] = {}
    for p, n in ref_nodes.items():
        full = refout / p
        if n[0] == "special":
            found.setdefault("special", set()).add(p)
        if has_control(p):  # the one rule: C0, DEL, C1, line and bidi controls
            found.setdefault("control", set()).add(p)
        if n[0] == "link":
            target = n[1]
            try:
                os.stat(full)
            except OSError as exc:
                if exc.errno == 40:  # ELOOP
                    found.setdefault("loop", set()).add(p)
            if target.startswith("/") or not _inside(refout, full):
                found.setdefault("outside", set()).add(p)
            if has_control(target) or len(os.fsencode(target)) > 4096:
                found.setdefault("control", set()).add(p)
        # PATH_MAX under the output (dropfetch's staging path is a few bytes longer)
        if len(os.fsencode(full)) + 8 >= 4096:
            found.setdefault("too-long", set()).add(p)
    return found


DOCUMENTED_REFUSALS = {
    # the reference has this -> dropfetch fails with unsafe_archive on purpose
    "outside": ("points outside the output",),
    "loop": ("too many levels of links", "points outside the output"),
    "special": ("a FIFO", "device", "is not allowed"),
    "control": ("control characters", "points outside the output"),
    "too-long": ("name too long", "too long for the filesystem"),
}


def classify(
    res: Result,
    made: Made,
    ref_clean: bool,
    ref_nodes: dict[str, Node],
    ref_groups: Groups,
    dest_nodes: dict[str, Node],
    dest_groups: Groups,
    refout: Path,
    ref_started: int,
) -> tuple[str, str]:
    mutated = bool(res.mutations)
    prefix = "mutated:" if mutated else ""
    if res.dropfetch == "unsupported_archive" and "Deflate64" in res.dropfetch_message:
        return f"{prefix}documented:unsupported-deflate64", ""  # whatever the reference did
    if not ref_clean:
        return f"{prefix}reference-failed, dropfetch {res.dropfetch.split(' ')[0]}", ""
    if res.dropfetch == "file":
        return (f"{prefix}sniffed-as-file" if mutated else "BUG:not-recognised"), ""
    if res.dropfetch.startswith("ok as a single"):
        return (f"{prefix}sniffed-as-single-file" if mutated else "BUG:not-recognised"), ""
    if res.dropfetch != "ok":
        found = ref_special(ref_nodes, refout)
        if "control characters in its name" in res.dropfetch_message:
            found["control"] = {"(unzip shows them as ^X)"}
        for what, needles in DOCUMENTED_REFUSALS.items():
            if (
                what in found
                and res.dropfetch == "unsafe_archive"
                and any(n in res.dropfetch_message for n in needles)
            ):
                return f"documented:refused-{what}", ""
        if res.dropfetch == "unsafe_archive" and windows_only_refusal(res.dropfetch_message):
            return "documented:refused-windows-name", ""
        if res.dropfetch == "encrypted_archive" and "-Psecret" in made.argv:
            return "documented:refused-encrypted", ""
        if (
            res.dropfetch == "corrupt_archive"
            and made.kind == "zip"
            and ("says its names are UTF-8" in res.dropfetch_message)
            and not mutated
        ):
            return "documented:refused-zip-utf8-flag-on-bad-name", ""
        if mutated:
            return f"mutated:dropfetch-refused:{res.dropfetch}", ""
        return f"BUG:refused-{res.dropfetch}", res.dropfetch_message
    want = {p: expected(n) for p, n in ref_nodes.items()}
    got = dict(dest_nodes)
    notes = set(res.notes)
    nfc = res.reference == "bsdtar" or made.kind in ("7z", "rar")
    if nfc and any(not p.isascii() for p in want):
        # libarchive turns UTF-8 names into NFC; dropfetch and GNU tar keep the bytes
        # (dropfetch reads 7z and RAR through libarchive: NFC names there)
        notes.add("bsdtar-nfc-names" if made.kind in ("tar", "zip") else "libarchive-nfc-names")
        want = {_nfc(p): _nfc_node(n) for p, n in want.items()}
        got = {_nfc(p): _nfc_node(n) for p, n in got.items()}
        ref_groups = {_nfc(p): frozenset(map(_nfc, g)) for p, g in ref_groups.items()}
        dest_groups = {_nfc(p): frozenset(map(_nfc, g)) for p, g in dest_groups.items()}
    if made.kind == "zip" and any("\\" in p for p in want):
        # dropfetch reads a backslash in a zip name as a separator (Windows writers);
        # unzip keeps it in the name of a Unix-made zip
        notes.add("zip-backslash-separator")
        want = {
            "/".join(x for x in p.replace("\\", "/").split("/") if x not in ("", ".")): n
            for p, n in want.items()
        }
        for p in list(want):
            parts = p.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in want and got.get(parent, ("",))[0] == "dir":
                    want[parent] = got[parent]
    if made.kind == "zip" or (made.kind == "rar" and res.reference == "unar"):
        # DOS times have a 2 s resolution and no zone; unzip reads the UT extra field
        # (unar ignores RAR 4's finer times: a second off)
        for p, n in list(want.items()):
            g = got.get(p)
            if (
                g
                and g[0] == n[0]
                and n[0] in ("file", "dir")
                and g[:-1] == n[:-1]
                and abs(g[-1] - n[-1]) <= 2
            ):
                if g[-1] != n[-1]:
                    notes.add(f"{made.kind}-mtime-2s")
                want[p] = g
    for p, n in list(want.items()):
        g = got.get(p)
        if n[0] == "dir" and g and g[:2] == n[:2] and n[2] >= ref_started:
            # GNU tar sets a directory's time when it leaves it: a member that comes back
            # into it later changes it again; unzip leaves times of directories it made
            notes.add("reference-left-dir-mtime")
            want[p] = g
    lines = diff_nodes(want, got)
    for p, group in ref_groups.items():
        if p in dest_groups and dest_groups[p] != group and made.kind == "tar":
            lines.append(f"~ {p!r}: hard links {sorted(group)} != {sorted(dest_groups[p])}")
    if lines and made.kind == "zip":
        ours = zip_backslash_paths(res.archive)
        differing = {p for p in set(want) | set(got) if want.get(p) != got.get(p)}
        if ours and differing <= ours:
            notes.add("zip-backslash-separator")
            lines = []
    if (
        lines
        and mutated
        and made.kind == "zip"
        and all(
            p in want
            and p in got
            and want[p][0] == got[p][0]
            and (want[p][0] == "dir" or (want[p][0] == "file" and want[p][2:4] == got[p][2:4]))
            for p in set(want) | set(got)
            if want.get(p) != got.get(p)
        )
    ):
        # same bytes, other mode or time: a damaged header (dropfetch takes them from the
        # central directory, bsdtar's stream reader from the local headers; unzip ignores
        # a directory's file-type bits that say otherwise)
        return "mutated:zip-metadata-from-another-header", "\n".join(lines)
    if not lines:
        return ("documented:" + ",".join(sorted(notes))) if notes else f"{prefix}match", ""
    return f"BUG:{prefix}different-tree", "\n".join(lines)


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _nfc_node(n: Node) -> Node:
    return ("link", _nfc(n[1])) if n[0] == "link" else n


def windows_only_refusal(message: str) -> bool:
    """dropfetch refused a name only for what it means on Windows (a leading backslash,
    a drive letter, '..' between backslashes): it stays out of a share's reach."""
    link = re.match(r"link .* -> (.*) points outside the output$", message)
    if link:
        target = link.group(1)
        return bool(re.match(r"[A-Za-z]:|\\", target)) and ".." not in target.split("/")
    m = re.match(r"unsafe member (.+): (absolute path|'\.\.' in its path)$", message)
    if not m:
        return False
    try:
        with warnings.catch_warnings():  # a backslash in a name: "invalid escape"
            warnings.simplefilter("ignore")
            name = ast.literal_eval(m.group(1))
    except (ValueError, SyntaxError):
        return False
    return not name.startswith("/") and ".." not in name.split("/")


def zip_backslash_paths(archive: Path | None) -> set[str]:
    """The paths a zip's backslash names give when a backslash is a separator, with
    their parents."""
    out: set[str] = set()
    if archive is None:
        return out
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [i.orig_filename for i in zf.infolist()]
    except Exception:
        return out
    for name in names:
        if "\\" in name:
            parts = [x for x in name.replace("\\", "/").split("/") if x not in ("", ".")]
            out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


# --- the runner ---------------------------------------------------------------------


def run_many(
    seeds: list[int], *, keep: Path, verbose: bool = False, show: str | None = None
) -> int:
    counts: Counter[str] = Counter()
    bugs: list[Result] = []
    took: dict[int, float] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dropfetch-fuzz-", ignore_cleanup_errors=True) as tmp:
        for n, seed in enumerate(seeds, 1):
            work = Path(tmp) / str(seed)
            work.mkdir()
            case_started = time.monotonic()
            try:
                res = run_case(seed, work)
            except BaseException:
                print(f"seed {seed}: the harness failed", flush=True)
                remove(work)
                raise
            counts[res.cls] += 1
            if res.is_bug or verbose or (show and res.cls.startswith(show)):
                if res.is_bug or show:
                    kept = keep / f"seed-{seed}"
                    kept.mkdir(parents=True, exist_ok=True)
                    if res.archive is not None and res.archive.exists():
                        shutil.copy(res.archive, kept / res.archive.name)
                        res.archive = kept / res.archive.name
                    (kept / "report.txt").write_text(res.report() + "\n")
                if res.is_bug:
                    bugs.append(res)
                print(res.report(), flush=True)
            remove(work)
            took[seed] = time.monotonic() - case_started
            if n % 250 == 0:
                print(f"... {n} cases, {time.monotonic() - started:.0f} s", flush=True)
    elapsed = time.monotonic() - started
    print(f"\n{len(seeds)} cases in {elapsed:.1f} s")
    for cls, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {k:6d}  {cls}")
    slow = sorted(took, key=took.__getitem__, reverse=True)[:5]
    print("slowest: " + ", ".join(f"{s} ({took[s]:.1f} s)" for s in slow))
    if bugs:
        print(
            f"\n{len(bugs)} mismatches; archives and reports in {keep}: "
            + ", ".join(str(b.seed) for b in bugs[:50])
        )
    return 1 if bugs else 0


def remove(path: Path) -> None:
    """rm -rf: trees too deep for shutil.rmtree, paths longer than PATH_MAX."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


def cleanup(work: Path) -> None:
    """Remove a case's trees, keep its archive."""
    for sub in ("src", "a", "r"):
        remove(work / sub)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=int(os.environ.get("FUZZ_CASES", "1000")))
    parser.add_argument(
        "--seed", type=int, default=int(os.environ.get("FUZZ_SEED", str(DEFAULT_SEED)))
    )
    parser.add_argument("--replay", type=int, nargs="*", help="run just these seeds")
    parser.add_argument("--keep", type=Path, default=Path("var/fuzz"))
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--show", help="also print the cases whose class starts with this")
    args = parser.parse_args(argv)
    seeds = args.replay or list(range(args.seed, args.seed + args.cases))
    return run_many(
        seeds, keep=args.keep, verbose=args.verbose or bool(args.replay), show=args.show
    )


if __name__ == "__main__":
    sys.exit(main())
