"""7z and RAR through libarchive (archive.libarc): archives made by the real tools (7zz,
and the RAR files of rarfile's test suite) unpack as `7zz x` and `bsdtar -xf` unpack
them; libarchive's limits (solid RAR 4, encrypted RAR and 7z) are found before anything
is written; bombs, traversal and links are refused by dropfetch's own checks."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import libarchive
import pytest
from libarchive import ffi
from libarchive.entry import ArchiveEntry

from dropfetch.archive.formats import ArchiveFormat
from dropfetch.archive.libarc import LibarchiveCannot, extract_libarchive, libarchive_error
from dropfetch.archive.rar5 import scan_rar5
from dropfetch.archive.source import Limits, Source
from dropfetch.archive.tree import Output
from dropfetch.config import ExtractConfig
from dropfetch.errors import (
    ArchiveLimitsError,
    CancelledError,
    CorruptArchiveError,
    DropfetchError,
    EncryptedArchiveError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
)
from dropfetch.extract import extract, sniff
from rarfiles import rar_file
from test_archive_formats import UTF8_ENV, need, run_tool, tree, unpack

MiB = 1024 * 1024


def seven(args: list[str], cwd: Path) -> None:
    need("7zz")
    run_tool(["7zz", *args], cwd)


def seven_x(archive: Path, dest: Path) -> None:
    seven(["x", "-y", "-snld", f"-o{dest}", str(archive)], dest.parent)


def bsdtar_x(archive: Path, dest: Path) -> None:
    need("bsdtar")
    run_tool(["bsdtar", "-xf", str(archive)], dest)


def fails(archive: Path, dest: Path, config: ExtractConfig | None = None) -> DropfetchError:
    with pytest.raises(DropfetchError) as info:
        unpack(archive, dest, config)
    return info.value


def _source_tree(src: Path) -> None:
    """Files, an empty directory, a symlink, a hard link, a unicode name and an ELF."""
    (src / "d" / "empty").mkdir(parents=True)
    (src / "sub").mkdir()
    (src / "a.txt").write_bytes(b"hello\n")
    (src / "sub" / "n.txt").write_text("".join(f"{i}\n" for i in range(100_000)))
    (src / "üñí — 名前.txt").write_bytes("unicode ✓\n".encode())
    (src / "lnk").symlink_to("a.txt")
    (src / "sub" / "up").symlink_to("../a.txt")
    os.link(src / "a.txt", src / "hard.txt")
    shutil.copy(sys.executable, src / "prog.elf")
    (src / "exec.sh").write_bytes(b"#!/bin/sh\n")
    (src / "exec.sh").chmod(0o755)


SEVEN_Z_KINDS = {
    "lzma2-solid": ["-snl", "-snh"],
    "non-solid": ["-ms=off", "-snl"],
    "ppmd": ["-m0=PPMd", "-mf=off"],  # libarchive 3.6 fails on PPMd+BCJ (bsdtar too)
    "bcj2": ["-m0=BCJ2", "-m1=LZMA", "-m2=LZMA", "-m3=LZMA", "-mb0:1", "-mb0s1:2", "-mb0s2:3"],
    "bzip2": ["-m0=BZip2"],
    "deflate": ["-m0=Deflate"],
    "copy": ["-mx=0"],
}


@pytest.mark.parametrize("kind", sorted(SEVEN_Z_KINDS))
def test_7z_as_7zz_extracts_it(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _source_tree(src)
    archive = tmp_path / "t.7z"
    seven(["a", *SEVEN_Z_KINDS[kind], str(archive), "."], src)
    assert sniff(archive) is ArchiveFormat.SEVEN_Z
    ref = tmp_path / "ref"
    seven_x(archive, ref)
    files = unpack(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == tree(ref)
    assert "prog.elf" in files
    assert (tmp_path / "out" / "exec.sh").stat().st_mode & 0o777 == 0o755
    if "-snl" in SEVEN_Z_KINDS[kind]:
        assert os.readlink(tmp_path / "out" / "lnk") == "a.txt"
        assert (tmp_path / "out" / "d" / "empty").is_dir()


def test_empty_7z(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    archive = tmp_path / "e.7z"
    seven(["a", str(archive), "-x!*"], empty)
    assert sniff(archive) is ArchiveFormat.SEVEN_Z
    assert unpack(archive, tmp_path / "out") == []
    assert not list((tmp_path / "out").iterdir())


RAR_FIXTURES = [
    "rar5-solid.rar",
    "rar5-solid-qo.rar",
    "rar5-subdirs.rar",
    "rar5-hlink.rar",
    "rar5-dups.rar",
    "rar5-times.rar",
    "rar5-blake.rar",
    "rar5-readonly-unix.rar",
    "rar3-subdirs.rar",
    "rar3-readonly-unix.rar",
    "unicode2.rar",
]


@pytest.mark.parametrize("name", RAR_FIXTURES)
def test_rar_as_bsdtar_extracts_it(tmp_path: Path, name: str) -> None:
    archive = rar_file(name)
    assert sniff(archive) is ArchiveFormat.RAR
    ref = tmp_path / "ref"
    bsdtar_x(archive, ref)
    unpack(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == tree(ref)
    assert tree(ref)


@pytest.mark.parametrize("name", ["rar5-symlink-unix.rar", "rar3-symlink-unix.rar"])
def test_rar_symlinks_as_bsdtar_makes_them(tmp_path: Path, name: str) -> None:
    """The fixtures hold a link to ../random123, outside: refused by default; with
    extract.symlinks: skip the rest is what bsdtar makes, its links left out."""
    archive = rar_file(name)
    err = fails(archive, tmp_path / "out")
    assert isinstance(err, UnsafeArchiveError) and "random_link" in err.message
    ref = tmp_path / "ref"
    bsdtar_x(archive, ref)
    assert os.readlink(ref / "data_link") == "data.txt"
    unpack(archive, tmp_path / "skip", ExtractConfig(symlinks="skip"))
    expected = {k: v for k, v in tree(ref).items() if v[0] != "link"}
    assert tree(tmp_path / "skip") == expected


def test_rar_symlink_traversal_is_unsafe(tmp_path: Path) -> None:
    err = fails(rar_file("rar5-evil-symlink-traversal.rar"), tmp_path / "out")
    assert isinstance(err, UnsafeArchiveError)
    assert not (tmp_path / "pwned.txt").exists()
    assert not list((tmp_path / "out").rglob("pwned.txt"))


# --- what libarchive cannot do: found before anything is written ----------------------


def _cannot(tmp_path: Path, archive: Path, fmt: ArchiveFormat) -> LibarchiveCannot:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    config = ExtractConfig()
    with archive.open("rb") as f:
        source = Source(f, archive.stat().st_size, None, None)
        out = Output(str(out_dir), config, Limits(config, source), None)
        with pytest.raises(LibarchiveCannot) as info:
            extract_libarchive(archive, fmt, out, ["wrong"], source=source)  # type: ignore[arg-type]
    assert not list(out_dir.iterdir())
    assert out.limits.written == 0 and not out.files
    assert "wrong" not in info.value.message
    return info.value


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("rar3-solid.rar", "solid RAR 4"),
        ("rar5-psw.rar", "encrypted"),
        ("rar5-psw-blake.rar", "encrypted"),
        ("rar5-hpsw.rar", "encrypted"),
        ("rar3-comment-hpsw.rar", "encrypted"),
        ("rar3-comment-psw.rar", "encrypted"),
    ],
)
def test_rar_libarchive_cannot_do(tmp_path: Path, name: str, why: str) -> None:
    err = _cannot(tmp_path, rar_file(name), ArchiveFormat.RAR)
    assert why in err.message and err.code == "unsupported_archive"


@pytest.mark.parametrize(("args", "why"), [([], "content is encrypted"), (["-mhe=on"], "headers")])
def test_encrypted_7z_libarchive_cannot_do(tmp_path: Path, args: list[str], why: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"secret\n")
    archive = tmp_path / "enc.7z"
    seven(["a", "-psecret-pw", *args, str(archive), "a.txt"], src)
    err = _cannot(tmp_path, archive, ArchiveFormat.SEVEN_Z)
    assert why in err.message and "secret-pw" not in err.message


@pytest.mark.parametrize("part", [1, 2, 3])
def test_rar5_volume_says_what_it_is(tmp_path: Path, part: int) -> None:
    err = fails(rar_file(f"rar5-vols.part{part}.rar"), tmp_path / "out")
    assert type(err) is UnsupportedArchiveError and "multi-volume" in err.message
    assert not list((tmp_path / "out").iterdir())


def test_rar5_encryption_records() -> None:
    found = {}
    for name in ("rar5-psw.rar", "rar5-psw-blake.rar", "rar5-solid.rar", "rar5-hlink.rar"):
        with rar_file(name).open("rb") as f:
            scan = scan_rar5(f)
            found[name] = (scan.encrypted, scan.ended)
    assert found == {
        "rar5-psw.rar": (True, False),
        "rar5-psw-blake.rar": (True, False),
        "rar5-solid.rar": (False, True),
        "rar5-hlink.rar": (False, True),
    }


# --- encrypted zips (the passwords lane routes them here) -----------------------------


@pytest.fixture
def aes_zip(tmp_path: Path) -> Path:
    src = tmp_path / "zsrc"
    src.mkdir()
    (src / "a.txt").write_bytes(b"zipped secret\n" * 100)
    archive = tmp_path / "enc.zip"
    seven(["a", "-tzip", "-mem=AES256", "-pright-pw", str(archive), "a.txt"], src)
    return archive


def _zip_with(tmp_path: Path, archive: Path, passwords: list[str]) -> Output:
    out_dir = tmp_path / "zout"
    out_dir.mkdir()
    config = ExtractConfig()
    with archive.open("rb") as f:
        limits = Limits(config, Source(f, archive.stat().st_size, None, None))
        out = Output(str(out_dir), config, limits, None)
        extract_libarchive(archive, ArchiveFormat.ZIP, out, passwords)
    return out


def test_zip_aes_with_passwords_tried_in_order(tmp_path: Path, aes_zip: Path) -> None:
    out = _zip_with(tmp_path, aes_zip, ["nope", "right-pw"])
    assert out.files == {"a.txt"}
    assert (tmp_path / "zout" / "a.txt").read_bytes() == b"zipped secret\n" * 100


@pytest.mark.parametrize(
    ("passwords", "says"),
    [([], "a password is needed"), (["bad-one"], "the password given is wrong"),
     (["bad-one", "bad-two"], "the 2 passwords given are wrong")],
)  # fmt: skip
def test_zip_aes_no_or_wrong_password(
    tmp_path: Path, aes_zip: Path, passwords: list[str], says: str
) -> None:
    with pytest.raises(EncryptedArchiveError) as info:
        _zip_with(tmp_path, aes_zip, passwords)
    assert says in info.value.message
    assert not any(p in info.value.message for p in passwords)


def test_zipcrypto_with_password(tmp_path: Path) -> None:
    need("zip")
    src = tmp_path / "zsrc"
    src.mkdir()
    (src / "z.txt").write_bytes(b"zipcrypto\n")
    archive = tmp_path / "zc.zip"
    run_tool(["zip", "-q", "-P", "pw1", str(archive), "z.txt"], src)
    out = _zip_with(tmp_path, archive, ["pw1"])
    assert (tmp_path / "zout" / "z.txt").read_bytes() == b"zipcrypto\n" and out.files


# --- errors in plain words ------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("Truncated 7-Zip file body", CorruptArchiveError),
        ("Damaged 7-Zip archive", CorruptArchiveError),
        (None, CorruptArchiveError),
        ("Unsupported compression method", UnsupportedArchiveError),
        ("RAR solid archive support unavailable.", LibarchiveCannot),
        ("Passphrase required for this entry", EncryptedArchiveError),
        ("Incorrect passphrase", EncryptedArchiveError),
    ],
)
def test_libarchive_error_mapping(message: str | None, error: type[DropfetchError]) -> None:
    err = libarchive_error(message, ArchiveFormat.SEVEN_Z, 1)
    assert type(err) is error
    assert "errno" not in err.message and "retcode" not in err.message


def _truncated(tmp_path: Path, archive: Path, keep: float) -> Path:
    data = archive.read_bytes()
    cut = tmp_path / f"cut-{archive.name}"
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_7z_is_corrupt(tmp_path: Path, keep: float) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(300_000))
    archive = tmp_path / "t.7z"
    seven(["a", str(archive), "big.bin"], src)
    err = fails(_truncated(tmp_path, archive, keep), tmp_path / "out")
    assert isinstance(err, CorruptArchiveError), err
    assert "errno=" not in err.message and "archive_p" not in err.message


@pytest.mark.parametrize("name", ["rar5-subdirs.rar", "rar3-subdirs.rar", "rar5-solid.rar"])
def test_truncated_rar_is_corrupt(tmp_path: Path, name: str) -> None:
    err = fails(_truncated(tmp_path, rar_file(name), 0.6), tmp_path / "out")
    assert isinstance(err, CorruptArchiveError), err
    assert "errno=" not in err.message


_IN_A_PROCESS = """
import sys; from pathlib import Path
from dropfetch.config import ExtractConfig
from dropfetch.errors import DropfetchError
from dropfetch.extract import extract, sniff
a = Path(sys.argv[1])
try:
    print(extract(a, Path(sys.argv[2]), fmt=sniff(a), config=ExtractConfig(), single_name="x"))
except DropfetchError as e:
    print(e.code); print(e.message)
"""


def _extract_in_a_process(tmp_path: Path, archive: Path, **env: str) -> list[str]:
    """extract() in a fresh interpreter with ``env``: its output lines."""
    (tmp_path / "out").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _IN_A_PROCESS, str(archive), str(tmp_path / "out")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def _small_7z(tmp_path: Path, name: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_bytes(b"x")
    archive = tmp_path / "t.7z"
    seven(["a", str(archive), name], src)
    return archive


def test_missing_library_says_what_to_install(tmp_path: Path) -> None:
    """LIBARCHIVE names the library libarchive-c loads: a file that does not exist is a
    system without libarchive."""
    archive = _small_7z(tmp_path, "a.txt")
    lines = _extract_in_a_process(
        tmp_path, archive, LIBARCHIVE=str(tmp_path / "no-such-libarchive.so")
    )
    assert lines[0] == "unsupported_archive", lines
    assert "apt-get install libarchive13" in lines[1]


def test_unicode_names_under_the_c_locale(tmp_path: Path) -> None:
    """libarchive converts names to the locale's charset: under LC_ALL=C it could not,
    so the read runs in C.UTF-8 (a per-thread locale)."""
    archive = _small_7z(tmp_path, "名前 ü.txt")
    lines = _extract_in_a_process(tmp_path, archive, LC_ALL="C", LANG="C")
    assert lines == ["['名前 ü.txt']"], lines
    assert (tmp_path / "out" / "名前 ü.txt").read_bytes() == b"x"


# --- limits and hostile archives ------------------------------------------------------


@pytest.fixture(scope="session")
def zeros_7z(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB of zeros in one 7z (about 150 KiB), made once per session."""
    need("7zz")
    archive = tmp_path_factory.mktemp("bomb") / "zeros.7z"
    with subprocess.Popen(["head", "-c", "1G", "/dev/zero"], stdout=subprocess.PIPE) as head:
        subprocess.run(
            ["7zz", "a", "-si", str(archive)],
            stdin=head.stdout,
            check=True,
            capture_output=True,
            env=UTF8_ENV,
        )
    return archive


def test_7z_bomb_against_max_total_size(tmp_path: Path, zeros_7z: Path) -> None:
    assert zeros_7z.stat().st_size < 2 * MiB
    err = fails(zeros_7z, tmp_path / "out", ExtractConfig(max_total_size=64 * MiB))
    assert isinstance(err, ArchiveLimitsError) and "max_total_size" in err.message
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= 65 * MiB


def test_7z_many_files_against_max_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        (src / f"f{i:03}").write_bytes(b"x")
    archive = tmp_path / "many.7z"
    seven(["a", str(archive), "."], src)
    err = fails(archive, tmp_path / "out", ExtractConfig(max_files=50))
    assert isinstance(err, ArchiveLimitsError) and "max_files" in err.message


def _written_7z(path: Path, entries: list[dict[str, Any]]) -> Path:
    """A 7z written by libarchive (7zz cannot be made to store such names): entries of
    pathname, data, filetype, perm and symlink (a symbolic link's target)."""
    if not hasattr(ffi, "entry_copy_symlink"):
        ffi.ffi("entry_copy_symlink", [ctypes.c_void_p, ctypes.c_char_p], None)
    with libarchive.file_writer(str(path), "7zip") as w:
        for e in entries:
            data = e.get("data", b"")
            entry = ArchiveEntry(
                pathname=e["pathname"],
                filetype=e.get("filetype", 0o100000),
                perm=e.get("perm", 0o644),
                size=len(data),
                header_codec="utf-8",
            )
            if "symlink" in e:
                ffi.entry_copy_symlink(
                    entry._entry_p,  # noqa: SLF001
                    e["symlink"].encode(),
                )
            ffi.write_header(w._pointer, entry._entry_p)  # noqa: SLF001
            if data:
                ffi.write_data(w._pointer, data, len(data))  # noqa: SLF001
            ffi.write_finish_entry(w._pointer)  # noqa: SLF001
    return path


@pytest.mark.parametrize(
    "entries",
    [
        [{"pathname": "../evil", "data": b"x"}],
        [{"pathname": "/abs", "data": b"x"}],
        [{"pathname": "ok/../../evil", "data": b"x"}],
        [{"pathname": "up", "filetype": 0o120000, "symlink": "../../etc"}],
        [{"pathname": "root", "filetype": 0o120000, "symlink": "/etc"}],
        [
            {"pathname": "d", "filetype": 0o120000, "symlink": "."},
            {"pathname": "d2", "filetype": 0o120000, "symlink": "d/.."},
        ],
    ],
    ids=["dotdot", "absolute", "inner-dotdot", "link-up", "link-absolute", "link-chain"],
)
def test_hostile_7z_is_unsafe(tmp_path: Path, entries: list[dict[str, Any]]) -> None:
    archive = _written_7z(tmp_path / "evil.7z", [dict(e) for e in entries])
    err = fails(archive, tmp_path / "x" / "out")
    assert isinstance(err, UnsafeArchiveError), err
    assert not (tmp_path / "x" / "evil").exists() and not (tmp_path / "evil").exists()


def test_7z_devices_are_refused(tmp_path: Path) -> None:
    for kind, described in ((0o020000, "character device"), (0o060000, "block device")):
        archive = _written_7z(tmp_path / "dev.7z", [{"pathname": "dev", "filetype": kind}])
        err = fails(archive, tmp_path / f"out{kind}")
        assert isinstance(err, UnsafeArchiveError) and described in err.message


def test_7z_fifo_is_the_data_it_holds(tmp_path: Path) -> None:
    """`7zz a -si` stores standard input with its mode, a FIFO's: `7zz x` writes the data
    as a regular file, and so does dropfetch (never a FIFO)."""
    archive = tmp_path / "stdin.7z"
    need("7zz")
    subprocess.run(["7zz", "a", "-sinamed.txt", str(archive)], input=b"piped\n", check=True,
                   capture_output=True, env=UTF8_ENV)  # fmt: skip
    ref = tmp_path / "ref"
    seven_x(archive, ref)
    unpack(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == tree(ref) == {b"named.txt": ("file", b"piped\n")}


def test_setuid_bits_are_dropped(tmp_path: Path) -> None:
    archive = _written_7z(
        tmp_path / "suid.7z", [{"pathname": "s", "data": b"#!/bin/sh\n", "perm": 0o6755}]
    )
    unpack(archive, tmp_path / "out")
    assert (tmp_path / "out" / "s").stat().st_mode & 0o7777 == 0o755


def test_progress_is_reported_while_reading(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "r.bin").write_bytes(os.urandom(5 * MiB))
    archive = tmp_path / "r.7z"
    seven(["a", "-mx=0", str(archive), "r.bin"], src)
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "out"
    dest.mkdir()
    extract(
        archive,
        dest,
        fmt=ArchiveFormat.SEVEN_Z,
        config=ExtractConfig(),
        single_name="x",
        on_progress=lambda done, total: seen.append((done, total)),
    )
    size = archive.stat().st_size
    assert len(seen) >= 3 and all(total == size for _, total in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == size


def test_cancel_while_reading_stops_the_extraction(tmp_path: Path) -> None:
    """Cancellation, seen by the Source inside libarchive's read callback (the reader
    keeps the exception and raises it once libarchive gives up) or by the output between
    chunks, ends as cancelled, never as a damaged archive."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "r.bin").write_bytes(os.urandom(6 * MiB))
    archive = tmp_path / "r.7z"
    seven(["a", "-mx=0", str(archive), "r.bin"], src)
    cancel = threading.Event()
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(CancelledError):
        extract(
            archive,
            dest,
            fmt=ArchiveFormat.SEVEN_Z,
            config=ExtractConfig(),
            single_name="x",
            cancel=cancel,
            on_progress=lambda done, _total: cancel.set() if done >= 2 * MiB else None,
        )
    assert cancel.is_set()


# --- end to end -------------------------------------------------------------------------


def test_7z_and_rar_jobs_end_to_end(fault_server, make_daemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "docs").mkdir()
    (src / "docs" / "readme.txt").write_bytes(b"read me\n")
    (src / "tool.bin").write_bytes(os.urandom(200_000))
    archive = tmp_path / "pack.7z"
    seven(["a", str(archive), "."], src)
    fault_server.add("/pack.7z", archive.read_bytes())
    fault_server.add("/subdirs.rar", rar_file("rar5-subdirs.rar").read_bytes())
    d = make_daemon(workers=2)
    d.drop("seven", fault_server.url("/pack.7z"))
    d.drop("rar", fault_server.url("/subdirs.rar"))
    sc = d.wait_status("seven", timeout=60)
    assert sc["status"] == "ok", sc
    assert sc["archive"]["format"] == "7z" and sc["files"] == ["docs/readme.txt", "tool.bin"]
    assert (d.outbox / "seven" / "tool.bin").read_bytes() == (src / "tool.bin").read_bytes()
    sc = d.wait_status("rar", timeout=60)
    assert sc["status"] == "ok", sc
    assert sc["archive"]["format"] == "rar"
    ref = tmp_path / "ref"
    bsdtar_x(rar_file("rar5-subdirs.rar"), ref)
    assert tree(d.outbox / "rar") == tree(ref)


def test_7z_bomb_end_to_end(fault_server, make_daemon, zeros_7z: Path) -> None:
    fault_server.add("/zeros.7z", zeros_7z.read_bytes())
    d = make_daemon(extract={"max_total_size": 64 * MiB})
    d.drop("bomb", fault_server.url("/zeros.7z"))
    sc = d.wait_status("bomb", timeout=120)
    assert sc["status"] == "failed" and sc["error"]["code"] == "archive_limits", sc
    assert not (d.outbox / "bomb").exists()
    staging = d.work / "staging"
    assert not staging.exists() or not list(staging.iterdir())
