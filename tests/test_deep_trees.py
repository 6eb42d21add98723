"""Trees of any depth (issue 10): nothing recurses in proportion to an archive's depth.

Removing (purge, staging cleanup, start-up debris), publishing over an old output,
extracting and listing a tree 1,100+ levels deep all work; before, Python 3.11's
recursive shutil.rmtree raised RecursionError, left the job unfinished and made the
daemon crash at every start on that work_dir.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropfetch.config import ExtractConfig
from dropfetch.errors import DropfetchError
from dropfetch.extract import extract, sniff
from dropfetch.fsutil import publish_dir, remove_tree
from harness import wait_for
from hostile import T, tar_bytes
from netshare import NetShare, netshare_fixture  # noqa: F401 - the fixture

DEPTH = 1100


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """pytest's own clean-up of old temporary directories uses shutil.rmtree, which
    recurses: leave no deep tree behind for it."""
    yield
    for p in list(tmp_path.iterdir()):
        remove_tree(p)


def make_deep(base: Path, depth: int = DEPTH, component: str = "a", *, extras: bool = False) -> str:
    """A chain of ``depth`` directories under ``base`` made relative to descriptors (so
    it may pass PATH_MAX), a file at the bottom; returns the file's relative path.
    ``extras``: at every level also files, a link out of the tree and a side directory."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            os.mkdir(component, dir_fd=fd)
            nfd = os.open(component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if extras:
                for j in range(2):
                    os.close(os.open(f"f{j}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
                os.symlink("/etc", "out", dir_fd=fd)
                os.mkdir("side", dir_fd=fd)
                if i % 100 == 0:
                    os.chmod("side", 0o000, dir_fd=fd)
        leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep\n")
        os.close(leaf)
    finally:
        os.close(fd)
    return (component + "/") * depth + "leaf.txt"


def walk_files(root: Path) -> list[str]:
    """Regular files under ``root``, relative, sorted: an explicit stack, no recursion
    (os.walk and Path.rglob recurse in 3.11)."""
    found: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            for e in it:
                sub = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append(sub)
                elif e.is_file(follow_symlinks=False):
                    found.append(sub)
    return sorted(found)


# --- remove_tree --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "component"),
    [
        (DEPTH, "a"),
        (3000, "abc"),  # 12 KB of path: past PATH_MAX, only reachable relative to a fd
    ],
    ids=["1100", "past-path-max"],
)
def test_remove_tree_any_depth(tmp_path: Path, depth: int, component: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    tree = tmp_path / "tree"
    tree.mkdir()
    make_deep(tree, depth, component, extras=True)
    (tree / "to-outside").symlink_to(outside)
    remove_tree(tree)
    assert not os.path.lexists(tree)
    assert (outside / "keep").read_text() == "keep"  # links are never followed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"]


def test_remove_tree_files_links_missing(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "f").write_text("f")
    link = tmp_path / "link"
    link.symlink_to(target)
    remove_tree(link)  # a link to a directory: the link goes, the directory stays
    assert not os.path.lexists(link) and (target / "f").exists()
    remove_tree(target / "f")
    assert not (target / "f").exists()
    remove_tree(tmp_path / "missing")


def test_remove_tree_fixes_modes_as_an_unprivileged_owner() -> None:
    """Directories an archive left without read, search or write permission: their
    owner (not root, whom modes do not stop) still removes the tree. Runs in a forked
    child that became user nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    base = Path(tempfile.mkdtemp(prefix="dropfetch-rt-"))
    base.chmod(0o777)
    pid = os.fork()
    if pid == 0:  # the child: only os calls, then _exit
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            tree = base / "tree"
            tree.mkdir()
            fd = os.open(tree, os.O_RDONLY)
            for i in range(DEPTH):
                os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
                os.mkdir("locked", dir_fd=fd)
                os.close(os.open("locked/x", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
                os.chmod("locked", 0o000, dir_fd=fd)  # no read, search or write
                os.mkdir("d", dir_fd=fd)
                n = os.open("d", os.O_RDONLY, dir_fd=fd)
                if i % 2:
                    os.fchmod(fd, 0o500)  # no write
                os.close(fd)
                fd = n
            os.close(fd)
            code = 4
            remove_tree(tree)
            code = 0 if not os.path.lexists(tree) else 5
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.waitstatus_to_exitcode(status) == 0  # 4: remove_tree raised
    finally:
        remove_tree(base)


def test_publish_over_a_deep_output(tmp_path: Path) -> None:
    old = tmp_path / "out"
    old.mkdir()
    make_deep(old)
    new = tmp_path / "staging"
    new.mkdir()
    (new / "new.txt").write_text("new")
    publish_dir(new, old, tmp_path / "trash")
    assert walk_files(old) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- extraction ---------------------------------------------------------------------


def _gnu_tar(src: Path, archive: Path, *args: str) -> None:
    if shutil.which("tar") is None:
        pytest.skip("tar not installed")
    subprocess.run(["tar", "-C", str(src), *args, "-cf", str(archive), "."], check=True)


@pytest.mark.parametrize("tool", ["gnu", "bsdtar", "gnu-gz"])
def test_extract_deep_tar_from_real_tools(tmp_path: Path, tool: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    leaf = make_deep(src)
    archive = tmp_path / "deep.tar"
    if tool == "bsdtar":
        if shutil.which("bsdtar") is None:
            pytest.skip("bsdtar not installed")
        subprocess.run(["bsdtar", "-C", str(src), "-cf", str(archive), "."], check=True)
    else:
        _gnu_tar(src, archive, *(["-z"] if tool == "gnu-gz" else []))
    dest = tmp_path / "dest"
    dest.mkdir()
    files = extract(archive, dest, fmt=sniff(archive), config=ExtractConfig(), single_name="x")
    assert files == [leaf]
    assert walk_files(dest) == [leaf]
    assert (dest / leaf).read_bytes() == b"deep\n"
    remove_tree(dest)
    assert not dest.exists()


def test_deeper_than_the_filesystem_allows_is_unsafe(tmp_path: Path) -> None:
    """The depth limit is the filesystem's PATH_MAX under the staging directory, no
    other: a member past it fails naming the member, with nothing recursing."""
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = tmp_path / "deep.tar"
    archive.write_bytes(tar_bytes([T("a/" * 2040 + "f")]))
    with pytest.raises(DropfetchError) as info:
        extract(archive, dest, fmt=sniff(archive), config=ExtractConfig(), single_name="x")
    assert info.value.code == "unsafe_archive"
    assert "a/a/a/" in info.value.message and "too long" in info.value.message


# --- end to end ---------------------------------------------------------------------


def _deep_archive(tmp_path: Path) -> tuple[bytes, str]:
    src = tmp_path / "src"
    src.mkdir()
    leaf = make_deep(src)
    (src / "noise.bin").write_bytes(os.urandom(300_000))  # past 64 KiB: extracted streaming
    archive = tmp_path / "deep.tar.gz"
    _gnu_tar(src, archive, "-z")
    remove_tree(src)
    return archive.read_bytes(), leaf


def test_deep_tar_job_then_purge(fault_server, make_daemon, tmp_path: Path) -> None:
    data, leaf = _deep_archive(tmp_path)
    fault_server.add("/deep.tar.gz", data)
    d = make_daemon()
    job = d.drop("deep", fault_server.url("/deep.tar.gz"))
    sc = d.wait_status("deep", timeout=60)
    assert sc["status"] == "ok", sc
    assert sc["files"] == [leaf, "noise.bin"]
    assert walk_files(d.outbox / "deep") == [leaf, "noise.bin"]
    assert not list((d.work / "staging").iterdir())

    job.unlink()  # purge: the deep output goes, and the sidecar with it
    wait_for(lambda: not d.sidecar_path("deep").exists(), timeout=60, message="the purge to finish")
    assert not os.path.lexists(d.outbox / "deep")
    assert d.proc is not None and d.proc.poll() is None
    d.drop("after", fault_server.url("/deep.tar.gz"))  # the daemon goes on serving
    assert d.wait_status("after", timeout=60)["status"] == "ok"


def test_kill_with_deep_staging_then_restart(fault_server, make_daemon, tmp_path: Path) -> None:
    """kill -9 while a deep tree sits in staging: the next start on that work_dir
    removes the debris (start-up cleanup once crashed here, every time) and the job
    ends ok."""
    data, leaf = _deep_archive(tmp_path)
    fault_server.add("/deep.tar.gz", data)
    d = make_daemon(workers=1, start=False)
    d.start(env={"DROPFETCH_TEST_PAUSE": "publish"})
    d.drop("deep", fault_server.url("/deep.tar.gz"))
    wait_for(
        lambda: "DROPFETCH_TEST_PAUSE=publish" in d.log(),
        timeout=60,
        message="the job held before publishing",
    )
    staged = list((d.work / "staging").iterdir())
    # the staging token holds the tree in out/ (and the partial file, moved in for the
    # fenced publish)
    assert len(staged) == 1 and walk_files(staged[0] / "out") == [leaf, "noise.bin"]
    d.kill()

    d.start()
    sc = d.wait_status("deep", timeout=60)
    assert sc["status"] == "ok", sc
    assert sc["files"] == [leaf, "noise.bin"]
    assert walk_files(d.outbox / "deep") == [leaf, "noise.bin"]
    wait_for(lambda: not list((d.work / "staging").iterdir()), message="staging cleaned")
    assert d.proc is not None and d.proc.poll() is None
    assert "RecursionError" not in d.log()
    assert stat.S_ISDIR((d.outbox / "deep").lstat().st_mode)


@pytest.mark.netshare
def test_remove_tree_on_a_network_filesystem(netshare: NetShare) -> None:
    """Made through one sshfs mount, removed through the other: descriptor-relative
    removal and the '..' check hold on FUSE too."""
    area = netshare.area("deep")
    make_deep(area.host_a)  # (sftp itself refuses paths past PATH_MAX)
    tree_b = area.host_b / "a"
    wait_for(lambda: os.path.isdir(tree_b), message="the tree seen through host B")
    remove_tree(tree_b)
    assert not os.path.lexists(tree_b)
    assert not os.listdir(area.export)
