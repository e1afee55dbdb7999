"""The stages: one module per `ocrmem <stage>`, each a thin entry point (arguments, settings, one call
into the library). `STAGES` is the one list: the CLI's subcommands, dvc.yaml's stages (PIPELINE, in
order), the Prefect flow's tasks and the tests all derive from it.

A stage module defines `HELP` (one line), `SETTINGS` ("none", "load", or "models": load and check that
the local model paths exist), `run(args, settings) -> exit status`, and `add_arguments(parser)` when it
takes arguments of its own; a pipeline stage also names the metrics file it writes (`METRICS`, or None).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

PIPELINE = ("validate", "standins", "render", "encode", "gradcheck", "train", "baselines", "evaluate")  # dvc.yaml
STAGES = PIPELINE + (
    "pretrain",  # stage 1: the reader train.init_from starts from (hours on a CPU; resumable)
    "benchmark",  # benchmark/dvc.yaml: its own pipeline, outside the default `dvc repro`
    "fox",  # benchmark/dvc.yaml too: projector kinds against the critics' controls (a pretrain run per kind)
    "generate",  # a trained memory in use
    "read",  # what a trained memory holds of your own text
)


def stage_module(name: str) -> ModuleType:
    """The module of `ocrmem <name>`: ocrmem/stages/<name>.py."""
    if name not in STAGES:
        raise ValueError(f"stage {name!r}: use one of {', '.join(STAGES)}")
    return importlib.import_module(f"{__name__}.{name}")


def summary(name: str) -> dict | None:
    """What a finished stage reports (the Prefect task's result): its own `summary()`, else its metrics
    file (empty when absent), else None for a stage that writes none."""
    mod = stage_module(name)
    if hasattr(mod, "summary"):
        return mod.summary()
    return read_json(mod.METRICS) if mod.METRICS else None


def read_json(path: str | Path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}
