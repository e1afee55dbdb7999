"""Shared fixtures: tiny random-init models built once per session and saved locally, so every test
goes through the real `from_pretrained` path; settings shrunk onto tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from ocrmem.memory.standins import build_tiny_deepseek_ocr2, build_tiny_llm

    root = tmp_path_factory.mktemp("models")
    return {"llm": build_tiny_llm(root / "tiny-llm"), "deepseek_ocr2": build_tiny_deepseek_ocr2(root / "tiny-ds")}


REPO = Path(__file__).resolve().parents[1]


class StopAt(TrainerCallback):
    """Stops training after optimizer step `step`: a run "killed" deterministically (after its checkpoint
    when save_steps divides `step`)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_models):
    """An untrained adapter on the tiny LLM: the pixel_lines encoder (a token a line), 128px pages, 2 at most."""
    from ocrmem.memory.model import OcrMemModel
    from ocrmem.settings import Settings

    s = Settings.model_validate({
        "model": {"base_llm_model_name": str(tiny_models["llm"]), "encoder": "pixel_lines",
                  "ocr_model_name": "pixel_lines", "pixel_downsample": 2},
        "render": {"page_size": 128, "margin": 4, "font_size": 8, "max_pages": 2},
    })
    return OcrMemModel.build(s).save_adapter(tmp_path_factory.mktemp("tiny_adapter") / "adapter")


def repo_params(tmp_path, **sections) -> Path:
    """The repository's params.yaml with some sections' fields replaced, written to tmp_path."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for k, v in sections.items():
        base[k] = {**base[k], **v}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(base))
    return p


def tiny_settings_dict(root, tiny_models, **sections) -> dict:
    """A whole pipeline in seconds: 256px pages, 16 pixel tokens, the tiny LLM, 16+8 examples."""
    d = {
        "model": {"base_llm_model_name": str(tiny_models["llm"]), "encoder": "pixels", "ocr_model_name": "pixels",
                  "pixel_patch_size": 64, "pixel_downsample": 1},
        "render": {"page_size": 256, "font_size": 10, "margin": 4, "line_spacing": 1.2, "workers": 1},
        "data": {"out_dir": str(root / "data"), "synthetic": {"n_train": 16, "n_eval": 8}},
        "features": {"batch_size": 8},
        "train": {"output_dir": str(root / "ckpt"), "max_steps": 3, "per_device_train_batch_size": 4,
                  "learning_rate": 1e-2, "warmup_steps": 0, "logging_steps": 1, "save_steps": 100,
                  "report_to": "none"},
        "eval": {"batch_size": 8, "max_new_tokens": 4},
        "tracking": {"wandb_mode": "disabled"},
    }
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return d


@pytest.fixture
def make_settings(tmp_path, tiny_models):
    from ocrmem.settings import Settings

    def make(**sections):
        return Settings.model_validate(tiny_settings_dict(tmp_path, tiny_models, **sections))

    return make


@pytest.fixture
def pipeline(make_settings):
    """Rendered + encoded tiny dataset; returns its settings."""
    from transformers import AutoTokenizer

    from ocrmem.data.features import encode
    from ocrmem.data.manifest import render_dataset
    from ocrmem.memory import tokens_per_page
    from ocrmem.memory.encoder import tokens_per_line

    def build(**sections):
        s = make_settings(**sections)
        tok = AutoTokenizer.from_pretrained(s.model.base_llm_model_name)
        render_dataset(s, tokenizer=tok, tokens_per_page=tokens_per_page(s), tokens_per_line=tokens_per_line(s),
                       progress=False)
        if s.model.encoder_frozen:
            encode(s, progress=False)
        return s

    return build
