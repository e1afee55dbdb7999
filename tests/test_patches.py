"""The patches of transformers and DeepSpeed (ocrmem/training/patches.py) hold for the installed versions:
each is within the range the patches were written against, and every name and keyword they patch or
call is still there. An upgrade that moves one fails here, not in a resumed run on a GPU pool."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
from packaging.specifiers import SpecifierSet

from ocrmem.training import patches


@pytest.mark.parametrize("package", sorted(patches.PATCHED))
def test_installed_version_is_one_the_patches_were_written_for(package):
    pytest.importorskip(package)
    assert version(package) in SpecifierSet(",".join(patches.PATCHED[package])), (
        f"{package} {version(package)} is outside {patches.PATCHED[package]}: recheck ocrmem/training/patches.py")


def test_transformers_still_resumes_deepspeed_through_the_patched_name():
    import transformers.trainer

    assert callable(transformers.trainer.deepspeed_load_checkpoint)
    assert "deepspeed_load_checkpoint(" in inspect.getsource(transformers.trainer.Trainer)
    original = transformers.trainer.deepspeed_load_checkpoint
    with patches.resume_without_frozen():
        assert transformers.trainer.deepspeed_load_checkpoint is patches.load_engine_without_frozen
    assert transformers.trainer.deepspeed_load_checkpoint is original


def test_deepspeed_engine_has_what_the_patches_call():
    engine_mod = pytest.importorskip("deepspeed.runtime.engine")
    engine = engine_mod.DeepSpeedEngine
    assert "exclude_frozen_parameters" in inspect.signature(engine.save_checkpoint).parameters
    assert "custom_load_fn" in inspect.signature(engine.load_checkpoint).parameters
    assert callable(engine.module_state_dict)


def test_state_without_frozen_drops_frozen_tensors_and_tied_aliases():
    import torch

    class Engine:
        def __init__(self):
            self.module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
            self.module[0].requires_grad_(False)

        def module_state_dict(self):
            return self.module.state_dict()

    e = Engine()
    with patches.state_without_frozen(e):
        assert sorted(e.module_state_dict()) == ["1.bias", "1.weight"]
    assert sorted(e.module_state_dict()) == ["0.bias", "0.weight", "1.bias", "1.weight"]
