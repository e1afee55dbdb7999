"""The inputs of one example under each evaluation condition: the same prompt and target, memory as
pages (ocr_memory), as text (full or cut to the OCR memory's budget), or none. See ocrmem/evaluation/evaluate.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from ocrmem.memory.lines import row_caps
from ocrmem.memory.prompt import chat_prompt, clip_prompt, memory_prompt, pad_right, pad_text, target_ids
from ocrmem.settings import CONDITIONS, Settings

TRAINED_TEXT = ("truncated_text_trained", "full_text_trained")  # trained by `ocrmem baselines`

# ---------------------------------------------------------------------------------------------
# inputs of each condition


@dataclass
class CondInput:
    """One example under one condition: prompt ids (to generate from) and target ids (to score)."""

    condition: str
    prompt_ids: list[int]
    target_ids: list[int]
    n_pages: int = 0  # pages fed as memory tokens (ocr_memory only)
    memory_tokens: int = 0  # memory embeddings inserted at memory_pos (n_pages x tokens per page)
    memory_pos: int = 0  # where the memory slot is in prompt_ids (OCR memory is inserted there)
    text_memory_ids: list[int] = field(default_factory=list)  # history tokens inside the prompt text
    page_lines: list[list[int]] = field(default_factory=list)  # each memory page's line caps (ocrmem.memory.lines)
    skipped: bool = False  # full_text over eval.full_text_max_tokens


def history_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


def recent_tokens(ids: list[int], budget: int) -> list[int]:
    """The most recent `budget` tokens: what the truncated text conditions read (all of them if fewer)."""
    return list(ids[max(0, len(ids) - budget):]) if budget else []


def build_condition_input(condition: str, row: dict, tokenizer, memory_tokens_per_page: int,
                          hist_ids: list[int] | None = None, max_prompt_tokens: int = 128,
                          max_target_tokens: int = 64, full_text_max_tokens: int = 2048,
                          prompt: str | None = None, target: str | None = None) -> CondInput:
    """The inputs of one manifest row under `condition` (prompt/target default to the row's QA pair)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}: use one of {', '.join(CONDITIONS)}")
    prompt = row["prompt"] if prompt is None else prompt
    tgt = target_ids(tokenizer, row["target"] if target is None else target, max_target_tokens)
    if hist_ids is None:
        hist_ids = history_ids(tokenizer, row["history"])
    n_pages = len(row["pages"])
    budget = memory_budget(row, memory_tokens_per_page)
    prompt = clip_prompt(tokenizer, prompt, max_prompt_tokens)
    if condition == "no_memory":
        return CondInput(condition, chat_prompt(tokenizer, prompt), tgt, memory_pos=-1)
    if condition == "ocr_memory":  # the same "Memory:" turn as the text conditions, pages in the slot
        ids, pos = memory_prompt(tokenizer, prompt)
        return CondInput(condition, ids, tgt, n_pages=n_pages, memory_tokens=budget, memory_pos=pos,
                         page_lines=row_caps(row))
    if condition.startswith("truncated_text"):
        mem = recent_tokens(hist_ids, budget)
    elif len(hist_ids) > full_text_max_tokens:  # full_text
        return CondInput(condition, [], tgt, text_memory_ids=[], skipped=True, memory_pos=-1)
    else:
        mem = list(hist_ids)
    ids, pos = memory_prompt(tokenizer, prompt, mem)
    # Trained text conditions read their own soft prompt right before the text memory; zero-shot ones none.
    return CondInput(condition, ids, tgt, text_memory_ids=mem, memory_pos=pos if condition in TRAINED_TEXT else -1)


def collate(items: list[CondInput], pad_id: int, with_target: bool) -> dict:
    """Right-padded text batch (+ labels when with_target) and page_counts."""
    ids = [it.prompt_ids + (it.target_ids if with_target else []) for it in items]
    labels = [[-100] * len(it.prompt_ids) + it.target_ids for it in items] if with_target else None
    batch = {**pad_text(ids, pad_id, labels),
             "page_counts": torch.tensor([it.n_pages for it in items], dtype=torch.long),
             "memory_pos": torch.tensor([it.memory_pos for it in items], dtype=torch.long)}
    lines = [m for it in items if it.n_pages for m in it.page_lines]
    if lines and len(lines) == sum(it.n_pages for it in items):
        batch["page_lines"] = pad_right(lines, 0)
    return batch


# ---------------------------------------------------------------------------------------------
# budgets and the trained text baselines' soft prompts (written by ocrmem/training/baselines.py)


def baselines_dir(settings: Settings) -> Path:
    """Beside train.output_dir (which is the train stage's DVC output), not inside it."""
    return Path(settings.train.output_dir).parent / "baselines"


def soft_prompt_path(settings: Settings, condition: str) -> Path:
    return baselines_dir(settings) / f"{condition}.safetensors"


def load_soft_prompt(settings: Settings, condition: str) -> torch.Tensor:
    path = soft_prompt_path(settings, condition)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `ocrmem baselines` (dvc repro baselines) to train {condition}")
    return load_file(str(path))["soft_prompt.vectors"]


def memory_budget(row, memory_tokens_per_page: int, page_memory_tokens=None) -> int:
    """What an example's OCR memory costs in LLM positions, the budget every text condition is cut to; the
    one formula. A line encoder pays for the lines drawn on each page that hold text (`ocrmem.memory.lines`),
    a page encoder a fixed count per page; without `page_memory_tokens`, a row with_budgets priced keeps its price."""
    if page_memory_tokens is None and "memory_tokens" in row:
        return row["memory_tokens"]
    if page_memory_tokens is not None and row.get("page_lines"):
        return sum(page_memory_tokens(row_caps(row)))
    return len(row["pages"]) * memory_tokens_per_page


def with_budgets(model, rows: list[dict]) -> list[dict]:
    """Rows with `memory_tokens`: what each example's OCR memory costs (the truncated budget)."""
    return [{**r, "memory_tokens": memory_budget(r, model.memory_tokens_per_page, model.page_memory_tokens)}
            for r in rows]
