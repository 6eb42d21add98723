#!/usr/bin/env python3
"""dropfetch side by side with curl | tar (issue 6). Run with ``make bench``.

Starts nginx (Debian nginx-light, installed when missing) on 127.0.0.1 with sendfile,
generates the test data in a temporary directory, runs every case at least three times
alternating dropfetch (a real ``dropfetch run`` subprocess) and the baseline, prints the
table and writes docs/BENCHMARKS.md and docs/benchmarks.png.

    .venv/bin/python bench/run.py                 # everything (what make bench runs)
    .venv/bin/python bench/run.py --quick         # small sizes, one run each: smoke check
    .venv/bin/python bench/run.py --only targz    # one case (see --help for the names)
    .venv/bin/python bench/run.py --only small --profile /tmp/prof   # py-spy each daemon
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import importlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT / "tests"))  # archives7z: the 1 GiB solid 7z, a stored RAR 5

from benchlib import (  # noqa: E402
    Row,
    parse_strace_c,
    peak,
    render_text,
    stop_process,
    versus,
)
from report import Run, chart, document  # noqa: E402

BIN = Path(sys.executable).parent
DROPFETCH = BIN / "dropfetch"
DOCS = ROOT / "docs"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
CASES = (
    "file",
    "targz",
    "tarxz",
    "tarzst",
    "zip",
    "extract",
    "small",
    "latency",
    "polling",
    "many",
    "polling-py",
    "segments",
    "7z-rar",
)
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


# --- tools -------------------------------------------------------------------------

APT_TOOLS = {
    "nginx": "nginx-light",
    "bsdtar": "libarchive-tools",
    "curl": "curl",
    "aria2c": "aria2",
    "zstd": "zstd",
    "xz": "xz-utils",
    "zip": "zip",
    "unzip": "unzip",
    "strace": "strace",
    "7zz": "7zip",
    "unar": "unar",
}


def ensure_apt_tools() -> None:
    missing = sorted({pkg for binary, pkg in APT_TOOLS.items() if which(binary) is None})
    if not missing:
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        if which("sudo") is None:
            sys.exit(f"bench: needs {' '.join(missing)}; run as root or install them")
        prefix = ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    log(f"installing {' '.join(missing)} with apt-get")
    subprocess.run([*prefix, "apt-get", *lock, "update", "-q"], check=True, env=env)
    # the bench starts its own nginx on a loopback port: Debian's package must neither
    # start its service on port 80 nor leave it enabled (policy-rc.d: "101 = not allowed")
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists() and os.geteuid() == 0
    if ours:
        policy.write_text("#!/bin/sh\n# dropfetch bench: no service starts\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(
            [*prefix, "apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *missing],
            check=True,
            env=env,
        )
    finally:
        if ours:
            policy.unlink()
    if which("systemctl") is not None:
        subprocess.run(
            [*prefix, "systemctl", "disable", "--now", "nginx"], capture_output=True, check=False
        )


def ensure_pip(module: str, package: str) -> None:
    """Bench-only dependency: install into the running venv when it is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        log(f"installing {package} into {sys.prefix} (bench-only dependency)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)
        importlib.invalidate_caches()


def first_line(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (p.stdout or p.stderr).strip()
    return text.splitlines()[0] if text else "?"


# --- nginx -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NGINX_CONF = """\
worker_processes 2;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
        # 4 MiB/s per connection: a server that throttles each one (the segments case)
        location /slow/ {{ alias {root}/; limit_rate 4m; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(root: Path, prefix: Path) -> Iterator[str]:
    """nginx serving ``root`` on a free loopback port; yields the base URL."""
    binary = which("nginx")
    if binary is None:
        sys.exit("bench: nginx not found")
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root))
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = (prefix / "error.log").read_text(errors="replace")[-2000:]
                sys.exit(f"bench: nginx exited ({proc.returncode}):\n{err}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        log(f"nginx {proc.pid} serving {root} on 127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, signal.SIGQUIT, 15)


# --- data --------------------------------------------------------------------------


@dataclass
class Sizes:
    big_file: int
    archive_copies: int
    quick_tree: bool
    small_jobs: int
    latency_jobs: int
    polling_jobs: int
    many_jobs: int
    runs: int

    @classmethod
    def full(cls, runs: int) -> Sizes:
        return cls(1024 * MIB, 2, False, 500, 200, 30, 10_000, runs)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(64 * MIB, 2, True, 100, 20, 4, 500, 1)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _ignore(quick: bool) -> Callable[[str, list[str]], set[str]]:
    top = str(stdlib_dir())

    def ignore(directory: str, names: list[str]) -> set[str]:
        if directory == top:
            if quick:  # top-level modules only: a few hundred files
                return {n for n in names if not n.endswith(".py")}
            return {"site-packages"}
        return set()

    return ignore


def _tree_stats(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if not os.path.islink(p):
                files += 1
                size += st.st_size
    return files, size


# how each archive of the tree is made: (file name, shell run in the tree's parent)
TREE_ARCHIVES = {
    "tar.gz": ("tree.tar.gz", "tar -czf {out} {dirs}"),
    # xz -6 takes minutes for this tree on 2 shared cores: -2, two threads (2 blocks+)
    "tar.xz": ("tree.tar.xz", "tar -cf - {dirs} | xz -2 -T2 -c > {out}"),
    "tar.zst": ("tree.tar.zst", "tar -cf - {dirs} | zstd -q -3 -T2 -c > {out}"),
    "zip": ("tree.zip", "zip -q -r -6 {out} {dirs}"),
}


class Data:
    """The test data, made on first use (an ``--only`` run makes only what it needs)."""

    def __init__(self, base: Path, sizes: Sizes) -> None:
        self.base = base
        self.sizes = sizes
        self.srv = base / "srv"
        self.srv.mkdir(parents=True)
        os.chmod(base, 0o755)  # noqa: S103 - nginx workers run as another user
        os.chmod(self.srv, 0o755)  # noqa: S103

    @functools.cached_property
    def big_file(self) -> Path:
        big = self.srv / "big.bin"
        log(f"writing {self.sizes.big_file // MIB} MiB of random bytes")
        with open(big, "wb") as f:
            left = self.sizes.big_file
            while left:
                n = min(left, 16 * MIB)
                f.write(os.urandom(n))
                left -= n
        return big

    @functools.cached_property
    def tree(self) -> Path:
        """``archive_copies`` copies of the standard library (with __pycache__)."""
        src = self.base / "src"
        log(f"copying the standard library {self.sizes.archive_copies} time(s)")
        for k in range(self.sizes.archive_copies):
            shutil.copytree(
                stdlib_dir(), src / f"copy{k}", symlinks=True, ignore=_ignore(self.sizes.quick_tree)
            )
        return src

    @property
    def tree_dirs(self) -> str:
        return " ".join(f"copy{k}" for k in range(self.sizes.archive_copies))

    @functools.cached_property
    def tree_stats(self) -> tuple[int, int]:
        """(files, bytes) of the whole tree."""
        return _tree_stats(self.tree)

    @functools.cached_property
    def medium_stats(self) -> tuple[int, int]:
        """(files, bytes) of one copy."""
        return _tree_stats(self.tree / "copy0")

    def tree_archive(self, fmt: str) -> Path:
        """The whole tree as ``fmt`` (a TREE_ARCHIVES key), made once."""
        name, script = TREE_ARCHIVES[fmt]
        out = self.srv / name
        if not out.exists():
            dirs = self.tree_dirs
            files, size = self.tree_stats
            log(f"{fmt} of {files} files, {size / MIB:.0f} MiB")
            t0 = time.monotonic()
            subprocess.run(
                ["bash", "-o", "pipefail", "-c", script.format(out=q(out), dirs=dirs)],
                check=True,
                cwd=self.tree,
            )
            log(f"{name}: {out.stat().st_size / MIB:.0f} MiB in {time.monotonic() - t0:.0f} s")
        return out

    @functools.cached_property
    def medium_archive(self) -> Path:
        """One copy of the standard library as tar.gz (the extraction-alone case)."""
        out = self.srv / "medium.tar.gz"
        subprocess.run(["tar", "-czf", str(out), "-C", str(self.tree), "copy0"], check=True)
        return out

    @property
    def medium_files(self) -> int:
        return self.medium_stats[0]

    @functools.cached_property
    def small_names(self) -> list[str]:
        """``small_jobs`` tar.gz archives of 5 standard-library modules each, under small/."""
        log(f"{self.sizes.small_jobs} small tar.gz jobs")
        top = self.tree / "copy0"
        pool = sorted(
            p
            for p in top.rglob("*.py")
            if p.is_file() and not p.is_symlink() and p.stat().st_size < 64 * 1024
        )
        (self.srv / "small").mkdir()
        names = []
        rng = random.Random(6)
        for i in range(self.sizes.small_jobs):
            name = f"s{i:05d}"
            names.append(name)
            with tarfile.open(self.srv / "small" / f"{name}.tar.gz", "w:gz") as tf:
                for p in rng.sample(pool, 5):
                    tf.add(p, arcname=f"{name}/{p.relative_to(top)}")
        return names


# --- the daemon under test -----------------------------------------------------------


class BenchFailure(RuntimeError):
    pass


class Daemon:
    """``dropfetch run --config`` as a subprocess, with its own inbox and outbox."""

    def __init__(
        self,
        base: Path,
        *,
        workers: int = 4,
        observer: str = "inotify",
        profile: Path | None = None,
        **extra: Any,
    ) -> None:
        self.base = base
        self.inbox = base / "inbox"
        self.outbox = base / "outbox"
        base.mkdir(parents=True, exist_ok=True)
        self.inbox.mkdir(exist_ok=True)
        cfg: dict[str, Any] = {
            "inbox": str(self.inbox),
            "outbox": str(self.outbox),
            "workers": workers,
            "observer": observer,
            "min_free_space": 0,
            "download": {"block_networks": []},
        }
        cfg.update(extra)
        self.config = cfg
        self.config_path = base / "config.json"  # JSON is YAML
        self.config_path.write_text(json.dumps(cfg))
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.spy: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self, *, wait: bool = True) -> Daemon:
        self.started = time.perf_counter()
        with open(self.base / "daemon.log", "ab") as logf:
            self.proc = subprocess.Popen(
                [str(DROPFETCH), "run", "--config", str(self.config_path)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.base,
            )
        if self.profile is not None:
            spy = BIN / "py-spy"
            self.profile.parent.mkdir(parents=True, exist_ok=True)
            self.spy = subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(self.proc.pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "-o",
                    str(self.profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if wait:
            # "dropfetch running" is logged once the watcher is up: a job dropped before
            # that would be found by the startup scan (and wait settle_time), not by inotify
            self._until(lambda: b"dropfetch running" in self.log_bytes(), 20, "the daemon to start")
        return self

    def log_bytes(self) -> bytes:
        try:
            return (self.base / "daemon.log").read_bytes()
        except FileNotFoundError:
            return b""

    def _until(
        self, pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.01
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            self.alive()
            if time.monotonic() > deadline:
                raise BenchFailure(f"timed out waiting for {what}\n{self.log_tail()}")
            time.sleep(interval)

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchFailure(f"the daemon exited ({self.proc.returncode})\n{self.log_tail()}")

    def log_tail(self) -> str:
        p = self.base / "daemon.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def write_job(self, name: str, url: str) -> Path:
        tmp = self.inbox / f".{name}.url.tmp"
        tmp.write_text(url + "\n")
        return tmp

    def drop(self, name: str, url: str) -> float:
        """Write NAME.url the safe way; returns the time of the rename."""
        tmp = self.write_job(name, url)
        t = time.perf_counter()
        os.rename(tmp, self.inbox / f"{name}.url")
        return t

    def sidecar(self, name: str) -> dict[str, Any] | None:
        try:
            raw = (self.inbox / f"{name}.status.json").read_bytes()
        except FileNotFoundError:
            return None
        try:
            return json.loads(raw)  # type: ignore[no-any-return]
        except ValueError:
            return None

    def wait_ok(self, name: str, timeout: float, interval: float = 0.002) -> tuple[float, dict]:
        """Poll the sidecar until it says ok; returns (time seen, sidecar)."""
        deadline = time.monotonic() + timeout
        checks = 0
        while True:
            sc = self.sidecar(name)
            now = time.perf_counter()
            if sc is not None:
                if sc.get("status") == "ok":
                    return now, sc
                if sc.get("status") == "failed":
                    raise BenchFailure(f"{name} failed: {sc.get('error')}")
            checks += 1
            if checks % 256 == 0:
                self.alive()
                if time.monotonic() > deadline:
                    raise BenchFailure(f"{name} not ok after {timeout} s: {sc}\n{self.log_tail()}")
            time.sleep(interval)

    def hwm_mb(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self.spy is not None:
            try:
                self.spy.wait(60)
            except subprocess.TimeoutExpired:
                self.spy.send_signal(signal.SIGINT)
                self.spy.wait(30)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the runner ----------------------------------------------------------------------


@dataclass
class Ctx:
    url: str
    data: Data
    work: Path  # on disk: daemon dirs and baseline outputs
    shm: Path  # on tmpfs
    sizes: Sizes
    profile: Path | None
    strace: bool = False
    rows: list[Row] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    seq: int = 0

    def note(self, case: str, text: str) -> None:
        """A line of "How it was measured", from the run that made the figures."""
        self.notes.setdefault(case, []).append(text)

    def fresh(self, label: str) -> Path:
        self.seq += 1
        p = self.work / f"{self.seq:03d}-{label}"
        p.mkdir(parents=True)
        return p

    def profile_path(self, label: str) -> Path | None:
        if self.profile is None:
            return None
        self.seq += 1
        return self.profile / f"{self.seq:03d}-{label}.txt"


def settle() -> None:
    """Untimed: write back dirty pages of the previous run so it does not bill the next."""
    os.sync()
    time.sleep(0.3)


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def timed_shell(script: str, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, cwd=cwd)
    return time.perf_counter() - t0


def alternate(i: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run both; dropfetch first on even iterations, the baseline first on odd ones."""
    for fn in (first, second) if i % 2 == 0 else (second, first):
        settle()
        fn()


def count_files(root: Path) -> int:
    return sum(
        len([n for n in names if not os.path.islink(os.path.join(d, n))])
        for d, _, names in os.walk(root)
    )


def q(p: Path | str) -> str:
    import shlex

    return shlex.quote(str(p))


CURL_O = "curl -s -o FILE URL"


def case_file(ctx: Ctx) -> None:
    url = f"{ctx.url}/big.bin"
    size = ctx.data.big_file.stat().st_size
    ours: list[float] = []
    rss: list[float] = []
    curl: list[float] = []
    curl_sync: list[float] = []
    for i in range(ctx.sizes.runs):

        def dropfetch(i: int = i) -> None:
            base = ctx.fresh("file-dropfetch")
            with Daemon(base, profile=ctx.profile_path(f"file-{i}")) as d:
                d.start()
                t0 = d.drop("big", url)
                t1, sc = d.wait_ok("big", 900)
                ours.append(t1 - t0)
                rss.append(d.hwm_mb())
            got = (d.outbox / "big" / sc["files"][0]).stat().st_size
            if got != size:
                raise BenchFailure(f"dropfetch delivered {got} bytes, expected {size}")
            wipe(base)

        def baseline() -> None:
            base = ctx.fresh("file-curl")
            curl.append(timed_shell(f"curl -s -o {q(base / 'big.bin')} {q(url)}"))
            wipe(base)

        alternate(i, dropfetch, baseline)
        settle()
        base = ctx.fresh("file-curl-sync")
        curl_sync.append(
            timed_shell(f"curl -s -o {q(base / 'big.bin')} {q(url)} && sync {q(base / 'big.bin')}")
        )
        wipe(base)
        log(
            f"file run {i}: dropfetch {ours[-1]:.2f} s, curl {curl[-1]:.2f} s, "
            f"curl+fsync {curl_sync[-1]:.2f} s, RSS {rss[-1]:.0f} MB"
        )
    mib = size // MIB
    ctx.rows += [
        versus("file", f"{mib} MiB incompressible file, drop → ok", ours, CURL_O, curl, 1.05),
        versus("file-sync", f"{mib} MiB file, drop → ok (fsynced, like dropfetch)", ours,
               f"{CURL_O} && sync FILE", curl_sync, 0.9),
        peak("file-rss", f"peak RSS during the {mib} MiB download (VmHWM)", rss, 80),
    ]  # fmt: skip
    ctx.note(
        "file",
        f"1 GiB file: {mib} MiB from `os.urandom`, delivered as a plain file, a fresh daemon "
        "per run. dropfetch fsyncs the finished download before it publishes; `curl -o` "
        "does not, so a second row times `curl -o && sync FILE` (its own run after each "
        "pair). Peak RSS is the daemon's `VmHWM` from `/proc/<pid>/status`.",
    )


def _drop_one(ctx: Ctx, url: str, expected: int, label: str) -> float:
    """One fresh daemon, one job: seconds from the drop to ``ok`` (file count checked)."""
    base = ctx.fresh(f"{label}-dropfetch")
    with Daemon(base, profile=ctx.profile_path(label)) as d:
        d.start()
        t0 = d.drop("tree", url)
        t1, sc = d.wait_ok("tree", 1800)
    if len(sc["files"]) != expected:
        raise BenchFailure(f"dropfetch listed {len(sc['files'])} files, expected {expected}")
    wipe(base)
    return t1 - t0


def _baseline_run(ctx: Ctx, script: str, label: str, expected: int) -> float:
    """``script`` with {url}, {dir} (the output) and {f} (a download file); files checked."""
    base = ctx.fresh(label)
    out = base / "out"
    out.mkdir()
    took = timed_shell(script.format(url=q(ctx.url), dir=q(out), f=q(base / "dl")))
    if count_files(out) != expected:
        raise BenchFailure(f"{label}: extracted {count_files(out)} files, not {expected}")
    wipe(base)
    return took


@dataclass
class TreeCase:
    """One archive of the tree served over HTTP, dropfetch against baseline scripts."""

    key: str
    fmt: str  # a TREE_ARCHIVES key
    baselines: dict[str, tuple[str, str, float]]  # row key -> (label, script, limit)


TREE_CASES = {
    "targz": TreeCase(
        "targz",
        "tar.gz",
        {
            "targz-pipe": (
                "curl -s URL | tar -xz -C DIR",
                "curl -s {url}/{name} | tar -xz -C {dir}",
                0.95,
            ),
            "targz-twostep": (
                "curl -s -o F URL && tar -xzf F -C DIR",
                "curl -s -o {f} {url}/{name} && tar -xzf {f} -C {dir}",
                0.7,
            ),
        },
    ),
    "tarxz": TreeCase(
        "tarxz",
        "tar.xz",
        {
            "tarxz-pipe": (
                "curl -s URL | tar -xJ -C DIR",
                "curl -s {url}/{name} | tar -xJ -C {dir}",
                1.0,
            )
        },
    ),
    "tarzst": TreeCase(
        "tarzst",
        "tar.zst",
        {
            "tarzst-pipe": (
                "curl -s URL | tar --zstd -x -C DIR",
                "curl -s {url}/{name} | tar --zstd -x -C {dir}",
                1.0,
            )
        },
    ),
    "zip": TreeCase(
        "zip",
        "zip",
        {
            "zip-twostep": (
                "curl -s -o F URL && unzip -q F -d DIR",
                "curl -s -o {f} {url}/{name} && unzip -q {f} -d {dir}",
                0.8,
            )
        },
    ),
}


def case_tree(ctx: Ctx, tc: TreeCase) -> None:
    """The tree as ``tc.fmt``: for each baseline, alternating runs against a fresh daemon."""
    archive = ctx.data.tree_archive(tc.fmt)
    url = f"{ctx.url}/{archive.name}"
    expected, size = ctx.data.tree_stats
    ours: dict[str, list[float]] = {k: [] for k in tc.baselines}
    theirs: dict[str, list[float]] = {k: [] for k in tc.baselines}
    for i in range(ctx.sizes.runs):
        for key, (_, script, _) in tc.baselines.items():

            def dropfetch(key: str = key, i: int = i) -> None:
                ours[key].append(_drop_one(ctx, url, expected, f"{key}-{i}"))

            def baseline(key: str = key, script: str = script) -> None:
                filled = script.replace("{url}/{name}", "{url}/" + archive.name)
                theirs[key].append(_baseline_run(ctx, filled, key, expected))

            alternate(i, dropfetch, baseline)
        log(
            f"{tc.key} run {i}: "
            + ", ".join(f"{k} dropfetch {ours[k][-1]:.2f} s vs {theirs[k][-1]:.2f} s" for k in ours)
        )
    what = f"{tc.fmt} of {size / MIB:.0f} MiB real files ({expected:,} files), drop → ok"
    for key, (label, _, limit) in tc.baselines.items():
        ctx.rows.append(versus(key, what, ours[key], label, theirs[key], limit))
        what = "same archive, drop → ok"
    ctx.note(
        tc.key,
        f"{tc.fmt} of the tree: {expected:,} files, {size / MIB:.0f} MiB "
        f"({archive.stat().st_size / MIB:.0f} MiB compressed) made by "
        f"`{TREE_ARCHIVES[tc.fmt][1].format(out='F', dirs=ctx.data.tree_dirs)}`; each baseline "
        "row has its own dropfetch runs (a fresh daemon per run), alternating with it.",
    )


PYSPY_RAW = ("--format", "raw", "--threads", "--nonblocking", "-o")


@contextlib.contextmanager
def pyspy_self(path: Path | None) -> Iterator[None]:
    """py-spy records this process (the in-process cases) into ``path``; None: nothing."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(os.getpid()),
            "--rate",
            "200",
            *PYSPY_RAW,
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached (py-spy has no ready signal); samples start here
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes the profile on SIGINT
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def case_extract(ctx: Ctx) -> None:
    from dropfetch.config import ExtractConfig
    from dropfetch.extract import extract, sniff

    archive = ctx.shm / "medium.tar.gz"
    shutil.copyfile(ctx.data.medium_archive, archive)
    fmt = sniff(archive)
    expected = ctx.data.medium_files
    ours: list[float] = []
    gnu: list[float] = []
    bsd: list[float] = []
    bsdtar = which("bsdtar") or "bsdtar"
    runs = max(ctx.sizes.runs, 5) if ctx.sizes.runs > 1 else 1
    for i in range(runs):

        def dropfetch(i: int = i) -> None:
            dest = ctx.shm / "x-dropfetch"
            dest.mkdir()
            with pyspy_self(ctx.profile_path(f"extract-{i}")):
                t0 = time.perf_counter()
                files = extract(archive, dest, fmt=fmt, config=ExtractConfig(), single_name="x")
                ours.append(time.perf_counter() - t0)
            if len(files) != expected:
                raise BenchFailure(f"extract() returned {len(files)} files, not {expected}")
            wipe(dest)

        def baseline() -> None:
            for tool, into in ((bsdtar, bsd), ("tar", gnu)):
                dest = ctx.shm / "x-tar"
                dest.mkdir()
                into.append(timed_shell(f"{q(tool)} -xzf {q(archive)} -C {q(dest)}"))
                wipe(dest)

        alternate(i, dropfetch, baseline)
        log(
            f"extract run {i}: dropfetch {ours[-1]:.2f} s, bsdtar {bsd[-1]:.2f} s, "
            f"GNU tar {gnu[-1]:.2f} s"
        )
    size = archive.stat().st_size
    archive.unlink()
    what = f"{expected:,}-file tar.gz, extraction alone, tmpfs"
    ctx.rows.append(versus("extract-bsdtar", what, ours, "bsdtar -xzf", bsd, 1.0))
    ctx.rows.append(versus("extract", "same, against GNU tar", ours, "GNU tar -xzf", gnu, 0.85))
    ctx.note(
        "extract",
        f"Extraction alone: one copy of the standard library ({expected:,} files, "
        f"{size / MIB:.0f} MiB tar.gz by GNU tar + gzip -6) copied to /dev/shm and extracted "
        f"there, runs: {runs}; `dropfetch.extract.extract()` called in-process (all safety "
        "checks on, default limits) against `bsdtar -xzf` and `tar -xzf` processes.",
    )


def _wait_all(d: Daemon, names: list[str], timeout: float, interval: float) -> float:
    last = 0.0
    for name in names:
        last, _ = d.wait_ok(name, timeout, interval)
    return last


def _small_dropfetch(
    ctx: Ctx, names: list[str], label: str, on_started: Callable[[Daemon], Any] | None = None
) -> float:
    """All the small jobs into a fresh 4-worker daemon: seconds from the drops to all ok."""
    base = ctx.fresh("small-dropfetch")
    with Daemon(base, workers=4, profile=ctx.profile_path(label)) as d:
        d.start()
        after = on_started(d) if on_started is not None else None
        tmps = [d.write_job(x, f"{ctx.url}/small/{x}.tar.gz") for x in names]
        t0 = time.perf_counter()
        for x, tmp in zip(names, tmps, strict=True):
            os.rename(tmp, d.inbox / f"{x}.url")
        t1 = _wait_all(d, names, 1800, 0.005)
        if callable(after):
            after()
    wipe(base)
    return t1 - t0


def strace_small(ctx: Ctx, names: list[str]) -> None:
    """One more, untimed, run of the small jobs under ``strace -c -f``: syscalls per job."""
    out = ctx.work / "small-strace.txt"
    procs: list[subprocess.Popen[bytes]] = []

    def attach(d: Daemon) -> Callable[[], None]:
        assert d.proc is not None
        cmd = ["strace", "-c", "-f", "-o", str(out), "-p", str(d.proc.pid)]
        procs.append(subprocess.Popen(cmd, stderr=subprocess.PIPE))
        assert procs[0].stderr is not None
        procs[0].stderr.readline()  # "strace: Process N attached": tracing from here

        def detach() -> None:
            stop_process(procs[0], signal.SIGINT, 60)  # strace writes its table on SIGINT

        return detach

    took = _small_dropfetch(ctx, names, "small-strace", attach)
    calls = parse_strace_c(out.read_text())
    total = sum(calls.values())
    per_job = {k: v / len(names) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
    ctx.extra["strace small"] = {"jobs": len(names), "total": total, "per_job": per_job}
    top = ", ".join(f"{k} {v:.1f}" for k, v in list(per_job.items())[:15])
    log(
        f"strace -c -f of the daemon: {total / len(names):.0f} syscalls per job over "
        f"{len(names)} jobs ({took:.1f} s under strace, untimed); per job: {top}"
    )
    log(f"strace table: {out}")
    ctx.note(
        "small",
        f"`--strace`: one more, untimed, run of the {len(names)} small jobs with "
        "`strace -c -f -p` attached to the daemon after its start-up: "
        f"{total / len(names):.0f} system calls per job (table below).",
    )


SMALL_NOTE = (
    "Small jobs: {n:,} tar.gz archives of 5 standard-library modules each; dropfetch "
    "with `workers: 4` (a fresh daemon per run), all job files renamed into the inbox "
    "at once; the clock stops when the last sidecar says ok. Baselines: a bash "
    "`while read` loop of `mkdir && curl -s URL | tar -xz -C DIR` per job, and the same "
    "per job under `xargs -P4`. Each baseline row has its own dropfetch runs."
)


def case_small(ctx: Ctx) -> None:
    names = ctx.data.small_names
    n = len(names)
    names_file = ctx.work / "small-names.txt"
    names_file.write_text("".join(f"{x}\n" for x in names))
    ours_a: list[float] = []
    ours_b: list[float] = []
    loop: list[float] = []
    xargs: list[float] = []

    def dropfetch(into: list[float], label: str) -> Callable[[], None]:
        def run() -> None:
            into.append(_small_dropfetch(ctx, names, label))

        return run

    def shell_loop() -> None:
        base = ctx.fresh("small-loop")
        loop.append(
            timed_shell(
                f'while read -r n; do mkdir -p "$n" && curl -s "{ctx.url}/small/$n.tar.gz" '
                f'| tar -xz -C "$n"; done < {q(names_file)}',
                cwd=base,
            )
        )
        wipe(base)

    def xargs_p4() -> None:
        base = ctx.fresh("small-xargs")
        xargs.append(
            timed_shell(
                f"xargs -P4 -I{{}} bash -o pipefail -c "
                f'\'mkdir -p "$1" && curl -s "$2/small/$1.tar.gz" | tar -xz -C "$1"\' '
                f"_ {{}} {q(ctx.url)} < {q(names_file)}",
                cwd=base,
            )
        )
        if len(os.listdir(base)) != n:
            raise BenchFailure("xargs baseline made a different number of outputs")
        wipe(base)

    for i in range(ctx.sizes.runs):
        alternate(i, dropfetch(ours_a, f"small-{i}a"), shell_loop)
        alternate(i, dropfetch(ours_b, f"small-{i}b"), xargs_p4)
        log(
            f"small run {i}: dropfetch {ours_a[-1]:.2f}/{ours_b[-1]:.2f} s, "
            f"loop {loop[-1]:.2f} s, xargs -P4 {xargs[-1]:.2f} s"
        )
    what = f"{n:,} small tar.gz jobs, 4 workers, drop all → all ok"
    ctx.rows += [
        versus("small-loop", what, ours_a, "shell loop: curl | tar per job", loop, 0.5),
        versus("small-xargs", "same", ours_b, "xargs -P4: curl | tar per job", xargs, 0.8),
    ]
    ctx.note("small", SMALL_NOTE.format(n=n))
    if ctx.strace:
        strace_small(ctx, names)


def case_latency(ctx: Ctx) -> None:
    """inotify pickup: rename into the inbox → the sidecar exists, one job at a time."""
    names = ctx.data.small_names
    lat: list[float] = []
    base = ctx.fresh("latency")
    with Daemon(base, workers=4, observer="inotify", profile=ctx.profile_path("latency")) as d:
        d.start()
        time.sleep(0.5)
        for i in range(ctx.sizes.latency_jobs):
            name = f"lat{i:04d}"
            sidecar = d.inbox / f"{name}.status.json"
            t0 = d.drop(name, f"{ctx.url}/small/{names[i % len(names)]}.tar.gz")
            while not sidecar.exists():
                if time.perf_counter() - t0 > 30:
                    raise BenchFailure(f"no sidecar for {name} after 30 s\n{d.log_tail()}")
                time.sleep(0.0005)
            lat.append((time.perf_counter() - t0) * 1000)
            d.wait_ok(name, 60)  # the next drop finds an idle daemon
            time.sleep(0.02)
    wipe(base)
    log(f"inotify pickup: p50 {sorted(lat)[len(lat) // 2]:.1f} ms, max {max(lat):.1f} ms")
    what = f"pickup latency, inotify, rename → sidecar ({len(lat)} jobs)"
    ctx.rows.append(
        Row(
            "latency-p50",
            what,
            "ms",
            lat,
            stat="p50",
            target_on="value",
            limit=10,
            target_text="p50 ≤ 10 ms",
        )
    )
    ctx.rows.append(
        Row(
            "latency-p99",
            "same",
            "ms",
            lat,
            stat="p99",
            target_on="value",
            limit=50,
            target_text="p99 ≤ 50 ms",
        )
    )
    ctx.note(
        "latency",
        f"Pickup latency: {len(lat)} jobs, one at a time into an idle daemon (inotify); time "
        "from the rename to the sidecar's existence (checked every 0.5 ms).",
    )


def case_polling(ctx: Ctx) -> None:
    """Polling pickup with the default poll_interval and settle_time; staggered drops."""
    names = ctx.data.small_names
    poll_interval, settle_time = 2.0, 1.0
    limit = (poll_interval + settle_time + 0.5) * 1000
    base = ctx.fresh("polling")
    lat: dict[str, float] = {}
    dropped: dict[str, float] = {}
    with Daemon(
        base, workers=4, observer="polling", poll_interval=poll_interval, settle_time=settle_time
    ) as d:
        d.start()
        time.sleep(poll_interval)
        n = ctx.sizes.polling_jobs
        start = time.perf_counter()
        # drops every 0.37 s: they land at every phase of the poll cycle
        schedule = {f"poll{i:03d}": start + i * 0.37 for i in range(n)}
        while len(lat) < n:
            now = time.perf_counter()
            for name, when in schedule.items():
                if name not in dropped and now >= when:
                    dropped[name] = d.drop(name, f"{ctx.url}/small/{names[0]}.tar.gz")
            for name, t0 in dropped.items():
                if name not in lat and (d.inbox / f"{name}.status.json").exists():
                    lat[name] = (time.perf_counter() - t0) * 1000
            if now - start > 0.37 * n + 60:
                raise BenchFailure(f"polling: only {len(lat)} of {n} picked up")
            time.sleep(0.002)
    wipe(base)
    values = list(lat.values())
    log(f"polling pickup: max {max(values):.0f} ms")
    ctx.rows.append(
        Row(
            "polling-p50",
            f"pickup latency, polling ({len(values)} jobs, "
            f"poll_interval {poll_interval:g} s, settle_time {settle_time:g} s)",
            "ms",
            values,
            stat="p50",
            target_text="— (info)",
        )
    )
    ctx.rows.append(
        Row(
            "polling-max",
            "same, worst",
            "ms",
            values,
            stat="max",
            target_on="value",
            limit=limit,
            target_text=f"≤ {limit / 1000:g} s (interval + settle + 0.5 s)",
        )
    )
    ctx.note(
        "polling",
        f"Polling pickup: {n} jobs, poll_interval {poll_interval:g} s and settle_time "
        f"{settle_time:g} s, drops staggered every 0.37 s so they land at every phase of the "
        "poll cycle; rename to the sidecar's existence.",
    )


def case_many(ctx: Ctx) -> None:
    names = ctx.data.small_names
    n = ctx.sizes.many_jobs
    runs = min(ctx.sizes.runs, 2)  # 80 s a run; the rows are an RSS bound and "all ok"
    took: list[float] = []
    rss: list[float] = []
    ok = True
    for r in range(runs):
        settle()
        base = ctx.fresh("many")
        d = Daemon(base, workers=4, profile=ctx.profile_path(f"many-{r}"))
        jobs = [f"m{i:05d}" for i in range(n)]
        for i, name in enumerate(jobs):
            tmp = d.write_job(name, f"{ctx.url}/small/{names[i % len(names)]}.tar.gz")
            os.rename(tmp, d.inbox / f"{name}.url")
        with d:
            d.start(wait=False)
            t0 = d.started
            try:
                t1 = _wait_all(d, jobs, 3600, 0.01)
            except BenchFailure as exc:
                log(f"many: {exc}")
                ok = False
                t1 = time.perf_counter()
            took.append(t1 - t0)
            rss.append(d.hwm_mb())
        statuses = [(d.sidecar(x) or {}).get("status") for x in jobs]
        ok = ok and all(s == "ok" for s in statuses)
        wipe(base)
        log(f"many run {r}: {n} jobs in {took[-1]:.1f} s, peak RSS {rss[-1]:.0f} MB, all ok: {ok}")
    ctx.rows.append(
        Row(
            "many-time",
            f"{n:,} jobs waiting at start → all ok",
            "s",
            took,
            target_on="value",
            target_text="all ok",
            ok=ok,
            limit=float("inf"),
        )
    )
    ctx.rows.append(
        dataclasses.replace(
            peak("many-rss", f"{n:,} jobs waiting at start: daemon peak RSS (VmHWM)", rss, 200),
            ok=ok,
        )
    )
    ctx.note(
        "many",
        f"Many jobs: {n:,} job files (the small archives) all in the inbox before a 4-worker "
        f"daemon starts, runs: {runs} (not more: each takes over a minute); the clock starts "
        "when the process is spawned. Peak RSS is the daemon's `VmHWM`.",
    )


def case_polling_py(ctx: Ctx) -> None:
    script = HERE / "polling.py"
    if not script.exists():
        log("bench/polling.py not present: skipped")
        return
    log("running bench/polling.py --json")
    try:
        p = subprocess.run(
            [sys.executable, str(script), "--json"],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        ctx.extra["polling_py"] = {"error": "timed out after 1800 s"}
        return
    if p.returncode != 0:
        ctx.extra["polling_py"] = {"error": f"exit {p.returncode}: {p.stderr[-1500:]}"}
        return
    try:
        ctx.extra["polling_py"] = json.loads(p.stdout)
    except ValueError:
        ctx.extra["polling_py"] = {"error": "output is not JSON", "output": p.stdout[-1500:]}


SLOW_FILE_MIB = 64  # at 4 MiB/s per connection: 16 s on one, 4 s on four


def _segmented(ctx: Ctx, url: str, segments: int, label: str) -> tuple[float, float]:
    """(seconds drop -> ok, daemon peak RSS in MB) of one download in ``segments``."""
    base = ctx.fresh(label)
    download = {"block_networks": [], "segments": segments, "max_connections_per_host": 8}
    with Daemon(base, download=download) as d:
        d.start()
        t0 = d.drop("seg", url)
        t1, sc = d.wait_ok("seg", 1800)
        rss = d.hwm_mb()
    got = (d.outbox / "seg" / sc["files"][0]).stat().st_size
    wipe(base)
    return t1 - t0, rss if got else float("nan")


def case_segments(ctx: Ctx) -> None:
    mib = min(SLOW_FILE_MIB, ctx.data.big_file.stat().st_size // MIB)
    name = f"slow-{mib}.bin"
    with open(ctx.data.big_file, "rb") as src, open(ctx.data.srv / name, "wb") as dst:
        dst.write(src.read(mib * MIB))
    url = f"{ctx.url}/slow/{name}"
    one: list[float] = []
    four: list[float] = []
    aria: list[float] = []
    for i in range(ctx.sizes.runs):
        settle()
        one.append(_segmented(ctx, url, 1, "seg-1")[0])
        settle()
        four.append(_segmented(ctx, url, 4, "seg-4")[0])
        settle()
        base = ctx.fresh("seg-aria2")
        aria.append(
            timed_shell(
                f"aria2c -q -x4 -s4 -k1M --file-allocation=none --allow-overwrite=true "
                f"-d {q(base)} -o {name} {q(url)}"
            )
        )
        wipe(base)
        log(
            f"segments run {i}: 1 connection {one[-1]:.2f} s, 4 segments {four[-1]:.2f} s, "
            f"aria2c -x4 -s4 {aria[-1]:.2f} s"
        )
    big = ctx.data.big_file.stat().st_size // MIB
    _, rss = _segmented(ctx, f"{ctx.url}/big.bin", 8, "seg-8-rss")
    case = f"{mib} MiB at 4 MiB/s per connection, drop → ok"
    ctx.rows += [
        versus("segments-vs-one", case + ": 4 segments", four, "segments: 1", one, 0.3),
        versus("segments-vs-aria2", case + ": 4 segments", four, "aria2c -x4 -s4", aria, 1.05),
        peak("segments-rss", f"peak RSS, {big} MiB download in 8 segments (VmHWM)", [rss], 80),
    ]
    ctx.note(
        "segments",
        f"Segments (issue 13): nginx serves `/slow/` with `limit_rate 4m` (4 MiB/s per "
        f"connection); the file is the first {mib} MiB of the 1 GiB random file. dropfetch is "
        "a fresh daemon with `download.segments` 1 or 4; aria2c runs as `aria2c -q -x4 -s4 "
        "-k1M --file-allocation=none` (process start included; dropfetch's time also "
        "includes the SHA-256 of the file read back, the publish and the sidecar writes). "
        f"Runs in turn (1, 4, aria2c), {ctx.sizes.runs} each. The RSS row: the {big} MiB file "
        "unthrottled in 8 segments, one run.",
    )


# --- 7z and RAR (issue 14) ----------------------------------------------------------


def _timed_extract(archive: Path, dest: Path, expected: int) -> float:
    from dropfetch.config import ExtractConfig
    from dropfetch.extract import extract, sniff

    dest.mkdir()
    t0 = time.perf_counter()
    files = extract(archive, dest, fmt=sniff(archive), config=ExtractConfig(), single_name="x")
    took = time.perf_counter() - t0
    if len(files) != expected:
        raise BenchFailure(f"extract() returned {len(files)} files of {archive}, not {expected}")
    wipe(dest)
    return took


def _timed_tool(script: str, dest: Path) -> float:
    dest.mkdir()
    took = timed_shell(script)
    wipe(dest)
    return took


def _tree_archives(ctx: Ctx) -> tuple[Path, Path, int]:
    """The standard-library copy as a solid LZMA2 7z (7zz) and a stored RAR 5, on tmpfs."""
    from archives7z import rar5_stored, seven_zz

    tree = ctx.shm / "tree"
    tree.mkdir()
    subprocess.run(["tar", "-xzf", str(ctx.data.medium_archive), "-C", str(tree)], check=True)
    seven = seven_zz(tree, ctx.shm / "tree.7z", "-t7z", "-m0=lzma2", "-ms=on", "-mx=5")
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    rar = ctx.shm / "tree.rar"
    with open(rar, "wb") as f:
        count = rar5_stored(f, ((str(p.relative_to(tree)), p) for p in files))
    wipe(tree)
    return seven, rar, count


def _compare(ctx: Ctx, archive: Path, count: int, tools: dict[str, str]) -> dict[str, list[float]]:
    """Medians' samples: dropfetch and each tool (name -> shell with {a} and {d})."""
    samples: dict[str, list[float]] = {"dropfetch": [], **{t: [] for t in tools}}
    dest = ctx.shm / "x-out"
    for i in range(ctx.sizes.runs):

        def ours() -> None:
            samples["dropfetch"].append(_timed_extract(archive, dest, count))

        def theirs() -> None:
            for tool, script in tools.items():
                samples[tool].append(_timed_tool(script.format(a=q(archive), d=q(dest)), dest))

        alternate(i, ours, theirs)
        log(
            f"{archive.name} run {i}: "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in samples.items())
        )
    return samples


def case_7z_rar(ctx: Ctx) -> None:
    from archives7z import extract_peak_rss, solid_7z_of_text

    seven, rar, count = _tree_archives(ctx)
    ctx.extra["7z-rar tree"] = {
        "files": count,
        "7z": seven.stat().st_size,
        "rar": rar.stat().st_size,
    }
    s7 = _compare(
        ctx,
        seven,
        count,
        {"7zz x": "7zz x -y -bso0 -bsp0 -o{d} {a}", "bsdtar -xf": "bsdtar -xf {a} -C {d}"},
    )
    sr = _compare(
        ctx, rar, count, {"bsdtar -xf": "bsdtar -xf {a} -C {d}", "unar": "unar -q -f -D -o {d} {a}"}
    )
    what7 = f"{count}-file 7z (solid LZMA2, 7zz -mx=5), extraction alone, tmpfs"
    whatr = (
        f"same files as a stored RAR 5 ({rar.stat().st_size // MIB} MiB), extraction alone, tmpfs"
    )
    for key, what, samples, tool in (
        ("7z-7zz", what7, s7, "7zz x"),
        ("7z-bsdtar", "same 7z, against bsdtar", s7, "bsdtar -xf"),
        ("rar-bsdtar", whatr, sr, "bsdtar -xf"),
        ("rar-unar", "same RAR, against unar", sr, "unar"),
    ):
        ctx.rows.append(versus(key, what, samples["dropfetch"], tool, samples[tool]))
    seven.unlink()
    rar.unlink()
    big = ctx.fresh("7z-rss") / "text.7z"
    size = 1024 * MIB if not ctx.sizes.quick_tree else 64 * MIB
    files = solid_7z_of_text(big, size)
    result = extract_peak_rss(big, big.with_name("out"))
    if result["files"] != files:
        raise BenchFailure(f"the solid 7z gave {result['files']} files, not {files}")
    what = f"peak RSS extracting a {size // MIB} MiB solid 7z (one LZMA2 block of text, VmHWM)"
    ctx.rows.append(peak("7z-rss", what, [result["vmhwm_kib"] * 1024 / 1e6], 100))
    wipe(big.parent)
    ctx.note(
        "7z-rar",
        f"7z and RAR (issue 14), extraction alone on tmpfs, alternating runs: {ctx.sizes.runs}; "
        "`dropfetch.extract.extract()` in-process (all checks on, default limits) against "
        f"`7zz x`, `bsdtar -xf` and `unar` processes. The tree is one standard-library copy "
        f"({count:,} files) as a 7z made by `7zz a -t7z -m0=lzma2 -ms=on -mx=5` "
        f"({ctx.extra['7z-rar tree']['7z'] / MIB:.0f} MiB, solid), and as a **stored** RAR 5 "
        "written by `tests/archives7z.rar5_stored` (no free software writes compressed RAR): "
        "it times the RAR container path and the writes, not RAR's decompressor. The RSS "
        f"row: a {size // MIB} MiB tree of standard-library modules repeated, one solid LZMA2 "
        "block (`7zz -mx=1`), extracted by a fresh Python process on disk (its `VmHWM`).",
    )


RUNNERS: dict[str, Callable[[Ctx], None]] = {
    "file": case_file,
    "targz": lambda ctx: case_tree(ctx, TREE_CASES["targz"]),
    "tarxz": lambda ctx: case_tree(ctx, TREE_CASES["tarxz"]),
    "tarzst": lambda ctx: case_tree(ctx, TREE_CASES["tarzst"]),
    "zip": lambda ctx: case_tree(ctx, TREE_CASES["zip"]),
    "extract": case_extract,
    "small": case_small,
    "latency": case_latency,
    "polling": case_polling,
    "many": case_many,
    "polling-py": case_polling_py,
    "segments": case_segments,
    "7z-rar": case_7z_rar,
}


# --- the report ----------------------------------------------------------------------


def machine() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.splitlines()
            if ln.startswith("model name")
        ]
        info["cpu"] = f"{models[0] if models else platform.processor()} x {len(models)}"
    except OSError:
        info["cpu"] = platform.processor()
    info["online cpus"] = str(os.cpu_count())
    with contextlib.suppress(OSError):
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal:"):
                info["memory"] = f"{int(ln.split()[1]) / 1024 / 1024:.1f} GiB"
    info["kernel"] = platform.release()
    with contextlib.suppress(OSError):
        for ln in Path("/etc/os-release").read_text().splitlines():
            if ln.startswith("PRETTY_NAME="):
                info["os"] = ln.split("=", 1)[1].strip('"')
    info["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    info["dropfetch"] = code_version()
    info.update(tool_versions())
    info["load average at start"] = loadavg()
    return info


def tool_versions() -> dict[str, str]:
    """The first line of each baseline tool's version output."""
    tools = {
        "curl": ["curl", "--version"],
        "GNU tar": ["tar", "--version"],
        "bsdtar": [which("bsdtar") or "bsdtar", "--version"],
        "nginx": [which("nginx") or "nginx", "-v"],
        "xz": ["xz", "--version"],
        "zstd": ["zstd", "--version"],
        "unzip": ["unzip", "-v"],
        "aria2c": ["aria2c", "--version"],
    }
    return {name: first_line(cmd) for name, cmd in tools.items()}


def code_version() -> str:
    """Which dropfetch the bench measures: the repository's, or a snapshot on PYTHONPATH
    (``git archive HEAD daemon``, with the commit in daemon/REVISION) so that edits made
    to the tree while the bench runs do not mix into the figures."""
    try:
        import dropfetch
    except ImportError:
        return "not importable"
    version = getattr(dropfetch, "__version__", "?")
    package = Path(dropfetch.__file__).resolve().parent
    revision = package.parent / "REVISION"
    if revision.exists():
        return f"{version}, snapshot of git {revision.read_text().strip()} at {package}"
    rev = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(ROOT), "status", "--porcelain", "daemon"])
    state = ", with uncommitted changes in daemon/" if dirty != "?" else ""
    return f"{version}, git {rev}{state} ({package})"


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes and one run per case (a smoke check)"
    )
    p.add_argument(
        "--only",
        action="append",
        choices=CASES,
        metavar="CASE",
        help=f"run only this case (repeatable): {', '.join(CASES)}",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    p.add_argument(
        "--write",
        action="store_true",
        help="write docs/ even with --quick or --only (default: only full runs)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record every daemon with py-spy (raw collapsed stacks) into DIR",
    )
    p.add_argument(
        "--strace",
        action="store_true",
        help="small case: one more, untimed, run under strace -c -f; prints syscalls per job",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary data")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_cases(
    ctx: Ctx, cases: list[str]
) -> tuple[dict[str, list[Row]], dict[str, tuple[str, str]]]:
    """Every case in turn: its rows and the load average at its start and end."""
    rows: dict[str, list[Row]] = {}
    loads: dict[str, tuple[str, str]] = {}
    for case in cases:
        at_start = loadavg()
        log(f"case {case} (load {at_start})")
        before = len(ctx.rows)
        RUNNERS[case](ctx)
        rows[case] = ctx.rows[before:]
        loads[case] = (at_start, loadavg())
        log(f"case {case} done (load {loads[case][1]})")
    return rows, loads


def setup(args: argparse.Namespace) -> None:
    ensure_apt_tools()
    if args.profile is not None:
        if not (BIN / "py-spy").exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)


def publish(run: Run, write_docs: bool, results: Path) -> None:
    """The table on stdout, the raw results as JSON, and (a full run) docs/."""
    print()
    print(render_text(run.all_rows))
    print(
        f"load average at start {run.info['load average at start']}, "
        f"at the end {run.info['load average at the end']}"
    )
    if write_docs:
        DOCS.mkdir(exist_ok=True)
        (DOCS / "BENCHMARKS.md").write_text(document(run, CASES))
        chart(run.all_rows, DOCS / "benchmarks.png")
        log(f"wrote {DOCS / 'BENCHMARKS.md'} and {DOCS / 'benchmarks.png'}")
    rows = [r.to_dict() for r in run.all_rows]
    results.write_text(
        json.dumps({"rows": rows, "extra": run.extra, "machine": run.info}, indent=1)
    )
    log(f"raw results: {results}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cases = args.only or list(CASES)
    sizes = Sizes.quick() if args.quick else Sizes.full(args.runs)
    if args.quick and args.runs != 3:
        sizes.runs = args.runs
    setup(args)
    write_docs = args.write or not (args.quick or args.only)
    if write_docs:
        ensure_pip("matplotlib", "matplotlib")
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="dropfetch-bench-", dir="/tmp"))
    os.chmod(tmp, 0o755)  # noqa: S103 - nginx workers run as another user
    shm_root = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    shm = Path(tempfile.mkdtemp(prefix="dropfetch-bench-", dir=shm_root))
    try:
        data = Data(tmp / "data", sizes)
        with nginx(data.srv, tmp / "nginx") as url:
            ctx = Ctx(url, data, tmp / "work", shm, sizes, args.profile, strace=args.strace)
            ctx.work.mkdir()
            by_case, loads = run_cases(ctx, cases)
        info["load average at the end"] = loadavg()
        run = Run(
            by_case,
            ctx.notes,
            loads,
            info,
            started,
            time.monotonic() - t_start,
            ["bench/run.py", *argv],
            ctx.extra,
        )
        publish(run, write_docs, tmp.parent / f"{tmp.name}-results.json")
    finally:
        if args.keep:
            log(f"kept {tmp} and {shm}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(shm, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
