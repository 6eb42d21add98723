"""7z and RAR archives built at test time: libarchive's 7zip writer (any entry, hostile
ones included), the real 7zz, a hand-made 7z (a header that lies), and RAR 5 headers
rewritten in real archives (nobody may write RAR without the non-free `rar`)."""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import libarchive
from libarchive import ffi
from libarchive.entry import ArchiveEntry, FileType

# libarchive-c's linkpath setter goes through archive_entry_update_link_utf8, which
# crashes on an entry that belongs to no archive: set a symlink's target directly
_set_symlink = ffi.libarchive.archive_entry_set_symlink
_set_symlink.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_set_symlink.restype = None

_TYPES = {
    "file": FileType.REGULAR_FILE,
    "dir": FileType.DIRECTORY,
    "sym": FileType.SYMBOLINK_LINK,
    "fifo": FileType.NAMED_PIPE,
    "chr": FileType.CHAR_DEVICE,
    "blk": FileType.BLOCK_DEVICE,
}


@dataclass(frozen=True)
class S:
    """One entry of a 7z written by libarchive: kind is file, dir, sym, fifo, chr, blk
    (7z has no hard links: a ``hardlink`` target is written and dropped by the writer)."""

    name: str
    kind: str = "file"
    data: bytes = b"pwned\n"
    target: str = ""
    mode: int = 0o644
    hardlink: str = ""


def seven_z_bytes(entries: Sequence[S]) -> bytes:
    """A 7z of ``entries`` as libarchive's writer makes it (names kept as given)."""
    with tempfile.TemporaryDirectory(prefix="dropfetch-7z-") as tmp:
        path = Path(tmp) / "a.7z"
        with libarchive.file_writer(str(path), "7zip") as archive:
            for s in entries:
                data = s.data if s.kind == "file" else b""
                entry = ArchiveEntry(
                    header_codec="utf-8",
                    pathname=s.name,
                    filetype=_TYPES[s.kind],
                    perm=s.mode,
                    size=len(data),
                    mtime=1_700_000_000,
                )
                if s.kind == "sym":
                    _set_symlink(entry._entry_p, s.target.encode())  # noqa: SLF001
                if s.hardlink:
                    entry.linkpath = s.hardlink  # a hard link: 7z has none
                ffi.write_header(archive._pointer, entry._entry_p)  # noqa: SLF001
                if data:
                    ffi.write_data(archive._pointer, data, len(data))  # noqa: SLF001
                ffi.write_finish_entry(archive._pointer)  # noqa: SLF001
        return path.read_bytes()


def seven_zz(src: Path, out: Path, *args: str) -> Path:
    """``7zz a`` of the content of ``src`` into ``out`` with ``args`` (e.g. -mx=1)."""
    subprocess.run(
        ["7zz", "a", "-bd", "-bb0", "-y", *args, str(out), "."],
        cwd=src,
        check=True,
        capture_output=True,
    )
    return out


@functools.cache
def seven_z_zeros(size: int) -> bytes:
    """A solid LZMA2 7z made by 7zz of one file of ``size`` zero bytes (1 GiB gives
    about 230 KB), built once per process: a sparse file, so nothing is written."""
    with tempfile.TemporaryDirectory(prefix="dropfetch-7z-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        with open(src / "zeros.img", "wb") as f:
            f.truncate(size)
        return seven_zz(src, Path(tmp) / "zeros.7z", "-mx=1").read_bytes()


# --- a solid 7z of about 1 GiB of real text, and the peak RSS of extracting it ------


def text_tree(root: Path, total: int, per_file: int = 4 << 20) -> int:
    """``total`` bytes of real text under ``root``: files of ``per_file`` bytes, each one
    of this Python's standard-library modules repeated (low entropy, not zeros: it
    compresses well and decodes fast), in 16 directories. Returns the file count."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = sorted(p for p in stdlib.glob("*.py") if p.stat().st_size > 20_000)
    written = count = 0
    while written < total:
        module = modules[count % len(modules)]
        text = f"# copy {count}\n".encode() + module.read_bytes()
        data = (text * (per_file // len(text) + 1))[: min(per_file, total - written)]
        d = root / f"d{count % 16:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{count:04d}-{module.name}").write_bytes(data)
        written += len(data)
        count += 1
    return count


def solid_7z_of_text(out: Path, total: int) -> int:
    """A solid LZMA2 7z (``7zz -mx=1``, one solid block up to 2 GiB) of
    :func:`text_tree`; the tree is removed after. Returns the file count."""
    src = out.with_name(out.name + ".src")
    count = text_tree(src, total)
    seven_zz(src, out, "-t7z", "-m0=lzma2", "-ms=2g", "-mx=1")
    shutil.rmtree(src)
    return count


_MEASURE = """
import json, sys, time
from pathlib import Path
from typing import BinaryIO
from dropfetch.config import ExtractConfig
from dropfetch.extract import extract, sniff
archive, dest = Path(sys.argv[1]), Path(sys.argv[2])
dest.mkdir()
started = time.monotonic()
files = extract(archive, dest, fmt=sniff(archive), config=ExtractConfig(), single_name="x")
took = time.monotonic() - started
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"files": len(files), "vmhwm_kib": hwm, "seconds": took}))
"""


def extract_peak_rss(archive: Path, dest: Path) -> dict[str, float]:
    """``dropfetch.extract.extract`` of ``archive`` into ``dest`` (made) in a fresh
    Python process: its file count, peak RSS (``VmHWM``, KiB) and seconds."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(archive), str(dest)],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ.copy(),
    )
    if proc.returncode:
        raise RuntimeError(f"the extraction failed: {proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout)
    return result


# --- a 7z written by hand: one Copy folder per file, a plain header ------------------

_SIGNATURE = b"7z\xbc\xaf\x27\x1c\x00\x04"


def _num(v: int) -> bytes:
    """7z's variable-length UINT64."""
    for n in range(8):
        if v < 1 << (7 * (n + 1)):
            first = ((0xFF << (8 - n)) & 0xFF) | (v >> (8 * n))
            return bytes([first]) + (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
    return b"\xff" + v.to_bytes(8, "little")


def seven_z_raw(files: Sequence[tuple[str, bytes, int]]) -> bytes:
    """A 7z whose files (name, stored data, the unpacked size the header claims) are
    stored (Copy coder), the header plain: a claim larger than the data is a lie."""
    packed = b"".join(data for _, data, _ in files)
    n = len(files)
    header = b"\x01\x04"  # Header, MainStreamsInfo
    header += b"\x06" + _num(0) + _num(n) + b"\x09"  # PackInfo: pos, count, sizes
    header += b"".join(_num(len(data)) for _, data, _ in files) + b"\x00"
    header += b"\x07\x0b" + _num(n) + b"\x00"  # UnPackInfo, Folders, not external
    header += b"\x01\x01\x00" * n  # each: one coder, id size 1, Copy
    header += b"\x0c" + b"".join(_num(claim) for _, _, claim in files) + b"\x00"
    header += b"\x00"  # end of MainStreamsInfo
    names = b"\x00" + b"".join(name.encode("utf-16-le") + b"\x00\x00" for name, _, _ in files)
    header += b"\x05" + _num(n) + b"\x11" + _num(len(names)) + names + b"\x00\x00"
    start = (
        len(packed).to_bytes(8, "little")
        + len(header).to_bytes(8, "little")
        + zlib.crc32(header).to_bytes(4, "little")
    )
    return _SIGNATURE + zlib.crc32(start).to_bytes(4, "little") + start + packed + header


# --- RAR 5 blocks ------------------------------------------------------------------

RAR5_SIGNATURE = b"Rar!\x1a\x07\x01\x00"


def _vint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[at]
        at += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, at


def _put_vint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


@dataclass
class Rar5Block:
    """One RAR 5 block: its header (after the size field) and the data that follows."""

    header: bytes
    data: bytes

    @property
    def kind(self) -> int:
        return _vint(self.header, 0)[0]

    def encode(self) -> bytes:
        body = _put_vint(len(self.header)) + self.header
        return zlib.crc32(body).to_bytes(4, "little") + body + self.data


def rar5_blocks(raw: bytes) -> list[Rar5Block]:
    """The blocks of a well-formed single-volume RAR 5 archive (after its signature)."""
    if not raw.startswith(RAR5_SIGNATURE):
        raise ValueError("not a RAR 5 archive")
    at, blocks = len(RAR5_SIGNATURE), []
    while at < len(raw):
        size, body = _vint(raw, at + 4)
        header = raw[body : body + size]
        _kind, p = _vint(header, 0)
        flags, p = _vint(header, p)
        if flags & 1:
            _, p = _vint(header, p)
        data_size = _vint(header, p)[0] if flags & 2 else 0
        end = body + size + data_size
        blocks.append(Rar5Block(header, raw[body + size : end]))
        at = end
    return blocks


def rar5_join(blocks: Sequence[Rar5Block]) -> bytes:
    return RAR5_SIGNATURE + b"".join(b.encode() for b in blocks)


def rar5_file_name(block: Rar5Block) -> tuple[str, int, int]:
    """A file block's name and where its length field and name end in the header."""
    h = block.header
    _kind, p = _vint(h, 0)
    flags, p = _vint(h, p)
    if flags & 1:
        _, p = _vint(h, p)
    if flags & 2:
        _, p = _vint(h, p)
    file_flags, p = _vint(h, p)
    _, p = _vint(h, p)  # unpacked size
    _, p = _vint(h, p)  # attributes
    p += 4 * bool(file_flags & 2) + 4 * bool(file_flags & 4)  # mtime, data CRC32
    _, p = _vint(h, p)  # compression
    _, p = _vint(h, p)  # host OS
    length_at = p
    length, p = _vint(h, p)
    return h[p : p + length].decode("utf-8", "surrogateescape"), length_at, p + length


def rar5_rename(raw: bytes, old: str, new: str) -> bytes:
    """The real RAR 5 archive ``raw`` with its file ``old`` renamed ``new`` (header
    rebuilt, its CRC32 recomputed: the CRC covers the header from its size field)."""
    blocks = rar5_blocks(raw)
    for block in blocks:
        if block.kind != 2:  # a file header
            continue
        name, length_at, end = rar5_file_name(block)
        if name == old:
            encoded = new.encode("utf-8", "surrogateescape")
            h = block.header
            block.header = h[:length_at] + _put_vint(len(encoded)) + encoded + h[end:]
            return rar5_join(blocks)
    raise ValueError(f"no file {old!r} in the archive")


def rar5_stored(out: BinaryIO, files: Iterable[tuple[str, Path]]) -> int:
    """Write to ``out`` a RAR 5 archive of ``files`` (name in the archive, file on disk),
    stored (method 0: RAR's compressor is not free software, its store is plain RAR 5
    blocks), with Unix modes, mtimes and CRC32s. Returns the file count."""
    out.write(RAR5_SIGNATURE + Rar5Block(_put_vint(1) + b"\x00\x00", b"").encode())
    count = 0
    for name, path in files:
        data = path.read_bytes()
        st = path.stat()
        encoded = name.encode("utf-8", "surrogateescape")
        fields = (
            _put_vint(0x02 | 0x04)  # mtime and CRC32 present
            + _put_vint(len(data))
            + _put_vint(st.st_mode & 0o777 | 0o100000)
            + int(st.st_mtime).to_bytes(4, "little")
            + zlib.crc32(data).to_bytes(4, "little")
            + _put_vint(0)  # RAR 5.0, not solid, stored
            + _put_vint(1)  # Unix
            + _put_vint(len(encoded))
            + encoded
        )
        header = _put_vint(2) + _put_vint(0x02) + _put_vint(len(data)) + fields
        out.write(Rar5Block(header, data).encode())
        count += 1
    out.write(Rar5Block(_put_vint(5) + b"\x00\x00", b"").encode())
    return count
