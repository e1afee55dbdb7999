"""Function and module lengths of ocrmem/ and flows/, measured with ast (lines from `def` to its end,
docstring included; blank and comment lines count, as a reader sees them).

    python scripts/code_size.py [--top 15] [--max-function 60] [--max-module 400]

Prints the longest functions and modules; exits 1 when one is over its limit.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ocrmem", "flows")


def measure(packages=PACKAGES) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """([(lines, 'path:function')], [(lines, path)]), longest first."""
    functions, modules = [], []
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(ROOT).as_posix()
            modules.append((len(text.splitlines()), rel))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    functions.append((node.end_lineno - start + 1, f"{rel}:{node.name}"))
    return sorted(functions, reverse=True), sorted(modules, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--max-function", type=int, default=60)
    ap.add_argument("--max-module", type=int, default=400)
    a = ap.parse_args()
    functions, modules = measure()
    print("longest functions:")
    for n, name in functions[: a.top]:
        print(f"  {n:4d}  {name}")
    print("longest modules:")
    for n, name in modules[: a.top]:
        print(f"  {n:4d}  {name}")
    over = [f for f in functions if f[0] > a.max_function] + [m for m in modules if m[0] > a.max_module]
    for n, name in over:
        print(f"over the limit: {name} ({n} lines)", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
