"""The OCR-MEM model: frozen encoder -> trained projector -> frozen LLM.

Names are resolved on first use (PEP 562), so importing one submodule (the registry, the hub
helpers) does not import the others: a stage's imports, and so its DVC deps, stay what it uses.
"""

import importlib

_WHERE = {
    "FrozenEncoder": "encoder", "build_encoder": "encoder", "tokens_per_page": "encoder",
    "OcrMemModel": "ocrmem", "OcrMemOutput": "ocrmem", "load_llm": "ocrmem",
    "Projector": "projector", "build_projector": "projector", "load_tokenizer": "hub",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'ocrmem.model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ocrmem.model.{_WHERE[name]}"), name)
