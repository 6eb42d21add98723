"""Pure helpers of the benchmark: statistics, result rows, table rendering.

Nothing here starts a process or touches the network, so tests/test_bench_smoke.py can
exercise it without nginx, curl or a daemon.
"""

from __future__ import annotations

import contextlib
import math
import signal
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Row",
    "fmt_value",
    "median",
    "parse_strace_c",
    "percentile",
    "ratio",
    "render_markdown",
    "render_text",
]


def median(values: Iterable[float]) -> float:
    """The median; the mean of the two middle values for an even count."""
    xs = sorted(values)
    if not xs:
        raise ValueError("median of no values")
    mid = len(xs) // 2
    if len(xs) % 2:
        return xs[mid]
    return (xs[mid - 1] + xs[mid]) / 2


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100), linear interpolation between closest ranks."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile out of range: {p}")
    pos = (len(xs) - 1) * p / 100
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(ours: float, baseline: float) -> float:
    """``ours / baseline``: lower is better; inf when the baseline took no time."""
    if baseline <= 0:
        return math.inf
    return ours / baseline


STATS: dict[str, Callable[[Sequence[float]], float]] = {
    "median": median,
    "p50": lambda xs: percentile(xs, 50),
    "p99": lambda xs: percentile(xs, 99),
    "max": max,
}


@dataclass
class Row:
    """One line of the result table.

    ``samples`` are dropfetch's measurements, ``baseline_samples`` the baseline's (same
    unit). The target is either on the ratio (``target_on="ratio"``) or on dropfetch's
    own figure (``target_on="value"``); ``limit`` None means informational only.
    ``ok`` False marks the row as not met whatever the figures (e.g. failed jobs).
    """

    key: str
    case: str
    unit: str  # "s" | "ms" | "MB"
    samples: list[float]
    baseline: str = "—"
    baseline_samples: list[float] = field(default_factory=list)
    stat: str = "median"
    target_on: str = "ratio"  # ratio | value
    limit: float | None = None
    target_text: str = "—"
    ok: bool = True
    note: str = ""

    @property
    def value(self) -> float | None:
        return STATS[self.stat](self.samples) if self.samples else None

    @property
    def baseline_value(self) -> float | None:
        return median(self.baseline_samples) if self.baseline_samples else None

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline_value is None:
            return None
        return ratio(self.value, self.baseline_value)

    @property
    def met(self) -> bool | None:
        """True/False against the target; None when the row has no target."""
        if not self.ok:
            return False
        if self.limit is None:
            return None
        figure = self.ratio if self.target_on == "ratio" else self.value
        if figure is None:
            return False
        return figure <= self.limit

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "case": self.case,
            "unit": self.unit,
            "stat": self.stat,
            "samples": self.samples,
            "baseline": self.baseline,
            "baseline_samples": self.baseline_samples,
            "value": self.value,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "target": self.target_text,
            "met": self.met,
            "note": self.note,
        }


def fmt_value(value: float | None, unit: str) -> str:
    """A figure with its unit, with sensible precision."""
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    if unit == "s":
        return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.3g} {unit}".rstrip()


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    return f"{value:.2f}"


def fmt_met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "—"}[met]


HEADER = ("case", "dropfetch", "baseline", "baseline time", "ratio", "target", "met", "runs")


def _cells(row: Row) -> list[str]:
    figure = fmt_value(row.value, row.unit)
    if row.stat != "median":
        figure = f"{row.stat} {figure}"
    runs = str(len(row.samples))
    if row.baseline_samples:
        runs += f" / {len(row.baseline_samples)}"
    return [
        row.case,
        figure,
        row.baseline,
        fmt_value(row.baseline_value, row.unit),
        fmt_ratio(row.ratio),
        row.target_text,
        fmt_met(row.met),
        runs,
    ]


def render_markdown(rows: Sequence[Row]) -> str:
    """The result table in GitHub markdown (pipes in cells escaped)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = [c.replace("|", "\\|") for c in _cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_text(rows: Sequence[Row]) -> str:
    """The result table for a terminal: aligned columns."""
    table = [list(HEADER)] + [[c.replace("**", "") for c in _cells(r)] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    """Send ``sig``, wait up to ``timeout`` seconds, then kill."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parse_strace_c(text: str) -> dict[str, int]:
    """Calls per syscall from ``strace -c`` output (the table's rows, not its total)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[-1] == "total" or not parts[0][0].isdigit():
            continue
        # % time, seconds, usecs/call, calls, [errors], syscall
        with contextlib.suppress(ValueError):
            calls[parts[-1]] = calls.get(parts[-1], 0) + int(parts[3])
    return calls


def versus(
    key: str,
    case: str,
    samples: list[float],
    baseline: str,
    baseline_samples: list[float],
    limit: float | None = None,
) -> Row:
    """A side-by-side row in seconds; the target ``≤ limit`` on the ratio (None: report)."""
    text = "— (report)" if limit is None else f"≤ {limit:g}"
    return Row(key, case, "s", samples, baseline, baseline_samples, limit=limit, target_text=text)


def peak(key: str, case: str, samples: list[float], limit: float) -> Row:
    """A peak-memory row: the max of ``samples`` (MB) against ``≤ limit MB``."""
    return Row(
        key, case, "MB", samples, stat="max", target_on="value", limit=limit,
        target_text=f"≤ {limit:g} MB",
    )  # fmt: skip
