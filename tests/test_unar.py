"""archive.unar: the RAR archives libarchive 3.6.2 cannot decode (solid RAR 4, encrypted
RAR), through The Unarchiver's lsar/unar, on rarfile's real archives (tests/rarfiles.py),
RAR 4 archives patched into hostile ones, and lsar listings written by hand."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import struct
import subprocess
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest

from dropfetch.archive.formats import ArchiveFormat
from dropfetch.archive.libarc import LibarchiveCannot
from dropfetch.archive.rarhead import HEAD_BYTES, is_volume
from dropfetch.archive.source import Limits, Source
from dropfetch.archive.tree import Output
from dropfetch.archive.unar import (
    INSTALL_HINT,
    extract_unar,
    failure_message,
    write_entries,
)
from dropfetch.archive.unarlist import ListingReader, parse_listing
from dropfetch.archive.unarproc import ToolRun
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
from dropfetch.passwords import PASSWORD_NEEDED, PASSWORDS_WRONG
from rarfiles import rar_file

CANNOT = LibarchiveCannot("libarchive cannot decode this RAR.")
SECRET = "Sekr3t-not-this-one"  # noqa: S105 - a wrong password: must never show
PASSWORDS = [SECRET, "password"]  # rarfile's test archives' password comes second

# the brief's archives (libarchive cannot decode them), and more read through unar
FIXTURES = [
    "rar3-solid.rar",
    "unicode.rar",
    "rar3-comment-plain.rar",
    "rar3-comment-psw.rar",
    "rar5-psw.rar",
    "rar5-hpsw.rar",
    "rar5-psw-blake.rar",
    "rar5-blake.rar",
    "rar5-solid.rar",
    "rar5-hlink.rar",
    "rar3-subdirs.rar",
]
ENCRYPTED = ["rar3-comment-psw.rar", "rar3-comment-hpsw.rar", "rar5-psw.rar", "rar5-hpsw.rar"]


def run_unar(
    archive: Path,
    dest: Path,
    passwords: list[str] | None = None,
    config: ExtractConfig | None = None,
    cancel: threading.Event | None = None,
) -> Output:
    """extract_unar into the empty ``dest``, as extract.extract sets it up."""
    config = config or ExtractConfig()
    dest.mkdir(exist_ok=True)
    with archive.open("rb") as f:
        source = Source(f, archive.stat().st_size, cancel, None)
        out = Output(os.path.realpath(dest), config, Limits(config, source), cancel)
        extract_unar(archive, out, PASSWORDS if passwords is None else passwords, CANNOT)
        out.finish(dest.name)
    return out


def alone(archive: Path, tmp: Path) -> Path:
    """A copy of ``archive`` alone in a directory (unar takes rarfile's neighbouring
    test files for volumes of some of them)."""
    home = tmp / "alone"
    home.mkdir(parents=True)
    return Path(shutil.copy(archive, home / "a.rar"))


def reference(archive: Path, tmp: Path) -> Path:
    """``unar -o DIR``'s own extraction."""
    copy = alone(archive, tmp)
    dest = tmp / "ref"
    subprocess.run(
        ["unar", "-q", "-nr", "-D", "-p", "password", "-o", str(dest), str(copy)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return dest


def tree(root: Path) -> dict[str, Any]:
    """Every path under ``root``: bytes of files, ('link', target), or 'dir'."""
    seen: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            seen[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            seen[rel] = "dir"
        else:
            seen[rel] = path.read_bytes()
    return seen


def exp_names(archive: Path) -> set[str]:
    """The member names rarfile's ``.exp`` file lists."""
    text = Path(f"{archive}.exp").read_text("utf-8")
    lines = text.splitlines()
    return {line.split("name=", 1)[1].rstrip("/") for line in lines if line.startswith("  name=")}


# --- the real archives ---------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_equals_unar_and_the_exp_listing(name: str, tmp_path: Path) -> None:
    archive = rar_file(name)
    out = run_unar(archive, tmp_path / "out")
    got = tree(tmp_path / "out")
    expected = tree(reference(archive, tmp_path))
    if name == "rar5-hlink.rar":  # unar -o DIR makes hard links as symbolic links
        expected = {k: expected[v[1]] if isinstance(v, tuple) else v for k, v in expected.items()}
    assert got == expected
    assert got  # not two empty trees
    assert set(out.files) == {rel for rel, v in got.items() if isinstance(v, bytes)}
    assert exp_names(archive) <= set(got)


def test_solid_rar4_content(tmp_path: Path) -> None:
    run_unar(rar_file("rar3-solid.rar"), tmp_path / "out")
    one = (tmp_path / "out/stest1.txt").read_bytes()
    assert len(one) == 2048
    assert zlib.crc32(one) == 0xC5B7E6A2  # the CRC in the .exp file
    assert (tmp_path / "out/stest2.txt").read_bytes() == one


def test_hard_links_are_links_to_the_file(tmp_path: Path) -> None:
    run_unar(rar_file("rar5-hlink.rar"), tmp_path / "out")
    first = (tmp_path / "out/stest1.txt").stat()
    assert first.st_nlink == 3
    assert (tmp_path / "out/stest3.txt").stat().st_ino == first.st_ino


# --- passwords -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ENCRYPTED)
def test_no_password(name: str, tmp_path: Path) -> None:
    with pytest.raises(EncryptedArchiveError) as caught:
        run_unar(rar_file(name), tmp_path / "out", passwords=[])
    assert str(caught.value) == f"the RAR archive is encrypted: {PASSWORD_NEEDED}"
    assert "password option or extract.passwords_file" in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name", ["rar5-psw.rar", "rar5-hpsw.rar", "rar5-psw-blake.rar"])
def test_wrong_passwords(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EncryptedArchiveError) as caught:
        run_unar(rar_file(name), tmp_path / "out", passwords=[SECRET, "another-wrong"])
    assert PASSWORDS_WRONG in str(caught.value) and SECRET not in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []
    assert SECRET not in caplog.text
    assert "another-wrong" not in caplog.text


def test_rar4_encrypted_headers_cannot_be_opened_by_unar_1_10(tmp_path: Path) -> None:
    """unar 1.10.1 stops at rar3-comment-hpsw.rar's encrypted headers even with the
    right password ("Attempted to read more data than was available"): the job fails
    saying the password does not open it (README: what cannot be done)."""
    with pytest.raises(EncryptedArchiveError, match="do not open it"):
        run_unar(rar_file("rar3-comment-hpsw.rar"), tmp_path / "out")


def test_the_password_is_tried_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    run_unar(rar_file("rar5-psw.rar"), tmp_path / "out", passwords=[SECRET, "x", "password"])
    assert (tmp_path / "out/stest1.txt").stat().st_size == 2048
    assert SECRET not in caplog.text


def test_no_message_holds_a_password(tmp_path: Path) -> None:
    """A damaged encrypted archive fails as damaged; no password is in the message."""
    copy = alone(rar_file("rar5-psw-blake.rar"), tmp_path)
    copy.write_bytes(copy.read_bytes()[:-100])
    with pytest.raises(DropfetchError) as caught:
        run_unar(copy, tmp_path / "out", passwords=[SECRET, "password"])
    assert isinstance(caught.value, EncryptedArchiveError | CorruptArchiveError)
    assert SECRET not in str(caught.value)


def test_password_never_in_an_error_message_from_the_tools(tmp_path: Path) -> None:
    copy = alone(rar_file("rar5-hpsw.rar"), tmp_path)
    copy.write_bytes(copy.read_bytes()[:-300])
    with pytest.raises(DropfetchError) as caught:
        run_unar(copy, tmp_path / "out", passwords=["password"])
    assert "'password'" not in str(caught.value)
    assert "-p password" not in str(caught.value)


# --- damage, limits, cancel ----------------------------------------------------------


def test_truncated_solid_rar4_is_corrupt(tmp_path: Path) -> None:
    copy = alone(rar_file("rar3-solid.rar"), tmp_path)
    copy.write_bytes(copy.read_bytes()[:150])
    with pytest.raises(CorruptArchiveError, match="damaged or incomplete"):
        run_unar(copy, tmp_path / "out")


def test_a_checksum_failure_is_corrupt(tmp_path: Path) -> None:
    """unar -o - sends a member that fails its CRC as it is: dropfetch checks it."""
    copy = alone(rar_file("rar3-subdirs.rar"), tmp_path)
    data = copy.read_bytes()
    at = data.index(b"file2\n")
    copy.write_bytes(data[:at] + b"F" + data[at + 1 :])
    with pytest.raises(CorruptArchiveError, match="fails its checksum"):
        run_unar(copy, tmp_path / "out")


def test_a_damaged_blake2_member_is_corrupt(tmp_path: Path) -> None:
    """lsar -t says "Unknown" for a BLAKE2sp checksum: dropfetch checks it itself."""
    copy = alone(rar_file("rar5-blake.rar"), tmp_path)
    data = bytearray(copy.read_bytes())
    data[data.index(b"000\n001\n") + 3] ^= 0x01  # stest2 is stored
    copy.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match=r"fails its checksum \(BLAKE2sp\)"):
        run_unar(copy, tmp_path / "out")


def test_limits_count_members(tmp_path: Path) -> None:
    with pytest.raises(ArchiveLimitsError, match="max_files"):
        run_unar(rar_file("rar3-subdirs.rar"), tmp_path / "out", config=ExtractConfig(max_files=3))


def test_limits_count_bytes_written(tmp_path: Path) -> None:
    with pytest.raises(ArchiveLimitsError, match="max_total_size"):
        run_unar(
            rar_file("rar3-solid.rar"), tmp_path / "out", config=ExtractConfig(max_total_size=3000)
        )


def test_cancel(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        run_unar(rar_file("rar3-solid.rar"), tmp_path / "out", cancel=cancel)


def test_cancel_kills_the_tool(tmp_path: Path) -> None:
    cancel = threading.Event()

    def check() -> None:
        if cancel.is_set():
            raise CancelledError("cancelled")

    run = ToolRun(["/bin/sh", "-c", "echo started; exec sleep 600"], str(tmp_path), check)
    with run:
        assert run.read() == b"started\n"
        cancel.set()
        with pytest.raises(CancelledError):
            run.read()
    with pytest.raises(ProcessLookupError):
        os.kill(run.pid, 0)


def test_silence_times_out(tmp_path: Path) -> None:
    run = ToolRun(["/bin/sleep", "600"], str(tmp_path), lambda: None, silence=1.0)
    with pytest.raises(CorruptArchiveError, match="sent nothing for 1 s"), run:
        run.read()
    with pytest.raises(ProcessLookupError):
        os.kill(run.pid, 0)


def test_the_tools_get_a_clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPFETCH_SECRET_TOKEN", "abc")
    with ToolRun(["/usr/bin/env"], str(tmp_path), lambda: None) as run:
        lines = run.read().decode().splitlines()
        assert run.wait() == 0
    assert {line.split("=", 1)[0] for line in lines} == {"PATH", "HOME", "TMPDIR", "LC_ALL"}
    assert f"HOME={tmp_path}" in lines


def test_missing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UnsupportedArchiveError) as caught:
        run_unar(rar_file("rar3-solid.rar"), tmp_path / "out")
    message = str(caught.value)
    assert message.startswith(str(CANNOT).rstrip("."))
    assert "solid RAR 4 and encrypted RAR archives" in message
    assert message.endswith(f"which is not installed: {INSTALL_HINT}")
    assert INSTALL_HINT.startswith("install unar (Debian: ")


# --- hostile archives ----------------------------------------------------------------


def patch_rar4_name(data: bytes, old: bytes, new: bytes) -> bytes:
    """Rename the RAR 4 member ``old`` to ``new`` (same length), its header's CRC
    (the low 16 bits of CRC-32 from the type byte to the header's end) made right."""
    assert len(old) == len(new)
    out = bytearray(data)
    pos = 7  # after the marker block
    while pos + 7 <= len(out):
        kind, flags, size = out[pos + 2], *struct.unpack_from("<HH", out, pos + 3)
        add = struct.unpack_from("<I", out, pos + 7)[0] if flags & 0x8000 else 0
        if kind == 0x74:
            name_at = pos + 32 + (8 if flags & 0x100 else 0)
            name_size = struct.unpack_from("<H", out, pos + 26)[0]
            if bytes(out[name_at : name_at + name_size]) == old:
                out[name_at : name_at + name_size] = new
                struct.pack_into("<H", out, pos, zlib.crc32(out[pos + 2 : pos + size]) & 0xFFFF)
                return bytes(out)
        pos += size + add
    raise AssertionError(f"no member {old!r}")


def test_patched_rar4_is_read_as_patched(tmp_path: Path) -> None:
    """The helper makes valid archives: a harmless rename extracts."""
    copy = alone(rar_file("rar3-solid.rar"), tmp_path)
    copy.write_bytes(patch_rar4_name(copy.read_bytes(), b"stest2.txt", b"renamed.tx"))
    run_unar(copy, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["renamed.tx", "stest1.txt"]


@pytest.mark.parametrize(
    ("name", "old", "new", "why"),
    [
        ("rar3-solid.rar", b"stest2.txt", b"../evil.tx", "'..' in its path"),
        ("rar3-solid.rar", b"stest2.txt", b"/tmp/evil1", "absolute path"),
        ("rar3-comment-psw.rar", b"file2.txt", b"../f2.txt", "'..' in its path"),
        ("rar3-comment-psw.rar", b"file1.txt", b"/tmp/evil", "absolute path"),
    ],
)
def test_hostile_names_in_solid_and_encrypted_rar4(
    name: str, old: bytes, new: bytes, why: str, tmp_path: Path
) -> None:
    copy = alone(rar_file(name), tmp_path)
    copy.write_bytes(patch_rar4_name(copy.read_bytes(), old, new))
    with pytest.raises(UnsafeArchiveError, match=why):
        run_unar(copy, tmp_path / "out")
    assert not (tmp_path / "evil.tx").exists()
    assert not (tmp_path / "f2.txt").exists()


def test_escaping_symlinks(tmp_path: Path) -> None:
    for name in ("rar3-symlink-unix.rar", "rar5-symlink-unix.rar"):
        with pytest.raises(UnsafeArchiveError, match="points outside the output"):
            run_unar(alone(rar_file(name), tmp_path / name), tmp_path / name / "out")


def test_rar5_symlink_traversal(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="under 'up', which is a link"):
        run_unar(rar_file("rar5-evil-symlink-traversal.rar"), tmp_path / "out")
    assert not (tmp_path / "pwned.txt").exists()


# --- the listing mapped to the output (lsar listings written by hand) ----------------


def listing(*entries: dict[str, Any]) -> bytes:
    contents = [{"XADIndex": i, **e} for i, e in enumerate(entries)]
    return json.dumps({"lsarFormatVersion": 2, "lsarContents": contents}).encode()


def write(data: bytes, stream: bytes, tmp_path: Path, **config: Any) -> Output:
    cfg = ExtractConfig(**config)
    dest = tmp_path / "out"
    dest.mkdir()
    with io.BytesIO(stream) as f:
        out = Output(str(dest), cfg, Limits(cfg, Source(f, len(stream), None, None)), None)
        write_entries(parse_listing(data), io.BytesIO(stream).read, out)
        out.finish("t")
    return out


def f(name: str, size: int, **more: Any) -> dict[str, Any]:
    return {"XADFileName": name, "XADFileSize": size, **more}


def test_mapping_writes_each_kind(tmp_path: Path) -> None:
    data = listing(
        f("d", 0, XADIsDirectory=1, XADPosixPermissions=0o40750),
        f("d/a", 3, XADPosixPermissions=0o100755, RARCRC32=zlib.crc32(b"abc")),
        f("d/l4", 1, XADIsLink=1),  # RAR 4: the target is the data
        f("d/l5", 1, XADIsLink=1, XADLinkDestination="a"),  # RAR 5: listed, no data
        f("h", 3, XADIsLink=1, XADIsHardLink=1, XADLinkDestination="d/a"),
    )
    out = write(data, b"abca", tmp_path)
    root = tmp_path / "out"
    assert (root / "d/a").read_bytes() == b"abc"
    assert (root / "d/a").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "d/l4") == "a"
    assert os.readlink(root / "d/l5") == "a"
    assert (root / "h").stat().st_ino == (root / "d/a").stat().st_ino
    assert sorted(out.files) == ["d/a", "h"]


@pytest.mark.parametrize(
    ("entry", "stream", "error", "why"),
    [
        (f("../x", 1), b"x", UnsafeArchiveError, "'..' in its path"),
        (f("/etc/x", 1), b"x", UnsafeArchiveError, "absolute path"),
        (f("C:/x", 1), b"x", UnsafeArchiveError, "absolute path"),
        (f("l", 0, XADIsLink=1, XADLinkDestination="/etc"), b"", UnsafeArchiveError, "outside"),
        (f("l", 0, XADIsLink=1, XADLinkDestination="../.."), b"", UnsafeArchiveError, "outside"),
        (f("l", 4, XADIsLink=1), b"/etc", UnsafeArchiveError, "outside"),
        (
            f("h", 0, XADIsLink=1, XADIsHardLink=1, XADLinkDestination="../x"),
            b"",
            UnsafeArchiveError,
            "hard link",
        ),
        (f("h", 0, XADIsLink=1, XADIsHardLink=1), b"", UnsafeArchiveError, "hard link"),
        (f("dev", 0, XADIsCharacterDevice=1), b"", UnsafeArchiveError, "character device"),
        (f("fifo", 0, XADPosixPermissions=0o10644), b"", UnsafeArchiveError, "special file"),
        (f("a", 3), b"ab", CorruptArchiveError, "cut short"),
        (f("a", 3), b"abcd", CorruptArchiveError, "more data than its listing"),
        (f("a", 3, RARCRC32=1), b"abc", CorruptArchiveError, "fails its checksum"),
        (f("a", -1), b"", CorruptArchiveError, "XADFileSize"),
    ],
)
def test_mapping_refuses(
    entry: dict[str, Any], stream: bytes, error: type[Exception], why: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=why):
        write(listing(entry), stream, tmp_path)
    assert not (tmp_path / "x").exists()


def test_mapping_a_broken_listing() -> None:
    for data in (b"{", b'{"lsarContents": [], "lsarError": 2}', b"[]"):
        with pytest.raises(CorruptArchiveError):
            parse_listing(data)


def test_mapping_drops_the_solid_part_lists() -> None:
    parts = [{"Parts": [{"CRC32": 1, "InputLength": 9, "Offset": 64}]}] * 3
    entries = parse_listing(listing(f("a", 0, XADSolidObject=parts, RARCRC32=0))).entries
    assert [(e.name, e.kind, e.size, e.crc) for e in entries] == [("a", "file", 0, 0)]


def test_mapping_symlinks_skip(tmp_path: Path) -> None:
    data = listing(f("l4", 4, XADIsLink=1), f("a", 1))
    out = write(data, b"/etcA", tmp_path, symlinks="skip")
    assert (tmp_path / "out/a").read_bytes() == b"A"
    assert out.skipped_links == ["l4"]


def test_listing_skips_solid_part_lists_unparsed() -> None:
    """lsar's pretty-printed listing: the part lists of a solid RAR 4 (quadratic in the
    members) are skipped by their lines, never parsed; fed in any pieces."""
    out = subprocess.run(
        ["lsar", "-j", "-nr", str(rar_file("rar3-solid.rar"))], capture_output=True, check=True
    ).stdout
    assert b'"XADSolidObject": [' in out
    garbled = out.replace(b'"Parts": [', b'"Parts": [ not JSON at all')
    for data in (out, garbled):
        reader = ListingReader(10)
        for i in range(0, len(data), 7):
            reader.feed(data[i : i + 7])
        listed = reader.listing()
        assert [(e.name, e.size, e.crc) for e in listed.entries] == [
            ("stest1.txt", 2048, 0xC5B7E6A2),
            ("stest2.txt", 2048, 0xC5B7E6A2),
        ]
        assert listed.solid
    with pytest.raises(CorruptArchiveError):
        parse_listing(out.replace(b'"XADFileName"', b'"XADFileName" !', 1))


def test_listing_counts_members_as_it_reads() -> None:
    data = listing(*(f(f"m{i}", 0) for i in range(5)))
    pretty = json.dumps(json.loads(data), indent=2).encode()
    with pytest.raises(ArchiveLimitsError, match="more than 3 members"):
        ListingReader(3).feed(pretty)
    assert len(parse_listing(pretty, 5).entries) == 5


def test_extract_hands_what_libarchive_cannot_to_unar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """extract.extract: libarchive's header pass says it cannot (before writing
    anything), unar does."""
    import dropfetch.extract as extract_module

    handed: list[str] = []
    real_unar = extract_unar

    def spy(archive: Path, out: Any, passwords: Any, cannot: LibarchiveCannot) -> None:
        handed.append(str(cannot))
        assert not out.files and out.dirs <= {""}  # nothing written before the handover
        real_unar(archive, out, passwords, cannot)

    monkeypatch.setattr(extract_module, "extract_unar", spy)
    archive = rar_file("rar5-psw.rar")
    assert extract_module.sniff(archive) is ArchiveFormat.RAR
    dest = tmp_path / "out"
    dest.mkdir()
    files = extract_module.extract(
        archive,
        dest,
        fmt=ArchiveFormat.RAR,
        config=ExtractConfig(),
        single_name="x",
        passwords=[SECRET, "password"],
    )
    assert len(handed) == 1 and "password" not in handed[0].replace("passwords", "")
    assert files == ["stest1.txt", "stest2.txt"]
    assert (dest / "stest2.txt").read_bytes() == (dest / "stest1.txt").read_bytes()


def test_damage_behind_a_right_rar5_password_is_corrupt(tmp_path: Path) -> None:
    """RAR 5 checks the password first: a damaged member after it is damage, not a
    wrong password (its CRC is keyed by the password: lsar -t checks it)."""
    copy = alone(rar_file("rar5-psw.rar"), tmp_path)
    data = bytearray(copy.read_bytes())
    data[200] ^= 0x01  # in stest1's encrypted data
    copy.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match=r"lsar -t failed \('stest1.txt... Unpacking"):
        run_unar(copy, tmp_path / "out", passwords=[SECRET, "password"])
    assert list((tmp_path / "out").iterdir()) == []


def test_failure_message_hides_every_password() -> None:
    said = "x.txt... Failed! (hunter2 and hunter22)\n1 passed, 1 failed.\n"
    message = failure_message("lsar -t", 1, said, ["hunter2", "", "hunter22"])
    assert "hunter2" not in message
    assert "(*** and ***)" in message
    assert failure_message("unar", 3, "", ["x"]).endswith(
        "unar failed (exit status 3); download it again or check the source"
    )
    escaped = failure_message("unar", 1, "name\x1b[2J\n", [])
    assert "\x1b" not in escaped
    assert "name\\x1b[2J" in escaped


@pytest.mark.parametrize(
    "name",
    ["rar3-vols.part1.rar", "rar3-vols.part2.rar", "rar5-vols.part1.rar", "rar5-vols.part3.rar"],
)
def test_a_volume_of_a_multi_volume_rar_is_unsupported(name: str, tmp_path: Path) -> None:
    """lsar lists rar5-vols.part1.rar alone as empty, and unar -o DIR makes nothing: an
    empty output would be published as a success."""
    archive = alone(rar_file(name), tmp_path)
    assert is_volume(archive.read_bytes()[:HEAD_BYTES])
    with pytest.raises(UnsupportedArchiveError, match="one volume of a multi-volume RAR"):
        run_unar(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_single_archives_are_no_volumes() -> None:
    singles = [*FIXTURES, *ENCRYPTED, "rar5-symlink-unix.rar", "rar15-comment.rar"]
    for name in singles:
        assert not is_volume(rar_file(name).read_bytes()[:HEAD_BYTES]), name
    assert not is_volume(b"Rar!\x1a\x07\x01\x00" + b"\xff" * 20)  # a vint that never ends
    assert not is_volume(b"Rar!\x1a\x07\x00\x00")
    assert not is_volume(b"PK\x03\x04")


def test_the_tools_directory_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    run_unar(rar_file("rar5-psw.rar"), tmp_path / "ok")
    with pytest.raises(EncryptedArchiveError):
        run_unar(rar_file("rar5-psw.rar"), tmp_path / "failed", passwords=[SECRET])
    assert list(temp.iterdir()) == []
