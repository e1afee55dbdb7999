"""Faults planted deterministically: torn checkpoints are skipped (and can no longer be written),
corrupted adapters are refused before the LLM loads (issue 12, items 1-2), and `render`, `encode` and
`train` SIGKILLed at several points (OCRMEM_FAULT_AT, ocrmem/common/faults.py) rerun to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import StopAt
from safetensors.torch import load_file, save_file

from ocrmem.cli import main
from ocrmem.common.errors import UserError
from ocrmem.memory import OcrMemModel
from ocrmem.training.trainer import OcrMemTrainer, train


def _same_adapter(a_dir: Path, b_dir: Path) -> None:
    a, b = load_file(str(a_dir / "adapter.safetensors")), load_file(str(b_dir / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


# -- item 1: torn checkpoints --------------------------------------------------------------------


def test_resume_skips_a_torn_checkpoint_and_says_why(pipeline, tmp_path, capsys):
    s = pipeline(train={"max_steps": 4, "save_steps": 1, "save_total_limit": 3})
    straight = s.model_copy(deep=True)
    straight.train.output_dir = str(tmp_path / "straight")
    train(straight, metrics_path=None)

    s.train.output_dir = str(tmp_path / "torn")
    train(s, callbacks=[StopAt(3)], metrics_path=None)
    torn = tmp_path / "torn/checkpoint-3"
    (torn / "trainer_state.json").unlink()  # what a kill while checkpoint-3 was written left behind
    opt = torn / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    capsys.readouterr()
    m = train(s, metrics_path=None)
    out = capsys.readouterr().out
    assert f"skipping {torn}: it has no trainer_state.json" in out
    assert m["resumed_from"].endswith("checkpoint-2") and m["steps"] == 4
    _same_adapter(tmp_path / "straight/adapter", tmp_path / "torn/adapter")


def test_a_kill_while_saving_leaves_no_checkpoint_that_looks_complete(pipeline, monkeypatch):
    s = pipeline(train={"max_steps": 3, "save_steps": 1})
    save_rng = OcrMemTrainer._save_rng_state

    def killed_at_step_2(self, output_dir):
        if self.state.global_step == 2:
            raise KeyboardInterrupt  # after the adapter and optimizer, before trainer_state.json
        return save_rng(self, output_dir)

    monkeypatch.setattr(OcrMemTrainer, "_save_rng_state", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(s, metrics_path=None)
    out = Path(s.train.output_dir)
    assert (out / "checkpoint-1/trainer_state.json").is_file()
    assert not (out / "checkpoint-2").exists()  # the partial one is under a hidden name
    assert list(out.glob(".partial-checkpoint-2/checkpoint-2/adapter.safetensors"))
    monkeypatch.setattr(OcrMemTrainer, "_save_rng_state", save_rng)
    m = train(s, metrics_path=None)
    assert m["resumed_from"].endswith("checkpoint-1") and m["steps"] == 3
    assert not list(out.glob(".partial-*"))


# -- item 2: corrupted adapters ------------------------------------------------------------------


@pytest.fixture
def adapter(make_settings, tmp_path):
    return OcrMemModel.build(make_settings()).save_adapter(tmp_path / "adapter")


def _no_llm(monkeypatch):
    monkeypatch.setattr("ocrmem.memory.model.load_llm", lambda *a, **k: pytest.fail("the LLM loaded first"))


def _nan(path: Path) -> None:
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(str(path)).items()}, str(path))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbled(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def _reshaped(path: Path) -> None:
    save_file({k: v.reshape(-1)[: v.numel() // 2].contiguous() for k, v in load_file(str(path)).items()}, str(path))


@pytest.mark.parametrize("corrupt, reason", [(_nan, "non-finite values"), (_truncated, "cannot be read"),
                                             (_garbled, "cannot be read"), (_reshaped, "do not match adapter_config")])
def test_corrupted_adapter_refused_before_the_llm_loads(adapter, monkeypatch, capsys, tmp_path, corrupt, reason):
    weights = adapter / "adapter.safetensors"
    corrupt(weights)
    _no_llm(monkeypatch)
    with pytest.raises(UserError, match=reason) as e:
        OcrMemModel.from_pretrained(adapter)
    assert str(weights) in str(e.value)
    h = tmp_path / "h.txt"
    h.write_text("history")
    assert main(["generate", "--adapter", str(adapter), "--history", str(h), "--prompt", "q"]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and reason in err and "Traceback" not in err


def test_sound_adapter_records_its_shapes_and_loads(adapter):
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(str(adapter / "adapter.safetensors"))
    assert cfg["shapes"] == {k: list(v.shape) for k, v in tensors.items()}
    OcrMemModel.from_pretrained(adapter)


# -- item 7: render.workers does not invalidate the feature cache ------------------------------------


def test_render_workers_keep_the_feature_cache(pipeline, capsys):
    from ocrmem.data.features import FeatureCache, build_cache, cache_fingerprint
    from ocrmem.memory import build_encoder

    s = pipeline()
    s.render.workers = 3  # the same pages, drawn by more processes
    enc = build_encoder(s.model, s.render)
    FeatureCache(s.features_dir, cache_fingerprint(enc, s))  # accepted
    capsys.readouterr()
    build_cache(s, progress=False)
    assert "up to date" in capsys.readouterr().out


# -- item 9: a page changed after rendering is noticed ----------------------------------------------


def _swap_first_pages(s) -> Path:
    from ocrmem.data.manifest import read_manifest

    rows = read_manifest(s, "train")
    a, b = (s.rendered_dir / rows[i]["pages"][0] for i in (0, 1))
    assert a.read_bytes() != b.read_bytes()
    a.write_bytes(b.read_bytes())  # one page PNG copied over another
    return a


def test_encode_refuses_a_page_changed_after_render(make_settings):
    from ocrmem.data.features import build_cache
    from ocrmem.data.manifest import render_dataset

    s = make_settings()
    render_dataset(s, progress=False)
    page = _swap_first_pages(s)
    with pytest.raises(UserError, match=rf"{page}: changed since it was rendered.*ocrmem render"):
        build_cache(s, progress=False)


def test_render_redraws_a_page_changed_after_render(make_settings):
    from ocrmem.common.io import sha256_file
    from ocrmem.data.manifest import render_dataset

    s = make_settings()
    render_dataset(s, progress=False)
    page = _swap_first_pages(s)
    r = render_dataset(s, progress=False)
    assert not r["splits"]["train"]["up_to_date"]
    from ocrmem.data.manifest import read_manifest

    row = read_manifest(s, "train")[0]
    assert sha256_file(page) == row["sha256"][0]


def test_pixel_path_refuses_a_page_changed_after_render(pipeline):
    from ocrmem.data.dataset import build_datasets

    s = pipeline(train={"use_feature_cache": False})
    page = _swap_first_pages(s)
    train_ds, _, _ = build_datasets(s, OcrMemModel.build(s))
    with pytest.raises(UserError, match=rf"{page}: changed since it was rendered"):
        train_ds[0]


# -- kills planted with OCRMEM_FAULT_AT (ocrmem/common/faults.py): SIGKILL at a deterministic point, then a
# rerun converges to the uninterrupted result ---------------------------------------------------------


def _write_params(s, path: Path) -> Path:
    path.write_text(yaml.safe_dump(json.loads(s.model_dump_json())))
    return path


def _killed(stage: str, params: Path, at: str) -> None:
    """`ocrmem <stage>` in a subprocess that SIGKILLs itself at `at` (no cleanup runs)."""
    r = subprocess.run([sys.executable, "-m", "ocrmem.cli", stage, "--params", str(params)], cwd=params.parent,
                       env=dict(os.environ, OCRMEM_FAULT_AT=at), capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, f"not killed at {at}: rc {r.returncode}\n{r.stderr[-2000:]}"


def _rendered(s) -> tuple[list, dict]:
    from ocrmem.data.manifest import read_manifest

    rows = {split: read_manifest(s, split) for split in ("train", "eval")}
    return rows, {p.relative_to(s.rendered_dir).as_posix(): p.read_bytes() for p in s.rendered_dir.rglob("*.png")}


def _features(s) -> dict:
    from ocrmem.data.features import FeatureCache

    cache = FeatureCache(s.features_dir)
    return {sha: cache.get([sha])[0] for sha in sorted(cache.index["pages"])}


@pytest.fixture
def fault_settings(make_settings, tmp_path):
    def make(name: str):
        s = make_settings(features={"shard_pages": 8}, train={"max_steps": 4, "save_steps": 2, "save_total_limit": 3})
        s.data.out_dir = str(tmp_path / name / "data")
        s.train.output_dir = str(tmp_path / name / "ckpt")
        (tmp_path / name).mkdir()
        return s, _write_params(s, tmp_path / name / "params.yaml")

    return make


slow = pytest.mark.slow


@pytest.mark.parametrize("at", [pytest.param("render:1", marks=slow), "render:5", pytest.param("encode:1", marks=slow),
                                "encode:2"])
def test_killed_render_or_encode_reruns_to_the_uninterrupted_result(fault_settings, at):
    ref, ref_params = fault_settings("straight")
    for stage in ("render", "encode"):
        assert main([stage, "--params", str(ref_params)]) == 0
    s, params = fault_settings("killed")
    if at.startswith("encode"):
        assert main(["render", "--params", str(params)]) == 0
    _killed(at.split(":")[0], params, at)
    with pytest.raises(UserError, match="ocrmem render|ocrmem encode"):  # the next stage refuses the torn output
        _rendered(s) if at.startswith("render") else _features(s)
    for stage in ("render", "encode"):  # rerun: what the pipeline does next
        assert main([stage, "--params", str(params)]) == 0
    assert _rendered(s) == _rendered(ref)
    a, b = _features(ref), _features(s)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("at, resumed", [pytest.param("train:1", None, marks=slow), ("train:3", "checkpoint-2"),
                                         ("checkpoint:2", None), pytest.param("checkpoint:4", "checkpoint-2", marks=slow)])
def test_killed_train_reruns_to_the_uninterrupted_adapter(fault_settings, monkeypatch, at, resumed):
    ref, ref_params = fault_settings("straight")
    s, params = fault_settings("killed")
    monkeypatch.chdir(params.parent)
    for stage in ("render", "encode"):
        assert main([stage, "--params", str(params)]) == 0
    ref.data.out_dir = s.data.out_dir  # the same data: only training differs
    train(ref, metrics_path=None)
    _killed("train", params, at)
    assert not s.adapter_dir.exists()
    m = train(s, metrics_path=None)
    assert (m["resumed_from"] or "").endswith(resumed or "") and bool(m["resumed_from"]) == bool(resumed)
    assert m["steps"] == 4 and not list(Path(s.train.output_dir).glob(".partial-*"))
    _same_adapter(ref.adapter_dir, s.adapter_dir)
