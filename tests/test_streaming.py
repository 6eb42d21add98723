"""Extraction of an archive that is still being written (streaming, issue 6)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from archives import tar_bytes
from dropfetch.config import ExtractConfig
from dropfetch.errors import CancelledError, CorruptArchiveError
from dropfetch.extract import ArchiveFormat, Growth, extract

FILES = {f"d{i}/f{j}.bin": os.urandom(20_000 + i * j) for i in range(5) for j in range(8)}


def _writer(
    path: Path,
    data: bytes,
    growth: Growth,
    *,
    chunk: int = 7_000,
    stop_at: int | None = None,
    restart: bool = False,
) -> threading.Thread:
    def run() -> None:
        with open(path, "wb") as f:
            for pos in range(0, len(data), chunk):
                if stop_at is not None and pos >= stop_at:
                    if restart:
                        f.truncate(0)
                        growth.grew(0)
                    return
                f.write(data[pos : pos + chunk])
                f.flush()
                growth.grew(pos + len(data[pos : pos + chunk]))
                time.sleep(0.002)
        growth.finish()

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize(
    ("compression", "fmt"),
    [("gz", ArchiveFormat.TAR_GZ), ("zst", ArchiveFormat.TAR_ZST), ("", ArchiveFormat.TAR)],
)
def test_extract_while_the_file_grows(tmp_path, compression, fmt):
    data = tar_bytes(FILES, compression=compression)
    archive, dest = tmp_path / "a.part", tmp_path / "out"
    dest.mkdir()
    archive.touch()
    growth = Growth(expected_size=len(data))
    progress: list[tuple[int, int]] = []
    writer = _writer(archive, data, growth)
    files = extract(
        archive,
        dest,
        fmt=fmt,
        config=ExtractConfig(),
        single_name="x",
        growth=growth,
        on_progress=lambda d, t: progress.append((d, t)),
    )
    writer.join()
    assert files == sorted(FILES)
    for name, content in FILES.items():
        assert (dest / name).read_bytes() == content
    assert progress[-1] == (len(data), len(data))


def test_truncated_download_then_finish_is_corrupt(tmp_path):
    data = tar_bytes(FILES, compression="gz")
    archive, dest = tmp_path / "a.part", tmp_path / "out"
    dest.mkdir()
    archive.touch()
    growth = Growth()
    writer = _writer(archive, data, growth, stop_at=len(data) // 2)
    writer.join()
    growth.finish()  # the "download" claims to be done early: the stream is cut
    with pytest.raises(CorruptArchiveError):
        extract(
            archive,
            dest,
            fmt=ArchiveFormat.TAR_GZ,
            config=ExtractConfig(),
            single_name="x",
            growth=growth,
        )


def test_download_that_starts_over_aborts_the_extraction(tmp_path):
    data = tar_bytes(FILES, compression="gz")
    archive, dest = tmp_path / "a.part", tmp_path / "out"
    dest.mkdir()
    archive.touch()
    growth = Growth()
    writer = _writer(archive, data, growth, stop_at=len(data) // 2, restart=True)
    with pytest.raises(CancelledError, match="started over"):
        extract(
            archive,
            dest,
            fmt=ArchiveFormat.TAR_GZ,
            config=ExtractConfig(),
            single_name="x",
            growth=growth,
        )
    writer.join()


def test_cancel_while_waiting_for_bytes(tmp_path):
    archive, dest = tmp_path / "a.part", tmp_path / "out"
    dest.mkdir()
    archive.write_bytes(tar_bytes(FILES, compression="gz")[:1000])
    growth, cancel = Growth(), threading.Event()
    growth.grew(1000)
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(CancelledError):
        extract(
            archive,
            dest,
            fmt=ArchiveFormat.TAR_GZ,
            config=ExtractConfig(),
            single_name="x",
            growth=growth,
            cancel=cancel,
        )


# --- end to end: the daemon streams tar archives ------------------------------------

BIG = {f"dir{i}/file{j}.bin": os.urandom(60_000) for i in range(6) for j in range(10)}


def _staged_files(work: Path) -> int:
    return sum(1 for p in (work / "staging").rglob("*") if p.is_file())


def test_extraction_runs_while_downloading(make_daemon, fault_server):
    from harness import wait_for

    body = tar_bytes(BIG, compression="gz")
    fault_server.add("/big.tar.gz", body, rate=800_000)
    d = make_daemon()
    d.drop("big", fault_server.url("/big.tar.gz"))
    # files appear in staging while the sidecar still says downloading
    wait_for(
        lambda: (
            (sc := d.sidecar("big"))
            and sc["status"] == "downloading"
            and _staged_files(d.work) >= 5
        ),
        message="files extracted during the download",
    )
    sc = d.wait_status("big")
    assert sc["status"] == "ok", sc
    assert sc["files"] == sorted(BIG)
    for name, data in BIG.items():
        assert (d.outbox / "big" / name).read_bytes() == data


def test_dropped_connection_mid_archive_still_ok(make_daemon, fault_server):
    body = tar_bytes(BIG, compression="zst")
    fault_server.add(
        "/drop.tar.zst", body, drop_after=len(body) * 2 // 5, drop_times=1, rate=2_000_000
    )
    d = make_daemon()
    d.drop("drop", fault_server.url("/drop.tar.zst"))
    sc = d.wait_status("drop")
    assert sc["status"] == "ok", sc
    assert sc["attempt"] == 2
    assert sc["files"] == sorted(BIG)
    for name, data in BIG.items():
        assert (d.outbox / "drop" / name).read_bytes() == data
    ranges = [r.headers.get("Range") for r in fault_server.requests_for("/drop.tar.zst")]
    assert ranges[0] is None and ranges[1] == f"bytes={len(body) * 2 // 5}-"


def test_server_ignoring_range_mid_archive_still_ok(make_daemon, fault_server):
    body = tar_bytes(BIG, compression="gz")
    fault_server.add(
        "/ign.tar.gz",
        body,
        drop_after=len(body) // 2,
        drop_times=1,
        ignore_range=True,
        rate=2_000_000,
    )
    d = make_daemon()
    d.drop("ign", fault_server.url("/ign.tar.gz"))
    sc = d.wait_status("ign")
    assert sc["status"] == "ok", sc
    assert sc["files"] == sorted(BIG)
    assert (d.outbox / "ign" / "dir5" / "file9.bin").read_bytes() == BIG["dir5/file9.bin"]


def test_file_changed_between_attempts_is_not_spliced(make_daemon, fault_server):
    old = tar_bytes({f"old{j}.bin": os.urandom(60_000) for j in range(30)}, compression="gz")
    new_files = {f"new{j}.bin": os.urandom(60_000) for j in range(30)}
    # replaced on the server as the first answer drops: the retry, whenever it comes,
    # asks to resume and gets the new file
    fault_server.add(
        "/v.tar.gz",
        old,
        drop_after=len(old) // 2,
        drop_times=1,
        rate=2_000_000,
        replace_on_drop=tar_bytes(new_files, compression="gz"),
    )
    d = make_daemon()
    d.drop("v", fault_server.url("/v.tar.gz"))
    sc = d.wait_status("v")
    assert sc["status"] == "ok", sc
    assert sc["files"] == sorted(new_files)
    assert sc["attempt"] == 2  # the drop cost one try
    assert fault_server.requests_for("/v.tar.gz")[1].header("Range") is not None


def test_sha256_mismatch_with_streaming_publishes_nothing(make_daemon, fault_server):
    body = tar_bytes(BIG, compression="gz")
    fault_server.add("/s.tar.gz", body, rate=3_000_000)
    d = make_daemon()
    d.drop("s", f"url: {fault_server.url('/s.tar.gz')}\nsha256: {'1' * 64}\n")
    sc = d.wait_status("s")
    assert sc["status"] == "failed" and sc["error"]["code"] == "checksum_mismatch"
    assert not (d.outbox / "s").exists()
    assert _staged_files(d.work) == 0
