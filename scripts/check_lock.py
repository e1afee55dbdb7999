"""Does the installed environment match the lock? Every `name==version` line of the lock files must be installed
at exactly that version (scripts/setup.sh runs this after installing; tests/test_lock.py runs it in-process).

    python scripts/check_lock.py requirements.lock [requirements-dev.lock] [--skip NAME]
    python scripts/check_lock.py --missing requirements.lock ...   # the name==version lines left to install

Exits 1 naming each locked package that is missing or at another version. Packages installed but not locked
(the project itself, leftovers of an older venv) are listed, not failed. A venv may record locked packages it
installs from elsewhere on purpose, one name a line, in <venv>/lock-skip: setup.sh writes `torch` there when
TORCH_SPEC picks another torch build (a GPU host). Standard library only.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path


def canonical(name: str) -> str:
    """PEP 503 name: case and runs of -_. do not matter (PyYAML == pyyaml, typing_extensions == typing-extensions)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(*paths: str | Path) -> dict[str, str]:
    """{canonical name: version} of `name==version` lines; blank lines and # comments skipped, `-r file` followed."""
    pins: dict[str, str] = {}
    for path in map(Path, paths):
        for n, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith(("-r ", "--requirement ")):
                pins.update(read_lock(path.parent / line.split(None, 1)[1]))
                continue
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*===?\s*(\S+)", line)
            if not m:
                raise ValueError(f"{path}:{n}: not a `name==version` pin: {raw!r}")
            name = canonical(m.group(1))
            if pins.get(name, m.group(2)) != m.group(2):
                raise ValueError(f"{path}:{n}: {m.group(1)} pinned twice ({pins[name]} and {m.group(2)})")
            pins[name] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    """{canonical name: version} of the distributions this interpreter imports (the first on sys.path wins)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def venv_skips(prefix: str | Path = sys.prefix) -> list[str]:
    """The names in <venv>/lock-skip: locked packages this venv installed from elsewhere on purpose."""
    path = Path(prefix) / "lock-skip"
    return path.read_text().split() if path.exists() else []


def mismatches(pins: dict[str, str], have: dict[str, str], skip=()) -> list[str]:
    """One line per locked package that is missing or at another version than locked, sorted."""
    skip = {canonical(s) for s in skip}
    out = []
    for name, want in sorted(pins.items()):
        if name in skip:
            continue
        got = have.get(name)
        if got is None:
            out.append(f"{name}: locked {want}, not installed")
        elif got != want:
            out.append(f"{name}: locked {want}, installed {got}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("locks", nargs="+", help="lock files (name==version per line)")
    ap.add_argument("--skip", action="append", default=[], help="a locked package installed on purpose from "
                    "elsewhere; repeatable (added to the names in <venv>/lock-skip)")
    ap.add_argument("--missing", action="store_true", help="print the locked pins that are not installed at their "
                    "version, one a line (what setup.sh downloads), and exit 0")
    a = ap.parse_args(argv)
    skip = sorted({canonical(s) for s in a.skip + venv_skips()})
    pins, have = read_lock(*a.locks), installed()
    if a.missing:
        for name, version in sorted(pins.items()):
            if name not in skip and have.get(name) != version:
                print(f"{name}=={version}")
        return 0
    if skip:
        print(f"check_lock: not checked (installed from elsewhere on purpose): {', '.join(skip)}")
    bad = mismatches(pins, have, skip)
    if bad:
        print(f"check_lock: {len(bad)} of {len(pins)} locked packages differ from {' + '.join(a.locks)}:",
              *(f"  {b}" for b in bad), sep="\n", file=sys.stderr)
        return 1
    extra = sorted(set(have) - set(pins) - {"ocrmem"})
    note = f"; also installed, not locked: {', '.join(extra)}" if extra else ""
    checked = len(set(pins) - set(skip))
    print(f"check_lock: {checked} of the {len(pins)} locked packages checked, all at their locked versions{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
