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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from dropfetch import __version__, control, demo
from dropfetch.config import Config, ConfigError, load_config
from dropfetch.errors import DropfetchError
from dropfetch.fsutil import display_name
from dropfetch.intake import scan
from dropfetch.jobfile import PRIORITIES, SIDECAR_SUFFIX
from dropfetch.jobpaths import find_job_files
from dropfetch.logs import JsonFormatter, TextFormatter, escape
from dropfetch.status import Sidecar, read_sidecar, read_sidecars
from dropfetch.submit import derive_name, header_lines, job_content, write_job
from dropfetch.urlpolicy import redact_url

if TYPE_CHECKING:
    from rich.console import Console

    from dropfetch.view import StatusView

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
                headers=header_lines(args.header),
                checksum=args.checksum,
                checksum_url=args.checksum_url,
                mirrors=args.mirror,
                segments=args.segments,
                password=args.password,
            )
            print(write_job(config.inbox, args.name or derive_name(url), content))
        except DropfetchError as exc:
            print(f"dropfetch: {url}: {exc.message}", file=sys.stderr)
            failed += 1
    return EXIT_USAGE if failed else EXIT_OK


@dataclass(frozen=True, slots=True)
class _Listing:
    """What ``status`` shows: the sidecars, the job files without one yet
    (``pending``) and, of the names asked for, those that are neither (``missing``)."""

    sidecars: list[Sidecar]
    pending: list[str]
    missing: list[str]


def _listing(config: Config, names: Sequence[str]) -> _Listing:
    if not config.inbox.is_dir():
        raise UsageError(f"no inbox at {config.inbox} (no such directory)")
    jobs, sidecars = _named(config.inbox, names) if names else _everything(config)
    seen = {s.id for s in sidecars}  # as shown: display_name of the job id
    pending = [j for j in jobs if display_name(j) not in seen]
    missing = [n for n in names if display_name(n) not in seen and n not in jobs]
    return _Listing(sidecars, pending, missing)


def _named(inbox: Path, names: Sequence[str]) -> tuple[set[str], list[Sidecar]]:
    """(the job files, the sidecars) of the jobs ``names``."""
    jobs = {n for n in names if find_job_files(inbox, n)}
    found = (read_sidecar(inbox / (n + SIDECAR_SUFFIX)) for n in names)
    return jobs, [s for s in found if s is not None]


def _everything(config: Config) -> tuple[set[str], list[Sidecar]]:
    """(the job files without anything under their sidecar's name, every sidecar); the
    job files first, so a sidecar written meanwhile is read."""
    jobs, entries = scan(config.inbox, recursive=config.recursive)
    return jobs - entries, read_sidecars(config.inbox, recursive=config.recursive)


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        return _status(args, config)
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the flush at exit must not fail again
        os.close(devnull)
        return EXIT_OK
    except KeyboardInterrupt:
        if not args.watch:
            raise
        return EXIT_OK


def _status(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    if args.json:
        _print_json(config, args.names)
        return EXIT_OK
    console = Console()
    if args.watch and console.is_terminal:
        _watch_live(console, config, args)
        return EXIT_OK
    return _print_status(console, config, args)


def _print_json(config: Config, names: Sequence[str]) -> None:
    """The sidecars as one JSON array (as ``GET /archive`` lists them: a job file
    without a sidecar yet is not in it)."""
    sidecars = _listing(config, names).sidecars
    items = [json.loads(s.to_json()) for s in sidecars]
    sys.stdout.write(json.dumps(items, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _view(config: Config, args: argparse.Namespace) -> tuple[StatusView, list[str]]:
    from dropfetch.view import build

    listing = _listing(config, args.names)
    every = args.all or bool(args.names)  # jobs asked for by name are never folded
    return build(listing.sidecars, listing.pending, show_all=every), listing.missing


def _watch_live(console: Console, config: Config, args: argparse.Namespace) -> None:
    """``status --watch`` on a terminal: one table refreshed in place, until Ctrl-C."""
    from rich.live import Live

    with Live(_view(config, args)[0], console=console, refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(0.5)
            live.update(_view(config, args)[0])


def _print_status(console: Console, config: Config, args: argparse.Namespace) -> int:
    """The table once (or every 2 s with ``--watch``): fitted to the terminal, or in a
    pipe plain text, as wide as it needs unless ``COLUMNS`` says otherwise."""
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else None
    while True:
        view, missing = _view(config, args)
        if console.is_terminal:
            console.print(view)
        else:
            sys.stdout.write(view.plain(width))
            sys.stdout.flush()
        if not args.watch:
            if missing:
                print(f"no such job: {', '.join(missing)}", file=sys.stderr)
                return EXIT_FAILURE
            return EXIT_OK
        time.sleep(2.0)
        sys.stdout.write("\n")


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
    if config.download.proxy:  # its user:password never printed
        data["download"]["proxy"] = redact_url(config.download.proxy)
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


# --- argument parsing ----------------------------------------------------------------


def _where(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", type=Path, help="config file (YAML); its inbox is used")
    g.add_argument("--inbox", type=Path, help="the inbox directory (instead of a config file)")


_DESCRIPTION = (
    "dropfetch turns a directory into a download queue: a job file NAME.url (or a link "
    "file NAME.webloc or NAME.desktop) in the inbox is downloaded, unpacked safely into "
    "outbox/NAME/, and followed in inbox/NAME.status.json."
)


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the daemon in the foreground",
        description="run the daemon in the foreground",
    )
    p.add_argument("--config", type=Path, help="config file (YAML); default: built-in defaults")
    p.add_argument("--inbox", type=Path, help="the inbox directory (overrides the config's)")
    p.add_argument("--outbox", type=Path, help="the outbox directory (overrides the config's)")
    p.add_argument("--workers", type=int, help="jobs run at the same time (overrides the config's)")
    p.add_argument(
        "--observer",
        choices=("auto", "inotify", "polling"),
        help="how the inbox is watched (auto: inotify where it works, else polling)",
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="log everything (level DEBUG)"
    )
    p.add_argument(
        "-q", "--quiet", action="count", default=0, help="log only warnings; twice: only errors"
    )
    p.set_defaults(func=cmd_run)


def _add_submit(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="write a job file safely and print its path",
        description="write a job file safely and print its path",
    )
    p.add_argument("url", nargs="*", help="URL(s); none or '-': one per line on stdin")
    p.add_argument("--name", help="the job's name (default: from the URL's file name)")
    p.add_argument(
        "--sha256", help="the download's expected SHA-256 (64 hex digits); else the job fails"
    )
    p.add_argument("--no-extract", action="store_true", help="deliver the downloaded file as it is")
    p.add_argument("--filename", help="name of the delivered file when not extracted")
    p.add_argument(
        "--keep-archive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the archive next to the output (default: the config's)",
    )
    p.add_argument("--priority", choices=PRIORITIES, help="high: before waiting normal, low jobs")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header (repeatable), e.g. 'Authorization: Bearer ...'; "
        "sent to the URL's origin only",
    )
    p.add_argument(
        "--checksum",
        metavar="ALGO:HEX",
        help="the download's expected digest (sha256, sha512, sha1, md5, blake2b)",
    )
    p.add_argument(
        "--checksum-url",
        metavar="URL",
        help="a checksum file (SHA256SUMS, x.sha512...) with the download's entry",
    )
    p.add_argument(
        "--mirror",
        metavar="URL",
        action="append",
        help="another URL of the same file, tried when the URL fails (repeatable)",
    )
    p.add_argument(
        "--segments",
        metavar="N",
        type=int,
        help="parallel Range connections (1 to 16; default download.segments)",
    )
    p.add_argument(
        "--password",
        help="for an encrypted archive (tried before extract.passwords_file); other users "
        "may see a command line: prefer the passwords file for a shared machine",
    )
    _where(p)
    p.set_defaults(func=cmd_submit)


def _add_status(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="show the jobs: a table, or their sidecars as JSON",
        description="show the jobs: a table, or their sidecars as JSON",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these jobs")
    p.add_argument(
        "--all", action="store_true", help="every job (else only the 20 last finished ones)"
    )
    p.add_argument(
        "--json", action="store_true", help="print the sidecars as one JSON array instead"
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="refresh until Ctrl-C (in place on a terminal, every 2 s in a pipe)",
    )
    _where(p)
    p.set_defaults(func=cmd_status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropfetch", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"dropfetch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_run(sub)
    _add_submit(sub)
    _add_status(sub)
    for name, func, text in (
        ("retry", cmd_retry, "re-queue a failed or finished job; a waiting one: try now"),
        ("delete", cmd_delete, "remove a job (and what it made)"),
        ("pause", cmd_pause, "stop a job soon, keeping its partial download"),
        ("resume", cmd_resume, "go on with a paused job from where it stopped"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "name",
            metavar="NAME",
            help="the job's name (its job file is NAME.url, .webloc or .desktop)",
        )
        _where(p)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "check-config", help="validate a config file", description="validate a config file"
    )
    p.add_argument("file", type=Path, help="the config file (YAML) to check")
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
