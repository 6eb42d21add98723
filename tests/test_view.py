"""Issue 12: the terminal view (``dropfetch status``) and the help texts.

The view is fitted to the width in terminal cells: the tests draw it at many widths,
with names of every kind, on a terminal (rich, recorded) and in a pipe (plain text),
and read it back cell by cell.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

import dropfetch
from dropfetch.cli import build_parser
from dropfetch.names import CONTROL
from dropfetch.status import Sidecar, Status
from dropfetch.view import (
    FOLD_AFTER,
    GIVE_WAY,
    Span,
    build,
    fit,
    natural_key,
    shorten_middle,
)
from harness import check_sidecar, status_on_a_terminal

WIDTHS = (56, 60, 72, 80, 100, 132, 200)  # 56: the least of every column kept
NAMES = (
    "very-long-name-of-an-archive-that-goes-on-and-on-for-ever-name.tar.gz",
    "日本語のファイル名はとても長いですね本当に長い.tar.gz",
    "emoji-😀🎉📦-archive",
    "esc\x1b[31mred\x07bell",  # control characters: shown escaped
    "bad\udcff\udcfename",  # undecodable bytes (os.fsdecode's surrogate escapes)
    "n3",
    "n28",
    "SUB/inner-job",
)
_CONTROL_RE = re.compile(f"[{CONTROL}]")


def _sc(name: str, status: Status, **kw: object) -> Sidecar:
    return Sidecar(id=name, job=name + ".url", job_sha256="a" * 64, status=status, **kw)  # type: ignore[arg-type]


def _mixed() -> list[Sidecar]:
    """A job of each kind, under each kind of name."""
    out = []
    kinds = (
        {
            "status": Status.DOWNLOADING,
            "progress": 42,
            "bytes_total": 10**8,
            "speed": 5e6,
            "eta": 12.0,
        },
        {"status": Status.FAILED, "error": {"code": "checksum_mismatch", "message": "x " * 40}},
        {"status": Status.OK, "archive": {"size": 12345}, "finished": "2026-12-01T12:00:00.000Z"},
        {"status": Status.WAITING, "error": {"code": "http_503", "message": "the server said 503"}},
        {"status": Status.UNPACKING, "progress": None},
    )
    for i, name in enumerate(NAMES):
        kw = dict(kinds[i % len(kinds)])
        out.append(_sc(name, kw.pop("status"), host="node-a", **kw))  # type: ignore[arg-type]
    return out


def _rich_lines(view: object, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=True, color_system="truecolor")
    console.print(view)
    return console.export_text(clear=False).rstrip("\n").split("\n")


def _start(line: str, word: str) -> int:
    """The cell offset where ``word`` begins in ``line``, after a column gap."""
    at = line.index("  " + word) + 2
    return cell_len(line[:at])


# -- pure parts ------------------------------------------------------------------------


def test_names_sort_naturally_without_case_and_subdirectories_together():
    names = ["n28", "N3", "b/x", "n100", "a", "b-1", "B/y2", "b/y10", "n3a", "c"]
    assert sorted(names, key=natural_key) == [
        "a",
        "b/x",
        "B/y2",
        "b/y10",
        "b-1",
        "c",
        "N3",
        "n3a",
        "n28",
        "n100",
    ]


def test_long_names_are_shortened_in_the_middle_in_cells():
    assert shorten_middle("very-long-name-of-an-archive-name.tar.gz", 25) == (
        "very-long-na…-name.tar.gz"
    )
    assert shorten_middle("short", 25) == "short"
    for name in NAMES:
        for width in range(3, 40):
            got = shorten_middle(name, width)
            assert width - 1 <= cell_len(got) <= width or got == name
            if got != name and width >= 6:  # the start and the end of the name are kept
                assert got[0] == name[0] and got[-1] == name[-1] and "…" in got


def test_columns_give_way_in_their_order_and_the_important_ones_stay():
    columns = {
        "name": Span(10, 24, 60),
        "status": Span(15, 15, 15),
        "progress": Span(8, 12, 22),
        "size": Span(9, 9, 9),
        "speed": Span(10, 10, 10),
        "eta": Span(5, 5, 5),
        "host": Span(8, 8, 8),
        "updated": Span(7, 7, 7),
        "error": Span(17, 17, 90),
    }
    dropped_before: list[str] = []
    for width in range(200, 40, -1):
        widths = fit(columns, width)
        assert {"name", "status", "progress", "error"} <= set(widths)
        gone = [c for c in GIVE_WAY if c not in widths]
        assert gone == list(GIVE_WAY[: len(gone)])  # in order, never one back
        assert len(gone) >= len(dropped_before)
        dropped_before = gone
        if width >= 10 + 15 + 8 + 17 + 6:
            assert sum(widths.values()) + 2 * (len(widths) - 1) <= width
        assert widths["error"] >= 17  # the code is never cut
    assert fit(columns, None)["name"] == 60  # a pipe: whole names


def test_the_view_at_many_widths_keeps_columns_aligned_and_codes_whole():
    view = build(_mixed(), ["pending-job"])
    order = [r.cells["name"] for r in view.rows]
    for width in WIDTHS:
        for plain, lines in (
            (False, _rich_lines(view, width)),
            (True, view.plain(width).rstrip("\n").split("\n")),
        ):
            assert lines[0].startswith("NAME"), (width, plain)
            assert all(cell_len(line) <= width for line in lines), (width, plain, lines)
            assert not any(_CONTROL_RE.search(line) for line in lines)
            at = _start(lines[0], "STATUS")
            for row, line in zip(view.rows, lines[1:], strict=True):
                assert _start(line, row.cells["status"]) == at, (width, plain, line)
                if row.code:
                    assert row.code in line, (width, line)  # whole, whatever the width
            assert len(lines) == 1 + len(order)
    wide = view.plain(None)
    assert "esc\\x1b[31mred\\x07bell" in wide and "bad\\xff\\xfename" in wide
    assert all(
        n in wide for n in ("日本語のファイル名はとても長いですね本当に長い.tar.gz", "😀🎉📦")
    )


def test_the_order_active_first_then_waiting_then_finished_by_natural_name():
    view = build(
        [
            _sc("n28", Status.OK),
            _sc("n3", Status.OK),
            _sc("z", Status.DOWNLOADING, progress=1),
            _sc("gone", Status.FAILED),
            _sc("w", Status.WAITING),
        ],
        ["p10", "p9"],
    )
    assert [r.cells["name"] for r in view.rows] == ["z", "w", "p9", "p10", "gone", "n3", "n28"]
    assert [r.state for r in view.rows][2:4] == ["pending", "pending"]


def test_finished_jobs_beyond_the_last_20_are_folded_and_all_shows_them():
    done = [
        _sc(f"done{i}", Status.OK, finished=f"2026-12-01T12:{i // 60:02d}:{i % 60:02d}.000Z")
        for i in range(55)
    ]
    active = [_sc("dl", Status.DOWNLOADING, progress=5), _sc("q", Status.QUEUED)]
    view = build(done + active)
    names = [r.cells["name"] for r in view.rows]
    assert names[:2] == ["dl", "q"]
    assert names[2:] == [f"done{i}" for i in range(55 - FOLD_AFTER, 55)]  # the most recent
    text = view.plain(80)
    assert text.rstrip("\n").split("\n")[-1] == "… and 35 more finished jobs; --all shows them"
    every = build(done + active, show_all=True)
    assert len(every.rows) == 57 and "more finished" not in every.plain(80)


def test_ten_thousand_jobs():
    sidecars = [
        _sc(f"job-{i}", (Status.QUEUED, Status.OK, Status.DOWNLOADING)[i % 3], progress=i % 100)
        for i in range(10_000)
    ]
    view = build(sidecars)
    lines = view.plain(80).rstrip("\n").split("\n")
    assert len(lines) == 1 + 6667 + FOLD_AFTER + 1  # header, active and queued, 20, fold
    assert all(cell_len(line) <= 80 for line in lines)
    assert len(_rich_lines(view, 100)) == len(lines)


# -- the command -----------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropfetch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _inbox(tmp_path: Path, sidecars: list[Sidecar], jobs: list[str]) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for sc in sidecars:
        (inbox / f"{sc.id}.url").write_text("https://example.org/x.tar.gz\n")
        (inbox / f"{sc.id}.status.json").write_bytes(sc.to_json())
    for name in jobs:
        (inbox / f"{name}.url").write_text(f"https://u:pw@example.org/{name}.tar.gz?k=1\n")
    return inbox


def test_status_command_pending_filters_widths_and_a_missing_inbox(tmp_path):
    long = "a-really-long-job-name-that-does-not-fit-in-eighty-columns-at-all"
    sidecars = [
        _sc(long, Status.FAILED, error={"code": "unsupported_archive", "message": "m " * 50}),
        _sc("n28", Status.OK),
    ]
    inbox = _inbox(tmp_path, sidecars, ["n3", "fresh"])
    for width in (60, 80, 100, 200):
        out = _cli("status", "--inbox", str(inbox), env={"COLUMNS": str(width)})
        assert out.returncode == 0, out.stderr
        lines = out.stdout.rstrip("\n").split("\n")
        assert all(cell_len(line) <= width for line in lines), lines
        assert not _CONTROL_RE.search(out.stdout.replace("\n", ""))  # a pipe: plain text
        assert [line.split()[0] for line in lines[1:]][:2] == ["fresh", "n3"]  # pending
        assert "pending" in lines[1] and "unsupported_archive" in out.stdout
        assert "…" in out.stdout or width == 200
    whole = _cli("status", "--inbox", str(inbox), env={"COLUMNS": ""})
    assert long in whole.stdout  # a pipe without COLUMNS: names whole, for grep
    one = _cli("status", "n3", "n28", "--inbox", str(inbox))
    assert [line.split()[0] for line in one.stdout.splitlines()[1:]] == ["n3", "n28"]
    nothing = _cli("status", "n3", "nope", "--inbox", str(inbox))
    assert nothing.returncode == 1 and "nope" in nothing.stderr
    missing = _cli("status", "--inbox", str(tmp_path / "no" / "such"))
    assert missing.returncode == 2 and str(tmp_path / "no" / "such") in missing.stderr
    assert not missing.stdout


def test_status_json_keeps_its_shape_an_array_of_sidecars(tmp_path):
    done = _sc("done", Status.OK, output="done", files=["f"], progress=100)
    done.finished = done.updated
    inbox = _inbox(tmp_path, [done], ["fresh"])
    out = _cli("status", "--json", "--inbox", str(inbox))
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)
    assert [(x["id"], x["status"]) for x in items] == [("done", "ok")]  # as GET /archive
    for item in items:
        check_sidecar(item)
    assert _cli("status", "--json", "--inbox", str(tmp_path / "nope")).returncode == 2


def test_a_job_whose_sidecar_name_is_taken_is_not_pending(tmp_path):
    inbox = _inbox(tmp_path, [], ["blocked", "fresh"])
    (inbox / "blocked.status.json").mkdir()  # the daemon logs it; it is no pending job
    out = _cli("status", "--inbox", str(inbox))
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["fresh"]


@pytest.mark.parametrize("mode", ["--json", "--watch", "--all"])
def test_status_ends_quietly_when_the_reader_goes_away(tmp_path, mode):
    # enough jobs that the output is far more than a pipe holds
    inbox = _inbox(tmp_path, [_sc(f"job-{i}", Status.QUEUED) for i in range(3000)], [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropfetch", "status", mode, "--inbox", str(inbox)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # as `| head -1` does
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and not err


def test_status_on_a_terminal_fits_its_width(tmp_path):
    long = "x" * 120
    inbox = _inbox(
        tmp_path,
        [
            _sc(long, Status.DOWNLOADING, progress=30, bytes_total=10**9, speed=1e6, eta=700.0),
            _sc("bad", Status.FAILED, error={"code": "http_404", "message": "gone " * 20}),
        ],
        ["fresh"],
    )
    out = status_on_a_terminal(inbox, 80)
    assert "\x1b[" in out  # a terminal: colours
    text = re.sub(r"\x1b\[[0-9;]*m", "", out).replace("\r", "")
    lines = [line for line in text.split("\n") if line.strip()]
    assert len(lines) == 4 and all(cell_len(line) <= 80 for line in lines), lines
    assert "http_404" in text and "…" in text and "fresh" in text


# -- help texts ------------------------------------------------------------------------


def _commands() -> dict[str, object]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and a.dest == "command")  # noqa: SLF001
    return dict(sub.choices)  # type: ignore[arg-type]


def test_every_option_of_every_command_has_a_help_text():
    commands = _commands()
    assert {"run", "submit", "status", "retry", "delete", "check-config"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:  # type: ignore[attr-defined]  # noqa: SLF001
            assert action.help and action.help.strip(), (name, action.dest)
        out = _cli(name, "--help")
        assert out.returncode == 0, out.stderr
        assert "SPEC" not in out.stdout
        for action in parser._actions:  # type: ignore[attr-defined]  # noqa: SLF001
            shown = (
                action.option_strings[-1]
                if action.option_strings
                else (action.metavar or action.dest)
            )
            assert shown and str(shown) in out.stdout, (name, action.dest)
    top = _cli("--help")
    assert top.returncode == 0 and "SPEC" not in top.stdout


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def test_no_text_a_user_sees_refers_to_the_spec():
    """Help texts, messages, log lines: every string of the package that is not a
    docstring (a comment is no string)."""
    package = Path(dropfetch.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docs = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and "SPEC" in node.value
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value[:60]}")
    assert not found
