"""Adapter-only training: only the projector moves, checkpoints hold only it, resume equals an
uninterrupted run, the step-0 guard and the non-finite-loss stop fire, DeepSpeed trains for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import StopAt
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import TrainerCallback

from ocrmem.memory import OcrMemModel
from ocrmem.training.gradcheck import GradientFlowError
from ocrmem.training.trainer import NonFiniteLossError, OcrMemTrainer, train

REPO = Path(__file__).resolve().parents[1]


class Capture(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kw):
        self.logs.append(dict(logs or {}))


def test_training_moves_only_the_projector(pipeline, tmp_path):
    s = pipeline(train={"max_steps": 3, "save_steps": 2})
    model = OcrMemModel.build(s)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    m = train(s, model=model, metrics_path=tmp_path / "train.json")
    trained = {n for n, _ in model.trainable_parameters()}
    for n, p in model.named_parameters():
        if n in trained:
            assert not torch.equal(before[n], p), f"{n} did not change"
        else:
            assert torch.equal(before[n], p), f"frozen {n} changed"
    assert m["steps"] == 3 and m["trainable_parameters"] == sum(before[n].numel() for n in trained)
    assert json.loads((tmp_path / "train.json").read_text())["eval_loss_after"] == m["eval_loss_after"]
    # checkpoints and the adapter hold only the trained tensors
    for d in (Path(s.train.output_dir) / "checkpoint-2", s.adapter_dir):
        with safe_open(str(d / "adapter.safetensors"), "pt") as f:
            assert set(f.keys()) == trained
        assert not list(d.glob("model*.safetensors")) and not list(d.glob("pytorch_model*"))
    assert (Path(s.train.output_dir) / "checkpoint-2" / "optimizer.pt").is_file()  # what resume needs


def test_resume_equals_uninterrupted(pipeline, tmp_path):
    s = pipeline(train={"max_steps": 4, "save_steps": 2})
    straight = s.model_copy(deep=True)
    straight.train.output_dir = str(tmp_path / "straight")
    train(straight, metrics_path=None)

    s.train.output_dir = str(tmp_path / "interrupted")
    train(s, callbacks=[StopAt(2)], metrics_path=None)  # "killed" after step 2 (its checkpoint is written)
    assert (tmp_path / "interrupted/checkpoint-2").is_dir()
    m = train(s, metrics_path=None)  # picks up checkpoint-2
    assert m["resumed_from"].endswith("checkpoint-2") and m["steps"] == 4
    a = load_file(str(tmp_path / "straight/adapter/adapter.safetensors"))
    b = load_file(str(tmp_path / "interrupted/adapter/adapter.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_step0_guard_stops_a_broken_chain(pipeline):
    s = pipeline()
    model = OcrMemModel.build(s)
    forward = model.projector.forward

    def under_no_grad(x):
        with torch.no_grad():
            return forward(x)

    model.projector.forward = under_no_grad
    with pytest.raises(GradientFlowError, match="projector ran under torch.no_grad"):
        train(s, model=model, metrics_path=None)
    assert not list(Path(s.train.output_dir).glob("checkpoint-*"))  # no step was taken


def test_nonfinite_loss_stops_the_run(pipeline, monkeypatch):
    s = pipeline(train={"max_steps": 3, "save_steps": 1})
    model = OcrMemModel.build(s)
    forward = model.forward
    calls = []

    def nan_at_second_step(*a, **k):
        out = forward(*a, **k)
        if model.training:
            calls.append(1)
            if len(calls) == 3:  # 1: the step-0 gradcheck, 2: step 1, 3: step 2
                out.loss = out.loss * float("nan")
        return out

    model.forward = nan_at_second_step
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 1.*checkpoint-1"):
        train(s, model=model, metrics_path=None)


def test_nonfinite_weights_stop_and_keep_last_good_checkpoint(pipeline):
    s = pipeline(train={"max_steps": 5, "save_steps": 1})

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step == 2:
                with torch.no_grad():
                    model.projector.net.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="weight projector.net.weight is not finite at step 2.*checkpoint-1"):
        train(s, callbacks=[Poison()], metrics_path=None)
    assert not (Path(s.train.output_dir) / "checkpoint-2").exists()  # poisoned weights never saved
    good = load_file(str(Path(s.train.output_dir) / "checkpoint-1/adapter.safetensors"))
    assert all(torch.isfinite(t).all() for t in good.values())


def test_objective_mix_is_reported_per_objective(pipeline):
    s = pipeline(train={"max_steps": 2, "objectives": {"qa": 0.5, "reconstruct": 0.5}})
    cap = Capture()
    train(s, callbacks=[cap], metrics_path=None)
    keys = set().union(*cap.logs)
    assert {"loss_qa", "loss_reconstruct"} <= keys


def test_old_tokenizer_kwarg_is_handled(pipeline):
    s = pipeline()
    model = OcrMemModel.build(s)
    from ocrmem.training.trainer import training_arguments

    with pytest.warns(FutureWarning, match="processing_class"):
        t = OcrMemTrainer(model=model, args=training_arguments(s, "none"), tokenizer=model.tokenizer, gradcheck=False)
    assert t.processing_class is model.tokenizer


def _deepspeed_env(port: int) -> dict:
    env = dict(os.environ, DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0",
               LOCAL_RANK="0", WORLD_SIZE="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    # The shm comm op compiles once (45-80 s) and is cached here across runs.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    return env


@pytest.mark.parametrize("stage, port", [("ds_zero2.json", 29611), ("ds_zero3.json", 29612)])
def test_deepspeed_trains_and_saves_projector(pipeline, tmp_path, stage, port):
    """The real DeepSpeed path on the CPU (one process, gloo): trains, saves the gathered projector."""
    pytest.importorskip("deepspeed")
    s = pipeline(train={"max_steps": 3, "save_steps": 3, "deepspeed": str(REPO / "configs" / stage),
                        "warmup_steps": 0})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(json.loads(s.model_dump_json())))
    before = OcrMemModel.build(s)
    r = subprocess.run([sys.executable, "-m", "ocrmem.cli", "train", "--params", str(params)], cwd=tmp_path,
                       env=_deepspeed_env(port), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "DeepSpeed" in r.stdout + r.stderr
    saved = load_file(str(s.adapter_dir / "adapter.safetensors"))
    trained = dict(before.trainable_parameters())
    assert saved.keys() == trained.keys()
    assert all(t.numel() == trained[k].numel() and t.shape == trained[k].shape for k, t in saved.items())
    assert any(not torch.equal(saved[k], trained[k].detach()) for k in saved)  # it learned something
    metrics = json.loads((tmp_path / "metrics/train.json").read_text())
    assert metrics["steps"] == 3


@pytest.mark.parametrize("part", ["optimizer.pt", "adapter.safetensors"])
def test_a_full_disk_mid_checkpoint_leaves_nothing_that_reads_as_complete(pipeline, monkeypatch, part):
    """The Trainer's own files (optimizer.pt via torch.save) and ours (the adapter, atomic) alike: one
    DiskFullError naming the checkpoint, no checkpoint-N and no torn .partial- directory left."""
    from ocrmem.common.errors import DiskFullError
    from ocrmem.common.io import ENOSPC_AT

    s = pipeline(train={"max_steps": 2, "save_steps": 1})
    save = torch.save

    def full_disk(obj, f, *a, **kw):
        if str(f).endswith("optimizer.pt"):
            with open(f, "wb") as out:  # a torn write, as a full disk leaves it
                out.write(b"\0" * 100)
            raise OSError(28, "No space left on device", str(f))
        return save(obj, f, *a, **kw)

    if part == "optimizer.pt":
        monkeypatch.setattr(torch, "save", full_disk)
    else:
        monkeypatch.setenv(ENOSPC_AT, "checkpoint-1")
    with pytest.raises(DiskFullError, match=r"checkpoint-1.*: no space left on the device"):
        train(s, metrics_path=None)
    assert sorted(p.name for p in Path(s.train.output_dir).iterdir() if "checkpoint" in p.name) == []
