"""The OCR-MEM pipeline as a Prefect 3 flow: DVC decides what changed, Prefect orchestrates.

    python -m flows.pipeline [--workdir REPO] [--stop-after STAGE]    # local (ephemeral Prefect server)
    python -m flows.deploy --image REGISTRY/ocrmem:TAG --repo /srv/ocrmem   # GPU docker work pool

Each task is one dvc.yaml stage and runs `dvc repro --single-item <stage>` in the repo: DVC reruns
the stage only when its params, deps or outs changed, and records it in dvc.lock. Why not Prefect's
own task caching: dvc.lock already hashes every stage's params, deps and outs, so it is the one
source of truth for "what changed"; a second cache keyed on the same inputs could only disagree
with it (and did need a second reading of dvc.yaml). Prefect adds what DVC lacks: retries (render
and encode only; a failed train or evaluate is a real failure), a run history, remote runs on a
work pool, and the evaluation table as an artifact (key `ocrmem-eval`, read from metrics/eval.json,
plus a markdown summary `ocrmem-eval-summary`).

Task = stage = `ocrmem <stage>` = ocrmem/stages/<stage>.py: all derive from `ocrmem.stages.PIPELINE`. The repo
(with its .git, .dvc, params.yaml, models and data) is the working directory: under the docker
deployment it is mounted at /app. Every stage of one flow run logs to the same WandB group.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from ocrmem.stages import PIPELINE, read_json, summary

TABLE = ("exact_match", "contains", "loss", "perplexity", "n")


def dvc_repro(stage: str) -> str:
    """`dvc repro --single-item <stage>` with this interpreter's dvc and ocrmem; output streamed to the
    task log and returned; a non-zero exit fails the task."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1"}
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    lines = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        for line in p.stdout:
            print(line, end="")
            lines.append(line)
    if p.returncode:
        raise RuntimeError(f"`{' '.join(cmd[1:])}` exited with status {p.returncode}:\n{''.join(lines[-20:])}")
    return "".join(lines)


STAGE = dict(cache_policy=NO_CACHE, log_prints=True)  # DVC decides what reruns, not a Prefect cache
IO_STAGES = ("render", "encode")  # retried: a failed train or evaluate is a real failure
IO_RETRIES = dict(retries=2, retry_delay_seconds=10)


def _stage_task(name: str):
    """The Prefect task of one pipeline stage: `dvc repro --single-item <name>`, then the stage's figures."""

    def run_stage() -> dict | None:
        dvc_repro(name)
        return summary(name)

    run_stage.__name__ = run_stage.__qualname__ = name
    return task(name=name, **STAGE, **(IO_RETRIES if name in IO_STAGES else {}))(run_stage)


TASKS = {name: _stage_task(name) for name in PIPELINE}  # task = stage = `ocrmem <stage>` = ocrmem/stages/<stage>.py


def publish_eval(metrics: dict) -> list[dict]:
    """The per-condition table (from metrics/eval.json) as a Prefect table artifact plus a markdown summary."""
    from ocrmem.settings import CONDITIONS

    rows = [{"condition": c, **{k: metrics.get(f"{c}.{k}") for k in TABLE}}
            for c in CONDITIONS if f"{c}.exact_match" in metrics]
    create_table_artifact(key="ocrmem-eval", table=rows, description="OCR-MEM evaluation: one row per condition")
    lines = ["# OCR-MEM evaluation", "", "| condition | exact match | loss |", "|---|---|---|"]
    lines += [f"| {r['condition']} | {r['exact_match']} | {r['loss']} |" for r in rows]
    t = read_json("metrics/train.json")
    if t:
        lines += ["", f"held-out loss {t.get('eval_loss_before')} -> {t.get('eval_loss_after')} "
                      f"after {t.get('steps')} steps"]
    create_markdown_artifact(key="ocrmem-eval-summary", markdown="\n".join(lines),
                             description="OCR-MEM evaluation summary")
    return rows


@contextlib.contextmanager
def _in_repo(workdir: str | None, group: str):
    old_dir, old_group = os.getcwd(), os.environ.get("WANDB_RUN_GROUP")
    if workdir:
        os.chdir(workdir)
    os.environ["WANDB_RUN_GROUP"] = old_group or group  # train and evaluate of this run: one WandB group
    try:
        yield
    finally:
        os.chdir(old_dir)
        if old_group is None:
            os.environ.pop("WANDB_RUN_GROUP", None)


@flow(name="ocrmem-pipeline", log_prints=True)
def ocrmem_pipeline(workdir: str | None = None, stop_after: str | None = None) -> dict:
    """validate -> standins -> render -> encode -> gradcheck -> train -> baselines -> evaluate (dvc.yaml's stages).

    workdir: the repo root to run in (default: the current directory); stop_after: last stage to run.
    """
    from prefect.runtime import flow_run

    if stop_after is not None and stop_after not in PIPELINE:
        raise ValueError(f"stop_after={stop_after!r}: use one of {', '.join(PIPELINE)}")
    last = PIPELINE.index(stop_after) if stop_after else len(PIPELINE) - 1
    done: dict = {}
    with _in_repo(workdir, f"ocrmem-{flow_run.get_id() or 'local'}"):
        for name in PIPELINE[: last + 1]:
            done[name] = TASKS[name]()
        if "evaluate" in done:
            publish_eval(done["evaluate"])
    return done


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="run the OCR-MEM pipeline as a Prefect flow")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--stop-after", default=None, choices=PIPELINE)
    a = ap.parse_args()
    ocrmem_pipeline(workdir=a.workdir, stop_after=a.stop_after)
    sys.exit(0)
