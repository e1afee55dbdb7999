"""What turns a history into memory tokens: page layout and drawing (render), the frozen encoders
(encoder, recognizer), the trained projector kinds (projector), the model that joins them to the frozen
LLM (model), the prompt layout shared by training, evaluation and serving (prompt), and model loading
(hub, registry, standins).

Names are resolved on first use (PEP 562), so importing one submodule (the registry, the hub
helpers) does not import the others: a stage's imports, and so its DVC deps, stay what it uses.
"""

import importlib

_WHERE = {
    "FrozenEncoder": "encoder", "build_encoder": "encoder", "tokens_per_page": "encoder",
    "OcrMemModel": "model", "OcrMemOutput": "model", "load_llm": "model",
    "Projector": "projector", "build_projector": "projector", "load_tokenizer": "hub",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'ocrmem.memory' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ocrmem.memory.{_WHERE[name]}"), name)
