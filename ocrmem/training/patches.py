"""Every patch of transformers' and DeepSpeed's internals that adapter-only training needs, in one place,
each pinned to the versions it was written against (tests/test_patches.py checks that the patched
names still exist with the signatures used here, so an upgrade that moves them fails a test, not a run).

Why patch at all: the Trainer saves and resumes a DeepSpeed engine without its frozen weights only for
PEFT models. OCR-MEM's model is not one, yet its frozen LLM never changes, so copying it into every
resume point costs ~15 GB per checkpoint for a 7B LLM. Two patches give it PEFT's treatment:
* `state_without_frozen(engine)`: the engine's module state without any frozen tensor (DeepSpeed's own
  exclude_frozen_parameters misses tied aliases such as lm_head.weight of a tied LLM);
* `resume_without_frozen()`: the Trainer resumes the engine with a loader that allows just those to miss.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from unittest import mock

import torch

# The versions these patches were written and tested against (pyproject.toml allows the same ranges).
PATCHED = {"transformers": (">=5.23", "<6"), "deepspeed": (">=0.17", "<0.20")}


def _frozen_names(module: torch.nn.Module) -> set[str]:
    """Every state-dict name of a frozen parameter, tied aliases included (lm_head.weight of a tied LLM)."""
    return {n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _trained_module_state(engine, *args, **kwargs) -> dict:
    """DeepSpeed's module state without any frozen tensor: its exclude_frozen_parameters misses tied aliases."""
    sd = type(engine).module_state_dict(engine, *args, **kwargs)
    for name in _frozen_names(engine.module) & set(sd):
        del sd[name]
    return sd


def _load_all_but_frozen(src: dict, dst: torch.nn.Module) -> None:
    frozen = _frozen_names(dst)
    result = dst.load_state_dict(src, strict=False)
    missing = sorted(set(result.missing_keys) - frozen)
    if missing or result.unexpected_keys:
        raise RuntimeError(f"DeepSpeed checkpoint does not match the model: missing trained tensors {missing[:5]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:5]}")


def load_engine_without_frozen(engine, checkpoint_path: str, load_module_strict: bool = True) -> None:
    """Resume a DeepSpeed engine from a checkpoint saved with exclude_frozen_parameters: every tensor but
    the frozen ones must be there (the frozen ones come from the base model, as at the start)."""
    path, _ = engine.load_checkpoint(checkpoint_path, load_module_strict=False, load_optimizer_states=True,
                                     load_lr_scheduler_states=True, custom_load_fn=_load_all_but_frozen)
    if path is None:
        raise ValueError(f"[deepspeed] failed to resume from checkpoint {checkpoint_path}")


@contextmanager
def resume_without_frozen():
    """While the Trainer trains: it resumes a DeepSpeed engine with `load_engine_without_frozen`."""
    import transformers.trainer

    with mock.patch.object(transformers.trainer, "deepspeed_load_checkpoint", load_engine_without_frozen):
        yield


@contextmanager
def state_without_frozen(engine):
    """While saving a DeepSpeed checkpoint: the engine's module state leaves out every frozen tensor."""
    with mock.patch.object(engine, "module_state_dict", partial(_trained_module_state, engine)):
        yield
