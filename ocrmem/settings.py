"""Settings: `params.yaml` read by pydantic-settings into one nested model per section.

`params.yaml` is the one source of truth. Environment variables override it with the prefix
`OCRMEM_` and `__` between levels (`OCRMEM_MODEL__OCR_MODEL_NAME=...`); secrets (the WandB key,
the HF token) are read from the environment by the libraries that use them, never from here.

A bad config is refused before anything heavy runs: `load_settings` raises `ConfigError` whose
`messages` name each bad field, its value and the fix; the CLI prints them and exits with 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from ocrmem.common.errors import ConfigError
from ocrmem.memory.registry import ENCODERS, PROJECTORS

ENCODER_KINDS = tuple(ENCODERS)  # one source: the registry the builders look up
PROJECTOR_KINDS = tuple(PROJECTORS)
OBJECTIVES = ("qa", "reconstruct", "continue")
CONDITIONS = ("no_memory", "truncated_text", "truncated_text_trained", "ocr_memory", "full_text", "full_text_trained")


class Section(BaseModel):
    # A typo in params.yaml is an error, not a silently ignored key.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def is_local_path(name: str) -> bool:
    """A model name that is a filesystem path (not a hub id): it must exist."""
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..")


class ModelSettings(Section):
    base_llm_model_name: str = Field(
        "./models/smollm2-135m-instruct",
        description="Frozen base LLM: a hub id, or a local directory (start it with ./ or /).",
    )
    base_llm_gguf_file: str | None = Field(
        None, description="GGUF file name inside base_llm_model_name to load instead of safetensors (needs `gguf`)."
    )
    ocr_model_name: str = Field(
        "pixel_lines",
        description="Frozen OCR encoder weights: hub id or local dir; for pixels/pixel_lines a label, nothing loaded.",
    )
    encoder: str = Field("pixel_lines", description=f"Encoder kind, one of {ENCODER_KINDS}.")
    encoder_frozen: bool = Field(True, description="Freeze the encoder (eval mode, no autograd, features cacheable).")
    pixel_patch_size: int = Field(64, gt=0, description="pixels encoder: side of the square patch cut from the page.")
    pixel_downsample: int = Field(
        2, gt=0, description="pixels encoder: average-pool the page by this factor before cutting patches."
    )
    projector: str = Field("linear", description=f"Projector kind, one of {PROJECTOR_KINDS}.")
    token_pool: int = Field(1, gt=0, description="The compression knob: square grids average k x k tokens (a page "
                            "costs k^2 fewer); line encoders (ppocr_rec) concatenate k frames of a line per token.")
    soft_prompt_tokens: int = Field(0, ge=0, description="Trained vectors read right before the memory (part of "
                                    "the adapter); the trained text baselines get as many, so only the memory differs.")
    recognizer_layer: Literal["neck", "backbone"] = Field("neck", description="ppocr_rec: the pre-CTC neck (120 per "
                                                          "frame, what CTC reads) or the backbone (384) as tokens.")
    recognizer_ink_width: bool = Field(False, description="ppocr_rec: cut each line's strip to the smallest width "
                                       "bucket (128 px steps) holding its ink; frames past it are not computed and "
                                       "hold the blank strip's features (same tokens a line; faster on prose).")
    trust_remote_code: bool = Field(False, description="Allow hub repos to run their own code. Off unless you need it.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of both models.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the frozen models (bfloat16 on GPUs)."
    )
    attn_implementation: str | None = Field(None, description="Attention kernel for the LLM (sdpa, flash_attention_2).")

    @field_validator("base_llm_model_name", "ocr_model_name")
    @classmethod
    def _not_blank(cls, v: str, info) -> str:
        if not v or not v.strip():
            raise ValueError(
                f"must name a model, got {v!r}: set model.{info.field_name} in params.yaml "
                f"(or OCRMEM_MODEL__{info.field_name.upper()}) to a hub id or a local directory"
            )
        return v.strip()

    @field_validator("encoder", "projector")
    @classmethod
    def _known_kind(cls, v: str, info) -> str:
        kinds = ENCODER_KINDS if info.field_name == "encoder" else PROJECTOR_KINDS
        if v not in kinds:
            raise ValueError(f"unknown {info.field_name} {v!r}: use one of {', '.join(kinds)}")
        return v

    @model_validator(mode="after")
    def _encoder_fits(self) -> "ModelSettings":
        if self.encoder == "pixel_lines" and self.token_pool != 1:
            raise ValueError("model.token_pool must be 1 with encoder pixel_lines (its tokens are lines, not a "
                             "square grid): compress with render settings (smaller font, more text per line) instead")
        if self.encoder == "ppocr_rec" and not self.encoder_frozen:
            raise ValueError("model.encoder_frozen must be true with encoder ppocr_rec: it runs in onnxruntime, "
                             "which has no gradients (its features are cached instead)")
        return self


class RenderSettings(Section):
    page_size: int = Field(512, gt=0, description="Page side in pixels (1024 for DeepSeek-OCR-2).")
    margin: int = Field(16, ge=0, description="Blank border in pixels.")
    font_path: str | None = Field(None, description="TTF/OTF/TTC font; default: bundled Noto Sans CJK (Latin+CJK).")
    font_size: int = Field(24, gt=0, description="Font size in pixels.")
    line_spacing: float = Field(1.25, gt=0, description="Line height as a multiple of the font size.")
    foreground: str = Field("#000000", description="Text colour.")
    background: str = Field("#ffffff", description="Page colour.")
    max_pages: int = Field(1, gt=0, description="Page budget per sample; longer history keeps its most recent text.")
    workers: int = Field(0, ge=0, description="Render processes; 0 = all cores.")

    @model_validator(mode="after")
    def _margin_fits(self) -> "RenderSettings":
        if 2 * self.margin + self.font_size > self.page_size:
            raise ValueError(
                f"render.margin={self.margin} and render.font_size={self.font_size} leave no room on a "
                f"{self.page_size}px page: lower them or raise render.page_size"
            )
        return self


class SyntheticSettings(Section):
    difficulty: Literal["easy", "medium", "hard", "prose", "lookup", "lookup_zh"] = Field(
        "easy", description="easy: key-value sheet, always the first row asked; medium: any row; hard: 16 rows, "
        "32 words; prose: facts hidden in prose (needs a real OCR encoder). See ocrmem.tasks.lookup.make_synthetic.",
    )
    n_train: int = Field(512, gt=0, description="Training examples.")
    n_eval: int = Field(64, gt=0, description="Held-out examples.")
    seed: int = Field(0, description="Seed of the generator; train and eval use disjoint streams.")


class DataSettings(Section):
    source: Literal["synthetic", "jsonl", "text"] = Field("synthetic", description="Where examples come from.")
    train_files: list[str] = Field(default_factory=list, description="JSONL (or .txt for source=text) for training.")
    eval_files: list[str] = Field(default_factory=list, description="JSONL (or .txt) held out for evaluation.")
    text_history_chars: int = Field(4000, gt=0, description="source=text: characters of history per example.")
    text_continuation_chars: int = Field(400, gt=0, description="source=text: characters of continuation target.")
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    out_dir: str = Field("data", description="Root of rendered pages, manifests and the feature cache.")
    max_prompt_tokens: int = Field(128, gt=0, description="Prompt tokens kept (most recent).")
    max_target_tokens: int = Field(64, gt=0, description="Target tokens kept (first).")


class FeatureSettings(Section):
    batch_size: int = Field(16, gt=0, description="Pages per encoder batch.")
    store_dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype of cached features.")
    shard_pages: int = Field(1024, gt=0, description="Pages per safetensors shard.")
    device: str = Field("auto", description="auto, cpu or cuda[:N].")


class TrainSettings(Section):
    output_dir: str = Field("checkpoints", description="Checkpoints and the final adapter (output_dir/adapter).")
    max_steps: int = Field(100, gt=0, description="Optimizer steps.")
    per_device_train_batch_size: int = Field(8, gt=0, description="Examples per device per micro-step.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-steps per optimizer step.")
    learning_rate: float = Field(3e-3, gt=0, description="Peak learning rate of the projector.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(5, ge=0, description="Linear warm-up steps.")
    lr_scheduler_type: str = Field("constant_with_warmup", description="transformers scheduler name.")
    seed: int = Field(0, description="Seed of init, data order and dropout.")
    logging_steps: int = Field(5, gt=0, description="Log every N steps.")
    save_steps: int = Field(20, gt=0, description="Checkpoint every N steps (resume point).")
    save_total_limit: int = Field(2, gt=0, description="Checkpoints kept.")
    align_steps: int = Field(0, ge=0, description="Projector alignment steps before the LLM-in-the-loop ones "
                             "(ocrmem/training/align.py; no LLM pass). Needs encoder ppocr_rec with recognizer_layer neck.")
    align_learning_rate: float = Field(1e-3, gt=0, description="Learning rate of the alignment regression.")
    bf16: bool = Field(False, description="bf16 autocast (GPUs).")
    gradient_checkpointing: bool = Field(False, description="Checkpoint the frozen LLM (non-reentrant).")
    deepspeed: str | None = Field(None, description="DeepSpeed JSON (configs/ds_zero2.json, ds_zero3.json) or none.")
    objectives: dict[str, float] = Field(
        default_factory=lambda: {"qa": 1.0}, description=f"Mix of targets per example from {OBJECTIVES}."
    )
    use_feature_cache: bool = Field(True, description="Read encoder features from the cache when frozen.")
    dataloader_num_workers: int = Field(0, ge=0, description="DataLoader workers.")
    gradcheck_at_start: bool = Field(True, description="Run the gradient-flow check on the first batch.")
    report_to: str = Field("wandb", description="Trainer report_to: wandb or none.")
    init_from: str | None = Field(None, description="A stage-1 reader (adapter dir, e.g. pretrained/reader: "
                                  "`ocrmem pretrain`) the projector and soft prompt start from; null: from scratch.")

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in OBJECTIVES]
        if bad:
            raise ValueError(f"unknown objective(s) {bad}: use {', '.join(OBJECTIVES)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError(f"weights {v} must be >= 0 with a positive sum")
        return v

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_json(cls, v: str | None) -> str | None:
        if v in (None, "", "none", "null"):
            return None
        p = Path(v)
        if not p.is_file():
            raise ValueError(f"DeepSpeed config {v!r} does not exist: use configs/ds_zero2.json, ds_zero3.json or null")
        try:
            json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"DeepSpeed config {v!r} is not valid JSON ({e}): fix the file") from None
        return v


class EvalSettings(Section):
    conditions: list[str] = Field(
        default_factory=lambda: [c for c in CONDITIONS if not c.endswith("_trained")],
        description=f"Subset of {CONDITIONS}. The *_trained ones need `ocrmem baselines` and model.soft_prompt_tokens.",
    )
    batch_size: int = Field(8, gt=0, description="Examples per forward pass.")
    max_new_tokens: int = Field(8, gt=0, description="Greedy tokens generated per answer.")
    max_examples: int | None = Field(None, description="Evaluate at most this many eval examples (all if null).")
    reconstruction_probe: bool = Field(False, description=(
        "Also ask the model to reproduce the eval examples' own pages (reconstruction.sheets.precision)."))
    probe_examples: int = Field(16, ge=0, description=(
        "Held-out English prose texts the model reproduces from memory (reconstruction.precision); 0: none."))
    full_text_max_tokens: int = Field(2048, gt=0, description="Skip full_text where history exceeds this.")

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CONDITIONS]
        if bad:
            raise ValueError(f"unknown condition(s) {bad}: use {', '.join(CONDITIONS)}")
        return v


class TrackingSettings(Section):
    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="offline: local files, `wandb sync` later; online needs WANDB_API_KEY in the env."
    )
    project: str = Field("ocrmem", description="WandB project.")
    entity: str | None = Field(None, description="WandB entity (team).")
    run_name: str | None = Field(None, description="WandB run name.")
    log_pages: int = Field(4, ge=0, description="Rendered pages logged as images at the start.")


# Benchmark compression points: one line height (so the same memory tokens per line), smaller glyphs, more
# text per line. fs24 is the default render point the adapter trains at.
BENCH_POINTS = {f"fs{px}": {"font_size": px, "line_spacing": round(30 / px, 4)} for px in (24, 20, 16, 13)}


class BenchmarkSettings(Section):
    size: Literal["cpu", "gpu"] = Field("cpu", description="`ocrmem benchmark` grid: cpu (minutes) or gpu (all kinds).")
    points: list[Literal[tuple(BENCH_POINTS)]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["fs24", "fs20", "fs16"], min_length=1,
        description="Compression points run, one DVC stage each (the matrix of benchmark/dvc.yaml).")


class PretrainSettings(Section):
    out_dir: str = Field("data/pretrain", description="Rendered pages and features of the reading corpus.")
    output_dir: str = Field("checkpoints/pretrain", description="Checkpoints of the run (a killed run resumes).")
    reader_dir: str = Field("pretrained/reader",
                            description="The shipped reader: adapter.safetensors, adapter_config.json, model card.")
    n_train: int = Field(1024, gt=0, description="Training texts (ocrmem.tasks.reading, every kind in turn).")
    n_eval: int = Field(32, gt=0, description="Held-out texts, from documents never trained on (the Fox table's).")
    n_chars: int = Field(700, gt=0, description="Characters of a text at most (about a page at the default render).")
    kinds: list[str] = Field(  # checked against ocrmem.tasks.reading.KINDS by the pretrain stage (a layer up)
        default_factory=lambda: ["prose_en", "prose_zh", "shuffled_en", "random", "chat", "logs"], min_length=1,
        description="Text kinds trained on, in turn; fewer for a curriculum (held-out texts keep the Fox table's).")
    max_steps: int = Field(400, gt=0, description="Optimizer steps of reconstruction.")
    batch_size: int = Field(8, gt=0, description="Texts per step.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate.")
    max_target_tokens: int = Field(256, gt=0, description="Tokens of a page's text the reader learns to repeat.")
    points: list[Literal[tuple(BENCH_POINTS)]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["fs24", "fs20", "fs16"], min_length=1,
        description="Render densities the held-out texts are read at (metrics/pretrain.json).")
    seed: int = Field(0, description="Seed of the corpus and the run.")


class FoxSettings(Section):
    projectors: list[Literal[PROJECTOR_KINDS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["mlp2x_gelu", "resampler", "mean_pool"], min_length=1,
        description="Projector kinds trained side by side on stage 1's corpus (mean_pool: the critics' control).")
    max_steps: int = Field(400, gt=0, description="Reconstruction steps of each projector kind.")
    output_dir: str = Field("checkpoints/fox", description="A checkpoint dir per projector kind (a killed run resumes).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OCRMEM_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    render: RenderSettings = Field(default_factory=RenderSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    benchmark: BenchmarkSettings = Field(default_factory=BenchmarkSettings)
    pretrain: PretrainSettings = Field(default_factory=PretrainSettings)
    fox: FoxSettings = Field(default_factory=FoxSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (tests) > environment > params.yaml > defaults
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, deep_merge=True)

    @model_validator(mode="after")
    def _align_needs_a_reader(self) -> "Settings":
        m = self.model
        if self.train.align_steps and (m.encoder != "ppocr_rec" or m.recognizer_layer != "neck"
                                       or not self.train.use_feature_cache):
            raise ValueError("train.align_steps > 0 reads the cached recognizer features back through its CTC head: "
                             "it needs model.encoder: ppocr_rec, model.recognizer_layer: neck and "
                             "train.use_feature_cache: true (or set train.align_steps: 0)")
        return self

    # -- derived paths, so every stage agrees on the layout --------------------------------
    @property
    def rendered_dir(self) -> Path:
        return Path(self.data.out_dir) / "rendered"

    @property
    def features_dir(self) -> Path:
        return Path(self.data.out_dir) / "features"

    @property
    def adapter_dir(self) -> Path:
        return Path(self.train.output_dir) / "adapter"


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key: remove it or check its spelling against params.yaml"
    return f"{loc} = {err.get('input')!r}: {msg}" if loc else msg  # a cross-section check names its own fields


def load_settings(path: str | os.PathLike | None = "params.yaml", **overrides: Any) -> Settings:
    """Read `path` (plus OCRMEM_* env overrides); raise ConfigError naming each bad field."""
    if path is not None and not Path(path).is_file():
        raise ConfigError([f"params file {str(path)!r} not found: run from the repo root or pass --params PATH"])

    class _FromFile(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": path})

    try:
        s = _FromFile(**overrides)
    except ValidationError as e:
        raise ConfigError([_format_error(err) for err in e.errors()]) from None
    return Settings.model_validate(s.model_dump())
