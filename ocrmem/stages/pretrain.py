"""The pretrain stage: the stage-1 reader that stage 2 (`train.init_from`) starts from.

    ocrmem pretrain [--params params.yaml]      # ocrmem.training.pretrain.pretrain

Hours on a 2-core CPU, minutes on a GPU (`bash bench/gpu_pretrain.sh OUT_DIR`); resumable. Not a dvc.yaml
stage yet: it becomes a frozen one (the default `dvc repro` using the reader as committed) once a reader
that reads is committed.
"""

from __future__ import annotations

HELP = "train the stage-1 reader on general text -> pretrained/reader, metrics/pretrain.json"
SETTINGS = "models"
METRICS = "metrics/pretrain.json"


def add_arguments(p) -> None:
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming the last checkpoint")


def run(args, s) -> int:
    from ocrmem.training.pretrain import pretrain

    pretrain(s, resume=not args.no_resume)
    return 0
