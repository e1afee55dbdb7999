"""The package layout shows the architecture, and these checks keep it so: one list of stages that
the CLI, dvc.yaml and the Prefect flow derive from; no module imports another's private name; no
import circle; a module imports only its own package and the layers below it:

    common < settings < memory < data, tasks < training, evaluation, serving < stages < cli

(packages of one layer may import each other, module circles aside).
"""

from __future__ import annotations

import ast
import pkgutil
import re
from pathlib import Path

import pytest
import yaml

import ocrmem
from ocrmem.stages import PIPELINE, STAGES

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"common": 0, "settings": 1, "memory": 2, "data": 3, "tasks": 3, "training": 4, "evaluation": 4,
          "serving": 4, "stages": 5, "cli": 6}
# settings reads the encoder and projector kinds from the registry (names only, no torch): one list.
ALLOWED_UP = {("ocrmem.settings", "ocrmem.memory.registry")}
MODULES = sorted(m.name for m in pkgutil.walk_packages(ocrmem.__path__, "ocrmem."))


def _source(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `import` / `from ... import` of ocrmem in a file, inside functions too;
    imports for type checkers only (`if TYPE_CHECKING:`) run nothing and do not count."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for b in ast.walk(tree) if isinstance(b, ast.If) and ast.unparse(b.test) == "TYPE_CHECKING"
                   for s in b.body for n in ast.walk(s)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "ocrmem"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "ocrmem":
            out.append((node.module, [a.name for a in node.names]))
    return out


def imported_modules(module: str) -> set[str]:
    """The ocrmem modules a module imports (a `from package import submodule` names the submodule)."""
    out = set()
    for mod, names in imports(_source(module)):
        subs = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES]
        out |= set(subs) if subs else {mod}
    return out - {module}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[1]] if module != "ocrmem" else -1


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for path in [*ROOT.glob("ocrmem/**/*.py"), *ROOT.glob("flows/*.py"), *ROOT.glob("bench/*.py")]:
        for mod, names in imports(path):
            bad += [f"{path.relative_to(ROOT)}: {mod}.{n}" for n in names if n.startswith("_")]
    assert bad == []


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path that comes back to where it started, or None (depth-first search)."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path + [n]
            if n not in state and (cycle := visit(n, path + [n])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [m])):
            return cycle
    return None


def test_no_import_circle():
    assert find_circle({m: imported_modules(m) & set(MODULES) for m in MODULES}) is None


@pytest.mark.parametrize("module", [m for m in MODULES if m != "ocrmem"])
def test_imports_go_down_the_layers(module):
    up = [m for m in imported_modules(module)
          if m != "ocrmem" and m.split(".")[1] != module.split(".")[1] and layer(m) > layer(module)
          and (module, m) not in ALLOWED_UP]
    assert up == [], f"{module} (layer {layer(module)}) imports {up}: move the shared piece down a layer"


def test_the_checks_see_a_private_import_and_a_circle(tmp_path):
    """The two checks above can fail: a private name and a circle in a throwaway file are seen."""
    f = tmp_path / "x.py"
    f.write_text("from ocrmem.memory.render import _clean\ndef g():\n    import ocrmem.cli\n")
    assert imports(f) == [("ocrmem.memory.render", ["_clean"]), ("ocrmem.cli", [])]
    assert "ocrmem.stages" in imported_modules("ocrmem.cli")
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_one_list_of_stages():
    """`ocrmem <stage>` = ocrmem/stages/<stage>.py = the DVC stage = the Prefect task."""
    import flows.pipeline as fp
    from ocrmem.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(STAGES)
    assert all((ROOT / f"ocrmem/stages/{s}.py").is_file() for s in STAGES)
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == list(PIPELINE) and list(fp.TASKS) == list(PIPELINE)
    for name, stage in dvc.items():
        assert re.match(rf"ocrmem {name}\b", stage["cmd"]) and f"ocrmem/stages/{name}.py" in stage["deps"]
        assert fp.TASKS[name].name == name
    bench = yaml.safe_load((ROOT / "benchmark/dvc.yaml").read_text())["stages"]["benchmark"]
    assert bench["cmd"].startswith("ocrmem benchmark") and "ocrmem/stages/benchmark.py" in bench["deps"]


def test_help_lists_every_stage(capsys):
    from ocrmem.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(re.search(rf"^\s+{s}\b", out, re.M) for s in STAGES)
