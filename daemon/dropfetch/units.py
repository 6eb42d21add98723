"""How sizes, speeds and durations are written for people (the status view, the log)."""

from __future__ import annotations

__all__ = ["clock_time", "human_size"]


def human_size(n: float | None) -> str:
    """``1.5 MiB``, ``512 B``; ``-`` when unknown."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def clock_time(seconds: float | None) -> str:
    """``1:05`` or ``2:03:04``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    minutes, sec = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"
