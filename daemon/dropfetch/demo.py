"""``dropfetch demo``: real downloads within a minute, with no network.

It serves sample downloads on loopback (:mod:`dropfetch.demosite`), writes a config that
lets loopback through ``download.block_networks`` (for the demo only), starts a daemon
on it, drops one job per sample and shows ``dropfetch status --watch`` until every job
has ended (or Ctrl-C). Then it stops the daemon and the server, which leaves no process
and no listening port behind, and says how each job ended: exit status 0 when each one
ended as it should (the failing ones with their error code), 1 when one did not, 130
after Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import yaml

from dropfetch.config import DEFAULT_BLOCK_NETWORKS, parse_size
from dropfetch.jobfile import SIDECAR_SUFFIX
from dropfetch.status import Sidecar, read_sidecar
from dropfetch.submit import job_content, write_job

if TYPE_CHECKING:
    from dropfetch.demosite import Sample

__all__ = ["HELP", "DemoError", "DemoOptions", "add_arguments", "demo_config", "outcome"]

HELP = "download sample archives from a server on this machine (no network needed)"
MARKER = ".dropfetch-demo"  # in a demo directory: the next demo may empty it
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SHUTDOWN_TIMEOUT = 10.0  # the demo daemon's shutdown_timeout


class DemoError(Exception):
    """A demo that cannot start (its directory): exit status 2."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    directory: Path
    big: int = 96 * 1024**2  # the large sample's size
    rate: int = 12 * 1024**2  # bytes/s the server sends it at; 0: unlimited
    timeout: float = 120.0  # seconds the jobs may take


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``dropfetch demo``."""
    p.description = (
        "Serve sample downloads on 127.0.0.1 (a tar.gz, a zip, a plain file, a large file "
        "sent slowly, and two that fail on purpose), run a daemon that fetches them, and "
        "show the status view until every job has ended. Ctrl-C stops it all."
    )
    p.add_argument(
        "--dir",
        type=Path,
        help="where the demo's config, inbox, outbox and daemon log go (default: a new "
        "temporary directory); a directory of an earlier demo is emptied first",
    )
    p.add_argument(
        "--big",
        type=_size,
        default="96MiB",
        metavar="SIZE",
        help="size of the large sample (default 96MiB)",
    )
    p.add_argument(
        "--rate",
        type=_size,
        default="12MiB",
        metavar="SIZE",
        help="bytes per second the server sends the large sample at, 0 for no limit "
        "(default 12MiB: its progress shows for several seconds)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="seconds to wait for the jobs (default 120)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    directory = (args.dir or Path(tempfile.mkdtemp(prefix="dropfetch-demo-"))).absolute()
    try:
        return Demo(DemoOptions(directory, args.big, args.rate, args.timeout)).run()
    except DemoError as exc:
        print(f"dropfetch demo: {exc}", file=sys.stderr)
        return EXIT_USAGE


def prepare_dir(directory: Path) -> None:
    """An empty ``directory`` with the demo's marker; one that holds anything but an
    earlier demo is refused (DemoError)."""
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / MARKER).is_file():
            raise DemoError(
                f"{directory} is not empty and holds no earlier demo: use another --dir"
            )
        shutil.rmtree(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER).write_text("made by `dropfetch demo`; the next demo empties it\n")
    except OSError as exc:
        raise DemoError(f"cannot use {directory}: {exc.strerror or exc}") from None


def demo_config() -> dict[str, Any]:
    """The demo daemon's config, next to its inbox and outbox: the defaults, except that
    loopback is let through ``download.block_networks`` (the samples are on 127.0.0.1)
    and jobs start quickly."""
    loopback = ipaddress.ip_address("127.0.0.1")
    allowed = [n for n in DEFAULT_BLOCK_NETWORKS if loopback not in ipaddress.ip_network(n)]
    return {
        "inbox": "inbox",  # relative to the config file
        "outbox": "outbox",
        "settle_time": 0.2,
        "min_free_space": "64MiB",
        "shutdown_timeout": SHUTDOWN_TIMEOUT,
        "download": {"block_networks": allowed},
        "status": {"update_interval": 0.25},
    }


def outcome(sample: Sample, sidecar: Sidecar | None) -> tuple[bool, str]:
    """Whether a demo job ended as it should (``sample.expect``), and a line saying how."""
    if sidecar is None or not sidecar.is_final:
        return False, f"did not end ({sidecar.status if sidecar else 'no status yet'})"
    error = sidecar.error or {}
    code, message = error.get("code"), error.get("message", "")
    if sample.expect == "ok":
        if sidecar.status == "ok" and sidecar.files == sample.files:
            count = len(sidecar.files)
            return True, f"ok: {count} file{'s' * (count != 1)} in outbox/{sidecar.output}/"
        return False, f"{sidecar.status} ({code}): {message}"
    if sidecar.status == "failed" and code == sample.expect:
        return True, f"failed with {code}, on purpose ({sample.note}): {message}"
    return False, f"should have failed with {sample.expect}, ended {sidecar.status} ({code})"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def _mib(n: int) -> str:
    return f"{n / 1024**2:g} MiB"


class _Waiter(threading.Thread):
    """Ends the status view, with a SIGINT to the main thread, once ``done()`` holds
    (every job ended, or the daemon exited) or the deadline has passed."""

    def __init__(self, done: Callable[[], bool], deadline: float) -> None:
        super().__init__(name="dropfetch-demo-wait", daemon=True)
        self._done = done
        self._deadline = deadline
        self._cancel = threading.Event()

    def run(self) -> None:
        while not self._done() and time.monotonic() < self._deadline:
            if self._cancel.wait(0.25):
                return
        # the view redraws twice a second: let it show the end before it stops
        if not self._cancel.wait(1.0):
            main = threading.main_thread().ident
            if main is not None:
                signal.pthread_kill(main, signal.SIGINT)

    def stop(self) -> None:
        self._cancel.set()
        if self.is_alive():
            self.join()


class _OneInterrupt:
    """A SIGINT/SIGTERM handler that raises KeyboardInterrupt once, then ignores."""

    def __init__(self) -> None:
        self.armed = True

    def __call__(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt


class Demo:
    """One demo run in ``options.directory``: site, daemon, jobs, view, then the stop."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        from dropfetch.demosite import samples  # http.server: only when a demo runs

        self.samples = samples(options.big)
        self.config_path = options.directory / "config.yaml"
        self.inbox = options.directory / "inbox"
        self.log_path = options.directory / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        from dropfetch.demosite import SampleSite

        prepare_dir(self.options.directory)
        self._write_config()
        self.inbox.mkdir()
        site = SampleSite(self.samples, rate=self.options.rate)
        interrupt = _OneInterrupt()
        previous = signal.signal(signal.SIGINT, interrupt), signal.signal(signal.SIGTERM, interrupt)
        deadline = time.monotonic() + self.options.timeout
        waiter = _Waiter(self._over, deadline)
        why = "interrupted"
        try:
            site.start()
            self._start_daemon()
            for s in self.samples:
                write_job(self.inbox, s.name, job_content(site.url(s.path), sha256=s.sha256))
            self._intro(site.url())
            self._wait_for_sidecars(time.monotonic() + 10)
            waiter.start()
            self._watch()
        except KeyboardInterrupt:
            pass  # a Ctrl-C before the view; the view itself ends quietly on one
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stop is bounded: let it finish
            waiter.stop()
            why = self._why(deadline)
            self._stop_daemon()
            site.stop()
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
        return self._report(why)

    def _write_config(self) -> None:
        header = (
            "# written by `dropfetch demo`: the built-in defaults, except that loopback is\n"
            "# let through download.block_networks (its sample server is on 127.0.0.1)\n"
        )
        text = yaml.safe_dump(demo_config(), sort_keys=False)
        self.config_path.write_text(header + text)

    def _start_daemon(self) -> None:
        with self.log_path.open("ab") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "dropfetch", "run", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops it in order
            )

    def _stop_daemon(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(SHUTDOWN_TIMEOUT + 20)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()

    def _sidecar(self, name: str) -> Sidecar | None:
        return read_sidecar(self.inbox / (name + SIDECAR_SUFFIX))

    def _ended(self) -> bool:
        sidecars = [self._sidecar(s.name) for s in self.samples]
        return all(sc is not None and sc.is_final for sc in sidecars)

    def _wait_for_sidecars(self, deadline: float) -> None:
        """Until the daemon has written every job's first sidecar (the view's first
        frame then shows them all), at most until ``deadline``."""
        names = [s.name for s in self.samples]
        while time.monotonic() < deadline and not self._daemon_exited():
            if all(self._sidecar(n) is not None for n in names):
                return
            time.sleep(0.05)

    def _daemon_exited(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is not None

    def _over(self) -> bool:
        return self._ended() or self._daemon_exited()

    def _why(self, deadline: float) -> str:
        """Why the view ended: every job "ended", the "daemon" exited, a "timeout", or
        (none of these) the user "interrupted" it."""
        if self._ended():
            return "ended"
        if self._daemon_exited():
            return "daemon"
        return "timeout" if time.monotonic() >= deadline else "interrupted"

    def _intro(self, url: str) -> None:
        d = self.options.directory
        rate = f"at {_mib(self.options.rate)}/s" if self.options.rate else "unlimited"
        lines = [
            f"dropfetch demo: {len(self.samples)} downloads from a server on this machine",
            f"  server  {url} (the large file: {_mib(self.options.big)}, {rate})",
            f"  config  {_shown(self.config_path)} (loopback allowed, for the demo only)",
            f"  jobs    {_shown(self.inbox)}/NAME.url, their status NAME.status.json",
            f"  output  {_shown(d / 'outbox')}/NAME/    daemon log  {_shown(self.log_path)}",
            "The status view follows until every job has ended; Ctrl-C stops the demo.",
            "",
        ]
        print("\n".join(lines), flush=True)

    def _watch(self) -> None:
        """``dropfetch status --watch`` in this process, until the waiter's SIGINT."""
        from dropfetch import cli

        cli.main(["status", "--watch", "--config", str(self.config_path)])

    def _report(self, why: str) -> int:
        results = [(s, *outcome(s, self._sidecar(s.name))) for s in self.samples]
        width = max(len(s.name) for s in self.samples)
        print()
        for s, _fine, line in results:
            print(f"  {s.name:<{width}}  {line}")
        if all(fine for _s, fine, _line in results):
            print(
                f"\nEvery job ended as it should. Look around in {_shown(self.options.directory)}"
                ". Your own downloads: README, Quick start (`make run`, `dropfetch submit URL`)."
            )
            return EXIT_OK
        if why == "interrupted":
            print(
                "\nInterrupted: the daemon and the server are stopped (the demo starts over "
                "when run again)."
            )
            return EXIT_INTERRUPTED
        print(
            {
                "daemon": f"\nThe daemon stopped by itself (exit status {self._exit_status()}).",
                "timeout": f"\nThe jobs did not end within {self.options.timeout:g} s.",
            }.get(why, "\nNot every job ended as it should.")
            + f" The daemon's log: {_shown(self.log_path)}"
        )
        self._log_tail()
        return EXIT_FAILED

    def _exit_status(self) -> int | None:
        return None if self.daemon is None else self.daemon.returncode

    def _log_tail(self, lines: int = 15) -> None:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return
        for line in tail:
            print(f"  | {line}", file=sys.stderr)
