"""The train stage: the projector (and soft prompt) on the rendered data, the rest frozen.

    ocrmem train [--params params.yaml] [--no-resume]      # ocrmem.training.trainer.train

With train.deepspeed set and GPUs present, every local GPU runs through the DeepSpeed launcher.
"""

from __future__ import annotations

import subprocess

HELP = "train the projector"
SETTINGS = "models"
METRICS = "metrics/train.json"


def add_arguments(p) -> None:
    p.add_argument("--no-resume", action="store_true")


def run(args, s) -> int:
    from ocrmem.training.trainer import deepspeed_command, train

    launcher = deepspeed_command(s, args.params, resume=not args.no_resume)
    if launcher:
        print(f"launching {' '.join(launcher)}")
        return subprocess.call(launcher)
    train(s, resume=not args.no_resume)
    return 0
