"""Loading from the hub or a local directory: the keyword arguments every `from_pretrained` gets,
single files of a checkpoint, the base LLM's tokenizer, and an adapter's frozen parts: its
adapter_config.json read and its format checked, its local models found from any working directory
(or the caller's `--llm` / `--ocr-model`), checked against its tensors and against remote code the
caller did not allow (light: no model is built here)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from ocrmem.common.errors import ConfigError, UserError, UserFileNotFoundError
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


# -- adapters: what they record, and finding their frozen parts from any working directory ---------

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
FORMAT = "ocrmem-adapter"
FORMAT_VERSION = 2  # 2 records where its local models were (`paths`); 1 is still read
PARTS = {"base_llm_model_name": ("LLM", "--llm", "llm"), "ocr_model_name": ("OCR model", "--ocr-model", "ocr_model")}
LABEL_ENCODERS = ("pixels", "pixel_lines")  # their ocr_model_name is a label: nothing is loaded


def read_adapter_config(adapter_dir: str | Path) -> dict:
    """adapter_config.json of an adapter, refused (UserError) unless it reads and its format is one this
    code knows: a newer format is refused before anything loads."""
    adapter_dir = Path(adapter_dir)
    f = adapter_dir / ADAPTER_CONFIG
    if not f.is_file():
        raise UserFileNotFoundError(f"{f} not found: is {adapter_dir} an adapter written by `ocrmem train`?")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{f}: not valid JSON ({e}): the file is torn or was edited; copy the adapter again") from None
    fmt = str(cfg.get("format")) if isinstance(cfg, dict) else repr(cfg)[:40]
    kind, _, version = fmt.partition("/")
    if kind != FORMAT or not version.isdigit():
        raise UserError(f"{f}: format {fmt!r} is not an OCR-MEM adapter ({FORMAT}/N): pass a directory written "
                        "by `ocrmem train`")
    if int(version) > FORMAT_VERSION:
        raise UserError(f"{f}: format {fmt} is newer than this ocrmem reads ({FORMAT}/{FORMAT_VERSION}): "
                        "upgrade ocrmem to load this adapter")
    if not (isinstance(cfg.get("model"), dict) and isinstance(cfg.get("render"), dict)):
        raise UserError(f"{f}: no 'model' or 'render' section: the file is incomplete; copy the adapter again")
    return cfg


def _is_path(name: str) -> bool:
    return is_local_path(name) or Path(name).expanduser().is_absolute()


def loads_model(field: str, ms: ModelSettings | dict) -> bool:
    """Whether `field` (PARTS) names something loaded: the OCR model of a pixel encoder is only a label."""
    encoder = ms.get("encoder") if isinstance(ms, dict) else ms.encoder
    return field != "ocr_model_name" or encoder not in LABEL_ENCODERS


def local_model_paths(ms: ModelSettings, adapter_dir: str | Path) -> dict:
    """What an adapter records so that its local models are found from anywhere: the project it was
    trained in, and each local model's absolute path and its path from the adapter directory."""
    out: dict = {"project": str(Path.cwd().resolve())}
    for field in PARTS:
        name = getattr(ms, field)
        p = Path(name).expanduser()
        if loads_model(field, ms) and p.exists():  # what loading reads from disk (a hub id is not recorded)
            p = p.resolve()
            out[field] = {"name": name, "absolute": str(p),
                          "from_adapter": os.path.relpath(p, Path(adapter_dir).resolve())}
    return out


def _candidates(name: str, rec: dict | None, adapter_dir: Path, project: str | None) -> list[Path]:
    """Where a local model recorded as `name` may be, most trusted first."""
    out = [Path(rec["absolute"]), adapter_dir / rec["from_adapter"]] if rec else []
    p = Path(name).expanduser()
    if p.is_absolute():
        return [Path(os.path.normpath(c)) for c in out + [p]]
    roots = ([Path(project)] if project else []) + [adapter_dir, *list(adapter_dir.parents)[:2]]
    return [Path(os.path.normpath(c)) for c in out + [r / p for r in roots] + [Path.cwd() / p]]


def resolve_adapter_parts(cfg: dict, adapter_dir: str | Path, llm: str | None = None,
                          ocr_model: str | None = None) -> dict:
    """model.base_llm_model_name and model.ocr_model_name to load an adapter with, from any working directory:
    the caller's `llm` / `ocr_model` if given, else each recorded local path found from here (its absolute
    path, its path from the adapter, the project, the adapter's parents, the working directory), else the
    name as recorded (a hub id, a label). A local model found nowhere is a UserError naming the flag."""
    adapter_dir = Path(adapter_dir).resolve()
    given, paths, out = {"base_llm_model_name": llm, "ocr_model_name": ocr_model}, cfg.get("paths") or {}, {}
    for field, (what, flag, kw) in PARTS.items():
        name = cfg["model"].get(field)
        if given[field] is not None or not name or not loads_model(field, cfg["model"]) or not _is_path(name):
            out[field] = given[field] if given[field] is not None else name
            continue
        rec = paths.get(field) if (paths.get(field) or {}).get("name") == name else None  # not for an edited name
        tried = _candidates(name, rec, adapter_dir, paths.get("project"))
        found = next((c for c in tried if c.exists()), None)
        if found is None:
            raise UserError(f"adapter {adapter_dir}: its {what} {name!r} is not on this machine (looked in "
                            f"{', '.join(dict.fromkeys(str(c) for c in tried))}): pass {flag} PATH_OR_ID "
                            f"(Python: {kw}=...) naming a copy of it")
        out[field] = str(found)
    return out


def _config_hidden_size(name: str, revision: str | None) -> int | None:
    """hidden_size from a model's config.json (local, or fetched alone from the hub); None if unknown."""
    try:
        f = resolve_file(name, "config.json", revision)
        cfg = json.loads(f.read_text()) if f else {}
    except Exception:  # noqa: BLE001 - unknown here means: checked after loading instead
        return None
    for c in (cfg, cfg.get("text_config") or {}):
        if isinstance(c.get("hidden_size"), int):
            return c["hidden_size"]
    return None


def _part_problem(field: str, ms: ModelSettings) -> str | None:
    """Why the model `field` names cannot be loaded here, or None."""
    name, (what, flag, kw) = getattr(ms, field), PARTS[field]
    fix = f"pass {flag} PATH_OR_ID (Python: {kw}=...)"
    if field == "ocr_model_name" and ms.encoder == "ppocr_rec":
        try:
            resolve_onnx(name)
        except FileNotFoundError as e:
            return f"{e}: {fix}"
        return None
    p = Path(name).expanduser()
    if p.exists():
        try:
            auto_map = "auto_map" in json.loads((p / "config.json").read_text())
        except (OSError, ValueError, TypeError):  # no config.json (an ONNX file, a GGUF dir) or not JSON
            auto_map = False
        if auto_map and not ms.trust_remote_code:
            return (f"its {what} {name} runs its own Python code (config.json has auto_map), and remote code runs "
                    "only when you allow it (the adapter's own trust_remote_code is ignored): read that code, "
                    "then pass --trust-remote-code (Python: trust_remote_code=True; evaluate: model.trust_remote_code)")
        return None
    if _is_path(name):
        return f"its {what} {name!r} does not exist: {fix}"
    problem = hub_problem(name, ms.revision)
    return f"its {what} {name!r}: {problem}: {fix}" if problem else None


def check_adapter_parts(cfg: dict, adapter_dir: str | Path, ms: ModelSettings) -> None:
    """Before any model loads: every frozen part is there, runs no code the caller did not allow, and the
    LLM is as wide as the adapter's tensors (when its config.json says). One-line UserError otherwise."""
    problems = [p for f in PARTS if loads_model(f, ms) and (p := _part_problem(f, ms))]
    width = _config_hidden_size(ms.base_llm_model_name, ms.revision) if not problems else None
    if width is not None:
        problems += [w for w in [_width_problem(cfg, ms.base_llm_model_name, width)] if w]
    if problems:
        raise UserError(f"adapter {adapter_dir}: " + "; ".join(problems))


def _width_problem(cfg: dict, llm: str, width: int, fix: str = "pass --llm PATH_OR_ID naming") -> str | None:
    want = cfg.get("llm_hidden_size")
    if want is None or want == width:
        return None
    return (f"its projector writes {want}-wide embeddings, but the LLM {llm} is {width} wide: {fix} the LLM "
            f"it was trained with ({cfg['model'].get('base_llm_model_name')}) or one of its width")


def check_llm_width(cfg: dict, adapter_dir: str | Path, llm: str, width: int) -> None:
    """After the LLM loads: its embedding width is the one the adapter's projector writes."""
    if problem := _width_problem(cfg, llm, width):
        raise UserError(f"adapter {adapter_dir}: {problem}")


def check_adapter_encoder(cfg: dict, adapter_dir: str | Path, fingerprint: dict, out_dim: int,
                          overridden: bool = False) -> None:
    """Before the LLM loads: the encoder built here is the one the adapter was trained on (feature width and
    fingerprint; its path or file name may differ when the caller named another copy with --ocr-model)."""
    want = cfg.get("encoder_dim")
    if want is not None and want != out_dim:
        raise UserError(f"adapter {adapter_dir}: its projector reads {want}-wide encoder features, but the OCR "
                        f"model {cfg['model'].get('ocr_model_name')!r} gives {out_dim}: pass --ocr-model naming the "
                        "encoder it was trained with")
    rec, here = cfg.get("encoder_fingerprint") or {}, json.loads(json.dumps(fingerprint))
    skip = {"name"} | ({"model"} if overridden else set())  # a path as given, not the encoder itself
    diff = sorted(k for k in set(rec) & set(here) if k not in skip and rec[k] != here[k])
    if diff:
        what = ", ".join(f"{k} {rec[k]!r} there, {here[k]!r} here" for k in diff[:3])
        raise UserError(f"adapter {adapter_dir}: trained on another encoder ({what}): load it with the encoder and "
                        "render settings it was trained with")


ENCODER_FIELDS = ("encoder", "recognizer_layer", "pixel_patch_size", "pixel_downsample")


def check_adapter_against_run(cfg: dict, adapter_dir: str | Path, s: Settings) -> None:
    """Before any model loads (evaluate, benchmark, train.init_from): the adapter was trained with this run's encoder, pooling
    and LLM width; otherwise a one-line UserError naming the first difference."""
    am, rm = cfg["model"], s.model
    fields = ENCODER_FIELDS + ("token_pool",)
    if not (_is_path(am.get("ocr_model_name", "")) or _is_path(rm.ocr_model_name)):
        fields += ("ocr_model_name",)  # local copies may sit anywhere: the fingerprint checks them on load
    diff = [f for f in fields if f in am and am[f] != getattr(rm, f)]
    if diff:
        f = diff[0]
        raise UserError(f"adapter {adapter_dir} was trained with model.{f} = {am[f]!r} but this run's params say "
                        f"{getattr(rm, f)!r}: use it with the params it was trained with, or retrain")
    width = _config_hidden_size(rm.base_llm_model_name, rm.revision)
    if width is not None and (problem := _width_problem(cfg, rm.base_llm_model_name, width,
                                                         "set model.base_llm_model_name to")):
        raise UserError(f"adapter {adapter_dir}: {problem}")
