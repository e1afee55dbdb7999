"""End-to-end runs of the orchestration on tiny params (tests/data/params.tiny.yaml), in a temp git repo.

The tiny pipeline is reproduced once (`reproduced`: `dvc repro` runs all 8 stages); each test starts from
a copy of that repo:
- test_dvc_repro_reruns_only_what_changed: a second `dvc repro` runs none; a train param reruns train +
  evaluate (and the 1 s validate); a render param selects render (not standins) for a rerun (a dry run:
  which stages read the param is dvc.yaml's to declare; that their outputs then rerun what follows is
  DVC's); `dvc push` / `dvc pull` restore the outputs from the configured remote; and `dvc plots show`
  writes an HTML with the Vega libraries inlined (no CDN).
- test_benchmark_pipeline_runs_per_point_and_sweeps_through_dvc_experiments: benchmark/dvc.yaml.
- test_prefect_flow_runs_and_caches: the Prefect flow (one `dvc repro --single-item` per task) runs
  the stages a change reruns under a test server and publishes the eval table artifact; a second run
  runs no stage.
- test_process_worker_smoke: flows/smoke_worker.sh deploys the flow to a local process work pool
  and runs it through `prefect worker start --run-once` (the path a GPU docker pool takes) on a fresh
  repo, through the render stage: the stages after it are the flow's, tested above.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def make_repo(path: Path, git: bool = True) -> Path:
    """A copy of the pipeline (code, dvc.yaml, DVC config, plot template) with the tiny params."""
    path.mkdir(parents=True, exist_ok=True)
    for d in ("ocrmem", "flows", "configs", "vendor"):
        shutil.copytree(ROOT / d, path / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "tests/data/params.tiny.yaml", path / "params.yaml")
    # The tiny models only: SmolLM2 (0.5 GB) is not needed by the tiny params.
    dvc_yaml = (ROOT / "dvc.yaml").read_text().replace("ocrmem standins --out models",
                                                       "ocrmem standins --out models --no-smollm2")
    (path / "dvc.yaml").write_text(dvc_yaml)
    if git:
        run(["git", "init", "-q"], path)
        run(["dvc", "init", "-q"], path)
        shutil.copy(ROOT / ".dvc/config", path / ".dvc/config")
        shutil.copy(ROOT / ".dvcignore", path / ".dvcignore")
    return path


def env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ""}


def run(cmd: list[str], cwd: Path) -> str:
    exe = shutil.which(cmd[0], path=f"{BIN}{os.pathsep}{os.environ['PATH']}") or cmd[0]
    r = subprocess.run([exe, *cmd[1:]], cwd=cwd, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout + r.stderr


def repro(cwd: Path) -> set[str]:
    out = run(["dvc", "repro"], cwd)
    return set(re.findall(r"Running stage '([^']+)'", out))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


ALL = {"validate", "standins", "render", "encode", "gradcheck", "train", "baselines", "evaluate"}
AFTER_TRAIN_PARAM = {"validate", "train", "baselines", "evaluate"}  # baselines train with train's settings


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    """The tiny pipeline reproduced once; tests copy it (`copy_of`)."""
    repo = make_repo(tmp_path_factory.mktemp("reproduced") / "repo")
    assert repro(repo) == ALL
    assert json.loads((repo / "metrics/eval.json").read_text())
    return repo


def copy_of(repo: Path, dest: Path) -> Path:
    shutil.copytree(repo, dest, symlinks=True)
    return dest


def test_dvc_repro_reruns_only_what_changed(reproduced, tmp_path):
    repo = copy_of(reproduced, tmp_path / "repo")
    assert repro(repo) == set()  # nothing changed (the copy included): nothing runs

    edit(repo / "params.yaml", "learning_rate: 0.003", "learning_rate: 0.01")
    assert repro(repo) == AFTER_TRAIN_PARAM
    assert repro(repo) == set()

    edit(repo / "params.yaml", "font_size: 10", "font_size: 9")
    dry = set(re.findall(r"Running stage '([^']+)'", run(["dvc", "repro", "--dry"], repo)))
    assert "render" in dry and "standins" not in dry
    edit(repo / "params.yaml", "font_size: 9", "font_size: 10")

    # push to the configured local remote (repo/dvcstore), lose every output and the cache, pull back
    run(["dvc", "push"], repo)
    assert any((repo / "dvcstore").rglob("*"))
    for d in ("models", "data", "checkpoints", ".dvc/cache"):
        shutil.rmtree(repo / d)
    run(["dvc", "pull"], repo)
    assert (repo / "models/tiny-llm").is_dir() and (repo / "checkpoints/adapter").is_dir()
    assert "up to date" in run(["dvc", "status"], repo).lower()

    # offline plots: the template from .dvc/config, three plots, no CDN
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = (repo / "dvc_plots/index.html").read_text()
    assert "cdn.jsdelivr" not in html and "window.vegaEmbed=" in html
    for plot_id in ("accuracy_by_condition", "loss_by_condition", "accuracy_vs_compression"):
        assert plot_id in html


def test_benchmark_pipeline_runs_per_point_and_sweeps_through_dvc_experiments(reproduced, tmp_path, monkeypatch):
    """benchmark/dvc.yaml after the main pipeline: `dvc repro` of it runs one stage per point and the report;
    a second reruns nothing; `dvc exp run -S` adding a point runs only that point and the report."""
    repo = copy_of(reproduced, tmp_path / "repo")
    shutil.copytree(ROOT / "benchmark", repo / "benchmark")
    shutil.copytree(ROOT / ".dvc/plots", repo / ".dvc/plots")
    edit(repo / "params.yaml", "points: [fs24, fs20, fs16]", "points: [fs24, fs16]")
    for k in ("AUTHOR", "COMMITTER"):  # `dvc exp run` commits its experiment
        monkeypatch.setenv(f"GIT_{k}_NAME", "test")
        monkeypatch.setenv(f"GIT_{k}_EMAIL", "test@example.com")
    bench = {f"benchmark/dvc.yaml:benchmark@{p}" for p in ("fs24", "fs16")} | {"benchmark/dvc.yaml:benchmark_report"}
    ran = set(re.findall(r"Running stage '([^']+)'", run(["dvc", "repro", "benchmark/dvc.yaml"], repo)))
    assert ran == bench  # it reads the main pipeline's adapter and baselines, up to date
    m = json.loads((repo / "metrics/benchmark.json").read_text())
    assert set(m["points"]) == {"fs24", "fs16"} and m["conditions"] == ["no_memory", "ocr_memory"]
    assert "Running stage" not in run(["dvc", "repro", "benchmark/dvc.yaml"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "benchmark"], repo)
    out = run(["dvc", "exp", "run", "benchmark/dvc.yaml", "-S", "benchmark.points=[fs24,fs16,fs13]"], repo)
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"benchmark/dvc.yaml:benchmark@fs13",
                                                                "benchmark/dvc.yaml:benchmark_report"}
    assert set(json.loads((repo / "metrics/benchmark.json").read_text())["points"]) == {"fs24", "fs16", "fs13"}
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = (repo / "dvc_plots/index.html").read_text()
    assert "benchmark_heatmap" in html and "benchmark_compression" in html


def test_prefect_flow_runs_and_caches(reproduced, tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    repo = copy_of(reproduced, tmp_path / "repo")  # the flow runs `dvc repro --single-item <stage>` in it
    edit(repo / "params.yaml", "learning_rate: 0.003", "learning_rate: 0.01")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(tmp_path / "prefect-results"))
    monkeypatch.setenv("PATH", env()["PATH"])
    import flows.pipeline as fp

    real = fp.dvc_repro
    ran: list[str] = []

    def spy(stage):
        out = real(stage)
        if f"Running stage '{stage}'" in out:  # DVC ran it (else: "didn't change, skipping")
            ran.append(stage)
        return out

    monkeypatch.setattr(fp, "dvc_repro", spy)
    cwd = os.getcwd()
    with prefect_test_harness(server_startup_timeout=90):
        out = fp.ocrmem_pipeline(workdir=str(repo))
        assert os.getcwd() == cwd
        assert ran == ["validate", "train", "baselines", "evaluate"]  # AFTER_TRAIN_PARAM, in the pipeline's order
        assert out["train"]["steps"] == 2 and "ocr_memory.exact_match" in out["evaluate"]

        from prefect.client.orchestration import get_client

        async def artifact(key):
            async with get_client() as c:
                return await c.read_latest_artifacts() if key is None else [
                    a for a in await c.read_latest_artifacts() if a.key == key]

        import asyncio

        table = asyncio.run(artifact("ocrmem-eval"))
        assert table and "ocr_memory" in json.dumps(table[0].data)
        assert asyncio.run(artifact("ocrmem-eval-summary"))

        ran.clear()
        fp.ocrmem_pipeline(workdir=str(repo))
        assert ran == []  # nothing changed: DVC runs no stage


def test_process_worker_smoke():
    """flows/smoke_worker.sh: server on loopback, process pool, deployment, `prefect worker start --run-once`."""
    if shutil.which("curl") is None:
        pytest.skip("the smoke script polls the server with curl")
    r = subprocess.run(["bash", str(ROOT / "flows/smoke_worker.sh")], env={**env(), "PORT": "4297", "STOP_AFTER": "render"},
                       capture_output=True, text=True, timeout=540)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert "COMPLETED" in r.stdout
