"""Encoder and projector kinds: the one list that settings accepts and the builders look up.

Each kind names its class or builder as "module:attribute", imported only when that kind is built,
so `ocrmem.settings` validates `model.encoder` / `model.projector` without importing torch.

Adding an encoder kind = one class (with `kind`, `from_settings(model_settings, render_settings)`,
`page_tokens(model_settings, render_settings)`, `preprocess`, `forward`, `out_dim`,
`tokens_per_page`, `fingerprint`; see ocrmem/memory/encoder.py) + one line in ENCODERS.
"""

from __future__ import annotations

import importlib

from ocrmem.common.errors import UserError

ENCODERS = {
    "pixels": "ocrmem.memory.encoder:PixelEncoder",
    "pixel_lines": "ocrmem.memory.encoder:PixelLineEncoder",
    "deepseek_ocr2": "ocrmem.memory.encoder:DeepseekOcr2Encoder",
    "hf_vision": "ocrmem.memory.encoder:HFVisionEncoder",
    "ppocr_rec": "ocrmem.memory.recognizer:LineRecognizerEncoder",
}
PROJECTORS = {
    "linear": "ocrmem.memory.projector:linear",
    "mlp2x_gelu": "ocrmem.memory.projector:mlp2x_gelu",
    "frame_mean": "ocrmem.memory.projector:FrameMean",
    "resampler": "ocrmem.memory.projector:Resampler",
    "mean_pool": "ocrmem.memory.projector:MeanPool",  # the control: frames averaged, order lost
}


def lookup(table: dict[str, str], kind: str, field: str):
    """The class/builder registered for `kind`; a clear error naming the field and the choices otherwise."""
    if kind not in table:
        raise UserError(f"model.{field}={kind!r} is unknown: use one of {', '.join(table)}")
    module, attr = table[kind].split(":")
    return getattr(importlib.import_module(module), attr)
