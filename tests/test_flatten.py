"""extract.flatten (issue 14): an archive whose members all sit under one top-level
directory publishes that directory's content as outbox/NAME.

The decision as pure functions, real trees extracted from archives made by real tools
(GNU tar, bsdtar, zip, git archive), the streaming path, and the daemon end to end
(with a reload switching the key).
"""

from __future__ import annotations

import gzip
import logging
import os
import signal
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from dropfetch.archive.flatten import lift, link_leaving, single_top
from dropfetch.config import ExtractConfig
from dropfetch.download import Transfer
from dropfetch.errors import DropfetchError
from dropfetch.extract import ArchiveFormat, extract, sniff
from dropfetch.stream import TarStream
from harness import Daemon, wait_for
from hostile import T, tar_bytes
from rarfiles import rar_file

FLAT = ExtractConfig(flatten=True)
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_SYSTEM": os.devnull,
    "LC_ALL": "C.UTF-8",
}


def run(args: list[str], cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=GIT_ENV)


def unpack(archive: Path, dest: Path, config: ExtractConfig = FLAT) -> list[str]:
    dest.mkdir(parents=True)
    return extract(archive, dest, fmt=sniff(archive), config=config, single_name="single")


def listing(root: Path) -> dict[str, str]:
    """Every entry under ``root``: 'dir', 'link:TARGET' or the file's text."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_text()
    return out


# -- the decision (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "dirs", "top"),
    [
        (["", "tool-1.2", "tool-1.2/README", "tool-1.2/src/a.c"], {"", "tool-1.2"}, "tool-1.2"),
        (["tool-1.2/README"], {"", "tool-1.2"}, "tool-1.2"),  # the directory implied
        (["tool-1.2"], {"", "tool-1.2"}, "tool-1.2"),  # the top directory alone: empty output
        (["", "tool-1.2", "tool-1.2/README", "LICENSE"], {"", "tool-1.2"}, None),
        (["a", "b/c"], {"", "b"}, None),
        (["README"], {""}, None),  # a single file
        (["current"], {""}, None),  # a single link (to a directory or not)
        ([""], {""}, None),  # nothing but a ./ entry
        ([], {""}, None),
    ],
)
def test_single_top(members: list[str], dirs: set[str], top: str | None) -> None:
    assert single_top(members, dirs) == top


@pytest.mark.parametrize(
    ("links", "leaving"),
    [
        ({"top/sub/l": "../README"}, None),  # relative, inside: moves with the tree
        ({"top/l": "sub/x", "top/sub/m": "."}, None),
        ({"top/up": "../top/README"}, "up"),  # climbs to the top level and back
        ({"top/a/up": "../../top/a/b"}, "a/up"),
        ({"top/s": ".", "top/l": "s/../x"}, "l"),  # climbs through a link to top
        ({"top/l": "m", "top/m": "../top"}, "l"),  # through a link that climbs
    ],
)
def test_link_leaving(links: dict[str, str], leaving: str | None) -> None:
    assert link_leaving(links, "top") == leaving


def test_lift_keeps_the_top_directorys_mode_and_time(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "top" / "sub").mkdir(parents=True)
    (root / "top" / "f").write_text("f")
    os.chmod(root / "top", 0o700)
    os.utime(root / "top", (1_600_000_000, 1_600_000_000))
    lift(str(root), "top")
    assert listing(root) == {"f": "f", "sub": "dir"}
    st = root.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_mtime == 1_600_000_000
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing left beside it


def test_lift_fails_cleanly_when_the_root_is_not_empty(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "top").mkdir(parents=True)
    (root / "other").write_text("x")
    with pytest.raises(DropfetchError, match="flattening top"):
        lift(str(root), "top")
    assert sorted(os.listdir(root)) == ["other", "top"]  # put back for the caller's cleanup
    assert sorted(os.listdir(tmp_path)) == ["out"]


# -- real trees from real tools -----------------------------------------------------------


def _source_tree(base: Path, top: str = "tool-1.2") -> Path:
    """base/top: README, src/main.c, a relative link and a hard link inside."""
    t = base / top
    (t / "src").mkdir(parents=True)
    (t / "README").write_text("readme\n")
    (t / "src" / "main.c").write_text("int main;\n")
    os.symlink("../README", t / "src" / "README.link")
    os.link(t / "README", t / "README.hard")
    os.chmod(t, 0o700)
    os.utime(t, (1_650_000_000, 1_650_000_000))
    return t


FLAT_TREE = {
    "README": "readme\n",
    "README.hard": "readme\n",
    "src": "dir",
    "src/README.link": "link:../README",
    "src/main.c": "int main;\n",
}
FLAT_FILES = ["README", "README.hard", "src/main.c"]


def gnu_tar(base: Path) -> Path:
    _source_tree(base / "src")
    run(["tar", "-czf", str(base / "tool-1.2.tar.gz"), "tool-1.2"], base / "src")
    return base / "tool-1.2.tar.gz"


def bsdtar_dot(base: Path) -> Path:
    """bsdtar of '.': every name starts with ./ (and a ./ entry first)."""
    _source_tree(base / "src")
    run(["bsdtar", "-czf", str(base / "tool-1.2.tgz"), "."], base / "src")
    return base / "tool-1.2.tgz"


def zip_r(base: Path) -> Path:
    _source_tree(base / "src")
    run(["zip", "-qry", str(base / "tool-1.2.zip"), "tool-1.2"], base / "src")
    return base / "tool-1.2.zip"


def git_archive(base: Path) -> Path:
    """GitHub's kind of tarball: a pax global header (the commit id), then repo-abc/..."""
    repo = base / "repo"
    repo.mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    (repo / "src").mkdir()
    (repo / "README").write_text("readme\n")
    (repo / "src" / "main.c").write_text("int main;\n")
    os.symlink("../README", repo / "src" / "README.link")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "one"], repo)
    out = base / "repo-abc.tar.gz"
    run(["git", "archive", "--format=tar.gz", "--prefix=repo-abc/", "-o", str(out), "HEAD"], repo)
    return out


GIT_TREE = {k: v for k, v in FLAT_TREE.items() if k != "README.hard"}
MAKERS = {
    "gnutar": (gnu_tar, "tool-1.2", FLAT_TREE),
    "bsdtar": (bsdtar_dot, "tool-1.2", FLAT_TREE),
    "zip": (zip_r, "tool-1.2", FLAT_TREE),  # zip stores the hard link as a second file
    "git": (git_archive, "repo-abc", GIT_TREE),
}


def _need(tool: str) -> None:
    if subprocess.run(["which", tool], capture_output=True).returncode:
        pytest.skip(f"{tool} not installed")


@pytest.mark.parametrize("maker", sorted(MAKERS))
def test_real_archives_flatten(tmp_path: Path, maker: str) -> None:
    make, top, expected = MAKERS[maker]
    _need({"gnutar": "tar", "bsdtar": "bsdtar", "zip": "zip", "git": "git"}[maker])
    archive = make(tmp_path)
    if maker == "git":
        assert b"pax_global_header" in gzip.decompress(archive.read_bytes())[:512]
    files = unpack(archive, tmp_path / "flat" / "out")
    assert listing(tmp_path / "flat" / "out") == expected
    assert files == sorted(
        k for k, v in expected.items() if v != "dir" and not v.startswith("link:")
    )
    assert (tmp_path / "flat" / "out" / "src" / "README.link").read_text() == "readme\n"
    assert sorted(os.listdir(tmp_path / "flat")) == ["out"]
    if maker != "git":  # git archive writes its own modes
        assert stat.S_IMODE((tmp_path / "flat" / "out").stat().st_mode) == 0o700
    # flatten false: the same archive keeps its top directory
    nested = unpack(archive, tmp_path / "nested", ExtractConfig())
    assert nested == [f"{top}/{f}" for f in files]
    assert listing(tmp_path / "nested" / top) == expected


def _seven_z(base: Path) -> tuple[Path, Path]:
    _source_tree(base / "src")
    archive = base / "tool-1.2.7z"
    run(["7zz", "a", "-snl", "-bd", str(archive), "tool-1.2"], base / "src")
    run(["7zz", "x", "-snld", "-bd", f"-o{base / 'ref'}", str(archive)], base)
    return archive, base / "ref" / "tool-1.2"


def _rar(base: Path) -> tuple[Path, Path]:
    archive = rar_file("rar3-subdirs.rar")  # sub/dir1/file1.txt, sub/empty/, ...
    run(["unar", "-q", "-o", str(base / "ref"), str(archive)], base)
    return archive, base / "ref" / "sub"


@pytest.mark.parametrize(("make", "tool"), [(_seven_z, "7zz"), (_rar, "unar")])
def test_7z_and_rar_flatten(tmp_path: Path, make, tool: str) -> None:
    """The same model for every decoder: 7z and RAR flatten like tar and zip."""
    _need(tool)
    archive, ref = make(tmp_path)
    files = unpack(archive, tmp_path / "out")
    assert listing(tmp_path / "out") == listing(ref)
    assert files == sorted(
        p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file() and not p.is_symlink()
    )


def _tar_of(base: Path, names: list[str], name: str = "a.tar") -> Path:
    run(["tar", "-cf", str(base / name), *names], base / "src")
    return base / name


def test_what_does_not_flatten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    _source_tree(src)
    (src / "LICENSE").write_text("mit\n")
    (src / "single.txt").write_text("one\n")
    os.symlink("tool-1.2", src / "current")
    (src / "up" / "d").mkdir(parents=True)
    (src / "up" / "d" / "x").write_text("x\n")
    os.symlink("../up/d", src / "up" / "back")  # climbs to the top level and back
    cases = {
        "two-tops": (["tool-1.2", "LICENSE"], ["LICENSE", "tool-1.2"]),
        "single-file": (["single.txt"], ["single.txt"]),
        "link-to-dir": (["current"], ["current"]),
        "link-climbs": (["up"], ["up"]),
        "dir-and-link-to-it": (["tool-1.2", "current"], ["current", "tool-1.2"]),
    }
    caplog.set_level(logging.INFO, logger="dropfetch")
    for case, (names, tops) in cases.items():
        archive = _tar_of(tmp_path, names, f"{case}.tar")
        before = unpack(archive, tmp_path / case / "nested", ExtractConfig())
        assert unpack(archive, tmp_path / case / "flat") == before, case
        assert sorted(os.listdir(tmp_path / case / "flat")) == tops, case
        assert listing(tmp_path / case / "flat") == listing(tmp_path / case / "nested")
    assert "not flattened: the link up/back -> ../up/d" in caplog.text
    # symlinks: skip leaves the link out, but it is still a top-level member
    archive = _tar_of(tmp_path, ["tool-1.2", "current"], "skip.tar")
    skip = ExtractConfig(flatten=True, symlinks="skip")
    assert unpack(archive, tmp_path / "skip", skip)[0].startswith("tool-1.2/")


def test_empty_top_directory_publishes_an_empty_output(tmp_path: Path) -> None:
    (tmp_path / "src" / "empty-1.0").mkdir(parents=True)
    archive = _tar_of(tmp_path, ["empty-1.0"])
    assert unpack(archive, tmp_path / "out") == []
    assert list((tmp_path / "out").iterdir()) == []


def test_single_compressed_file_never_flattens(tmp_path: Path) -> None:
    archive = tmp_path / "notes.txt.gz"
    archive.write_bytes(gzip.compress(b"notes\n"))
    assert unpack(archive, tmp_path / "out") == ["single"]
    assert (tmp_path / "out" / "single").read_bytes() == b"notes\n"


def test_crafted_link_through_a_link_to_the_top(tmp_path: Path) -> None:
    """top/s -> . and top/l -> s/../x: lexically inside top, really via the top level."""
    archive = tmp_path / "a.tar"
    archive.write_bytes(
        tar_bytes(
            [
                T("top/", kind="dir", mode=0o755),
                T("top/x", data=b"x"),
                T("top/s", kind="sym", target="."),
                T("top/l", kind="sym", target="s/../x"),
            ]
        )
    )
    assert unpack(archive, tmp_path / "out") == ["top/x"]
    assert sorted(os.listdir(tmp_path / "out")) == ["top"]


def test_streaming_path_flattens(tmp_path: Path) -> None:
    """TarStream (extraction while downloading) gives the flattened tree and files."""
    src = tmp_path / "src" / "big-1.0"
    src.mkdir(parents=True)
    blobs = {f"part{i}.bin": os.urandom(40_000) for i in range(6)}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    run(["tar", "-czf", str(tmp_path / "big.tar.gz"), "big-1.0"], tmp_path / "src")
    data = (tmp_path / "big.tar.gz").read_bytes()
    partial, staging = tmp_path / "big.part", tmp_path / "token" / "out"
    staging.mkdir(parents=True)
    partial.touch()
    stream = TarStream(partial, staging, FLAT, threading.Event(), lambda _d, _t: None)
    with open(partial, "ab") as f:
        for pos in range(0, len(data), 16_384):
            f.write(data[pos : pos + 16_384])
            f.flush()
            stream.feed(Transfer(f.tell(), len(data), None, 0))
    assert stream.fmt is ArchiveFormat.TAR_GZ  # it did start while the file grew
    assert stream.result(ArchiveFormat.TAR_GZ) == sorted(blobs)
    assert {p.name: p.read_bytes() for p in staging.iterdir()} == blobs
    assert sorted(os.listdir(tmp_path / "token")) == ["out"]


# -- the daemon -------------------------------------------------------------------------


def _serve_all(fault_server, base: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Each real-tool archive on the server: job prefix -> (path, flattened tree)."""
    served = {}
    for maker, (make, _top, expected) in MAKERS.items():
        archive = make(base / maker)
        fault_server.add(f"/{maker}/{archive.name}", archive.read_bytes())
        served[maker] = (f"/{maker}/{archive.name}", expected)
    return served


def _reloaded(d: Daemon, flatten: bool) -> None:
    count = d.log().count("configuration reloaded")
    d.config["extract"] = {"flatten": flatten}
    d.write_config()
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.log().count("configuration reloaded") > count, message="the reload")
    assert "extract.flatten" in d.log().rsplit("configuration reloaded", 1)[1]


def test_daemon_flattens_after_a_reload(fault_server, make_daemon, tmp_path: Path) -> None:
    served = _serve_all(fault_server, tmp_path / "made")
    d = make_daemon()
    for maker, (path, _tree) in served.items():
        d.drop(f"{maker}-off", fault_server.url(path))
    for maker, (_path, tree) in served.items():
        sc = d.wait_status(f"{maker}-off", timeout=60)
        top = MAKERS[maker][1]
        assert sc["status"] == "ok", sc
        assert all(f.startswith(f"{top}/") for f in sc["files"]), sc
        assert listing(d.outbox / f"{maker}-off" / top) == tree
    _reloaded(d, True)
    for maker, (path, _tree) in served.items():
        d.drop(f"{maker}-on", fault_server.url(path))
    for maker, (_path, tree) in served.items():
        sc = d.wait_status(f"{maker}-on", timeout=60)
        assert sc["status"] == "ok", sc
        assert sc["files"] == d.output_files(f"{maker}-on"), sc
        assert listing(d.outbox / f"{maker}-on") == tree
        assert (d.outbox / f"{maker}-on" / "src" / "README.link").read_text() == "readme\n"


def test_daemon_flatten_cases(fault_server, make_daemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _source_tree(src)
    (src / "LICENSE").write_text("mit\n")
    (src / "empty-1.0").mkdir()
    fault_server.add("/two.tar", _read(_tar_of(tmp_path, ["tool-1.2", "LICENSE"], "two.tar")))
    fault_server.add("/empty.tar", _read(_tar_of(tmp_path, ["empty-1.0"], "empty.tar")))
    fault_server.add("/kept.tar.gz", _read(gnu_tar(tmp_path / "k")))
    fault_server.add("/notes.txt.gz", gzip.compress(b"notes\n"))
    fault_server.add("/plain.bin", b"plain\n")
    big = os.urandom(300_000)  # large enough to be extracted while it downloads
    (src / "big-1.0").mkdir()
    (src / "big-1.0" / "blob").write_bytes(big)
    run(["tar", "-czf", str(tmp_path / "big.tar.gz"), "big-1.0"], src)
    fault_server.add("/big.tar.gz", _read(tmp_path / "big.tar.gz"), rate=300_000)
    d = make_daemon(extract={"flatten": True})
    d.drop("two", fault_server.url("/two.tar"))
    d.drop("empty", fault_server.url("/empty.tar"))
    d.drop("kept", f"url: {fault_server.url('/kept.tar.gz')}\nkeep_archive: true\n")
    d.drop("notes", fault_server.url("/notes.txt.gz"))
    d.drop("plain", fault_server.url("/plain.bin"))
    d.drop("big", fault_server.url("/big.tar.gz"))
    sidecars = {
        n: d.wait_status(n, timeout=60) for n in ("two", "empty", "kept", "notes", "plain", "big")
    }
    assert all(sc["status"] == "ok" for sc in sidecars.values()), sidecars
    assert sorted(os.listdir(d.outbox / "two")) == ["LICENSE", "tool-1.2"]
    assert sidecars["empty"]["files"] == [] and list((d.outbox / "empty").iterdir()) == []
    assert listing(d.outbox / "kept") == FLAT_TREE and sidecars["kept"]["files"] == FLAT_FILES
    assert (d.outbox / "kept.tar.gz").read_bytes() == _read(tmp_path / "k" / "tool-1.2.tar.gz")
    assert sidecars["kept"]["archive"]["kept"] == "kept.tar.gz"
    assert sidecars["notes"]["files"] == ["notes.txt"]
    assert sidecars["plain"]["files"] == ["plain.bin"]
    assert sidecars["big"]["files"] == ["blob"] and (d.outbox / "big" / "blob").read_bytes() == big


def _read(p: Path) -> bytes:
    return p.read_bytes()
