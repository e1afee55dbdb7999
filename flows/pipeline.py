"""The OCR-MEM pipeline as a Prefect 3 flow: the same stages as dvc.yaml, for scheduled/remote runs.

    python -m flows.pipeline --params params.yaml          # run locally (ephemeral Prefect server)
    python flows/deploy.py                                  # deploy to a GPU docker work pool

No ML logic lives here: every task calls `ocrmem.cli.main([<stage>, "--params", ...])`, the exact
command a DVC stage runs, which loads and checks the settings and calls the library function
(`render_dataset`, `encode_pages`, `check_gradient_flow`, `train`, `evaluate`, `build_standins`).

- Retries only on the I/O stages (render, encode); a failed train or evaluate is a real failure.
- Task caching mirrors DVC: a stage's cache key hashes the params.yaml keys and the dependency
  files that dvc.yaml declares for it (code, models, data), so an unchanged stage is skipped and a
  changed train param reruns train and evaluate only. When a stage's outputs are missing on disk
  the flow runs it with refresh_cache=True (runs, then stores the new result under the key).
- train goes through the DeepSpeed launcher (`deepspeed --num_gpus N --module ocrmem.cli train`)
  when train.deepspeed is set and CUDA GPUs are present, else runs in-process.
- evaluate publishes the per-condition table as a Prefect table artifact (key `ocrmem-eval`)
  and a markdown summary (key `ocrmem-eval-summary`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

STAGES = ("validate", "standins", "render", "encode", "gradcheck", "train", "evaluate")
DVC_YAML = "dvc.yaml"


# ---------------------------------------------------------------------------------------------
# cache keys: the stage's params and deps as declared in dvc.yaml


def _dvc_stage(stage: str) -> dict:
    return yaml.safe_load(Path(DVC_YAML).read_text())["stages"][stage]


def _params_dict(params_path: str) -> dict:
    return yaml.safe_load(Path(params_path).read_text()) or {}


def _lookup(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _interpolate(path: str, params: dict) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(params, m.group(1).strip())), path)


def _entries(items) -> list[str]:
    """Names of dvc.yaml list entries: 'path' or {'path': {options}}."""
    out = []
    for it in items or []:
        out.extend([it] if isinstance(it, str) else list(it))
    return out


_FILE_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: each big file is read once per process


def _file_digest(p: Path) -> str:
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        d = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                d.update(block)
        _FILE_DIGESTS[key] = d.hexdigest()
    return _FILE_DIGESTS[key]


def _hash_path(h, p: Path) -> None:
    if p.is_file():
        h.update(f"{p.as_posix()}:{_file_digest(p)}".encode())
    elif p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
            _hash_path(h, f)
    else:
        h.update(f"missing:{p.as_posix()}".encode())


def stage_outs(stage: str, params_path: str) -> list[Path]:
    params = _params_dict(params_path)
    st = _dvc_stage(stage)
    return [Path(_interpolate(p, params)) for key in ("outs", "metrics", "plots") for p in _entries(st.get(key))]


def stage_fingerprint(stage: str, params_path: str, extra: Any = None) -> str:
    """sha256 of the stage's params values and dependency contents, as dvc.yaml declares them."""
    params = _params_dict(params_path)
    st = _dvc_stage(stage)
    h = hashlib.sha256()
    h.update(json.dumps({"stage": stage, "cmd": st["cmd"], "extra": extra,
                         "params": {k: _lookup(params, k) for k in _entries(st.get("params"))}},
                        sort_keys=True, default=str).encode())
    for dep in _entries(st.get("deps")):
        _hash_path(h, Path(_interpolate(dep, params)))
    return h.hexdigest()


def stage_cache_key(context, parameters: dict) -> str:
    """Prefect cache_key_fn: the DVC-equivalent fingerprint of the stage's params and deps."""
    stage = parameters["stage"]
    params_path = parameters.get("params_path", "params.yaml")
    extra = {k: v for k, v in parameters.items() if k not in ("stage", "params_path")}
    return f"ocrmem-{stage}-{stage_fingerprint(stage, params_path, extra)}"


# ---------------------------------------------------------------------------------------------
# tasks


def run_cli(argv: list[str]) -> None:
    """Run one `ocrmem` subcommand in-process (what the DVC stage runs); raise on a non-zero status."""
    from ocrmem import cli

    rc = cli.main(argv)
    if rc:
        raise RuntimeError(f"`ocrmem {' '.join(argv)}` exited with status {rc}")


def train_command(params_path: str, resume: bool = False) -> list[str] | None:
    """The DeepSpeed launcher command when train.deepspeed is set and GPUs exist, else None (in-process)."""
    from ocrmem.settings import load_settings

    s = load_settings(params_path)
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not (s.train.deepspeed and n):
        return None
    cmd = ["deepspeed", "--num_gpus", str(n), "--module", "ocrmem.cli", "train", "--params", params_path]
    return cmd + ([] if resume else ["--no-resume"])


def _run_name(fmt: str):
    def name() -> str:
        from prefect.runtime import task_run

        p = task_run.parameters
        return fmt.format(**p)

    return name


def _train_run_name() -> str:
    from prefect.runtime import task_run

    p = task_run.parameters
    launcher = "deepspeed" if train_command(p["params_path"]) else "in-process"
    return f"train [{launcher}] {p['params_path']}"


STAGE_TASK = dict(cache_key_fn=stage_cache_key, persist_result=True, log_prints=True)


@task(name="validate", task_run_name=_run_name("validate {params_path}"), log_prints=True)
def validate(params_path: str) -> dict:
    run_cli(["validate", "--static", "--params", params_path, "--write", "metrics/validate.json"])
    return {"valid": True}


@task(name="standins", task_run_name=_run_name("standins -> {out} (smollm2={smollm2})"), **STAGE_TASK)
def standins(stage: str = "standins", params_path: str = "params.yaml", out: str = "models",
             smollm2: bool = True) -> str:
    run_cli(["standins", "--out", out] + ([] if smollm2 else ["--no-smollm2"]))
    return out


@task(name="render", task_run_name=_run_name("render {params_path}"), retries=2, retry_delay_seconds=10,
      **STAGE_TASK)
def render(stage: str = "render", params_path: str = "params.yaml") -> dict:
    from ocrmem.settings import load_settings

    run_cli(["render", "--params", params_path])
    stats = load_settings(params_path).rendered_dir / "stats.json"
    return json.loads(stats.read_text()).get("total", {}) if stats.is_file() else {}


@task(name="encode", task_run_name=_run_name("encode {params_path}"), retries=2, retry_delay_seconds=10,
      **STAGE_TASK)
def encode(stage: str = "encode", params_path: str = "params.yaml") -> str:
    run_cli(["encode", "--params", params_path])
    return "encoded"


@task(name="gradcheck", task_run_name=_run_name("gradcheck {params_path}"), **STAGE_TASK)
def gradcheck(stage: str = "gradcheck", params_path: str = "params.yaml") -> dict:
    run_cli(["gradcheck", "--params", params_path])
    return json.loads(Path("metrics/gradcheck.json").read_text())


@task(name="train", task_run_name=_train_run_name, **STAGE_TASK)
def train(stage: str = "train", params_path: str = "params.yaml", resume: bool = False) -> dict:
    cmd = train_command(params_path, resume)
    if cmd:
        print(f"launching {' '.join(cmd)}")
        subprocess.run(cmd, check=True)
    else:
        run_cli(["train", "--params", params_path] + ([] if resume else ["--no-resume"]))
    return json.loads(Path("metrics/train.json").read_text())


@task(name="evaluate", task_run_name=_run_name("evaluate {params_path}"), **STAGE_TASK)
def evaluate(stage: str = "evaluate", params_path: str = "params.yaml") -> dict:
    run_cli(["evaluate", "--params", params_path])
    return json.loads(Path("metrics/eval.json").read_text())


def publish_eval(metrics: dict, table_csv: str = "plots/eval_conditions.csv") -> list[dict]:
    """The per-condition table as a Prefect table artifact plus a markdown summary."""
    rows = list(csv.DictReader(Path(table_csv).open())) if Path(table_csv).is_file() else []
    create_table_artifact(key="ocrmem-eval", table=rows, description="OCR-MEM evaluation: one row per condition")
    lines = ["# OCR-MEM evaluation", "", "| condition | exact match | loss |", "|---|---|---|"]
    lines += [f"| {r.get('condition')} | {r.get('exact_match')} | {r.get('loss')} |" for r in rows]
    train_m = Path("metrics/train.json")
    if train_m.is_file():
        t = json.loads(train_m.read_text())
        lines += ["", f"held-out loss {t.get('eval_loss_before')} -> {t.get('eval_loss_after')} "
                      f"after {t.get('steps')} steps"]
    create_markdown_artifact(key="ocrmem-eval-summary", markdown="\n".join(lines),
                             description="OCR-MEM evaluation summary")
    return rows


@contextlib.contextmanager
def _chdir(path: str | None):
    old = os.getcwd()
    if path:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@flow(name="ocrmem-pipeline", log_prints=True)
def ocrmem_pipeline(params_path: str = "params.yaml", workdir: str | None = None, smollm2: bool = True,
                    resume: bool = False, stop_after: str | None = None) -> dict:
    """validate -> standins -> render -> encode -> gradcheck -> train -> evaluate (as dvc.yaml).

    params_path: the params file (relative to workdir); workdir: the repo root to run in (default:
    the current directory); smollm2: also export SmolLM2 in standins (False: tiny models only);
    resume: let train resume from a checkpoint in train.output_dir; stop_after: last stage to run.
    """
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"stop_after={stop_after!r}: use one of {', '.join(STAGES)}")
    last = STAGES.index(stop_after) if stop_after else len(STAGES) - 1
    done: dict[str, Any] = {}
    with _chdir(workdir):
        p = params_path

        def fresh(t, stage):  # outputs gone: do not trust a cached result
            missing = not all(o.exists() for o in stage_outs(stage, p))
            return t.with_options(refresh_cache=True) if missing else t

        steps = [
            ("validate", lambda: validate(p)),
            ("standins", lambda: fresh(standins, "standins")(params_path=p, smollm2=smollm2)),
            ("render", lambda: fresh(render, "render")(params_path=p)),
            ("encode", lambda: fresh(encode, "encode")(params_path=p)),
            ("gradcheck", lambda: fresh(gradcheck, "gradcheck")(params_path=p)),
            ("train", lambda: fresh(train, "train")(params_path=p, resume=resume)),
            ("evaluate", lambda: fresh(evaluate, "evaluate")(params_path=p)),
        ]
        for name, call in steps[: last + 1]:
            done[name] = call()
        if "evaluate" in done:
            publish_eval(done["evaluate"])
    return done


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="run the OCR-MEM pipeline as a Prefect flow")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-smollm2", action="store_true")
    ap.add_argument("--stop-after", default=None, choices=STAGES)
    a = ap.parse_args()
    ocrmem_pipeline(params_path=a.params, workdir=a.workdir, smollm2=not a.no_smollm2, stop_after=a.stop_after)
    sys.exit(0)
