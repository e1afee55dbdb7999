"""Training examples from the rendered manifest: tokenized text plus the example's pages.

Each manifest row becomes: the prompt (chat template where the LLM has one) and a target chosen
by the objective mix, loss on the target only; pages as pixel values (encoder run each step) or
as cached features (`features.FeatureCache`, the default when the encoder is frozen).

`build_datasets` / `training_inputs` assemble model, datasets and collator for `ocrmem gradcheck`
and `ocrmem train`; `pad_text` is the right-padding that evaluation and inference use too.

Objectives: `qa` answers the record's prompt; `reconstruct` repeats the memory text (dense
supervision, the alignment stage OCR models train first); `continue` writes what follows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ocrmem.render import load_png
from ocrmem.settings import OBJECTIVES, Settings

PROMPTS = {"reconstruct": "Repeat the text of the memory pages exactly.", "continue": "Continue the text."}


def templated(tokenizer, content: str) -> str:
    """One user turn through the chat template, ready for the answer, under an empty system turn: a
    template's default system prompt (SmolLM2's is 17 tokens naming the model) is paid on every
    example of every condition and says nothing about the memory. A template with no system role
    (it raises on one) gets the user turn alone."""
    from jinja2.exceptions import TemplateError

    user = [{"role": "user", "content": content}]
    try:
        return tokenizer.apply_chat_template([{"role": "system", "content": ""}] + user, add_generation_prompt=True,
                                             tokenize=False)
    except TemplateError:
        return tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)


def chat_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a user turn ready for the answer (chat template where the tokenizer has one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer(templated(tokenizer, prompt), add_special_tokens=False).input_ids
    return tokenizer(prompt + "\n").input_ids


MEMORY_PREFIX, MEMORY_SUFFIX = "Memory:\n", "\n\n"
MEMORY_SLOT = "\u2063OCRMEM_MEMORY\u2063"  # split point of the templated prompt


def memory_prompt(tokenizer, prompt: str, memory_ids: list[int] | None = None) -> tuple[list[int], int]:
    """The user turn "Memory:\\n<memory>\\n\\n<prompt>" through the chat template: (ids, memory_pos).

    Memory sits inside the user's message, where a chat LLM looks for content (as image tokens do in
    LLaVA), not before the system prompt. `memory_ids` (text memory) are spliced in verbatim at
    `memory_pos`; without them the slot is empty and OcrMemModel inserts the page embeddings there.
    Text memory and OCR memory thus get exactly the same surroundings.
    """
    content = f"{MEMORY_PREFIX}{MEMORY_SLOT}{MEMORY_SUFFIX}{prompt}"
    if getattr(tokenizer, "chat_template", None):
        head, tail = templated(tokenizer, content).split(MEMORY_SLOT)
        head_ids = tokenizer(head, add_special_tokens=False).input_ids
        tail_ids = tokenizer(tail, add_special_tokens=False).input_ids
    else:
        head, tail = content.split(MEMORY_SLOT)
        head_ids = tokenizer(head).input_ids
        tail_ids = tokenizer(tail + "\n", add_special_tokens=False).input_ids
    return head_ids + list(memory_ids or []) + tail_ids, len(head_ids)


def clip_prompt(tokenizer, prompt: str, max_tokens: int) -> str:
    """The most recent `max_tokens` tokens of a prompt (the question is at its end)."""
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    return prompt if len(ids) <= max_tokens else tokenizer.decode(ids[-max_tokens:])


def target_ids(tokenizer, target: str, max_target_tokens: int) -> list[int]:
    """Target tokens as training and evaluation score them: the first max_target_tokens, then EOS."""
    t = tokenizer(target, add_special_tokens=False).input_ids[:max_target_tokens]
    return t + [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else t


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
        kept = row["history"][len(row["history"]) - row.get("kept_chars", len(row["history"])):]
        return PROMPTS["reconstruct"], kept
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
                "page_lines": row.get("page_lines") if pages is not None else None,
                "objective": OBJECTIVES.index(objective)}


def pad_right(seqs: list[list[int]], value: int) -> torch.Tensor:
    """[len(seqs), longest] long tensor, each sequence from the left, `value` after it."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def pad_text(ids: list[list[int]], pad_id: int, labels: list[list[int]] | None = None) -> dict:
    """The right-padded text batch training, evaluation and inference share: input_ids and
    attention_mask (+ labels, -100 on padding, when given)."""
    batch = {"input_ids": pad_right(ids, pad_id), "attention_mask": pad_right([[1] * len(x) for x in ids], 0)}
    if labels is not None:
        batch["labels"] = pad_right(labels, -100)
    return batch


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
            lines = [n for x in items if x["pages"] is not None for n in (x.get("page_lines") or [])]
            if len(lines) == sum(len(p) for p in pages):  # manifests before page_lines: whole pages
                batch["page_lines"] = torch.tensor(lines, dtype=torch.long)
        return batch


# ---------------------------------------------------------------------------------------------
# what training and the gradient check read: one builder for both


def build_datasets(settings: Settings, model, cached: bool | None = None):
    """(train, eval, pages_key) datasets over the rendered manifest, reading cached features if allowed."""
    from ocrmem.data import read_manifest
    from ocrmem.features import FeatureCache, cache_fingerprint

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
    from ocrmem.model.ocrmem import OcrMemModel

    model = model or OcrMemModel.build(settings)
    if settings.train.gradient_checkpointing:
        model.enable_gradient_checkpointing(reentrant=False)
    train, evald, key = build_datasets(settings, model)
    return TrainingInputs(model, train, evald, MemoryCollator(model.tokenizer.pad_token_id, key))


def first_batch(dataset: Dataset, collator, batch_size: int, device=None) -> dict:
    """The first training batch (unshuffled), on `device` when given."""
    batch = next(iter(DataLoader(dataset, batch_size=batch_size, collate_fn=collator)))
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}
