"""The status table (plain text; a richer terminal view builds on it)."""

from __future__ import annotations

from dropfetch.status import Sidecar, Status

__all__ = ["human_size", "render_table"]

_ORDER = {Status.DOWNLOADING: 0, Status.UNPACKING: 0, Status.WAITING: 1, Status.QUEUED: 2,
          Status.DELETING: 3, Status.FAILED: 4, Status.OK: 5}


def human_size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _bar(progress: int | None, width: int = 20) -> str:
    if progress is None:
        return "[" + "?" * width + "]"
    filled = progress * width // 100
    return "[" + "#" * filled + "." * (width - filled) + f"] {progress:3d}%"


def render_table(sidecars: list[Sidecar]) -> str:
    rows = [("NAME", "STATUS", "PROGRESS", "SIZE", "SPEED", "HOST", "ERROR")]
    for sc in sorted(sidecars, key=lambda s: (_ORDER.get(s.status, 9), s.id)):
        size = sc.bytes_total if sc.bytes_total is not None else (sc.archive or {}).get("size")
        speed = f"{human_size(sc.speed)}/s" if sc.speed else "-"
        error = f"{sc.error['code']}: {sc.error['message']}" if sc.error else ""
        progress = _bar(sc.progress) if sc.status in (Status.DOWNLOADING, Status.UNPACKING) \
            else ""
        rows.append((sc.id, str(sc.status), progress, human_size(size), speed,
                     sc.host or "-", error))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
             for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"
