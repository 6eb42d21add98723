"""The status view: one layout for a terminal (colours, drawn bars) and for a pipe
(plain text).

Jobs are rows (:class:`Row`, from a sidecar or a job file without one yet); the rows
are put in order and the old finished ones folded (:func:`arrange`); the columns are
fitted to the width (:func:`fit`): the less important ones give way first
(:data:`GIVE_WAY`), then the progress bar and the name shrink (a name in its middle,
``very-long-na…-name.tar.gz``), and the error code always stays. Widths are counted in
terminal cells, so wide characters keep the columns aligned; every text is shown with
:func:`dropfetch.fsutil.display_name` (control characters and undecodable bytes
escaped).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.cells import cell_len, get_character_cell_size
from rich.text import Text

from dropfetch.fsutil import display_name
from dropfetch.status import Sidecar
from dropfetch.units import clock_time, human_size

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

__all__ = [
    "COLUMNS",
    "FOLD_AFTER",
    "GIVE_WAY",
    "PENDING",
    "Row",
    "StatusView",
    "arrange",
    "build",
    "fit",
    "natural_key",
    "pending_row",
    "render_plain",
    "rich_table",
    "shorten_middle",
    "sidecar_row",
]

PENDING = "pending"  # a job file the daemon has not written a sidecar for yet
FOLD_AFTER = 20  # finished jobs shown without --all: the most recent ones
GAP = 2  # cells between two columns
COLUMNS = ("name", "status", "progress", "size", "speed", "eta", "host", "updated", "error")
GIVE_WAY = ("updated", "host", "eta", "speed", "size")  # the first left out when narrow
_RIGHT = frozenset({"size", "speed", "eta", "updated"})

# active jobs first, then those waiting their turn, then the finished ones
_RANK = {
    "downloading": 0,
    "unpacking": 0,
    "waiting": 1,
    "paused": 1,
    "queued": 2,
    PENDING: 2,
    "deleting": 3,
    "failed": 4,
    "ok": 5,
}
_FINISHED = frozenset({"ok", "failed"})
_BARRED = frozenset({"downloading", "unpacking", "paused"})  # a progress bar
_STYLE = {
    "ok": "green",
    "failed": "bold red",
    "waiting": "yellow",
    "paused": "yellow",
    "downloading": "cyan",
    "unpacking": "magenta",
    "deleting": "dim",
    PENDING: "dim",
}


def _age(iso: str | None, now: float) -> str:
    """How long ago ``iso`` (a sidecar time) was: ``42s``, ``5m``, ``3h``, ``2d``."""
    try:
        when = datetime.strptime(iso or "", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return "-"
    seconds = max(0, int(now - when.timestamp()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- rows ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One job as the view shows it, before fitting: ``state`` is the status word
    (:data:`PENDING` for a job file without a sidecar), ``cells`` the text of each
    column but the progress bar (``percent``; None with ``bar``: total unknown) and the
    error (``code``, ``message``); ``when`` says which finished jobs are the recent ones."""

    state: str
    cells: dict[str, str]
    bar: bool = False
    percent: int | None = None
    code: str = ""
    message: str = ""
    when: str = ""


def sidecar_row(sc: Sidecar, now: float) -> Row:
    state = str(sc.status)
    barred = state in _BARRED
    percent = sc.progress if barred and isinstance(sc.progress, int) else None
    code, message = _error_of(sc)
    return Row(
        state=state,
        cells={
            "name": display_name(sc.id),
            "status": state if percent is None else f"{state} {percent}%",
            **_figures(sc, state),
            "host": display_name(sc.host) if sc.host else "-",
            "updated": _age(sc.updated, now),
        },
        bar=barred,
        percent=percent,
        code=code,
        message=message,
        when=sc.finished or sc.updated or "",
    )


def _figures(sc: Sidecar, state: str) -> dict[str, str]:
    """Size, speed (while downloading) and ETA (while active) of a sidecar."""
    size = sc.bytes_total if sc.bytes_total is not None else (sc.archive or {}).get("size")
    return {
        "size": human_size(size) if isinstance(size, int | float) else "-",
        "speed": f"{human_size(sc.speed)}/s" if sc.speed and state == "downloading" else "-",
        "eta": clock_time(sc.eta) if state in _BARRED else "-",
    }


def _error_of(sc: Sidecar) -> tuple[str, str]:
    error = sc.error if isinstance(sc.error, dict) else {}
    if not error:
        return "", ""
    return display_name(str(error.get("code", ""))), display_name(str(error.get("message", "")))


def pending_row(name: str) -> Row:
    """A job file the daemon has not taken yet (no sidecar)."""
    return Row(state=PENDING, cells={"name": display_name(name), "status": PENDING})


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[str | int, ...], ...]:
    """Sort key of a job name: numbers by value (``n3`` before ``n28``), letters
    without case, and ``SUB/`` names together, ordered by their part below ``SUB``."""
    return tuple(
        tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(_DIGITS.split(part)))
        for part in name.split("/")
    )


def _order(row: Row) -> tuple[int, tuple[tuple[str | int, ...], ...], str]:
    name = row.cells["name"]
    return _RANK.get(row.state, 2), natural_key(name), name


def arrange(rows: Iterable[Row], *, show_all: bool = False) -> tuple[list[Row], int]:
    """The rows in the order shown (active jobs first, then waiting, queued, finished;
    by name within) and how many finished ones were folded: without ``show_all`` only
    the :data:`FOLD_AFTER` most recently finished are kept."""
    rows = list(rows)
    done = [r for r in rows if r.state in _FINISHED]
    folded = 0
    if not show_all and len(done) > FOLD_AFTER:
        recent = sorted(done, key=lambda r: r.when, reverse=True)[:FOLD_AFTER]
        kept = {id(r) for r in recent}
        folded = len(done) - FOLD_AFTER
        rows = [r for r in rows if r.state not in _FINISHED or id(r) in kept]
    return sorted(rows, key=_order), folded


# -- fitting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """A column's width: at least ``least``, ``want`` before any other gives way, at
    most ``most`` (all of its text)."""

    least: int
    want: int
    most: int


def spans(rows: list[Row]) -> dict[str, Span]:
    """The columns that have something to show (name and status always), in order."""
    out: dict[str, Span] = {}
    for column in COLUMNS:
        head = cell_len(column.upper())
        if column == "progress":
            span = Span(max(head, 7), 12, 22) if any(r.bar for r in rows) else None
        elif column == "error":
            span = _error_span(rows, head)
        else:
            span = _text_span(rows, column, head)
        if span is not None:
            out[column] = span
    return out


def _error_span(rows: list[Row], head: int) -> Span | None:
    """At least the widest code; all of the messages at most."""
    codes = [r for r in rows if r.code]
    if not codes:
        return None
    least = max(head, *(cell_len(r.code) for r in codes))
    most = max(cell_len(f"{r.code}: {r.message}") for r in codes)
    return Span(least, least, max(least, most))


def _text_span(rows: list[Row], column: str, head: int) -> Span | None:
    texts = [r.cells.get(column, "") for r in rows]
    if column not in ("name", "status") and all(t in ("", "-") for t in texts):
        return None  # nothing to show
    width = max(head, *(cell_len(t) for t in texts)) if texts else head
    if column == "name":
        return Span(min(width, 10), min(width, 24), width)
    return Span(width, width, width)


def _total(widths: Iterable[int]) -> int:
    widths = list(widths)
    return sum(widths) + GAP * max(0, len(widths) - 1)


def fit(columns: dict[str, Span], width: int | None) -> dict[str, int]:
    """The width of each column shown in ``width`` cells (None: no limit, all of every
    text). The columns of :data:`GIVE_WAY` are left out, in that order, until the
    others fit as they want; then the progress bar and the name shrink to their least;
    room left over widens the name, the error, then the bar. Narrower than the least
    of the columns kept (about 56 cells), a line is wider than ``width``."""
    if width is None:
        return {c: s.most for c, s in columns.items()}
    columns = dict(columns)
    for column in GIVE_WAY:
        if _total(s.want for s in columns.values()) <= width:
            break
        columns.pop(column, None)
    widths = {c: s.want for c, s in columns.items()}
    over = _total(widths.values()) - width
    for column in ("progress", "name", "error"):
        over = _resize(widths, column, over, columns[column].least if column in columns else 0)
    for column in ("name", "error", "progress"):
        over = _resize(widths, column, over, columns[column].most if column in columns else 0)
    return widths


def _resize(widths: dict[str, int], column: str, over: int, limit: int) -> int:
    """Take ``over`` cells (give them, if negative) from ``column``, not past ``limit``;
    what is still over."""
    if column not in widths or over == 0:
        return over
    if over > 0:
        change = min(over, max(0, widths[column] - limit))
        widths[column] -= change
        return over - change
    change = min(-over, max(0, limit - widths[column]))
    widths[column] += change
    return over + change


def _take(text: str, width: int, *, from_end: bool = False) -> str:
    """The longest start (or end) of ``text`` that fits ``width`` cells."""
    chars = reversed(text) if from_end else iter(text)
    out: list[str] = []
    used = 0
    for ch in chars:
        used += get_character_cell_size(ch)
        if used > width:
            break
        out.append(ch)
    return "".join(reversed(out) if from_end else out)


def shorten_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, its middle replaced by ``…`` if need be."""
    if cell_len(text) <= width:
        return text
    if width < 3:
        return _take(text, width)
    tail = _take(text, (width - 1) // 2, from_end=True)
    return _take(text, width - 1 - cell_len(tail)) + "…" + tail


def _shorten_end(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text
    return _take(text, width - 1) + "…" if width >= 2 else _take(text, width)


def _pad(text: str, width: int, *, right: bool = False) -> str:
    space = " " * max(0, width - cell_len(text))
    return space + text if right else text + space


# -- drawing ---------------------------------------------------------------------------

Piece = tuple[str, str]  # (text, rich style)


def _bar(row: Row, width: int, *, plain: bool) -> list[Piece]:
    if not row.bar:
        return [(" " * width, "")]
    if plain:
        inner = width - 2
        if row.percent is None:
            return [("[" + "?" * inner + "]", "")]
        filled = min(inner, row.percent * inner // 100)
        return [("[" + "#" * filled + "." * (inner - filled) + "]", "")]
    if row.percent is None:
        return [("╌" * width, "bar.back")]
    filled = min(width, row.percent * width // 100)
    return [("━" * filled, "bar.complete"), ("━" * (width - filled), "bar.back")]


def _error(row: Row, width: int) -> Piece:
    if not row.code:
        return ("", "")
    text = f"{row.code}: {row.message}" if row.message else row.code
    if cell_len(text) > width:  # the code stays whole; the message gives way
        room = width - cell_len(row.code) - 2
        text = f"{row.code}: {_shorten_end(row.message, room)}" if room >= 4 else row.code
    return (text, "red")


def _cell(row: Row, column: str, width: int, *, plain: bool) -> list[Piece]:
    if column == "progress":
        return _bar(row, width, plain=plain)
    if column == "error":
        return [_error(row, width)]
    text = row.cells.get(column, "")
    if column == "name":
        return [(_pad(shorten_middle(text, width), width), "")]
    style = _STYLE.get(row.state, "") if column == "status" else ""
    return [(_pad(_shorten_end(text, width), width, right=column in _RIGHT), style)]


def _line(pieces: list[list[Piece]]) -> list[Piece]:
    out: list[Piece] = []
    for i, cell in enumerate(pieces):
        if i:
            out.append((" " * GAP, ""))
        out.extend(cell)
    return out


@dataclass(frozen=True, slots=True)
class StatusView:
    """The rows to show and the count of folded finished jobs, drawn at any width:
    :meth:`plain` for a pipe, a rich renderable (at the console's width) for a
    terminal."""

    rows: list[Row]
    folded: int = 0

    def lines(self, width: int | None, *, plain: bool) -> Iterator[list[Piece]]:
        widths = fit(spans(self.rows), width)
        header = [[(_pad(c.upper(), w, right=c in _RIGHT), "bold")] for c, w in widths.items()]
        yield _line(header)
        for row in self.rows:
            yield _line([_cell(row, c, w, plain=plain) for c, w in widths.items()])
        if self.folded:
            jobs = "job" if self.folded == 1 else "jobs"
            yield [(f"… and {self.folded} more finished {jobs}; --all shows them", "dim")]

    def plain(self, width: int | None = None) -> str:
        """Plain text: no colours, no control characters; one line per job."""
        return "".join(
            "".join(text for text, _ in line).rstrip() + "\n"
            for line in self.lines(width, plain=True)
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        text = Text(no_wrap=True, overflow="crop")
        # without colours a drawn bar is all one colour: the plain one shows the figure
        plain = console.color_system is None or options.ascii_only
        for i, line in enumerate(self.lines(options.max_width, plain=plain)):
            if i:
                text.append("\n")
            for piece, style in line:
                text.append(piece, style)
        yield text


def build(
    sidecars: Iterable[Sidecar],
    pending: Iterable[str] = (),
    *,
    show_all: bool = False,
    now: float | None = None,
) -> StatusView:
    """The view of these jobs: sidecars, and job files without one yet (``pending``)."""
    now = time.time() if now is None else now
    rows = [sidecar_row(sc, now) for sc in sidecars] + [pending_row(n) for n in pending]
    shown, folded = arrange(rows, show_all=show_all)
    return StatusView(shown, folded)


def render_plain(
    sidecars: list[Sidecar], pending: Iterable[str] = (), *, width: int | None = None
) -> str:
    """A plain text table (no colours, no control characters) for pipes and files."""
    return build(sidecars, pending).plain(width)


def rich_table(sidecars: list[Sidecar], pending: Iterable[str] = ()) -> StatusView:
    """The same table for a terminal: colours and drawn progress bars, fitted to the
    console's width."""
    return build(sidecars, pending)
