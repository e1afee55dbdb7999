"""Training examples from the rendered manifest: tokenized text plus the example's pages.

Each manifest row becomes: the prompt (chat template where the LLM has one) and a target chosen
by the objective mix, loss on the target only; pages as pixel values (encoder run each step) or
as cached features (`features.FeatureCache`, the default when the encoder is frozen).

`build_datasets` / `training_inputs` assemble model, datasets and collator for `ocrmem gradcheck`
and `ocrmem train`; the prompt layout and padding come from `ocrmem.memory.prompt`, which evaluation
and serving use too.

Objectives: `qa` answers the record's prompt; `reconstruct` repeats the memory text (dense
supervision, the alignment stage OCR models train first); `continue` writes what follows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ocrmem.data.manifest import memory_text
from ocrmem.memory.lines import row_caps
from ocrmem.memory.prompt import PROMPTS, chat_prompt, clip_prompt, memory_prompt, pad_right, pad_text, target_ids
from ocrmem.memory.render import load_png
from ocrmem.settings import OBJECTIVES, Settings


def pick_objective(row: dict, mix: dict[str, float], seed: int, index: int) -> str:
    """Deterministic per (seed, index), so a resumed run sees the same targets as an uninterrupted one."""
    usable = {k: w for k, w in mix.items() if w > 0 and (k != "continue" or row.get("continuation"))}
    if not usable:
        usable = {"qa": 1.0}
    rng = random.Random(seed * 1_000_003 + index)
    return rng.choices(list(usable), weights=list(usable.values()))[0]


def target_text(row: dict, objective: str) -> tuple[str, str]:
    """(prompt, target) of a manifest row for an objective."""
    if objective == "qa":
        return row["prompt"], row["target"]
    if objective == "reconstruct":
        return PROMPTS["reconstruct"], memory_text(row)
    return PROMPTS["continue"], row["continuation"]


class PixelPages:
    """Pages as encoder inputs, read from the rendered PNGs."""

    key = "pixel_values"

    def __init__(self, rendered_dir: str | Path, encoder):
        self.root, self.encoder = Path(rendered_dir), encoder

    def __call__(self, row: dict) -> torch.Tensor:
        images = [load_png(self.root / p, sha) for p, sha in zip(row["pages"], row["sha256"])]
        return self.encoder.preprocess(images) if images else None


class CachedPages:
    """Pages as cached encoder features, looked up by page sha256."""

    key = "features"

    def __init__(self, cache):
        self.cache = cache

    def __call__(self, row: dict) -> torch.Tensor:
        return self.cache.get(row["sha256"]) if row["pages"] else None


class MemoryDataset(Dataset):
    def __init__(self, rows: list[dict], tokenizer, pages, objectives: dict[str, float] | None = None, seed: int = 0,
                 max_prompt_tokens: int = 128, max_target_tokens: int = 64, with_memory: bool = True):
        self.rows, self.tok, self.pages = rows, tokenizer, pages
        self.mix = objectives or {"qa": 1.0}
        self.seed, self.max_prompt, self.max_target = seed, max_prompt_tokens, max_target_tokens
        self.with_memory = with_memory

    def __len__(self) -> int:
        return len(self.rows)

    def encode_text(self, prompt: str, target: str | None) -> tuple[list[int], list[int], int]:
        prompt = clip_prompt(self.tok, prompt, self.max_prompt)
        if self.with_memory:
            ids, pos = memory_prompt(self.tok, prompt)
        else:
            ids, pos = chat_prompt(self.tok, prompt), 0
        labels = [-100] * len(ids)
        if target is not None:
            t = target_ids(self.tok, target, self.max_target)
            ids, labels = ids + t, labels + t
        return ids, labels, pos

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        objective = pick_objective(row, self.mix, self.seed, i)
        prompt, target = target_text(row, objective)
        ids, labels, pos = self.encode_text(prompt, target)
        pages = self.pages(row) if self.with_memory else None
        return {"input_ids": ids, "labels": labels, "pages": pages, "memory_pos": pos if self.with_memory else -1,
                "page_lines": row_caps(row)
                if pages is not None and row.get("page_lines") is not None else None,
                "objective": OBJECTIVES.index(objective)}


class MemoryCollator:
    """Right-pads text; concatenates pages of all samples; page_counts say who owns which."""

    def __init__(self, pad_token_id: int, pages_key: str):
        self.pad, self.key = pad_token_id, pages_key

    def __call__(self, items: list[dict]) -> dict:
        pages = [x["pages"] for x in items if x["pages"] is not None and len(x["pages"])]
        counts = torch.tensor([0 if x["pages"] is None else len(x["pages"]) for x in items], dtype=torch.long)
        batch = {**pad_text([x["input_ids"] for x in items], self.pad, [x["labels"] for x in items]),
                 "page_counts": counts,
                 "memory_pos": torch.tensor([x.get("memory_pos", 0) for x in items], dtype=torch.long),
                 "objective_ids": torch.tensor([x["objective"] for x in items], dtype=torch.long)}
        if pages:
            batch[self.key] = torch.cat(pages)
            lines = [m for x in items if x["pages"] is not None for m in (x.get("page_lines") or [])]
            if len(lines) == sum(len(p) for p in pages):  # manifests before page_lines: whole pages
                batch["page_lines"] = pad_right(lines, 0)  # [P, lines]: the tokens each line keeps
        return batch


# ---------------------------------------------------------------------------------------------
# what training and the gradient check read: one builder for both


def build_datasets(settings: Settings, model, cached: bool | None = None):
    """(train, eval, pages_key) datasets over the rendered manifest, reading cached features if allowed."""
    from ocrmem.data.features import FeatureCache, cache_fingerprint
    from ocrmem.data.manifest import read_manifest

    if cached is None:
        cached = settings.train.use_feature_cache and model.encoder.frozen
    if cached:
        pages = CachedPages(FeatureCache(settings.features_dir, cache_fingerprint(model.encoder, settings)))
    else:
        pages = PixelPages(settings.rendered_dir, model.encoder)
    d = settings.data
    kw = dict(tokenizer=model.tokenizer, pages=pages, objectives=settings.train.objectives, seed=settings.train.seed,
              max_prompt_tokens=d.max_prompt_tokens, max_target_tokens=d.max_target_tokens)
    train = MemoryDataset(read_manifest(settings, "train"), **kw)
    evald = MemoryDataset(read_manifest(settings, "eval"), **{**kw, "objectives": {"qa": 1.0}})
    return train, evald, pages.key


@dataclass
class TrainingInputs:
    model: object  # OcrMemModel
    train: MemoryDataset
    eval: MemoryDataset
    collator: MemoryCollator


def training_inputs(settings: Settings, model=None) -> TrainingInputs:
    """The model as training runs it (built from settings unless given; gradient checkpointing as
    configured), its datasets and collator: what `ocrmem gradcheck` and `ocrmem train` both use."""
    from ocrmem.memory.model import OcrMemModel

    model = model or OcrMemModel.build(settings)
    if settings.train.gradient_checkpointing:
        model.enable_gradient_checkpointing(reentrant=False)
    train, evald, key = build_datasets(settings, model)
    return TrainingInputs(model, train, evald, MemoryCollator(model.tokenizer.pad_token_id, key))


def first_batch(dataset: Dataset, collator, batch_size: int, device=None) -> dict:
    """The first training batch (unshuffled), on `device` when given."""
    batch = next(iter(DataLoader(dataset, batch_size=batch_size, collate_fn=collator)))
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}
