"""fsutil's writing primitives on real files: atomic_write, publish_dir and the one
free-space check."""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from dropfetch.errors import DiskFullError, IOFailureError
from dropfetch.fsutil import (
    TEST_NO_EXCHANGE_ENV,
    atomic_write,
    is_temporary_name,
    publish_dir,
    require_free_space,
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- atomic_write ---------------------------------------------------------------------


@pytest.mark.parametrize(("sync", "durable"), [(True, True), (False, True), (False, False)])
def test_atomic_write_new_file(tmp_path: Path, sync: bool, durable: bool) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, b"hello", sync=sync, durable=durable)
    assert target.read_bytes() == b"hello"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 & ~_umask()
    assert os.listdir(tmp_path) == ["f.json"]  # no temporary file left


def test_atomic_write_replaces_the_file_not_its_content(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old content, longer than the new one")
    target.chmod(0o600)
    before = target.stat().st_ino
    with target.open("rb") as reader:  # a reader of the old file keeps the old file
        atomic_write(target, b"new")
        assert reader.read() == b"old content, longer than the new one"
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != before  # a new file renamed over: never a partial one
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 & ~_umask()  # not the old mode
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_empty_and_large(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"")
    assert target.read_bytes() == b""
    data = os.urandom(3 << 20)
    atomic_write(target, data)
    assert target.read_bytes() == data


def test_atomic_write_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "inside").write_bytes(b"x")  # os.replace of a file onto a full directory fails
    with pytest.raises(OSError):  # noqa: PT011 - IsADirectoryError or ENOTEMPTY: the kernel's
        atomic_write(target, b"data")
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert os.listdir(target) == ["inside"]


def test_atomic_write_into_a_missing_directory_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "f", b"data")
    assert os.listdir(tmp_path) == []


def test_atomic_write_bad_data_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_a_concurrent_reader_sees_old_or_new_never_a_mix(tmp_path: Path) -> None:
    target = tmp_path / "f"
    size = 256 * 1024
    versions = [bytes([n]) * size for n in range(1, 5)]
    atomic_write(target, versions[0], sync=False, durable=False)
    done = threading.Event()
    seen: list[bytes] = []
    bad: list[str] = []

    def reader() -> None:
        while not done.is_set() or len(seen) < 50:
            try:
                data = target.read_bytes()
            except OSError as exc:  # the name must always be there
                bad.append(repr(exc))
                return
            if data not in versions:
                bad.append(f"{len(data)} bytes, starting {data[:4]!r}, ending {data[-4:]!r}")
                return
            seen.append(data[:1])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            atomic_write(target, versions[i % len(versions)], sync=False, durable=False)
    finally:
        done.set()
        thread.join(60)
    assert not thread.is_alive()
    assert not bad, bad
    assert len(seen) >= 50
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    assert not any(is_temporary_name(p.name) for p in tmp_path.iterdir())


# --- publish_dir ----------------------------------------------------------------------


def _exchange_supported(tmp: Path) -> bool:
    """Whether this filesystem swaps two paths with renameat2(RENAME_EXCHANGE)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    a, b = tmp / ".probe-a", tmp / ".probe-b"
    a.mkdir()
    b.mkdir()
    ok = renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0
    a.rmdir()
    b.rmdir()
    return bool(ok)


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(staging, target, trash): staging and trash inside one token directory, as the
    worker lays them out; the staging holds the new output."""
    token = tmp_path / "work" / "token"
    token.mkdir(parents=True)
    staging = token / "out"
    (staging / "sub").mkdir(parents=True)
    (staging / "new.txt").write_bytes(b"new")
    (staging / "sub" / "deep.bin").write_bytes(b"deep")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    return staging, outbox / "job", token / "trash"


NEW = {"new.txt": b"new", "sub/deep.bin": b"deep"}


def _old_output(target: Path) -> None:
    (target / "d").mkdir(parents=True)
    (target / "old.txt").write_bytes(b"old")
    (target / "d" / "x").write_bytes(b"x")
    (target / "d").chmod(0o500)  # from an archive: the old tree is removed all the same


@pytest.mark.parametrize("exchange", [True, False])
def test_publish_new_target(layout: tuple[Path, Path, Path], exchange: bool) -> None:
    staging, target, trash = layout
    inode = staging.stat().st_ino
    publish_dir(staging, target, trash, exchange=exchange)
    assert _tree(target) == NEW
    assert target.stat().st_ino == inode  # moved whole, not copied
    assert not staging.exists() and not trash.exists()
    assert trash.parent.is_dir()  # the token is the caller's to remove
    assert os.listdir(target.parent) == ["job"]


@pytest.mark.parametrize("exchange", [True, False])
def test_publish_replaces_an_existing_output(
    layout: tuple[Path, Path, Path], exchange: bool
) -> None:
    staging, target, trash = layout
    _old_output(target)
    publish_dir(staging, target, trash, exchange=exchange)
    assert _tree(target) == NEW
    assert not staging.exists() and not trash.exists()  # the old tree is gone
    assert os.listdir(trash.parent) == []  # the (empty) token is left for the caller
    assert os.listdir(target.parent) == ["job"]


def test_exchange_swaps_and_never_moves_the_target_aside(
    layout: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """With RENAME_EXCHANGE the old output only ever leaves through the staging path:
    once the staging is gone (a revoked token) the target is never touched."""
    if not _exchange_supported(tmp_path):
        pytest.skip("no RENAME_EXCHANGE on this filesystem")
    staging, target, trash = layout
    _old_output(target)
    shutil.rmtree(staging)
    with pytest.raises(FileNotFoundError):
        publish_dir(staging, target, trash, exchange=True)
    assert _tree(target) == {"old.txt": b"old", "d/x": b"x"}
    assert not trash.exists()


def test_fallback_moves_the_old_output_to_trash_first(layout: tuple[Path, Path, Path]) -> None:
    """Without RENAME_EXCHANGE the old output is renamed to ``trash`` before the staging
    takes its place: with the staging gone, the target is found in the trash."""
    staging, target, trash = layout
    _old_output(target)
    shutil.rmtree(staging)
    with pytest.raises(FileNotFoundError):
        publish_dir(staging, target, trash, exchange=False)
    assert not target.exists()
    assert _tree(trash) == {"old.txt": b"old", "d/x": b"x"}


def test_fallback_is_fenced_by_the_token(layout: tuple[Path, Path, Path]) -> None:
    """The fallback's first rename goes into the token: once the token is gone (another
    host took the job) nothing moves the target."""
    staging, target, trash = layout
    _old_output(target)
    moved = staging.parent.parent / "elsewhere"
    staging.parent.rename(moved)  # the taker renames the token away
    with pytest.raises(FileNotFoundError):
        publish_dir(staging, target, trash, exchange=False)
    assert _tree(target) == {"old.txt": b"old", "d/x": b"x"}


@pytest.mark.parametrize(("env", "target_kept"), [("1", False), (None, True), ("0", True)])
def test_the_test_hook_env_chooses_the_fallback(
    layout: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    target_kept: bool,
) -> None:
    """exchange=None reads DROPFETCH_TEST_NO_EXCHANGE at each call: "1" is the fallback
    (seen as above: the target moved to the trash), anything else the exchange."""
    if target_kept and not _exchange_supported(tmp_path):
        pytest.skip("no RENAME_EXCHANGE on this filesystem")
    if env is None:
        monkeypatch.delenv(TEST_NO_EXCHANGE_ENV, raising=False)
    else:
        monkeypatch.setenv(TEST_NO_EXCHANGE_ENV, env)
    staging, target, trash = layout
    _old_output(target)
    shutil.rmtree(staging)
    with pytest.raises(FileNotFoundError):
        publish_dir(staging, target, trash)
    assert target.exists() is target_kept
    assert trash.exists() is not target_kept


@pytest.mark.parametrize("exchange", [True, False])
@pytest.mark.parametrize("kind", ["file", "symlink to a dir", "dangling symlink"])
def test_publish_refuses_a_target_that_is_not_a_directory(
    layout: tuple[Path, Path, Path], exchange: bool, kind: str
) -> None:
    staging, target, trash = layout
    if kind == "file":
        target.write_bytes(b"a kept archive")
    elif kind == "symlink to a dir":
        (target.parent / "real").mkdir()
        target.symlink_to("real")
    else:
        target.symlink_to("nowhere")
    with pytest.raises(FileExistsError):
        publish_dir(staging, target, trash, exchange=exchange)
    assert target.is_symlink() is (kind != "file")
    if kind == "file":
        assert target.read_bytes() == b"a kept archive"
    assert _tree(staging) == NEW  # nothing moved
    assert not trash.exists()


# --- require_free_space -----------------------------------------------------------------


def test_free_space_enough(tmp_path: Path) -> None:
    require_free_space(tmp_path, keep_free=1)
    require_free_space(tmp_path, keep_free=1, needed=1, shown="x.iso")


def test_free_space_zero_keep_free_checks_nothing(tmp_path: Path) -> None:
    require_free_space(tmp_path / "missing", keep_free=0, needed=1 << 62)  # not even asked


def test_free_space_below_min_free_space_before_a_download(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError) as info:
        require_free_space(tmp_path, keep_free=1 << 62)
    free = shutil.disk_usage(tmp_path).free
    message = info.value.message
    assert (
        message.startswith("only ")
        and " MiB free on the outbox's filesystem, below "
        "min_free_space (4398046511104 MiB); waiting for space"
        in message
    )
    assert abs(int(message.split()[1]) - free // 2**20) <= 1024  # the free MiB, roughly
    assert info.value.code == "disk_full"


def test_free_space_not_enough_for_the_announced_size(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError) as info:
        require_free_space(tmp_path, keep_free=1, needed=1 << 62, shown="big.iso")
    message = info.value.message
    assert message.startswith("not enough free disk space for big.iso: ")
    assert message.endswith(
        f" bytes free, {1 << 62} more needed, and 1 must stay free "
        "(min_free_space); free some space"
    )


def test_free_space_on_a_missing_path_is_an_io_error(tmp_path: Path) -> None:
    with pytest.raises(IOFailureError) as info:
        require_free_space(tmp_path / "missing", keep_free=1)
    assert info.value.message.startswith("checking free disk space failed: ")
