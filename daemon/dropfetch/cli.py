"""Command line: argparse subcommands returning exit codes (SPEC §4).

Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from dropfetch import __version__, control, demo
from dropfetch.config import Config, ConfigError, load_config
from dropfetch.errors import DropfetchError
from dropfetch.jobfile import PRIORITIES, SIDECAR_SUFFIX
from dropfetch.logs import JsonFormatter, TextFormatter, escape
from dropfetch.status import Sidecar, read_sidecar, read_sidecars
from dropfetch.submit import derive_name, job_content, write_job

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["main"]

logger = logging.getLogger("dropfetch")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command-line mistake: exit status 2."""


def log_level(config: Config, *, verbose: int = 0, quiet: int = 0) -> str:
    """The level of the ``dropfetch`` loggers: ``-v`` (DEBUG) and ``-q`` (WARNING; twice:
    ERROR) win over ``log.level``, at a reload too."""
    if verbose:
        return "DEBUG"
    if quiet:
        return "WARNING" if quiet == 1 else "ERROR"
    return config.log.level.upper()


def configure_logging(config: Config, *, verbose: int = 0, quiet: int = 0) -> None:
    """Configure logging once, to stderr, with the escaping formatters of
    :mod:`dropfetch.logs`; uncaught exceptions and warnings become records too, so every
    line of the daemon's output is a record or a record's continuation."""
    level = log_level(config, verbose=verbose, quiet=quiet)
    handler = logging.StreamHandler(sys.stderr)
    if config.log.format == "json":
        encoding = (getattr(sys.stderr, "encoding", None) or "").lower().replace("-", "")
        handler.setFormatter(JsonFormatter(ensure_ascii=encoding != "utf8"))
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("dropfetch").setLevel(level)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
    sys.unraisablehook = _log_unraisable


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logger.critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_unraisable(args: Any) -> None:  # sys.UnraisableHookArgs
    logger.error(
        "exception ignored in %r: %s", args.object, args.err_msg or "", exc_info=args.exc_value
    )


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logger.critical("uncaught exception in thread %s", name, exc_info=args.exc_value)


# --- commands ------------------------------------------------------------------------


def _config(args: argparse.Namespace, **overrides: Any) -> Config:
    inbox = getattr(args, "inbox", None)
    return load_config(args.config, inbox=inbox, **overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from dropfetch.daemon import Daemon, StartupError

    overrides = {
        "inbox": args.inbox,
        "outbox": args.outbox,
        "workers": args.workers,
        "observer": args.observer,
    }
    config = _config(args, **{k: v for k, v in overrides.items() if k != "inbox"})
    configure_logging(config, verbose=args.verbose, quiet=args.quiet)
    level = functools.partial(log_level, verbose=args.verbose, quiet=args.quiet)
    daemon = Daemon(config, overrides=overrides, log_level=level)
    try:
        code = daemon.run()
    except ConfigError as exc:  # e.g. http.listen in use: the user must change something
        logger.error("cannot start: configuration error: %s", exc)
        return EXIT_USAGE
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        return EXIT_FAILURE
    if not daemon.stopped_in_time:
        # threads left behind (a stuck worker, a hung filesystem) must not hold the exit
        # past shutdown_timeout: the interpreter's own shutdown would wait for them
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


def _urls(args: argparse.Namespace) -> list[str]:
    """The URLs to submit: the arguments or, with none or ``-``, standard input's lines."""
    urls = (
        list(args.url)
        if args.url and args.url != ["-"]
        else [line.strip() for line in sys.stdin if line.strip() and not line.startswith("#")]
    )
    if not urls:
        raise UsageError("no URL given (as arguments or one per line on standard input)")
    if args.name and len(urls) > 1:
        raise UsageError("--name can only be used with a single URL")
    return urls


def cmd_submit(args: argparse.Namespace) -> int:
    config = _config(args)
    urls = _urls(args)
    config.inbox.mkdir(parents=True, exist_ok=True)
    failed = 0
    for url in urls:
        try:
            content = job_content(
                url,
                sha256=args.sha256,
                extract=not args.no_extract,
                filename=args.filename,
                keep_archive=args.keep_archive,
                priority=args.priority,
            )
            print(write_job(config.inbox, args.name or derive_name(url), content))
        except DropfetchError as exc:
            print(f"dropfetch: {url}: {exc.message}", file=sys.stderr)
            failed += 1
    return EXIT_USAGE if failed else EXIT_OK


def _sidecars(config: Config, names: Sequence[str]) -> list[Sidecar]:
    if names:
        found = [read_sidecar(config.inbox / (n + SIDECAR_SUFFIX)) for n in names]
        return [s for s in found if s is not None]
    return read_sidecars(config.inbox, recursive=config.recursive)


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    config = _config(args)
    if args.json:
        sidecars = _sidecars(config, args.names)
        print(json.dumps([json.loads(s.to_json()) for s in sidecars], indent=2, ensure_ascii=False))
        return EXIT_OK
    console = Console()
    try:
        if args.watch and console.is_terminal:
            _watch_live(console, config, args.names)
            return EXIT_OK
        return _print_status(console, config, args.names, watch=args.watch)
    except KeyboardInterrupt:
        if not args.watch:
            raise
        return EXIT_OK


def _watch_live(console: Console, config: Config, names: Sequence[str]) -> None:
    """``status --watch`` on a terminal: one table refreshed in place, until Ctrl-C."""
    from rich.live import Live

    from dropfetch.view import rich_table

    with Live(
        rich_table(_sidecars(config, names)), console=console, refresh_per_second=4, screen=False
    ) as live:
        while True:
            time.sleep(0.5)
            live.update(rich_table(_sidecars(config, names)))


def _print_status(console: Console, config: Config, names: Sequence[str], *, watch: bool) -> int:
    """The table once (or every 2 s with ``watch``), plain text in a pipe."""
    from dropfetch.view import render_plain, rich_table

    while True:
        sidecars = _sidecars(config, names)
        if console.is_terminal:
            console.print(rich_table(sidecars))
        else:
            sys.stdout.write(render_plain(sidecars))
            sys.stdout.flush()
        if not watch:
            missing = [n for n in names if n not in {s.id for s in sidecars}]
            if missing:
                print(f"no status for: {', '.join(missing)}", file=sys.stderr)
                return EXIT_FAILURE
            return EXIT_OK
        time.sleep(2.0)
        print()


def cmd_retry(args: argparse.Namespace) -> int:
    return _control(control.retry, args)


def cmd_delete(args: argparse.Namespace) -> int:
    return _control(control.delete, args)


def cmd_pause(args: argparse.Namespace) -> int:
    return _control(control.pause, args)


def cmd_resume(args: argparse.Namespace) -> int:
    return _control(control.resume, args)


def _control(action: Callable[[Config, str], str], args: argparse.Namespace) -> int:
    try:
        print(action(_config(args), args.name))
    except control.ControlError as exc:
        print(exc.message, file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(f"# {args.file}: valid. Effective configuration:")
    data = config.to_dict()
    data.pop("source", None)
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


# --- argument parsing ----------------------------------------------------------------


def _where(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", type=Path, help="config file (YAML)")
    g.add_argument("--inbox", type=Path, help="the inbox directory (instead of a config file)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dropfetch", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"dropfetch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("--config", type=Path)
    p.add_argument("--inbox", type=Path)
    p.add_argument("--outbox", type=Path)
    p.add_argument("--workers", type=int)
    p.add_argument("--observer", choices=("auto", "inotify", "polling"))
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="count", default=0)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="write a job file safely and print its path")
    p.add_argument("url", nargs="*", help="URL(s); none or '-': one per line on stdin")
    p.add_argument("--name")
    p.add_argument("--sha256")
    p.add_argument("--no-extract", action="store_true")
    p.add_argument("--filename", help="name of the delivered file when not extracted")
    p.add_argument(
        "--keep-archive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the archive next to the output (default: the config's)",
    )
    p.add_argument("--priority", choices=PRIORITIES, help="high: before waiting normal, low jobs")
    _where(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="show jobs from their sidecars")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true")
    _where(p)
    p.set_defaults(func=cmd_status)

    for name, func, text in (
        ("retry", cmd_retry, "re-queue a failed or finished job; a waiting one: try now"),
        ("delete", cmd_delete, "remove a job (and what it made)"),
        ("pause", cmd_pause, "stop a job soon, keeping its partial download"),
        ("resume", cmd_resume, "go on with a paused job from where it stopped"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", metavar="NAME")
        _where(p)
        p.set_defaults(func=func)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_config)

    demo.add_arguments(sub.add_parser("demo", help=demo.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        _complain(f"configuration error: {exc}")
        return EXIT_USAGE
    except UsageError as exc:
        _complain(str(exc))
        return EXIT_USAGE
    except DropfetchError as exc:
        _complain(exc.message)
        return EXIT_USAGE
    except OSError as exc:
        _complain(str(exc))
        return EXIT_FAILURE


def _complain(message: str) -> None:
    """One line on stderr: paths and values in ``message`` cannot break it."""
    print(f"dropfetch: {escape(message)}", file=sys.stderr)
