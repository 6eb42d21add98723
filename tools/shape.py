"""The package's shape rules (issue 11), checked by ``make lint``.

No function over 60 lines, no class over 250 lines, no block above cyclomatic complexity
12 as radon counts it. Prints each breach and the largest figures; exits 1 on a breach.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from radon.complexity import cc_visit

MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250
MAX_COMPLEXITY = 12


def breaches(path: Path) -> tuple[list[str], list[tuple[int, str]], list[tuple[int, str]]]:
    source = path.read_text()
    found: list[str] = []
    lengths: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            where = f"{path}:{node.lineno} {node.name}"
            lengths.append((n, ("class " if isinstance(node, ast.ClassDef) else "") + where))
            if n > limit:
                found.append(f"{where}: {n} lines (at most {limit})")
    complexities = [(b.complexity, f"{path}:{b.lineno} {b.name}") for b in cc_visit(source)]
    found += [
        f"{where}: complexity {cc} (at most {MAX_COMPLEXITY})"
        for cc, where in complexities
        if cc > MAX_COMPLEXITY
    ]
    return found, lengths, complexities


def main(root: str) -> int:
    found: list[str] = []
    lengths: list[tuple[int, str]] = []
    complexities: list[tuple[int, str]] = []
    for path in sorted(Path(root).rglob("*.py")):
        f, n, c = breaches(path)
        found += f
        lengths += n
        complexities += c
    for line in found:
        print(line)
    classes = [x for x in lengths if x[1].startswith("class ")]
    functions = [x for x in lengths if not x[1].startswith("class ")]
    longest = max(functions, default=(0, "-"))
    largest = max(classes, default=(0, "-"))
    most = max(complexities, default=(0, "-"))
    print(
        f"shape: {len(found)} breaches; longest function {longest[0]} lines ({longest[1]}), "
        f"largest class {largest[0]} lines ({largest[1][6:]}), highest complexity "
        f"{most[0]} ({most[1]})"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "daemon/dropfetch"))
