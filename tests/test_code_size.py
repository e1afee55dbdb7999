"""Code a newcomer can read: no function in ocrmem/ or flows/ over 60 lines, no module over 400
(scripts/code_size.py measures them with ast and prints the longest)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _measure():
    spec = importlib.util.spec_from_file_location("code_size", ROOT / "scripts/code_size.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.measure()


def test_functions_and_modules_stay_short():
    functions, modules = _measure()
    assert any(name.endswith("evaluate.py:evaluate") for _, name in functions)  # it measured the real code
    assert [f for f in functions if f[0] > 60] == []
    assert [m for m in modules if m[0] > 400] == []
