#!/usr/bin/env python3
"""Summarise py-spy ``--format raw`` profiles (collapsed stacks) written by run.py --profile.

    .venv/bin/python bench/profile_summary.py /tmp/prof/*targz*.txt [--top 25]

Prints samples per thread, the top functions by self time (the leaf frame) and by
inclusive time, and how the worker threads' samples split over the pipeline's phases.
py-spy records only threads that are on the CPU (no --idle), so the figures are CPU time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_LINENO = re.compile(r":\d+\)$")
_THREAD = re.compile(r"^thread \(\w+\)(?:: ?(?P<name>.*))?$")

# (label, a frame substring that marks the phase); the first match from the leaf wins
PHASES = (
    ("sidecar write (atomic_write)", "atomic_write"),
    ("publish (publish_dir)", "publish_dir"),
    ("remove (remove_tree)", "remove_tree"),
    ("sha256 of the download", "sha256"),
    ("download: socket read", "read1"),
    ("download: write to disk", "_copy_body"),
    ("download: fsync/other", "fetch (dropfetch/download.py"),
    ("extract: gzip/zlib inflate", "gzip.py"),
    ("extract: tarfile headers", "TarFile.next"),
    ("extract: write files", "add_file"),
    ("extract: other", "extract (dropfetch/extract.py"),
    ("lease", "leases.py"),
    ("job file / sidecar read", "read_sidecar"),
)


def frame_name(frame: str) -> str:
    return _LINENO.sub(")", frame.strip())


def load(paths: list[Path]) -> list[tuple[str, list[str], int]]:
    """(thread name, frames root first, samples) for every collapsed stack."""
    out = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if not m:
                continue
            frames = m.group("stack").split(";")
            thread = "?"
            t = _THREAD.match(frames[0])
            if t:
                thread = re.sub(r"-\d+$", "-N", t.group("name") or "(unnamed: main at startup)")
                frames = frames[1:]
            out.append((thread, [frame_name(f) for f in frames], int(m.group("count"))))
    return out


def phase_of(frames: list[str]) -> str:
    joined = ";".join(frames)
    for label, marker in PHASES:
        if marker in joined:
            return label
    return "other"


def summarise(paths: list[Path], top: int = 25) -> str:
    stacks = load(paths)
    total = sum(n for _, _, n in stacks) or 1
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    for thread, frames, n in stacks:
        threads[thread] += n
        if frames:
            self_time[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
        if thread.startswith("dropfetch-worker"):
            phases[phase_of(frames)] += n
    lines = [f"{len(paths)} profile(s), {total} samples (on-CPU)", "", "per thread:"]
    lines += [f"  {n:7d} {100 * n / total:5.1f}%  {t}" for t, n in threads.most_common()]
    worker_total = sum(phases.values()) or 1
    lines += ["", "worker threads by phase:"]
    lines += [f"  {n:7d} {100 * n / worker_total:5.1f}%  {p}" for p, n in phases.most_common()]
    lines += ["", f"top {top} by self time:"]
    lines += [f"  {n:7d} {100 * n / total:5.1f}%  {f}" for f, n in self_time.most_common(top)]
    lines += ["", f"top {top} by inclusive time:"]
    lines += [f"  {n:7d} {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("profiles", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    print(summarise(args.profiles, args.top), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
