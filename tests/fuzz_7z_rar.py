"""The 7z and RAR cases of the differential fuzz (tests/fuzz_extract.py, docs/FUZZ.md).

A seed's family is drawn on its own (``family``), so the tar and zip seeds stay what
they were. A 7z case: a random tree archived by the real 7zz with random flags
(method, solid or not, level, plain or compressed header, links stored or followed),
mutated half the time (bit flips, truncation, bit flips inside the header with its
CRCs made right again, names in a plain header turned into ``..``/absolute ones);
reference ``7zz x`` or bsdtar. A RAR case: one of rarfile's real archives (nobody may
write RAR without the non-free ``rar``), mutated almost always (flips, truncation; in
RAR 5: flips inside a block header with its CRC32 recomputed, names turned into
``..``/absolute ones, blocks dropped, duplicated or reordered); reference bsdtar or
unar. Then ``fuzz_extract.judge`` applies the same rules as to tar and zip.
"""

from __future__ import annotations

import dataclasses
import random
import re
import subprocess
import zlib
from pathlib import Path

import fuzz_extract
from archives7z import rar5_blocks, rar5_file_name, rar5_join, rar5_rename
from rarfiles import ROOT as RAR_ROOT

SHARE_7Z = 0.12  # of all seeds
SHARE_RAR = 0.08
DAMAGED = re.compile(r"CRC|checksum", re.IGNORECASE)
METHODS = ["lzma2", "lzma2", "lzma", "ppmd", "bzip2", "deflate", "copy"]


def family(seed: int) -> str:
    """'7z', 'rar' or 'tar-zip', drawn from the seed alone."""
    r = random.Random(f"family:{seed}").random()
    if r < SHARE_7Z:
        return "7z"
    if r < SHARE_7Z + SHARE_RAR:
        return "rar"
    return "tar-zip"


def rar_fixtures() -> list[Path]:
    """rarfile's single-volume archives that need no password."""
    return sorted(
        p
        for p in RAR_ROOT.glob("*.rar")
        if "psw" not in p.name and "vols" not in p.name and p.name != "rar3-old.rar"
    )


def run_case(seed: int, kind: str, work: Path) -> fuzz_extract.Result:
    rng = random.Random(seed)
    if kind == "7z":
        made, archive, mutate = _make_7z(rng, work)
    else:
        made, archive, mutate = _pick_rar(rng, work)
    res = fuzz_extract.Result(seed, made, [], archive=archive)
    if not archive.exists():
        res.cls = "skip:tool-wrote-nothing"
        res.detail = made.stderr
        return res
    if mutate:
        data, res.mutations = mutate_7z_rar(rng, kind, archive.read_bytes())
        archive.write_bytes(data)
    res.reference = _reference(rng, kind, archive)
    res = fuzz_extract.judge(res, made, archive, work)
    if res.cls == "BUG:refused-unsafe_archive" and _7zz_dropped_link(res, work):
        res.cls = "documented:refused-outside,7zz-drops-absolute-links"
    if res.dropfetch == "ok" and not res.is_bug and DAMAGED.search(res.ref_stderr):
        # the reference found a checksum wrong: the data dropfetch published is damaged
        res.cls = "BUG:published-damaged-data"
    return res


def _7zz_dropped_link(res: fuzz_extract.Result, work: Path) -> bool:
    """dropfetch refused an absolute link that ``7zz x`` left out without a word (it
    does so for a link to '/')."""
    m = re.match(r"link (.+) -> (/.*) points outside the output$", res.dropfetch_message)
    if m is None or res.reference != "7zz":
        return False
    return not (work / "r" / "ref" / "out" / m.group(1)).is_symlink()


def _reference(rng: random.Random, kind: str, archive: Path) -> str:
    if kind == "7z":
        return rng.choice(["7zz", "7zz", "bsdtar"])
    # libarchive cannot read solid RAR 4 archives: unar is their reference (and the
    # second opinion on the others: it differs on RAR 4 times, versions, file copies)
    del rng
    return "unar" if rar4_solid(archive.read_bytes()) else "bsdtar"


def rar4_solid(data: bytes) -> bool:
    """A RAR 4 archive whose main header says solid (MHD_SOLID)."""
    head = b"Rar!\x1a\x07\x00"
    return data.startswith(head) and len(data) > 12 and data[9] == 0x73 and bool(data[10] & 8)


def _make_7z(rng: random.Random, work: Path) -> tuple[fuzz_extract.Made, Path, bool]:
    prof = fuzz_extract.Profile(
        specials=False,  # 7zz would block reading a FIFO
        non_utf8=False,  # 7z names are UTF-16: 7zz and libarchive convert them differently
        backslash=False,  # 7zz on Linux stores a '\\' in a name as U+F05C
        deep=False,
        long_path=False,
    )
    flags = ["-t7z", f"-m0={rng.choice(METHODS)}", rng.choice(["-ms=on", "-ms=off"])]
    flags.append(f"-mx={rng.choice([1, 5, 9])}")
    if rng.random() < 0.5:
        flags.append("-mhc=off")  # a plain header: the header mutations reach its fields
    if rng.random() < 0.8:
        flags.append("-snl")
    else:
        prof.follow = True
    entries = fuzz_extract.gen_tree(rng, prof)
    src = work / "src"
    fuzz_extract.build_tree(entries, src)
    archive = work / "archive.7z"
    argv = ["7zz", "a", "-bd", "-bso0", "-bsp0", "-y", *flags, str(archive), "."]
    try:
        proc = subprocess.run(
            argv,
            cwd=src,
            capture_output=True,
            check=False,
            timeout=fuzz_extract.TOOL_TIMEOUT,
            env=fuzz_extract.TOOL_ENV,
            stdin=subprocess.DEVNULL,
        )
        rc, err = proc.returncode, proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        archive.unlink(missing_ok=True)
        rc, err = -1, "timed out"
    made = fuzz_extract.Made("7zz", argv, "7z", "", rc, err)
    return made, archive, rng.random() < 0.5


def _pick_rar(rng: random.Random, work: Path) -> tuple[fuzz_extract.Made, Path, bool]:
    fixture = rng.choice(rar_fixtures())
    archive = work / fixture.name
    work.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(fixture.read_bytes())
    made = fuzz_extract.Made("rarfile-fixture", ["fixture", fixture.name], "rar", "")
    return made, archive, rng.random() < 0.85


def run_reference(ref: str, archive: Path, out: Path) -> tuple[int, str]:
    if ref == "7zz":
        # -snld20: the dangerous links too, as the other tools do (dropfetch refuses them)
        argv = ["7zz", "x", "-y", "-snld20", "-bd", "-bso0", "-bsp0", f"-o{out}", str(archive)]
    else:
        argv = ["unar", "-q", "-f", "-D", "-o", str(out), str(archive)]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=fuzz_extract.TOOL_TIMEOUT,
            env=fuzz_extract.TOOL_ENV,
        )
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return proc.returncode, (proc.stderr + proc.stdout).decode(errors="replace")


# --- mutations -----------------------------------------------------------------------


def mutate_7z_rar(rng: random.Random, kind: str, data: bytes) -> tuple[bytes, list[str]]:
    done: list[str] = []
    for _ in range(rng.choice([1, 1, 1, 2])):
        what = rng.choice(["flip", "truncate", "structure", "structure", "structure"])
        if what == "flip":
            data = fuzz_extract.flip(rng, data)
        elif what == "truncate":
            data = data[: rng.randrange(len(data) or 1)]
        elif kind == "7z":
            data, what = mutate_7z(rng, data)
        else:
            data, what = mutate_rar5(rng, data)
        done.append(what)
    return data, done


_START = slice(12, 32)


def _7z_header_span(data: bytes) -> tuple[int, int] | None:
    if len(data) < 32 or not data.startswith(b"7z\xbc\xaf\x27\x1c"):
        return None
    offset = int.from_bytes(data[12:20], "little")
    size = int.from_bytes(data[20:28], "little")
    at = 32 + offset
    if size == 0 or at + size > len(data):
        return None
    return at, at + size


def fix_7z_crcs(data: bytes) -> bytes:
    """The start header's CRCs made right for the header that is there."""
    span = _7z_header_span(data)
    if span is None:
        return data
    buf = bytearray(data)
    buf[28:32] = zlib.crc32(data[span[0] : span[1]]).to_bytes(4, "little")
    buf[8:12] = zlib.crc32(bytes(buf[_START])).to_bytes(4, "little")
    return bytes(buf)


def mutate_7z(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    span = _7z_header_span(data)
    if span is None:
        return fuzz_extract.flip(rng, data), "flip (no header found)"
    lo, hi = span
    if data[lo] == 0x01 and rng.random() < 0.5:  # a plain header: rename an entry
        renamed = _rename_7z(rng, data, lo, hi)
        if renamed is not None:
            return fix_7z_crcs(renamed[0]), renamed[1]
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4])):
        i = rng.randrange(lo, hi)
        buf[i] ^= 1 << rng.randrange(8)
    return fix_7z_crcs(bytes(buf)), "flip in the header, CRCs fixed"


def _rename_7z(rng: random.Random, data: bytes, lo: int, hi: int) -> tuple[bytes, str] | None:
    """A name of the plain header turned into an escaping one of the same length."""
    header = data[lo:hi]
    names = [n.decode("utf-16-le", "replace") for n in _utf16_names(header)]
    names = [n for n in names if len(n) >= 4]
    if not names:
        return None
    old = rng.choice(names)
    new = rng.choice(
        ["../" + old[3:], "/" + old[1:], "..\\" + old[3:], old[:-3] + "/..", "C:" + old[2:]]
    )
    at = header.find(old.encode("utf-16-le") + b"\x00\x00")
    if at < 0 or len(new) != len(old):
        return None
    patched = header[:at] + new.encode("utf-16-le") + header[at + len(old) * 2 :]
    return data[:lo] + patched + data[hi:], f"rename {old!r} -> {new!r}, CRCs fixed"


def _utf16_names(header: bytes) -> list[bytes]:
    """The names of a plain 7z header, best effort: the first run of NUL-terminated
    UTF-16 strings after a 0x11 byte (kName, its size, external 0); a wrong guess only
    makes the rename mutation patch other bytes, which the CRC fix then covers."""
    out: list[bytes] = []
    at = header.find(b"\x11")
    while at >= 0:
        start = at + 3 if at + 2 < len(header) and header[at + 2] == 0 else at + 4
        chunk = header[start:]
        parts = []
        i = 0
        while i + 1 < len(chunk):
            if chunk[i : i + 2] == b"\x00\x00" and i % 2 == 0:
                parts.append(chunk[:i])
                chunk = chunk[i + 2 :]
                i = 0
                if len(parts) > 10_000 or not chunk or chunk[:1] == b"\x00":
                    break
                continue
            i += 2
        if parts:
            out = parts
            break
        at = header.find(b"\x11", at + 1)
    return out


def mutate_rar5(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    try:
        blocks = rar5_blocks(data)
    except (ValueError, IndexError):
        return fuzz_extract.flip(rng, data), "flip (not a whole RAR 5)"
    files = [b for b in blocks if b.kind == 2]
    what = rng.choice(["rename", "rename", "flip-block", "drop", "duplicate", "reorder"])
    if what == "rename" and files:
        name = rar5_file_name(rng.choice(files))[0]
        other = rar5_file_name(rng.choice(files))[0].encode()
        new = fuzz_extract._fill(rng.choice(fuzz_extract.OUTSIDE_NAMES), name.encode(), other)  # noqa: SLF001
        new_name = new.decode("utf-8", "surrogateescape")
        return rar5_rename(data, name, new_name), f"rename {name!r} -> {new_name!r}"
    if what == "flip-block":
        block = rng.choice(blocks)
        header = bytearray(block.header)
        header[rng.randrange(len(header))] ^= 1 << rng.randrange(8)
        block.header = bytes(header)
        return rar5_join(blocks), "flip in a block header, CRC32 fixed"
    body = blocks[1:-1]  # between the main header and the end block
    if what == "drop" and body:
        body.remove(rng.choice(body))
    elif what == "duplicate" and body:
        i = rng.randrange(len(body))
        body.insert(rng.randint(0, len(body)), dataclasses.replace(body[i]))
    elif what == "reorder":
        rng.shuffle(body)
    return rar5_join([blocks[0], *body, blocks[-1]]), f"{what} blocks"
