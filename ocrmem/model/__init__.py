"""The OCR-MEM model: frozen encoder -> trained projector -> frozen LLM."""

from ocrmem.model.encoder import FrozenEncoder, build_encoder, raw_tokens_per_page, tokens_per_page
from ocrmem.model.ocrmem import OcrMemModel, OcrMemOutput, load_llm
from ocrmem.model.projector import Projector, build_projector

__all__ = [
    "FrozenEncoder", "OcrMemModel", "OcrMemOutput", "Projector",
    "build_encoder", "build_projector", "load_llm", "raw_tokens_per_page", "tokens_per_page",
]
