"""Trained text baselines: the same frozen LLM and the same trained budget, reading text instead of pages.

    ocrmem baselines [--params params.yaml]     # -> baselines/<condition>.safetensors, metrics/baselines.json

OCR memory's adapter is the projector plus `model.soft_prompt_tokens` trained vectors read right
before the memory. Each baseline trains only such vectors, on the same training examples, for the
same steps, batch and learning rate, while the LLM reads the history as text:

* `full_text_trained`       all of it: the ceiling of what this reader can do with the memory;
* `truncated_text_trained`  its most recent tokens, as many as that example's OCR memory costs:
                            the fair, budget-matched baseline.

So a gap between OCR memory and these is the memory's representation alone, never a tuned prompt
on one side only (issue 10). `ocrmem evaluate` loads the vectors and scores both conditions.
"""

from __future__ import annotations

from safetensors.torch import save_file
from torch.utils.data import Dataset

from ocrmem.common.io import write_json
from ocrmem.common.tracking import print0
from ocrmem.data.dataset import MemoryCollator
from ocrmem.evaluation.conditions import (
    TRAINED_TEXT,
    baselines_dir,
    history_ids,
    recent_tokens,
    soft_prompt_path,
    with_budgets,
)
from ocrmem.memory.prompt import clip_prompt, memory_prompt, target_ids
from ocrmem.settings import Settings


def text_memory_ids(tokenizer, row: dict, condition: str) -> list[int]:
    """The history tokens a text condition reads: all of them, or the most recent `memory_tokens`."""
    ids = history_ids(tokenizer, row["history"])
    return recent_tokens(ids, row["memory_tokens"]) if condition.startswith("truncated_text") else ids


class TextMemoryDataset(Dataset):
    """QA examples with the history as text in the memory slot; the soft prompt goes right before it."""

    def __init__(self, rows: list[dict], tokenizer, condition: str, max_prompt_tokens: int, max_target_tokens: int):
        self.rows, self.tok, self.condition = rows, tokenizer, condition
        self.max_prompt, self.max_target = max_prompt_tokens, max_target_tokens

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        prompt = clip_prompt(self.tok, row["prompt"], self.max_prompt)
        ids, pos = memory_prompt(self.tok, prompt, text_memory_ids(self.tok, row, self.condition))
        tgt = target_ids(self.tok, row["target"], self.max_target)
        return {"input_ids": ids + tgt, "labels": [-100] * len(ids) + tgt, "pages": None, "memory_pos": pos,
                "page_lines": None, "objective": 0}


def train_text_baseline(settings: Settings, model, rows: list[dict], condition: str) -> dict:
    """Train the soft prompt of `condition` (projector frozen); save it; return its figures."""
    from ocrmem.training.trainer import OcrMemTrainer, training_arguments

    model.projector.requires_grad_(False)
    d = settings.data
    ds = TextMemoryDataset(rows, model.tokenizer, condition, d.max_prompt_tokens, d.max_target_tokens)
    args = training_arguments(settings, "none")
    args.output_dir, args.save_strategy = str(baselines_dir(settings) / f"{condition}-run"), "no"
    # No step-0 gradient check: it proves pages reach the projector, and these batches have none.
    trainer = OcrMemTrainer(model=model, args=args, train_dataset=ds, data_collator=MemoryCollator(
        model.tokenizer.pad_token_id, "features"), processing_class=model.tokenizer, gradcheck=False)
    result = trainer.train()
    path = soft_prompt_path(settings, condition)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"soft_prompt.vectors": model.soft_prompt.vectors.detach().cpu().contiguous()}, str(path))
    print0(f"{condition}: soft prompt -> {path}")
    return {f"{condition}.train_loss": round(float(result.training_loss), 5), f"{condition}.steps": result.global_step}


def baselines(settings: Settings) -> dict:
    """The baselines stage: train each trained text condition that settings.eval.conditions asks for."""
    from ocrmem.data.manifest import read_manifest
    from ocrmem.memory.model import OcrMemModel, load_llm

    wanted = [c for c in TRAINED_TEXT if c in settings.eval.conditions]
    figures: dict = {"conditions": wanted}
    if wanted and not settings.model.soft_prompt_tokens:
        raise ValueError("eval.conditions asks for trained text baselines but model.soft_prompt_tokens is 0: "
                         "give the adapter a soft prompt (e.g. 8) or drop the *_trained conditions")
    baselines_dir(settings).mkdir(parents=True, exist_ok=True)  # the DVC output, even when nothing is asked for
    if wanted:
        llm, tok = load_llm(settings.model)
        for condition in wanted:
            model = OcrMemModel.build(settings, llm=llm, tokenizer=tok)  # same seed: the same starting vectors
            rows = with_budgets(model, read_manifest(settings, "train"))
            figures.update(train_text_baseline(settings, model, rows, condition))
    write_json("metrics/baselines.json", figures)
    return figures
