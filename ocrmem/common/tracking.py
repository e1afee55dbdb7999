"""Experiment tracking (WandB), set up once for every stage that logs.

- `trainer_report_to(settings)`: configures WandB through the environment for the HF Trainer's own
  WandbCallback and returns the Trainer's `report_to` ("wandb" or "none").
- `start_run(settings, job_type)`: a WandB run for code that logs by hand (evaluate), or a no-op
  `DummyRun` when tracking is off or wandb is not installed (nanochat's DummyWandb).
- One policy for a missing key: `tracking.wandb_mode: online` without WANDB_API_KEY in the
  environment is a config error, raised before anything runs; the key is never read from files.
- Runs of one pipeline run share a WandB `group`: WANDB_RUN_GROUP when set (the Prefect flow sets
  it per flow run), else the group `train` wrote beside its checkpoints, which evaluate reads.
- Files go to ./wandb/, never into the DVC-tracked checkpoints (that would dirty the train stage).
- `print0`: print on the main process only (under torchrun/deepspeed every rank runs the code).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ocrmem.common.errors import ConfigError

if TYPE_CHECKING:
    from ocrmem.settings import Settings

GROUP_FILE = "wandb_group"


def print0(*args, **kwargs) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args, **kwargs)


def enabled(settings: Settings) -> bool:
    return settings.tracking.wandb_mode != "disabled"


def check_key(settings: Settings) -> None:
    """tracking.wandb_mode online needs WANDB_API_KEY in the environment: a ConfigError otherwise."""
    if settings.tracking.wandb_mode == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ConfigError(["tracking.wandb_mode = 'online': needs WANDB_API_KEY in the environment "
                           "(export it, or use wandb_mode: offline and `wandb sync` later)"])


def run_group(settings: Settings, new: bool = False) -> str | None:
    """The WandB group of this pipeline run. `new` (train): start one, written beside the checkpoints
    unless WANDB_RUN_GROUP names it; otherwise (evaluate): the one train wrote, None if there is none."""
    if os.environ.get("WANDB_RUN_GROUP"):
        return os.environ["WANDB_RUN_GROUP"]
    path = Path(settings.train.output_dir) / GROUP_FILE
    if new and int(os.environ.get("RANK", "0")) != 0:  # only rank 0 logs (and writes files)
        return None
    if new:
        group = f"ocrmem-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(group + "\n")
        return group
    return path.read_text().strip() if path.is_file() else None


def trainer_report_to(settings: Settings) -> str:
    """Configure WandB for the HF Trainer from settings (through its env variables); returns report_to."""
    t = settings.tracking
    if settings.train.report_to == "none" or not enabled(settings):
        os.environ["WANDB_MODE"] = "disabled"
        return "none"
    check_key(settings)
    os.environ["WANDB_MODE"] = t.wandb_mode
    os.environ.setdefault("WANDB_PROJECT", t.project)
    if t.entity:
        os.environ.setdefault("WANDB_ENTITY", t.entity)
    os.environ.setdefault("WANDB_DIR", str(Path.cwd()))
    os.environ.setdefault("WANDB_SILENT", "true")
    group = run_group(settings, new=True)
    if group:
        os.environ["WANDB_RUN_GROUP"] = group
    return "wandb"


class DummyRun:
    """What `start_run` returns when nothing is tracked: the same calls, nothing logged."""

    def __init__(self):
        self.summary: dict = {}

    def log(self, *args, **kwargs) -> None:
        pass

    def finish(self) -> None:
        pass


def start_run(settings: Settings, job_type: str):
    """A WandB run in this pipeline run's group, or a DummyRun (check with `isinstance(run, DummyRun)`)."""
    if not enabled(settings):
        return DummyRun()
    check_key(settings)
    try:
        import wandb
    except ImportError:
        print(f"{job_type}: wandb is not installed: not logged (tracking.wandb_mode is "
              f"{settings.tracking.wandb_mode!r})")
        return DummyRun()
    t = settings.tracking
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(mode=t.wandb_mode, project=t.project, entity=t.entity, group=run_group(settings),
                     name=f"{t.run_name}-{job_type}" if t.run_name else None, dir=str(Path.cwd()),
                     job_type=job_type, config={"ocrmem": settings.model_dump()}, reinit="finish_previous")
    return run
