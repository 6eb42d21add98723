"""Passwords (issue 14): the job's ``password`` then ``extract.passwords_file``; encrypted
7z (AES, headers too) through py7zr; encrypted zip (ZipCrypto, AES) through libarchive;
and no password anywhere it should not be."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from dropfetch.archive.libarc import LibarchiveCannot
from dropfetch.archive.source import Limits, Source
from dropfetch.archive.tree import Output
from dropfetch.config import ConfigError, ExtractConfig, config_from_mapping
from dropfetch.errors import DropfetchError, IOFailureError
from dropfetch.extract import ArchiveFormat, extract, sniff
from dropfetch.passwords import (
    MAX_PASSWORDS_FILE,
    PASSWORD_NEEDED,
    PASSWORDS_WRONG,
    job_passwords,
    parse_passwords,
    passwords_for,
    read_passwords_file,
)
from dropfetch.submit import job_content
from harness import DEBUG_LOG, wait_for

RIGHT = "Right-pässword 1"  # a space and a non-ASCII letter: both must count
ZIP_RIGHT = "Right password 2"  # 7-Zip's zip AES takes ASCII passwords only
WRONG = "wrong-SECRET-42"
FROM_FILE = "file-SECRET-77"
WEB = Path(__file__).resolve().parents[1] / "daemon" / "dropfetch" / "web"


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (`make test-deps` installs it, as root)")


def run_tool(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env, timeout=300)


def tree_of(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: a file's bytes, a link's target, a directory."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_bytes()
    return out


def source_tree(base: Path) -> Path:
    """A small tree: text, random bytes, an empty file, a subdirectory, a link."""
    src = base / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("hello, encrypted world\n" * 500)
    (src / "sub" / "r.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "deep" / "empty").write_bytes(b"")
    (src / "sub" / "x.sh").write_text("#!/bin/sh\n")
    (src / "sub" / "x.sh").chmod(0o750)
    (src / "link").symlink_to("a.txt")
    return src


def seven_zip(base: Path, *args: str, name: str = "a.7z") -> Path:
    """``7zz a`` of :func:`source_tree` (links kept as links) with ``args``."""
    need("7zz")
    src = source_tree(base) if not (base / "src").exists() else base / "src"
    archive = base / name
    run_tool(["7zz", "a", "-bd", "-snl", *args, str(archive), "."], src)
    return archive


def reference(base: Path, archive: Path, password: str) -> dict[str, Any]:
    """What ``7zz x`` makes of ``archive``."""
    out = base / "ref"
    run_tool(["7zz", "x", "-bd", "-y", "-snld", f"-p{password}", f"-o{out}", str(archive)], base)
    return tree_of(out)


def py7zr_extract(
    archive: Path, dest: Path, passwords: tuple[str, ...], config: ExtractConfig | None = None
) -> list[str]:
    """archive.sevenzip as extract.py calls it after libarchive's refusal."""
    from dropfetch.archive.sevenzip import extract_py7zr

    dest.mkdir()
    cfg = config or ExtractConfig()
    with archive.open("rb") as f:
        source = Source(f, archive.stat().st_size, None, None)
        out = Output(os.path.realpath(dest), cfg, Limits(cfg, source), None)
        extract_py7zr(archive, out, passwords, LibarchiveCannot("libarchive cannot decrypt it"))
        out.finish(dest.name)
    return sorted(out.files)


def py7zr_fails(archive: Path, dest: Path, passwords: tuple[str, ...], **config: Any) -> Any:
    with pytest.raises(DropfetchError) as info:
        py7zr_extract(archive, dest, passwords, ExtractConfig(**config))
    return info.value


# --- 1. where the passwords come from ------------------------------------------------------


def test_passwords_file_lines(tmp_path: Path) -> None:
    data = "\ufefffirst\r\n\n  \nwith  inner space \r\nlast-no-newline".encode()
    assert parse_passwords(data, tmp_path / "p") == [
        "first",
        "with  inner space ",
        "last-no-newline",
    ]
    assert parse_passwords(b"", tmp_path / "p") == []
    assert parse_passwords(b"\r\n\n", tmp_path / "p") == []


def test_passwords_file_not_utf8_names_file_and_line_not_text(tmp_path: Path) -> None:
    with pytest.raises(IOFailureError) as info:
        parse_passwords(b"ok\nSECRET\xff\xfe\n", tmp_path / "pw.txt")
    assert str(tmp_path / "pw.txt") in info.value.message and "line 2" in info.value.message
    assert "SECRET" not in info.value.message and info.value.code == "io_error"


def test_job_passwords_order_each_once() -> None:
    assert job_passwords("job", ["a", "job", "b", "a"]) == ("job", "a", "b")
    assert job_passwords(None, ["a"]) == ("a",)
    assert job_passwords(None, []) == ()


def test_passwords_file_is_read_at_each_unpacking(tmp_path: Path) -> None:
    path = tmp_path / "pw.txt"
    path.write_text("one\n")
    assert passwords_for(ArchiveFormat.ZIP, "job", path) == ("job", "one")
    path.write_text("two\nthree\n")  # changed: counts at once
    assert passwords_for(ArchiveFormat.SEVEN_Z, None, path) == ("two", "three")
    assert passwords_for(ArchiveFormat.RAR, "job", None) == ("job",)
    path.unlink()
    with pytest.raises(IOFailureError) as info:
        passwords_for(ArchiveFormat.RAR, "job", path)
    assert str(path) in info.value.message and "job" not in info.value.message
    for never in (ArchiveFormat.TAR_GZ, ArchiveFormat.GZ):  # never encrypted: not even read
        assert passwords_for(never, "job", path) == ()


def test_passwords_file_unreadable_or_too_large(tmp_path: Path) -> None:
    with pytest.raises(IOFailureError) as info:
        read_passwords_file(tmp_path)  # a directory
    assert str(tmp_path) in info.value.message
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_PASSWORDS_FILE + 1))
    with pytest.raises(IOFailureError, match="larger than"):
        read_passwords_file(big)


def test_passwords_file_checked_at_load(tmp_path: Path) -> None:
    good = tmp_path / "pw.txt"
    good.write_text(f"{FROM_FILE}\n")
    cfg = config_from_mapping({"extract": {"passwords_file": str(good)}})
    assert cfg.extract.passwords_file == good
    for bad in (tmp_path / "missing", tmp_path):
        with pytest.raises(ConfigError) as info:
            config_from_mapping({"extract": {"passwords_file": str(bad)}}, where="cfg.yaml")
        assert "cfg.yaml: key extract.passwords_file" in str(info.value) and str(bad) in str(
            info.value
        )
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config_from_mapping({"extract": {"passwords_file": str(latin)}})


def test_submit_takes_a_password(tmp_path: Path) -> None:
    from dropfetch.cli import main
    from dropfetch.jobfile import parse_job

    assert parse_job(job_content("https://example.org/a.7z", password=RIGHT)).password == RIGHT
    inbox = tmp_path / "inbox"
    assert (
        main(["submit", "https://example.org/b.7z", "--inbox", str(inbox), "--password", RIGHT])
        == 0
    )
    spec = parse_job((inbox / "b.7z.url").read_bytes())
    assert spec.password == RIGHT and RIGHT not in repr(spec)


def test_web_form_has_a_password_field() -> None:
    html = (WEB / "index.html").read_text()
    assert '<input id="opt-password" name="password" type="password"' in html
    assert 'opts.password = $("opt-password").value' in (WEB / "app.js").read_text()


# --- 2. encrypted 7z -------------------------------------------------------------------------


@pytest.mark.parametrize("headers", ["data only", "headers too"])
def test_encrypted_7z_right_wrong_none(tmp_path: Path, headers: str) -> None:
    extra = ["-mhe=on"] if headers == "headers too" else []
    archive = seven_zip(tmp_path, f"-p{RIGHT}", *extra)
    files = py7zr_extract(archive, tmp_path / "ok", (WRONG, RIGHT))
    assert files == ["a.txt", "sub/deep/empty", "sub/r.bin", "sub/x.sh"]
    assert tree_of(tmp_path / "ok") == reference(tmp_path, archive, RIGHT)
    assert (tmp_path / "ok" / "sub" / "x.sh").stat().st_mode & 0o777 == 0o750
    none = py7zr_fails(archive, tmp_path / "none", ())
    assert none.code == "encrypted_archive" and PASSWORD_NEEDED in none.message
    wrong = py7zr_fails(archive, tmp_path / "wrong", (WRONG, FROM_FILE))
    assert wrong.code == "encrypted_archive" and PASSWORDS_WRONG in wrong.message
    assert WRONG not in wrong.message and FROM_FILE not in wrong.message


@pytest.mark.parametrize("args", [["-ms=off"], ["-m0=BZip2"], ["-m0=Copy"], ["-m0=PPMd"]])
def test_encrypted_7z_methods_and_blocks(tmp_path: Path, args: list[str]) -> None:
    archive = seven_zip(tmp_path, f"-p{RIGHT}", "-mhe=on", *args)
    py7zr_extract(archive, tmp_path / "ok", (RIGHT,))
    assert tree_of(tmp_path / "ok") == reference(tmp_path, archive, RIGHT)


@pytest.mark.parametrize("method", ["LZMA", "LZMA2"])
def test_wrong_password_found_in_a_block_larger_than_the_probe(tmp_path: Path, method: str) -> None:
    from dropfetch.archive.sevenzip import PROBE

    need("7zz")
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(PROBE) + bytes(2 * PROBE) + os.urandom(PROBE))
    archive = tmp_path / "big.7z"
    run_tool(["7zz", "a", "-bd", f"-m0={method}", f"-p{RIGHT}", str(archive), "big"], src)
    err = py7zr_fails(archive, tmp_path / "wrong", (WRONG,))
    assert err.code == "encrypted_archive" and PASSWORDS_WRONG in err.message
    assert py7zr_extract(archive, tmp_path / "ok", (WRONG, RIGHT)) == ["big"]
    assert (tmp_path / "ok" / "big").read_bytes() == (src / "big").read_bytes()


def test_encrypted_7z_unpack_progress_goes_through_extract(tmp_path: Path) -> None:
    """extract(): libarchive's header pass refuses, py7zr reads through extract's
    reader, so the unpack progress moves up to the archive's size."""
    from dropfetch.extract import extract, sniff

    need("7zz")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"r{i}.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    archive = tmp_path / "p.7z"
    run_tool(["7zz", "a", "-bd", "-mx=1", f"-p{RIGHT}", "-mhe=on", str(archive), "."], src)
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "out"
    dest.mkdir()
    files = extract(
        archive,
        dest,
        fmt=sniff(archive),
        config=ExtractConfig(),
        single_name="x",
        on_progress=lambda done, total: seen.append((done, total)),
        passwords=(WRONG, RIGHT),
    )
    assert files == [f"r{i}.bin" for i in range(4)]
    size = archive.stat().st_size
    assert len({done for done, _ in seen}) > 2 and seen[-1] == (size, size), seen[-5:]
    dones = [done for done, _ in seen]
    assert dones == sorted(dones)  # never backwards (the headers at the end are read apart)


def test_unencrypted_7z_through_py7zr_needs_no_password(tmp_path: Path) -> None:
    archive = seven_zip(tmp_path)
    py7zr_extract(archive, tmp_path / "ok", ())
    assert tree_of(tmp_path / "ok") == reference(tmp_path, archive, "")


def test_corrupt_unencrypted_header_is_corrupt_not_a_password_matter(tmp_path: Path) -> None:
    archive = seven_zip(tmp_path, f"-p{RIGHT}")  # data encrypted, the header not
    data = bytearray(archive.read_bytes())
    data[-10] ^= 0xFF  # in the header at the end: its CRC no longer matches
    archive.write_bytes(bytes(data))
    err = py7zr_fails(archive, tmp_path / "out", (RIGHT,))
    assert err.code == "corrupt_archive", err


def test_method_py7zr_cannot_decode_either(tmp_path: Path) -> None:
    archive = seven_zip(tmp_path, f"-p{RIGHT}", "-mf=BCJ2")
    err = py7zr_fails(archive, tmp_path / "out", (RIGHT,))
    assert err.code == "unsupported_archive" and "libarchive cannot decrypt it" in err.message


def test_encrypted_7z_entries_pass_dropfetch_checks(tmp_path: Path) -> None:
    need("7zz")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    (src / "up").symlink_to("../../outside")
    archive = tmp_path / "esc.7z"
    run_tool(["7zz", "a", "-bd", "-snl", f"-p{RIGHT}", "-mhe=on", str(archive), "f", "up"], src)
    err = py7zr_fails(archive, tmp_path / "out", (RIGHT,))
    assert err.code == "unsafe_archive" and "points outside" in err.message
    absolute = tmp_path / "abs.7z"
    run_tool(["7zz", "a", "-bd", "-spf", f"-p{RIGHT}", str(absolute), str(src / "f")], src)
    err = py7zr_fails(absolute, tmp_path / "out2", (RIGHT,))
    assert err.code == "unsafe_archive" and "absolute path" in err.message


def test_encrypted_7z_limits_count_bytes_written(tmp_path: Path) -> None:
    need("7zz")
    src = tmp_path / "src"
    src.mkdir()
    (src / "zeros").write_bytes(bytes(8 * 1024 * 1024))
    archive = tmp_path / "bomb.7z"
    run_tool(["7zz", "a", "-bd", f"-p{RIGHT}", "-mhe=on", str(archive), "zeros"], src)
    err = py7zr_fails(archive, tmp_path / "out", (RIGHT,), max_total_size=1024 * 1024)
    assert err.code == "archive_limits"
    err = py7zr_fails(archive, tmp_path / "out2", (RIGHT,), max_files=0)
    assert err.code == "archive_limits"


# --- 3. encrypted zip --------------------------------------------------------------------------


def zip_crypto(base: Path, password: str) -> Path:
    need("zip")
    src = source_tree(base)
    archive = base / "z.zip"
    run_tool(["zip", "-q", "-r", "-P", password, str(archive), "."], src)  # the link's file
    return archive


def zip_aes(base: Path, password: str) -> Path:
    need("7zz")
    src = source_tree(base)
    archive = base / "z.zip"
    run_tool(["7zz", "a", "-bd", "-tzip", "-mem=AES256", f"-p{password}", str(archive), "."], src)
    assert zipfile.ZipFile(archive).infolist()[0].compress_type == 99
    return archive


ZIPS = {"zipcrypto": zip_crypto, "aes": zip_aes}


def unpack(archive: Path, dest: Path, passwords: tuple[str, ...]) -> list[str]:
    dest.mkdir()
    fmt = sniff(archive)
    return extract(
        archive, dest, fmt=fmt, config=ExtractConfig(), single_name="x", passwords=passwords
    )


@pytest.mark.parametrize("how", sorted(ZIPS))
def test_encrypted_zip_without_password(tmp_path: Path, how: str) -> None:
    archive = ZIPS[how](tmp_path, ZIP_RIGHT)
    with pytest.raises(DropfetchError) as info:
        unpack(archive, tmp_path / "out", ())
    assert info.value.code == "encrypted_archive" and PASSWORD_NEEDED in info.value.message
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("how", sorted(ZIPS))
def test_encrypted_zip_goes_to_libarchive_before_anything_is_written(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dropfetch.extract

    archive = ZIPS[how](tmp_path, ZIP_RIGHT)
    calls: list[tuple[Any, ...]] = []

    def spy(path: Path, fmt: ArchiveFormat, out: Output, passwords: tuple[str, ...]) -> None:
        calls.append((path, fmt, tuple(passwords), os.listdir(out.root), out.limits.members))

    monkeypatch.setattr(dropfetch.extract, "extract_libarchive", spy)
    unpack(archive, tmp_path / "out", (WRONG, ZIP_RIGHT))
    assert calls == [(archive, ArchiveFormat.ZIP, (WRONG, ZIP_RIGHT), [], 0)]


@pytest.mark.parametrize("how", sorted(ZIPS))
def test_encrypted_zip_right_and_wrong_password(tmp_path: Path, how: str) -> None:
    """Needs the libarchive lane's extract_libarchive (passphrases on zip)."""
    archive = ZIPS[how](tmp_path, ZIP_RIGHT)
    files = unpack(archive, tmp_path / "ok", (WRONG, ZIP_RIGHT))
    need("7zz")
    expected = reference(tmp_path, archive, ZIP_RIGHT)  # 7zz -tzip stored the link's file
    assert files == sorted(k for k, v in expected.items() if isinstance(v, bytes))
    assert tree_of(tmp_path / "ok") == expected
    with pytest.raises(DropfetchError) as info:
        unpack(archive, tmp_path / "wrong", (WRONG,))
    assert info.value.code == "encrypted_archive" and WRONG not in info.value.message


def test_encrypted_link_in_zip_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """libarchive (bsdtar too) gives an encrypted link's target undecrypted."""
    need("zip")
    src = source_tree(tmp_path)
    archive = tmp_path / "links.zip"
    run_tool(["zip", "-q", "-r", "-y", "-P", ZIP_RIGHT, str(archive), "."], src)
    for passwords in ((), (ZIP_RIGHT,)):
        dest = tmp_path / f"out{len(passwords)}"
        with pytest.raises(DropfetchError) as info:
            unpack(archive, dest, passwords)
        assert info.value.code == "unsupported_archive" and "'link'" in info.value.message
        assert not any(dest.iterdir())


def test_unencrypted_zip_ignores_passwords(tmp_path: Path) -> None:
    archive = tmp_path / "p.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("f.txt", "plain")
    assert unpack(archive, tmp_path / "out", (RIGHT,)) == ["f.txt"]


# --- 4. secrecy: a real daemon ---------------------------------------------------------------


def _get(url: str) -> str:
    try:
        resp = requests.get(url, timeout=30)
    except requests.RequestException:
        return ""
    return resp.text if resp.status_code == 200 else ""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_passwords_appear_nowhere(
    fault_server: Any, make_daemon: Any, tmp_path: Path, log_format: str
) -> None:
    from test_frontend import free_port

    archive = seven_zip(tmp_path / "a", f"-p{RIGHT}", "-mhe=on")
    other = seven_zip(tmp_path / "b", f"-p{FROM_FILE}", name="b.7z")
    fault_server.add("/a.7z", archive.read_bytes())
    fault_server.add("/b.7z", other.read_bytes())
    config: dict[str, Any] = {"log": {**DEBUG_LOG["log"], "format": log_format}}
    if log_format == "json":  # the file's passwords too, and a job with none but the file's
        pw_file = tmp_path / "passwords.txt"
        pw_file.write_text(f"\ufeff{WRONG}-2\r\n\r\n{FROM_FILE}\r\n")
        config["extract"] = {"passwords_file": str(pw_file)}
    port = free_port()
    (tmp_path / "d").mkdir()
    d = make_daemon(base=tmp_path / "d", http={"listen": f"127.0.0.1:{port}"}, **config)
    jobs = {
        "right": ("", "ok"),  # through POST /archive
        "wrong": (f"url: {fault_server.url('/a.7z')}\npassword: {WRONG}\n", "failed"),
        "none": (f"url: {fault_server.url('/a.7z')}\n", "failed"),
    }
    if log_format == "json":
        jobs["file"] = (f"url: {fault_server.url('/b.7z')}\n", "ok")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(base + "/archive"), message="the HTTP front end")
    posted = requests.post(
        base + "/archive",
        json={"url": fault_server.url("/a.7z"), "name": "right", "password": RIGHT},
        timeout=30,
    )
    bad = requests.post(
        base + "/archive",
        json={"url": fault_server.url("/a.7z"), "name": "bad", "password": f"{RIGHT}\nx"},
        timeout=30,
    )
    assert posted.status_code == 201 and bad.status_code == 400, (posted.text, bad.text)
    for name, (content, _) in jobs.items():
        if content:
            d.drop(name, content)
    sidecars = {name: d.wait_status(name) for name in jobs}
    for name, (_, status) in jobs.items():
        assert sidecars[name]["status"] == status, (name, sidecars[name])
    assert sorted(d.output_files("right")) == ["a.txt", "sub/deep/empty", "sub/r.bin", "sub/x.sh"]
    wrong, none = sidecars["wrong"]["error"], sidecars["none"]["error"]
    assert wrong["code"] == none["code"] == "encrypted_archive"
    assert PASSWORDS_WRONG in wrong["message"]
    assert (PASSWORDS_WRONG if log_format == "json" else PASSWORD_NEEDED) in none["message"]
    answers = [posted.text, bad.text] + [
        _get(base + p) for p in ("/archive", "/archive/right", "/archive/wrong", "/metrics")
    ]
    assert all(answers[2:])
    views = [
        subprocess.run(
            [sys.executable, "-m", "dropfetch", "status", *mode, "--inbox", str(d.inbox)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for mode in ([], ["--json"])
    ]
    d.stop()
    places = {"log": d.log(), "http": "".join(answers), "views": "".join(views)}
    assert "DEBUG" in places["log"] or '"debug"' in places["log"].lower()
    for root in (d.inbox, d.outbox, d.work):
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink() and p.suffix != ".url":  # job files hold them
                places[str(p)] = p.read_bytes().decode("utf-8", "replace")
    assert any(k.endswith(".status.json") for k in places)
    for where, text in places.items():
        for secret in (RIGHT, WRONG, FROM_FILE):
            assert secret not in text, where
