"""Which ocrmem modules a module can run: its import closure, read from the source with ast.

Imports anywhere in a module count (inside functions too), and so do registry entries written as
"ocrmem.module:attribute" strings (ocrmem/memory/registry.py imports those when a kind is built).
`from package import name` resolves to the module that defines `name` (ocrmem.memory's names are
resolved lazily, so the package itself is only a map).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BY_PATH = re.compile(r"^(ocrmem(?:\.\w+)+):\w+$")


def _defining_module(package: str, name: str) -> str:
    obj = getattr(importlib.import_module(package), name, None)
    if obj is None:  # a submodule that nothing has imported yet
        return f"{package}.{name}"
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    return getattr(obj, "__module__", None) or package if callable(obj) else package


def direct_imports(module: str) -> set[str]:
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ocrmem"):
            out |= {_defining_module(node.module, a.name) for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _BY_PATH.match(node.value):
            out.add(_BY_PATH.match(node.value).group(1))
    return {m for m in out if m == "ocrmem" or m.startswith("ocrmem.")}


def closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += direct_imports(m)
    return seen


def module_file(module: str) -> str | None:
    """The module's file relative to the repo root; None for a package's __init__ (a name map)."""
    path = Path(importlib.util.find_spec(module).origin).relative_to(ROOT)
    return None if path.name == "__init__.py" else path.as_posix()
