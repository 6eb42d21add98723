"""End-to-end harness: a real daemon subprocess on temporary directories."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FINAL = ("ok", "failed")
SCHEMA = json.loads((ROOT / "schema" / "status.schema.json").read_text())
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
RESCAN_DONE = re.compile(rb"\brescan \d+ done\b")  # the watcher's DEBUG line
STATUS_LINE = re.compile(rb"\bstatus: (\d+) running, (\d+) queued\b")  # the main loop's
RUNNING = re.compile(rb"\bdropfetch running: ")  # logged once the signal handlers are set
# For Daemon.start(env=...): without NOTIFY_SOCKET nothing is sent, but the main loop
# then ticks, and logs its status line for wait_idle(), every 0.5 s instead of 5 s.
FAST_TICK = {"WATCHDOG_USEC": "1000000"}
DEBUG_LOG = {"log": {"level": "debug"}}  # config: the lines wait_looked/wait_idle read
# Timeouts only bound how long a failure takes to show: a 2-core machine shared with
# other work can be many times slower than an idle one, so they are generous.
WAIT = 60.0


def new_threads(before: set[threading.Thread], timeout: float) -> list[threading.Thread]:
    """Threads started since ``before`` was taken that are still alive after joining
    each of them for what is left of ``timeout``; daemon threads count too."""
    deadline = time.monotonic() + timeout
    started = [t for t in threading.enumerate() if t not in before]
    for t in started:
        t.join(max(0.0, deadline - time.monotonic()))
    return [t for t in started if t.is_alive()]


def check_sidecar(data: Any) -> Any:
    """Validate a sidecar against schema/status.schema.json (every test sees this)."""
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: list(e.path))
    if errors:
        pytest.fail(
            "sidecar does not match the schema: "
            + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
            + f"\n{data}"
        )
    return data


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = WAIT,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class Daemon:
    """One ``dropfetch run`` subprocess with its config, inbox and outbox."""

    def __init__(self, base: Path, **config: Any) -> None:
        self.base = base
        self.inbox = base / "inbox"
        self.outbox = base / "outbox"
        self.config_path = base / "config.yaml"
        self.log_path = base / f"daemon-{os.getpid()}-{id(self)}.log"
        cfg: dict[str, Any] = {
            "inbox": str(self.inbox),
            "outbox": str(self.outbox),
            "workers": 2,
            "settle_time": 0.2,
            "rescan_interval": 2,
            "min_free_space": 0,
            "status": {"update_interval": 0.1},
            # timeouts a loaded machine cannot reach by accident: a needless retry
            # would change the request counts that tests check (tests of timeouts set
            # their own)
            "download": {
                "block_networks": [],
                "backoff_initial": 0.2,
                "backoff_max": 1,
                "timeout_read": 30,
                "timeout_connect": 30,
            },
        }
        _merge(cfg, config)
        self.config = cfg
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    @property
    def work(self) -> Path:
        return Path(self.config.get("work_dir") or self.outbox / ".dropfetch")

    def start(self, *extra: str, env: dict[str, str] | None = None) -> Daemon:
        """Start the daemon; return once it says it is running (its directories made,
        its signal handlers set: a SIGTERM from now on is a graceful stop), or has
        exited."""
        runs = self._count(RUNNING)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        proc = self.proc = subprocess.Popen(
            [sys.executable, "-m", "dropfetch", "run", "--config", str(self.config_path), *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            env={**os.environ, **(env or {})},
        )
        try:
            wait_for(
                lambda: (
                    proc.poll() is not None or (self._made_dirs() and self._count(RUNNING) > runs)
                ),
                message="the daemon to start",
            )
        except pytest.fail.Exception:
            print(self.log()[-5000:], file=sys.stderr)
            raise
        if not self._made_dirs():  # it exited before it made them: no use waiting
            pytest.fail(f"the daemon exited ({proc.returncode}) on start:\n{self.log()[-3000:]}")
        return self

    def _made_dirs(self) -> bool:
        return self.inbox.is_dir() and (self.work / "leases").is_dir()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def stop(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.kill()
        return rc

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _count(self, line: re.Pattern[bytes]) -> int:
        """How often ``line`` was logged, by every process of this daemon so far."""
        try:
            return len(line.findall(self.log_path.read_bytes()))
        except FileNotFoundError:
            return 0

    def rescans(self) -> int:
        """Rescans done so far, by every process of this daemon (needs log level debug)."""
        return self._count(RESCAN_DONE)

    def status_lines(self) -> list[tuple[int, int]]:
        """(running, queued) from each status line logged so far (log level debug)."""
        try:
            text = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        return [(int(a), int(b)) for a, b in STATUS_LINE.findall(text)]

    # -- jobs ----------------------------------------------------------------------------

    def drop(
        self,
        name: str,
        content: str | bytes,
        *,
        directory: Path | None = None,
        suffix: str = ".url",
    ) -> Path:
        """Write ``NAME.url`` (or ``NAME`` + ``suffix``) the safe way: temporary name,
        then rename."""
        inbox = directory or self.inbox
        inbox.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        tmp = inbox / f".{name}{suffix}.tmp"
        tmp.write_bytes(data)
        target = inbox / f"{name}{suffix}"
        tmp.rename(target)
        return target

    def sidecar_path(self, name: str) -> Path:
        return self.inbox / f"{name}.status.json"

    def sidecar(self, name: str) -> dict[str, Any] | None:
        """The sidecar, read as the daemon reads one (status.read_sidecar): a read that
        does not parse is tried again, because a network filesystem with attribute
        caching (the sshfs bed) can hand out a replaced file's new bytes at the old
        file's size for a moment; the third such read fails the test."""
        for attempt in range(3):
            try:
                raw = self.sidecar_path(name).read_bytes()
            except FileNotFoundError:
                return None
            try:
                doc = json.loads(raw)
            except ValueError:
                if attempt == 2:
                    raise
                time.sleep(0.1)
                continue
            return check_sidecar(doc)  # type: ignore[no-any-return]
        raise AssertionError("unreachable")

    def wait_status(
        self, name: str, statuses: tuple[str, ...] | str = FINAL, timeout: float = 2 * WAIT
    ) -> dict[str, Any]:
        wanted = (statuses,) if isinstance(statuses, str) else statuses

        def check() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"the daemon exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            sc = self.sidecar(name)
            return sc if sc and sc["status"] in wanted else None

        try:
            return wait_for(check, timeout, message=f"{name} to be {wanted}")  # type: ignore[no-any-return]
        except pytest.fail.Exception:
            print(self.log()[-5000:], file=sys.stderr)
            print("sidecar:", self.sidecar(name), file=sys.stderr)
            raise

    def output_files(self, name: str) -> list[str]:
        root = self.outbox / name
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.is_symlink()
        )


def wait_looked(*daemons: Daemon, timeout: float = WAIT) -> None:
    """Wait until each daemon has rescanned its inbox from start to end since now: the
    event that proves it had its chance to act on anything there (two more rescans, as
    the first may have begun before this call). Needs the daemons' log level debug."""
    targets = [(d, d.rescans() + 2) for d in _need_debug(daemons, "wait_looked")]
    for d, target in targets:

        def rescanned(d: Daemon = d, target: int = target) -> bool:
            return d.rescans() >= target

        wait_for(rescanned, timeout, message=f"rescan {target} in {d.log_path.name}")


def wait_idle(*daemons: Daemon, timeout: float = WAIT) -> None:
    """Wait until each daemon says twice in a row, after now, that it runs no job and
    has none queued (delayed looks included): the event that proves it is done with
    all it was told of. Needs the daemons' log level debug; the main loop says it every
    5 s, or every WATCHDOG_USEC/2."""
    marks = [(d, len(d.status_lines())) for d in _need_debug(daemons, "wait_idle")]

    def idle(d: Daemon, since: int) -> bool:
        new = d.status_lines()[since:]
        return len(new) >= 2 and all(s == (0, 0) for s in new[-2:])

    for d, since in marks:
        wait_for(
            functools.partial(idle, d, since),
            timeout,
            message=f"two idle status lines in {d.log_path.name}",
        )


def _need_debug(daemons: tuple[Daemon, ...], what: str) -> tuple[Daemon, ...]:
    for d in daemons:
        if d.config.get("log", {}).get("level") != "debug":
            raise AssertionError(f"{what}() needs the daemon's config log: {{level: debug}}")
    return daemons


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory: ``make_daemon(**config)`` returns a started daemon; all stopped after."""
    made: list[Daemon] = []

    def make(start: bool = True, base: Path | None = None, **config: Any) -> Daemon:
        d = Daemon(base or tmp_path, **config)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.kill()


PUBLISHED = re.compile(r"\b(\S+): published \d+ file\(s\) to ")


def publishes(*daemons: Daemon, expect: tuple[str, ...] = ()) -> Counter[str]:
    """The publish lines in the daemons' logs, once every job in ``expect`` has one (the
    INFO line follows the job's final sidecar, which the test may have seen first)."""

    def counts() -> Counter[str]:
        found: Counter[str] = Counter()
        for d in daemons:
            found.update(m.group(1) for m in PUBLISHED.finditer(d.log()))
        return found

    wait_for(lambda: set(expect) <= set(counts()), 30, message=f"publish lines of {expect}")
    return counts()


def status_on_a_terminal(inbox: Path, columns: int) -> str:
    """What ``dropfetch status --inbox INBOX`` prints on a real terminal (a pty) of
    ``columns`` columns."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: the real command on the terminal
        os.environ["COLUMNS"] = str(columns)
        os.execv(
            sys.executable, [sys.executable, "-m", "dropfetch", "status", "--inbox", str(inbox)]
        )
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode(errors="replace")
