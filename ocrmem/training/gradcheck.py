"""Gradient-flow check: one real batch through the model, and a diagnosis naming the broken link.

    ocrmem gradcheck [--params params.yaml]     # gradcheck(settings) -> metrics/gradcheck.json, exit 1 on failure

Healthy (BACKGROUND.md): the loss has a grad_fn, backward() runs, every trainable parameter gets a
finite non-zero gradient, every frozen parameter gets none, only the projector (and the encoder if
the config unfreezes it) trains, and a frozen encoder records no graph. Hooks watch each link of
encoder -> projector -> LLM so a failure says where the chain broke, not just that it did.
"""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ocrmem.common.io import write_json
from ocrmem.memory.model import OcrMemModel
from ocrmem.settings import Settings


class GradientFlowError(RuntimeError):
    def __init__(self, report: "GradReport"):
        self.report = report
        super().__init__("gradient-flow check failed:\n  - " + "\n  - ".join(report.diagnosis))


@dataclass
class GradReport:
    ok: bool
    diagnosis: list[str]
    loss: float | None
    loss_has_grad_fn: bool
    trainable_grad_norms: dict[str, float | None]
    frozen_with_grad: list[str]
    links: dict[str, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _in_reentrant_checkpoint() -> bool:
    return any(f.filename.replace("\\", "/").endswith("torch/utils/checkpoint.py") and f.function == "forward"
               for f in inspect.stack(context=0))


def _reentrant_llm(model: OcrMemModel) -> bool:
    for m in model.llm.modules():
        fn = getattr(m, "_gradient_checkpointing_func", None)
        if getattr(m, "gradient_checkpointing", False) and fn is not None:
            if getattr(fn, "keywords", {}).get("use_reentrant", True):
                return True
    return False


def expected_trainable(model: OcrMemModel) -> set[str]:
    names = {f"projector.{n}" for n, _ in model.projector.named_parameters()}
    if model.soft_prompt is not None:  # the trained vectors read before the memory: part of the adapter
        names |= {f"soft_prompt.{n}" for n, _ in model.soft_prompt.named_parameters()}
    if not model.encoder.frozen:
        names |= {f"encoder.{n}" for n, _ in model.encoder.named_parameters()}
    return names


def _watch(model: OcrMemModel, seen: dict) -> list:
    """Forward hooks recording each link of encoder -> projector -> LLM into `seen`; returns the handles."""

    def enc_hook(mod, args, out):
        seen["enc_out_graph"] = out.grad_fn is not None

    def proj_hook(mod, args, out):
        seen["proj_out_requires_grad"] = out.requires_grad

    def proj_inner_hook(mod, args, out):
        # Grad mode seen *inside* the projector: a no_grad wrapper around the call hides it from
        # the projector's own hook, never from its submodules.
        seen["proj_grad_mode"] = seen.get("proj_grad_mode", True) and torch.is_grad_enabled()
        seen["proj_in_checkpoint"] = seen.get("proj_in_checkpoint", False) or _in_reentrant_checkpoint()

    def llm_hook(mod, args, kwargs, out):
        emb = kwargs.get("inputs_embeds")
        seen["llm_in_requires_grad"] = bool(emb is not None and emb.requires_grad)
        seen["llm_out_requires_grad"] = out.logits.requires_grad

    def llm_inner_hook(mod, args, out):
        seen["llm_grad_mode"] = torch.is_grad_enabled()

    hooks = [model.encoder.register_forward_hook(enc_hook), model.projector.register_forward_hook(proj_hook),
             model.llm.register_forward_hook(llm_hook, with_kwargs=True)]
    hooks += [m.register_forward_hook(proj_inner_hook) for m in model.projector.modules() if m is not model.projector]
    head = model.llm.get_output_embeddings()
    if head is not None:
        hooks.append(head.register_forward_hook(llm_inner_hook))
    return hooks


def _forward(model: OcrMemModel, batch: dict, seen: dict):
    """One training-mode forward pass with the hooks on; the model's mode is restored."""
    hooks = _watch(model, seen)
    for p in model.parameters():
        p.grad = None
    was_training = model.training
    model.train()
    try:
        return model(**batch)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def _setup_faults(model: OcrMemModel, trainable: dict, mem_pages: int, seen: dict) -> list[str]:
    """What is wrong before any link: what trains, whether memory is there, the frozen encoder's graph."""
    diagnosis = []
    if not trainable:
        diagnosis.append("no trainable parameters: every parameter has requires_grad=False; the projector must "
                         "train (OcrMemModel.trainable_parameters() is empty; was requires_grad_(False) applied to "
                         "the whole model?)")
    extra = sorted(set(trainable) - expected_trainable(model))
    if extra:
        diagnosis.append(f"frozen parts are trainable: {extra[:5]}{' ...' if len(extra) > 5 else ''} have "
                         "requires_grad=True; only the projector (and an unfrozen encoder) may train")
    if mem_pages == 0:
        diagnosis.append("the batch has no memory pages: nothing connects the projector to the loss; check the "
                         "data (page_counts are all 0)")
    if model.encoder.frozen and seen.get("enc_out_graph"):
        diagnosis.append("the frozen encoder recorded an autograd graph: it must run under no_grad (wasted memory "
                         "and time, and a sign that its weights are not frozen)")
    return diagnosis


def _projector_fault(model: OcrMemModel, seen: dict) -> str:
    """Why the projector's output has no graph."""
    if seen.get("proj_in_checkpoint"):
        return ("reentrant checkpointing on frozen inputs: the projector runs inside "
                "torch.utils.checkpoint(use_reentrant=True) whose inputs (frozen features) do not "
                "require grad, so its output has no graph; use use_reentrant=False")
    if not seen.get("proj_grad_mode"):
        return ("projector output does not require grad: the projector ran under torch.no_grad() (or "
                "inference_mode); only the frozen encoder may run without autograd")
    if not any(p.requires_grad for p in model.projector.parameters()):
        return "projector output does not require grad: the projector's parameters are frozen (requires_grad=False)"
    return ("projector output does not require grad although grad mode was on: something inside "
            "it detaches (.detach(), .data, a numpy round trip)")


def _llm_fault(model: OcrMemModel, seen: dict) -> str:
    """Why the LLM's logits have no graph although its inputs have one."""
    if not seen.get("llm_grad_mode", True):
        return ("LLM run without autograd: the frozen LLM ran under torch.no_grad(); gradients must flow "
                "back through it to the projector (freeze its weights, not its graph)")
    if _reentrant_llm(model):
        return "reentrant checkpointing on frozen inputs in the LLM: enable gradient checkpointing with use_reentrant=False"
    return "LLM logits do not require grad although its inputs do"


def _chain_fault(model: OcrMemModel, trainable: dict, mem_pages: int, seen: dict) -> str | None:
    """The first broken link of projector -> LLM, if any."""
    if trainable and mem_pages and "proj_out_requires_grad" in seen and not seen["proj_out_requires_grad"]:
        return _projector_fault(model, seen)
    if seen.get("proj_out_requires_grad") and "llm_in_requires_grad" in seen and not seen["llm_in_requires_grad"]:
        return ("memory embeddings lost their graph between the projector and the LLM (.detach(), .data "
                "or a copy into a preallocated tensor under no_grad)")
    if seen.get("llm_in_requires_grad") and not seen.get("llm_out_requires_grad", True):
        return _llm_fault(model, seen)
    return None


def _backward(model: OcrMemModel, loss, trainable: dict, diagnosis: list[str]):
    """backward(); (grad norm per trainable tensor, frozen tensors that got a gradient); appends faults."""
    norms: dict[str, float | None] = {n: None for n in trainable}
    frozen_with_grad: list[str] = []
    try:
        loss.backward()
    except RuntimeError as e:
        diagnosis.append(f"backward() failed: {e}")
    for n, p in model.named_parameters():
        if n in trainable:
            norms[n] = None if p.grad is None else float(p.grad.float().norm())
        elif p.grad is not None:
            frozen_with_grad.append(n)
    no_grad = [n for n, g in norms.items() if g is None]
    zero = [n for n, g in norms.items() if g is not None and g == 0.0]
    bad = [n for n, g in norms.items() if g is not None and not math.isfinite(g)]
    if no_grad and not diagnosis:
        diagnosis.append(f"trainable parameters received no gradient: {no_grad[:5]} (not on the loss's path)")
    if zero:
        diagnosis.append(f"trainable parameters received an all-zero gradient: {zero[:5]} (memory masked out of "
                         "attention, or labels all -100?)")
    if bad:
        diagnosis.append(f"non-finite gradient in {bad[:5]}: lower the learning rate or use bf16/fp32")
    if frozen_with_grad:
        diagnosis.append(f"frozen parameters received a gradient: {frozen_with_grad[:5]}")
    return norms, frozen_with_grad


def check_gradient_flow(model: OcrMemModel, batch: dict) -> GradReport:
    """Run forward+backward on `batch`, inspect every link; never raises for a broken chain."""
    seen: dict[str, object] = {}
    trainable = dict(model.trainable_parameters())
    out = _forward(model, batch, seen)
    loss = out.loss
    has_fn = loss is not None and loss.grad_fn is not None
    mem_pages = int(batch["page_counts"].sum()) if batch.get("page_counts") is not None else 0
    diagnosis = _setup_faults(model, trainable, mem_pages, seen)
    fault = _chain_fault(model, trainable, mem_pages, seen)
    if fault:
        diagnosis.append(fault)
    if loss is not None and not has_fn and not diagnosis:
        diagnosis.append("the loss has no grad_fn: it was detached after the logits (.item(), .detach()) ")
    warnings = []
    if _reentrant_llm(model):
        warnings.append("the LLM uses reentrant checkpointing: it only works while its inputs require grad; "
                        "prefer use_reentrant=False")
    norms, frozen_with_grad = ({n: None for n in trainable}, [])
    if has_fn:
        norms, frozen_with_grad = _backward(model, loss, trainable, diagnosis)
    for p in model.parameters():
        p.grad = None
    return GradReport(
        ok=not diagnosis, diagnosis=diagnosis, loss=None if loss is None else float(loss.detach()),
        loss_has_grad_fn=has_fn, trainable_grad_norms=norms, frozen_with_grad=frozen_with_grad,
        links={k: bool(v) for k, v in seen.items()}, warnings=warnings,
    )


def gradcheck(settings: Settings, model: OcrMemModel | None = None,
              out: str | Path | None = "metrics/gradcheck.json") -> dict:
    """The gradcheck stage: the gradient-flow check on the first real training batch, the model built
    as `ocrmem train` builds it; writes the report to `out` and returns it (`ok` says whether it passed)."""
    from ocrmem.data.dataset import first_batch, training_inputs

    t = training_inputs(settings, model)
    batch = first_batch(t.train, t.collator, settings.train.per_device_train_batch_size)
    report = check_gradient_flow(t.model, batch)
    if out:
        write_json(out, report.to_dict())
    for w in report.warnings:
        print(f"warning: {w}")
    if report.ok:
        print(f"gradient flow OK: loss {report.loss:.4f}; gradient reaches {len(report.trainable_grad_norms)} "
              f"trainable tensors, no frozen tensor -> {out}")
    else:
        print("gradient flow BROKEN:\n  - " + "\n  - ".join(report.diagnosis), file=sys.stderr)
    return report.to_dict()
