"""Polling cost with a full inbox (issue 5, acceptance 5).

Fills an inbox with N finished jobs (job file + ``ok`` sidecar with the same
``job_sha256``, so the daemon has nothing to do for them), starts ``dropfetch run`` on it
with the polling observer and the default intervals, waits until the start-up rescan is
through, then measures

- idle CPU: utime+stime of the daemon from /proc/<pid>/stat over ``--idle`` seconds,
  as a percentage of one core;
- pickup time: a new job file renamed into the inbox -> its sidecar appears
  (``--pickups`` times; the job's URL points at a blocked address, so it fails at once
  and the sidecar is written without any network).

Prints a markdown table, or with ``--json`` one JSON object (for bench/run.py).

    python bench/polling.py [--jobs 5000] [--idle 30] [--pickups 5] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import stop_process  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BLOCKED_URL = "http://127.0.0.1:9/never-fetched.tar.gz"  # 127.0.0.0/8 is blocked by default


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _fill(inbox: Path, jobs: int) -> None:
    inbox.mkdir(parents=True)
    for i in range(jobs):
        name = f"done-{i:05d}"
        data = f"https://mirror.example/os/{name}.tar.gz\n".encode()
        (inbox / f"{name}.url").write_bytes(data)
        sidecar = {
            "schema": 1,
            "id": name,
            "job": f"{name}.url",
            "job_sha256": hashlib.sha256(data).hexdigest(),
            "url": f"https://mirror.example/os/{name}.tar.gz",
            "status": "ok",
            "progress": 100,
            "bytes_done": 1000,
            "bytes_total": 1000,
            "speed": None,
            "eta": None,
            "attempt": 1,
            "next_attempt_at": None,
            "host": "bench",
            "created": "2026-11-30T12:00:00.000Z",
            "updated": "2026-11-30T12:00:01.000Z",
            "finished": "2026-11-30T12:00:01.000Z",
            "archive": None,
            "output": name,
            "files": ["a"],
            "error": None,
        }
        (inbox / f"{name}.status.json").write_text(json.dumps(sidecar))


def _wait_quiet(
    pid: int, *, window: float = 2.0, below: float = 0.05, limit: float = 180.0
) -> float:
    """Wait until the daemon used less than ``below`` of a core over ``window`` twice."""
    start = time.monotonic()
    quiet = 0
    while time.monotonic() - start < limit:
        before = _cpu_seconds(pid)
        time.sleep(window)
        used = (_cpu_seconds(pid) - before) / window
        quiet = quiet + 1 if used < below else 0
        if quiet >= 2:
            break
    return time.monotonic() - start


def _pickup(inbox: Path, name: str, timeout: float = 60.0) -> float:
    tmp = inbox / f".{name}.url.tmp"
    tmp.write_text(BLOCKED_URL + "\n")
    sidecar = inbox / f"{name}.status.json"
    began = time.monotonic()
    tmp.rename(inbox / f"{name}.url")
    while not sidecar.exists():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"{name}: no sidecar after {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - began


def measure(*, jobs: int, idle: float, pickups: int, observer: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dropfetch-bench-polling-") as tmp:
        base = Path(tmp)
        inbox, outbox = base / "inbox", base / "outbox"
        _fill(inbox, jobs)
        config = base / "config.yaml"
        # the defaults, except the observer (polling, as auto picks on NFS) and no
        # free-space floor (a bench machine's /tmp may be small)
        config.write_text(
            f"inbox: {inbox}\noutbox: {outbox}\nobserver: {observer}\nmin_free_space: 0\n"
        )
        log = base / "daemon.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dropfetch", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=base,
                env={**os.environ, "PYTHONPATH": str(ROOT / "daemon")},
            )
        try:
            warmup = _wait_quiet(proc.pid)
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(idle)
            cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
            times = [_pickup(inbox, f"new-{i}") for i in range(pickups)]
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited:\n{log.read_text()[-2000:]}")
        finally:
            stop_process(proc)
    return {
        "observer": observer,
        "jobs_waiting": jobs,
        "startup_seconds": round(warmup, 1),
        "idle_seconds": round(t1 - t0, 1),
        "idle_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
        "pickup_seconds": [round(t, 3) for t in times],
        "pickup_median_seconds": round(statistics.median(times), 3),
        "pickup_max_seconds": round(max(times), 3),
        "poll_interval": 2.0,
        "settle_time": 1.0,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| observer | job files waiting | idle CPU (% of one core) | pickup median | "
        "pickup max | start-up rescan |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['observer']} | {r['jobs_waiting']:,} | {r['idle_cpu_percent']:.2f} % | "
            f"{r['pickup_median_seconds']:.2f} s | {r['pickup_max_seconds']:.2f} s | "
            f"{r['startup_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measured")
    parser.add_argument("--pickups", type=int, default=5)
    parser.add_argument("--observer", choices=("polling", "inotify", "both"), default="polling")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    observers = ("polling", "inotify") if args.observer == "both" else (args.observer,)
    results = [
        measure(jobs=args.jobs, idle=args.idle, pickups=args.pickups, observer=o) for o in observers
    ]
    if args.json:
        print(json.dumps({"name": "polling", "results": results, "markdown": table(results)}))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
