"""Frozen OCR encoders behind one builder: page images -> [pages, tokens, dim] features.

Every encoder class has a `kind` (its key in ocrmem/memory/registry.py), is built from settings by
`from_settings(model_settings, render_settings)`, says what a page costs before any weights load
(`page_tokens(model_settings, render_settings)`), and exposes `preprocess(images) -> pixel_values`,
`forward(pixel_values) -> features`, `out_dim`, `tokens_per_page` and `fingerprint()` (what a
feature cache must match).
`FrozenEncoder` wraps one: it freezes the weights, stays in eval mode and runs without autograd,
because nothing upstream of the projector needs a graph (BACKGROUND.md). Unfrozen, it runs with
autograd and the feature cache does not apply.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from torch import nn

from ocrmem.common.errors import UserError
from ocrmem.memory.hub import hub_kwargs, resolve_file
from ocrmem.memory.projector import pooled_tokens
from ocrmem.memory.registry import ENCODERS, lookup
from ocrmem.settings import ModelSettings, RenderSettings, Settings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _to_rgb_array(img: Image.Image, size: int) -> np.ndarray:
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


class PixelEncoder(nn.Module):
    """No weights: the page's ink (1 - gray) cut into square patches, flattened.

    The parameter-free baseline (ANCHORS.md: mean pooling matched a vision encoder) and the CPU
    stand-in. The ink is first average-pooled by `downsample` (keeping the layout inside each
    patch, unlike pooling whole tokens): a 512px page, downsample 2, 64px patches -> 16 tokens
    of 4096 values.
    """

    kind = "pixels"
    weightless = True  # built from settings alone: `ocrmem validate` builds it to check the geometry

    def __init__(self, patch_size: int, page_size: int, downsample: int = 1):
        super().__init__()
        if page_size % (patch_size * downsample):
            raise UserError(
                f"model.pixel_patch_size={patch_size} x model.pixel_downsample={downsample} does not divide "
                f"render.page_size={page_size}: pick values whose product divides the page"
            )
        self.patch_size, self.page_size, self.downsample = patch_size, page_size, downsample
        self.out_dim = patch_size * patch_size
        self.tokens_per_page = (page_size // (patch_size * downsample)) ** 2

    @classmethod
    def from_settings(cls, ms: ModelSettings, rs: RenderSettings) -> "PixelEncoder":
        return cls(ms.pixel_patch_size, rs.page_size, ms.pixel_downsample)

    @classmethod
    def page_tokens(cls, ms: ModelSettings, rs: RenderSettings) -> int:
        return cls.from_settings(ms, rs).tokens_per_page  # no weights: building it is free

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(im.convert("L").resize((self.page_size,) * 2)
                                   if im.size != (self.page_size,) * 2 else im.convert("L")) for im in images])
        return torch.from_numpy(arr).unsqueeze(1)  # uint8 [P, 1, H, W]: 4x smaller than float in the loader

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        ink = 1.0 - pixel_values.float() / 255.0
        if self.downsample > 1:
            ink = nn.functional.avg_pool2d(ink, self.downsample)
        p = self.patch_size
        patches = ink.unfold(2, p, p).unfold(3, p, p)  # [P, 1, gh, gw, p, p]
        n, _, gh, gw = patches.shape[:4]
        return patches.reshape(n, gh * gw, p * p)

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "patch_size": self.patch_size, "page_size": self.page_size,
                "downsample": self.downsample}


class PixelLineEncoder(PixelEncoder):
    """No weights: one token per rendered text line (the ink of that line's strip, pooled).

    Pages are drawn on a fixed line grid (render.margin + i * line height), so a strip of the grid
    holds exactly one line of text: the page's natural tokens, and the parameter-free encoder that
    a linear projector learns to read fastest (measured in bench/objective_sweep.py).
    """

    kind = "pixel_lines"

    def __init__(self, rs: RenderSettings, downsample: int = 1):
        nn.Module.__init__(self)
        from ocrmem.memory.render import line_height, lines_per_page

        self.page_size, self.downsample, self.patch_size = rs.page_size, downsample, None
        self.top, self.lh, self.n = rs.margin, line_height(rs), lines_per_page(rs)
        self.width = rs.page_size - 2 * rs.margin
        if self.lh % downsample or self.width % downsample:
            raise UserError(
                f"model.pixel_downsample={downsample} must divide the line height ({self.lh}px = render.font_size x "
                f"render.line_spacing) and the text width ({self.width}px = page_size - 2 x margin): pick another"
            )
        self.out_dim = (self.lh // downsample) * (self.width // downsample)
        self.tokens_per_page = self.n

    @classmethod
    def from_settings(cls, ms: ModelSettings, rs: RenderSettings) -> "PixelLineEncoder":
        return cls(rs, ms.pixel_downsample)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        ink = 1.0 - pixel_values.float() / 255.0
        ink = ink[:, :, self.top:, self.top:self.top + self.width]
        need = self.n * self.lh
        if ink.shape[2] < need:  # the last line's strip may reach past the page's edge
            ink = nn.functional.pad(ink, (0, 0, 0, need - ink.shape[2]))
        ink = ink[:, :, :need]
        if self.downsample > 1:
            ink = nn.functional.avg_pool2d(ink, self.downsample)
        return ink.reshape(ink.shape[0], self.n, -1)

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "page_size": self.page_size, "line_height": self.lh, "top": self.top,
                "lines": self.n, "downsample": self.downsample}


class DeepseekOcr2Encoder(nn.Module):
    """The vision tower of DeepSeek-OCR-2 (SAM + Qwen2-style encoder, 256 queries per 1024px page).

    Only the tower's weights are read from the checkpoint (keys under `vision_tower.`): the 3B
    decoder is never built. Preprocessing is the checkpoint's global view: RGB, 1024x1024,
    rescale to [0, 1], normalise with the processor's mean and std.
    """

    kind = "deepseek_ocr2"

    def __init__(self, tower: nn.Module, image_size: int = 1024, mean=(0.5,) * 3, std=(0.5,) * 3,
                 rescale: float = 1 / 255, name: str = "random-init"):
        super().__init__()
        self.tower, self.image_size, self.rescale, self.name = tower, image_size, rescale, name
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.out_dim = tower.config.encoder_config.hidden_size
        self.tokens_per_page = self.queries(image_size)

    @staticmethod
    def queries(image_size: int) -> int:
        """DeepSeek-OCR-2's tokens per page: 256 queries for a 1024px global view, 144 for 768px."""
        return 256 if image_size > 768 else 144

    @classmethod
    def from_settings(cls, ms: ModelSettings, rs: RenderSettings) -> "DeepseekOcr2Encoder":
        return cls.from_pretrained(ms.ocr_model_name, ms)

    @classmethod
    def page_tokens(cls, ms: ModelSettings, rs: RenderSettings) -> int:
        return cls.queries(rs.page_size)

    @classmethod
    def from_config(cls, vision_config, dtype=torch.float32) -> "DeepseekOcr2Encoder":
        """Random-init tower of a given shape (benchmarks of real-size architectures)."""
        from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2VisionModel

        return cls(DeepseekOcr2VisionModel(vision_config).to(dtype), vision_config.sam_config.image_size)

    @classmethod
    def from_pretrained(cls, name: str, ms: ModelSettings) -> "DeepseekOcr2Encoder":
        from transformers import AutoConfig, DeepseekOcr2ForConditionalGeneration
        from transformers.utils import logging as hf_logging

        config = AutoConfig.from_pretrained(name, **hub_kwargs(ms))
        if getattr(config, "model_type", None) != "deepseek_ocr2":
            raise UserError(
                f"model.ocr_model_name={name!r} is a {config.model_type!r} checkpoint, not deepseek_ocr2: "
                "use encoder: hf_vision for other vision models"
            )
        # Shrink the 3B decoder to nothing before building: its tensors are read and dropped, while
        # transformers' own key conversion still maps the checkpoint's vision tower for us.
        tc = config.text_config
        tc.num_hidden_layers, tc.mlp_layer_types, tc.vocab_size = 0, [], 8
        tc.hidden_size = tc.intermediate_size = tc.num_attention_heads = tc.num_key_value_heads = 1
        tc.head_dim = 1
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            full, info = DeepseekOcr2ForConditionalGeneration.from_pretrained(
                name, config=config, ignore_mismatched_sizes=True, output_loading_info=True,
                dtype=DTYPES[ms.dtype], **hub_kwargs(ms),
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        bad = [k for k in info["missing_keys"] if "vision_tower" in k]
        bad += [k for k, *_ in info["mismatched_keys"] if "vision_tower" in k]
        if bad:
            raise UserError(f"{name!r}: vision tower weights missing or misshaped ({bad[:5]}): not a DeepSeek-OCR-2 checkpoint?")
        tower = full.model.vision_tower
        del full
        pre = resolve_file(name, "preprocessor_config.json", ms.revision)
        pcfg = json.loads(pre.read_text()) if pre else {}
        size = int(pcfg.get("size", {}).get("height", config.vision_config.sam_config.image_size))
        return cls(tower, size, pcfg.get("image_mean", [0.5] * 3), pcfg.get("image_std", [0.5] * 3),
                   float(pcfg.get("rescale_factor", 1 / 255)), name)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.from_numpy(np.stack([_to_rgb_array(im, self.image_size) for im in images])).permute(0, 3, 1, 2)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.tower.parameters()).dtype
        x = (pixel_values.float() * self.rescale - self.mean) / self.std
        return self.tower(pixel_values=x.to(dtype)).last_hidden_state

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name, "image_size": self.image_size}


class HFVisionEncoder(nn.Module):
    """Any transformers vision model returning `last_hidden_state` (SigLIP, CLIP, ViT, ...)."""

    kind = "hf_vision"

    @classmethod
    def from_settings(cls, ms: ModelSettings, rs: RenderSettings) -> "HFVisionEncoder":
        return cls(ms.ocr_model_name, ms)

    @classmethod
    def page_tokens(cls, ms: ModelSettings, rs: RenderSettings) -> int:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(ms.ocr_model_name, **hub_kwargs(ms))
        cfg = getattr(cfg, "vision_config", cfg)
        return (cfg.image_size // cfg.patch_size) ** 2

    def __init__(self, name: str, ms: ModelSettings):
        super().__init__()
        from transformers import AutoImageProcessor, AutoModel

        model = AutoModel.from_pretrained(name, dtype=DTYPES[ms.dtype], **hub_kwargs(ms))
        self.model = getattr(model, "vision_model", model)  # CLIPModel/SiglipModel: keep the tower only
        self.processor = AutoImageProcessor.from_pretrained(name, **hub_kwargs(ms))
        cfg = getattr(self.model, "config", model.config)
        cfg = getattr(cfg, "vision_config", cfg)
        self.out_dim = cfg.hidden_size
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
        self.image_size = size
        with torch.no_grad():
            probe = self.model(pixel_values=torch.zeros(1, 3, size, size, dtype=DTYPES[ms.dtype]))
        self.tokens_per_page = probe.last_hidden_state.shape[1]
        assert self.tokens_per_page >= (size // patch) ** 2
        self.name = name

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        return self.model(pixel_values=pixel_values.to(dtype)).last_hidden_state

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name, "image_size": self.image_size}


class FrozenEncoder(nn.Module):
    """Freezes the wrapped encoder when built; frozen means eval mode and no autograd, always."""

    def __init__(self, encoder: nn.Module, frozen: bool = True):
        super().__init__()
        self.encoder, self.frozen = encoder, frozen
        if frozen:
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> "FrozenEncoder":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # Trainer calls model.train(): dropout must stay off for cache == on-the-fly
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                return self.encoder(pixel_values)
        return self.encoder(pixel_values)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return self.encoder.preprocess(images)

    @property
    def out_dim(self) -> int:
        return self.encoder.out_dim

    @property
    def tokens_per_page(self) -> int:
        return self.encoder.tokens_per_page

    def fingerprint(self) -> dict:
        return self.encoder.fingerprint()

    @property
    def prices_ink(self) -> bool:
        """Whether the encoder cuts lines to their ink, so a line costs only what its ink reaches."""
        return bool(getattr(self.encoder, "ink_width", False))

    def ink_tokens(self, pixel_values: torch.Tensor) -> list[list[int]] | None:
        """Memory tokens each grid line of each page pays for, when the encoder prices ink
        (`ocrmem.memory.lines`); None when every drawn line costs the same."""
        return self.encoder.ink_tokens(pixel_values) if self.prices_ink else None

    def clear_cache(self) -> None:
        """Forget what an encoder memoises (the recognizer's line cache): the next call reads from scratch."""
        getattr(self.encoder, "clear_cache", lambda: None)()


def build_encoder(ms: ModelSettings, rs: RenderSettings) -> FrozenEncoder:
    """Map `model.encoder` to a frozen (or, if configured, trainable) encoder."""
    return FrozenEncoder(lookup(ENCODERS, ms.encoder, "encoder").from_settings(ms, rs), frozen=ms.encoder_frozen)


def tokens_per_page(s: Settings) -> int:
    """LLM memory tokens one page costs, without loading weights: encoder tokens after pooling."""
    cls = lookup(ENCODERS, s.model.encoder, "encoder")
    return pooled_tokens(cls.page_tokens(s.model, s.render), s.model.token_pool, getattr(cls, "grid", "square"))


def tokens_per_line(s: Settings) -> int | None:
    """Memory tokens one drawn line costs for line encoders (blank lines cost nothing); None otherwise."""
    cls = lookup(ENCODERS, s.model.encoder, "encoder")
    if getattr(cls, "grid", "square") != "line":
        return None
    from ocrmem.memory.render import lines_per_page

    return tokens_per_page(s) // lines_per_page(s.render)


def ink_pricer(s: Settings):
    """What prices a drawn line by its ink without loading weights (`.ink_tokens(pixel_values)`), for
    encoders that cut lines to their ink; None otherwise (every drawn line costs `tokens_per_line`)."""
    make = getattr(lookup(ENCODERS, s.model.encoder, "encoder"), "ink_pricer", None)
    return make(s.model, s.render) if make else None
