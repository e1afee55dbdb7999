"""Loading from the hub or a local directory: the keyword arguments every `from_pretrained` gets,
single files of a checkpoint, and the base LLM's tokenizer (light: no model is built here)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from ocrmem.common.errors import ConfigError
from ocrmem.settings import ModelSettings, Settings, is_local_path

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


def check_model_paths(s: Settings) -> None:
    """Refuse a local model path that is missing (called before any model is loaded)."""
    bad = []
    names = [("model.base_llm_model_name", s.model.base_llm_model_name)]
    if s.model.encoder == "ppocr_rec":
        try:
            resolve_onnx(s.model.ocr_model_name)
        except FileNotFoundError as e:
            bad.append(str(e))
    elif s.model.encoder not in ("pixels", "pixel_lines"):
        names.append(("model.ocr_model_name", s.model.ocr_model_name))
    for field, name in names:
        if is_local_path(name) and not Path(name).expanduser().exists():
            bad.append(
                f"{field} = {name!r}: local path does not exist: run `ocrmem standins` "
                f"(or `dvc repro standins`) to build the local models, or point it at a hub id"
            )
        elif not is_local_path(name) and not Path(name).expanduser().exists():
            problem = hub_problem(name, s.model.revision)
            if problem:
                bad.append(f"{field} = {name!r}: {problem}: for a local directory start it with ./ or /")
    for field, name in names:
        cfg = Path(name).expanduser() / "config.json"
        if is_local_path(name) and cfg.is_file() and not s.model.trust_remote_code:
            try:
                auto_map = json.loads(cfg.read_text()).get("auto_map")
            except json.JSONDecodeError:
                auto_map = None
            if auto_map:
                bad.append(f"{field} = {name!r}: this checkpoint runs its own code (config.json has auto_map) but "
                           "model.trust_remote_code is false: read that code, then set trust_remote_code: true")
    if s.model.base_llm_gguf_file and is_local_path(s.model.base_llm_model_name):
        gguf = Path(s.model.base_llm_model_name).expanduser() / s.model.base_llm_gguf_file
        if Path(s.model.base_llm_model_name).expanduser().exists() and not gguf.is_file():
            bad.append(f"model.base_llm_gguf_file = {s.model.base_llm_gguf_file!r}: no such file in "
                       f"{s.model.base_llm_model_name}")
    if bad:
        raise ConfigError(bad)
