"""The gradient-flow check passes a healthy model and names each planted fault."""

import functools
import json

import pytest
import torch
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader

from ocrmem.data.dataset import MemoryCollator, build_datasets
from ocrmem.memory import OcrMemModel
from ocrmem.training.gradcheck import check_gradient_flow


@pytest.fixture
def setup(pipeline):
    s = pipeline()
    model = OcrMemModel.build(s)
    train_ds, _, key = build_datasets(s, model)
    batch = next(iter(DataLoader(train_ds, batch_size=4, collate_fn=MemoryCollator(model.tokenizer.pad_token_id, key))))
    return model, batch


def _wrap(module, fn):
    original = module.forward

    @functools.wraps(original)
    def forward(*a, **k):
        return fn(original, *a, **k)

    module.forward = forward


def _under_no_grad(orig, *a, **k):
    with torch.no_grad():
        return orig(*a, **k)


def test_healthy_model_passes(setup):
    model, batch = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    r = check_gradient_flow(model, batch)
    assert r.ok, r.diagnosis
    assert r.loss_has_grad_fn and not r.frozen_with_grad
    assert all(g is not None and g > 0 for g in r.trainable_grad_norms.values())
    assert all(p.grad is None for p in model.parameters())  # leaves no gradients behind
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # and changes nothing


def test_pixel_path_encoder_records_no_graph(pipeline):
    s = pipeline()
    model = OcrMemModel.build(s)
    train_ds, _, key = build_datasets(s, model, cached=False)
    assert key == "pixel_values"
    batch = MemoryCollator(model.tokenizer.pad_token_id, key)([train_ds[i] for i in range(4)])
    r = check_gradient_flow(model, batch)
    assert r.ok, r.diagnosis
    assert r.links["enc_out_graph"] is False


def test_projector_under_no_grad(setup):
    model, batch = setup

    _wrap(model.projector, _under_no_grad)
    r = check_gradient_flow(model, batch)
    assert not r.ok and "projector ran under torch.no_grad()" in r.diagnosis[0]


def test_no_trainable_parameters(setup):
    model, batch = setup
    model.requires_grad_(False)
    r = check_gradient_flow(model, batch)
    assert not r.ok and "no trainable parameters" in r.diagnosis[0]


def test_llm_without_autograd(setup):
    model, batch = setup

    _wrap(model.llm, _under_no_grad)
    r = check_gradient_flow(model, batch)
    assert not r.ok and any("LLM run without autograd" in d for d in r.diagnosis)


def test_reentrant_checkpointing_on_frozen_inputs(setup):
    model, batch = setup

    def reentrant(orig, x):
        return checkpoint(orig, x, use_reentrant=True)

    _wrap(model.projector, reentrant)
    with pytest.warns(UserWarning):  # torch itself warns that no input requires grad
        r = check_gradient_flow(model, batch)
    assert not r.ok and any("reentrant checkpointing on frozen inputs" in d for d in r.diagnosis)


def test_llm_weights_made_trainable(setup):
    model, batch = setup
    model.llm.model.layers[0].mlp.up_proj.weight.requires_grad_(True)
    r = check_gradient_flow(model, batch)
    assert not r.ok and any("frozen parts are trainable" in d and "up_proj" in d for d in r.diagnosis)


def test_detached_memory(setup):
    model, batch = setup
    _wrap(model.projector, lambda orig, *a, **k: orig(*a, **k).detach())
    r = check_gradient_flow(model, batch)
    assert not r.ok and "detaches" in r.diagnosis[0]


def test_batch_without_memory(setup):
    model, batch = setup
    batch = {**batch, "page_counts": torch.zeros_like(batch["page_counts"])}
    r = check_gradient_flow(model, batch)
    assert not r.ok and any("no memory pages" in d for d in r.diagnosis)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_still_reaches_projector(setup, reentrant):
    """Checkpointing the frozen LLM must still deliver gradients to the projector."""
    model, batch = setup
    model.enable_gradient_checkpointing(reentrant=reentrant)
    layer = model.llm.model.layers[0].mlp  # the layer's forward is checkpointed, its children rerun
    calls = []
    layer.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):
        r = check_gradient_flow(model, batch)
    assert r.ok, r.diagnosis
    assert len(calls) == 2  # really checkpointed: the layer ran again during backward
    assert all(g and g > 0 for g in r.trainable_grad_norms.values())
    assert bool(r.warnings) == reentrant


def test_cli_gradcheck_writes_report(pipeline, tmp_path, monkeypatch):
    import yaml

    from ocrmem.cli import main

    s = pipeline()
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(json.loads(s.model_dump_json())))
    monkeypatch.chdir(tmp_path)
    assert main(["gradcheck", "--params", str(p)]) == 0
    report = json.loads((tmp_path / "metrics/gradcheck.json").read_text())
    assert report["ok"] and report["trainable_grad_norms"]
