"""A trained memory in use: `MemoryLLM` and its sessions (memory_llm), page and prefix caches (caches),
and `ocrmem generate` as a library (generate).

    from ocrmem.serving import MemoryLLM
    llm = MemoryLLM.from_pretrained("checkpoints/adapter")
"""

import importlib

_WHERE = {"MemoryLLM": "memory_llm", "MemorySession": "memory_llm", "Answer": "memory_llm"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'ocrmem.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ocrmem.serving.{_WHERE[name]}"), name)
