"""The status view: a rich table on a terminal, plain text otherwise."""

from __future__ import annotations

from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dropfetch.status import Sidecar, Status

__all__ = ["human_size", "render_plain", "rich_table", "sort_jobs"]

_ORDER = {
    Status.DOWNLOADING: 0,
    Status.UNPACKING: 0,
    Status.WAITING: 1,
    Status.QUEUED: 2,
    Status.DELETING: 3,
    Status.FAILED: 4,
    Status.OK: 5,
}
_STYLE = {
    Status.OK: "green",
    Status.FAILED: "bold red",
    Status.WAITING: "yellow",
    Status.DOWNLOADING: "cyan",
    Status.UNPACKING: "magenta",
    Status.DELETING: "dim",
}
_ACTIVE = (Status.DOWNLOADING, Status.UNPACKING)


def human_size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, sec = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def sort_jobs(sidecars: list[Sidecar]) -> list[Sidecar]:
    """Active jobs first, then waiting, queued, failed, finished; by name within."""
    return sorted(sidecars, key=lambda s: (_ORDER.get(s.status, 9), s.id))


def _row(sc: Sidecar) -> tuple[str, str, str, str, str, str]:
    size = sc.bytes_total if sc.bytes_total is not None else (sc.archive or {}).get("size")
    speed = f"{human_size(sc.speed)}/s" if sc.speed else "-"
    error = f"{sc.error['code']}: {sc.error['message']}" if sc.error else ""
    return (
        human_size(size),
        speed,
        _eta(sc.eta) if sc.status in _ACTIVE else "-",
        sc.host or "-",
        error,
        str(sc.status),
    )


def _bar(progress: int | None, width: int = 20) -> str:
    if progress is None:
        return "[" + "?" * width + "]"
    filled = progress * width // 100
    return "[" + "#" * filled + "." * (width - filled) + f"] {progress:3d}%"


def render_plain(sidecars: list[Sidecar]) -> str:
    """A plain text table (no colours, no control characters) for pipes and files."""
    rows = [("NAME", "STATUS", "PROGRESS", "SIZE", "SPEED", "ETA", "HOST", "ERROR")]
    for sc in sort_jobs(sidecars):
        size, speed, eta, host, error, status = _row(sc)
        progress = _bar(sc.progress) if sc.status in _ACTIVE else ""
        rows.append((sc.id, status, progress, size, speed, eta, host, error))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def rich_table(sidecars: list[Sidecar]) -> Table:
    """The same table for a terminal: colours and real progress bars."""
    table = Table(expand=False, header_style="bold")
    for column in ("name", "status", "progress", "size", "speed", "eta", "host", "error"):
        table.add_column(
            column, overflow="fold" if column == "error" else "ellipsis", no_wrap=column != "error"
        )
    for sc in sort_jobs(sidecars):
        size, speed, eta, host, error, status = _row(sc)
        if sc.status in _ACTIVE and sc.progress is not None:
            bar: ProgressBar | Text = ProgressBar(total=100, completed=sc.progress, width=20)
        elif sc.status in _ACTIVE:
            bar = ProgressBar(total=None, width=20)
        else:
            bar = Text("")
        pct = f" {sc.progress}%" if sc.status in _ACTIVE and sc.progress is not None else ""
        table.add_row(
            sc.id,
            Text(status + pct, style=_STYLE.get(sc.status, "")),
            bar,
            size,
            speed,
            eta,
            host,
            Text(error, style="red"),
        )
    return table
