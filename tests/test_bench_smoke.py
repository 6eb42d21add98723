"""Smoke test of the benchmark's pure helpers: no nginx, no daemon, no benchmark run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
from benchlib import Row, fmt_value, median, percentile, ratio  # noqa: E402


def test_median_odd_even_and_empty() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError, match="no values"):
        median([])


def test_percentile_interpolates_and_bounds() -> None:
    xs = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 100.0
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="out of range"):
        percentile(xs, 101)


def test_ratio() -> None:
    assert ratio(1.0, 2.0) == 0.5
    assert math.isinf(ratio(1.0, 0.0))


def test_row_ratio_target_and_met() -> None:
    row = Row(
        "x",
        "case",
        "s",
        [1.0, 3.0, 2.0],
        baseline="curl",
        baseline_samples=[4.0, 4.0, 5.0],
        limit=0.5,
        target_text="≤ 0.5",
    )
    assert row.value == 2.0
    assert row.baseline_value == 4.0
    assert row.ratio == 0.5
    assert row.met is True
    row.limit = 0.4
    assert row.met is False


def test_row_value_target_stats_and_ok_flag() -> None:
    lat = [float(x) for x in range(1, 201)]
    p99 = Row("l", "latency", "ms", lat, stat="p99", target_on="value", limit=100)
    assert p99.value == pytest.approx(percentile(lat, 99))
    assert p99.met is False
    p50 = Row("l", "latency", "ms", lat, stat="p50", target_on="value", limit=101)
    assert p50.met is True
    info = Row("i", "info", "s", [1.0])
    assert info.met is None
    failed = Row("f", "all ok", "s", [1.0], target_on="value", limit=math.inf, ok=False)
    assert failed.met is False
    empty = Row("e", "nothing", "s", [], limit=1.0)
    assert empty.value is None
    assert empty.met is False


def test_fmt_value_units() -> None:
    assert fmt_value(1.234, "s") == "1.23 s"
    assert fmt_value(123.4, "s") == "123 s"
    assert fmt_value(15.25, "ms") == "15.2 ms"
    assert fmt_value(2500.0, "ms") == "2.50 s"
    assert fmt_value(45.06, "MB") == "45.1 MB"
    assert fmt_value(None, "s") == "—"


def _rows() -> list[Row]:
    return [
        Row(
            "file",
            "1 GiB file | drop → ok",
            "s",
            [2.0, 2.2, 2.1],
            baseline="curl -s -o F",
            baseline_samples=[2.0, 2.0, 2.0],
            limit=1.0,
            target_text="≤ 1.0",
        ),
        Row(
            "rss",
            "peak RSS",
            "MB",
            [40.0, 42.0],
            stat="max",
            target_on="value",
            limit=80,
            target_text="≤ 80 MB",
        ),
    ]


def test_render_markdown_table() -> None:
    md = benchlib.render_markdown(_rows())
    lines = md.strip().splitlines()
    assert lines[0].startswith("| case | dropfetch | baseline |")
    assert lines[1].startswith("|---|")
    assert len(lines) == 4
    assert all(line.count(" | ") >= 7 for line in (lines[0], lines[2], lines[3]))
    assert "1 GiB file \\| drop → ok" in lines[2]  # a pipe in a cell is escaped
    assert "| 2.10 s |" in lines[2]
    assert "| 1.05 |" in lines[2]
    assert "**no**" in lines[2]
    assert "max 42.0 MB" in lines[3]
    assert "| yes |" in lines[3]


def test_render_text_table_aligned() -> None:
    text = benchlib.render_text(_rows())
    lines = text.rstrip("\n").splitlines()
    assert len(lines) == 4
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "**" not in text
    col = lines[0].index("baseline")
    assert lines[2][col:].startswith("curl -s -o F")


def test_run_module_imports_and_parses_args() -> None:
    """bench/run.py imports without side effects and knows its options."""
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = run  # dataclasses look their module up there
    try:
        spec.loader.exec_module(run)
    finally:
        del sys.modules["bench_run"]
    args = run.parse_args(["--quick", "--only", "extract", "--only", "small"])
    assert args.quick and args.only == ["extract", "small"]
    assert set(run.RUNNERS) == set(run.CASES)
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "no-such-case"])
    with pytest.raises(SystemExit):
        run.parse_args(["--runs", "0"])
    full = run.Sizes.full(3)
    assert full.big_file == 1024**3 and full.small_jobs == 500 and full.many_jobs == 10_000
    assert full.archive_copies == 2
    assert run.Sizes.quick().runs == 1
    conf = run.NGINX_CONF.format(prefix="/p", port=8080, root="/r")
    assert "sendfile on;" in conf and "access_log off;" in conf
    assert "listen 127.0.0.1:8080;" in conf


STRACE_C = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 41.20    0.120000          12     10000       120 openat
 30.00    0.090000           9     10000           fsync
  2.10    0.006000           3      2000           rename
------ ----------- ----------- --------- --------- ----------------
100.00    0.216000           9     22000       120 total
"""


def test_parse_strace_c_reads_rows_not_total() -> None:
    calls = benchlib.parse_strace_c(STRACE_C)
    assert calls == {"openat": 10000, "fsync": 10000, "rename": 2000}
    assert benchlib.parse_strace_c("strace: Process 12 attached\n") == {}


def test_report_document_has_every_section_and_its_notes() -> None:
    import datetime as dt

    import report

    rows = _rows()
    seg = Row("segments-vs-one", "64 MiB", "s", [4.0], baseline="1", baseline_samples=[16.0])
    run = report.Run(
        rows={"file": rows, "segments": [seg]},
        notes={"file": ["1 GiB file: NOTE-FILE"], "segments": ["Segments: NOTE-SEG"]},
        loads={"file": ("1.00 1.00 1.00", "2.00 1.50 1.20"), "segments": ("2", "3")},
        info={"online cpus": "2", "load average at start": "1.00", "load average at the end": "3"},
        started=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        elapsed=600,
        argv=["bench/run.py"],
    )
    doc = report.document(run, ["file", "segments"])
    assert "## Targets (issue 15)" in doc and "## Segments (issue 13)" in doc
    assert "## 7z and RAR" not in doc  # a case that did not run has no section
    assert "- 1 GiB file: NOTE-FILE" in doc and "- Segments: NOTE-SEG" in doc
    assert "| file | 1.00 1.00 1.00 | 2.00 1.50 1.20 |" in doc
    assert doc.index("| 1 GiB file") < doc.index("| peak RSS")
    assert "Targets met: 1 of 2; not met: file." in doc
