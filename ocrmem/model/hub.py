"""Loading from the hub or a local directory: the keyword arguments every `from_pretrained` gets,
single files of a checkpoint, and the base LLM's tokenizer (light: no model is built here)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ocrmem.settings import ModelSettings, is_local_path

RAPIDOCR = "rapidocr:"  # names a model file shipped inside the rapidocr wheel


def hub_kwargs(ms: ModelSettings, llm: bool = False) -> dict:
    """revision and trust_remote_code for both models; the LLM also gets its GGUF file when set."""
    kw = {"revision": ms.revision, "trust_remote_code": ms.trust_remote_code}
    if llm and ms.base_llm_gguf_file:
        kw["gguf_file"] = ms.base_llm_gguf_file
    return kw


def resolve_file(name: str, filename: str, revision: str | None) -> Path | None:
    """A file of a local dir or a hub repo (downloaded on demand); None when it is not there."""
    if is_local_path(name) or Path(name).is_dir():
        p = Path(name).expanduser() / filename
        return p if p.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(name, filename, revision=revision))
    except EntryNotFoundError:
        return None


def hub_problem(name: str, revision: str | None = None, timeout: float = 10.0) -> str | None:
    """None when `name` is a model in the local hub cache or on the hub; else why it is not, in words.

    Asks the hub once, with a short timeout; HF_HUB_OFFLINE=1 means no request at all."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
            return None
    except HFValidationError:
        return "not a local directory, and not a valid hub id (owner/name): start a local path with ./ or /"
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "not a local directory, and the hub is unreachable (HF_HUB_OFFLINE is set)"
    try:
        HfApi().model_info(name, revision=revision, timeout=timeout)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return "not a local directory, and no such model on the hub (a private one needs HF_TOKEN)"
    except Exception as e:  # noqa: BLE001 - any network failure means the same to the user
        return f"not a local directory, and the hub is unreachable ({type(e).__name__})"
    return None


def load_tokenizer(ms: ModelSettings):
    """The base LLM's tokenizer (pad token = EOS where it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ms.base_llm_model_name, **hub_kwargs(ms, llm=True))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def resolve_onnx(name: str) -> Path:
    """The ONNX file that `model.ocr_model_name` names; FileNotFoundError says how to get it."""
    if name.startswith(RAPIDOCR):
        spec = importlib.util.find_spec("rapidocr")  # find only: importing rapidocr pulls OpenCV
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model.ocr_model_name={name!r} needs the rapidocr wheel: "
                                    "pip install --no-deps rapidocr==3.10.0 (scripts/setup.sh does)")
        path = Path(spec.submodule_search_locations[0]) / "models" / f"{name[len(RAPIDOCR):]}.onnx"
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.ocr_model_name={name!r}: no ONNX recognizer at {path}")
    return path
