"""The evaluation engine that `ocrmem evaluate` and `ocrmem benchmark` both run: the trained adapter, the
memory pages of each row (cached features or pixels), each condition's inputs, greedy answers and
teacher-forced losses per condition, and one record per example.

    model = load_adapter_model(settings, adapter_dir)
    f = example_figures(model.tokenizer, rows, model.memory_tokens_per_page)
    inputs, probe = condition_inputs(settings, model.tokenizer, mtpp, rows, f.hist, conditions)
    results, probe_preds, seconds = run_conditions(model, inputs, probe, rows, pages, batch_size, max_new_tokens)
    records = [example_record(i, r, f, inputs, results, probe_preds) for i, r in enumerate(rows)]
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ocrmem.common.errors import UserFileNotFoundError
from ocrmem.data.dataset import CachedPages, PixelPages
from ocrmem.data.manifest import memory_text
from ocrmem.evaluation.conditions import (
    CondInput,
    build_condition_input,
    collate,
    history_ids,
    memory_budget,
    recent_tokens,
)
from ocrmem.evaluation.scoring import bucket_of, char_precision, contains, exact_match, rounded
from ocrmem.memory.prompt import PROMPTS
from ocrmem.settings import Settings

# ---------------------------------------------------------------------------------------------
# memory pages


def memory_pages(settings: Settings, model, rows: list[dict]):
    """(pages callable, source name): cached features when the cache exists, matches and holds every
    eval page; else pixel values read from the rendered PNGs."""
    from ocrmem.data.features import CacheMismatchError, FeatureCache, cache_fingerprint

    if model.encoder.frozen:
        try:
            cache = FeatureCache(settings.features_dir, cache_fingerprint(model.encoder, settings))
            if all(s in cache.index["pages"] for r in rows for s in r["sha256"]):
                return CachedPages(cache), "features"
            print(f"evaluate: feature cache {settings.features_dir} lacks some eval pages: encoding pixels")
        except (FileNotFoundError, CacheMismatchError) as e:
            print(f"evaluate: not using the feature cache ({str(e).splitlines()[0][:160]}): encoding pixels")
    return PixelPages(settings.rendered_dir, model.encoder), "pixels"


def _memory_batch(items: list[CondInput], rows: list[dict], pages) -> dict:
    mem = [pages(r) for it, r in zip(items, rows) if it.n_pages]
    mem = [m for m in mem if m is not None and len(m)]
    return {pages.key: torch.cat(mem)} if mem else {}


# ---------------------------------------------------------------------------------------------
# running the conditions


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _run_condition(model, condition: str, items: list[CondInput], rows: list[dict], pages, bs: int,
                   max_new_tokens: int | list[int], bar, score_loss: bool = True) -> tuple[list, list]:
    """Per item: (loss or None, n target tokens), prediction text (None where skipped)."""
    tok = model.tokenizer
    losses, preds = [None] * len(items), [None] * len(items)
    live = [i for i, it in enumerate(items) if not it.skipped]
    for s in range(0, len(live), bs):
        idx = live[s: s + bs]
        its, rws = [items[i] for i in idx], [rows[i] for i in idx]
        mem = _memory_batch(its, rws, pages) if condition == "ocr_memory" else {}
        if score_loss:
            out = model(**_to({**collate(its, tok.pad_token_id, True), **mem}, model.device))
            n_tok = [len(it.target_ids) for it in its]
            for i, l, n in zip(idx, out.per_example_loss.float().cpu().tolist(), n_tok):
                losses[i] = (l, n)
            assert [int(m) for m in out.memory_tokens] == [it.memory_tokens for it in its], "memory token count"
        gen_tokens = max_new_tokens if isinstance(max_new_tokens, int) else max(max_new_tokens[i] for i in idx)
        new = model.generate(**_to({**collate(its, tok.pad_token_id, False), **mem}, model.device),
                             max_new_tokens=gen_tokens)
        for i, row_ids in zip(idx, new.cpu().tolist()):
            preds[i] = tok.decode(row_ids, skip_special_tokens=True).strip()
        bar.update(len(idx))
    return losses, preds


# ---------------------------------------------------------------------------------------------
# figures and records


@dataclass
class ExampleFigures:
    """Token figures of each eval example (index = manifest row)."""

    hist: list[list[int]]  # history token ids
    kept_tok: list[int]  # tokens of the history on the pages
    mem_tok: list[int]  # memory tokens the pages cost
    compression: list[float | None] = field(default_factory=list)  # kept_tok / mem_tok
    history_compression: list[float | None] = field(default_factory=list)  # whole history / mem_tok
    answer_cut: list[bool] = field(default_factory=list)  # the answer is in the history, not in its last mem_tok tokens


def load_adapter_model(settings: Settings, adapter_dir: str | Path | None):
    """The adapter on this run's frozen parts (model.base_llm_model_name, model.ocr_model_name,
    model.trust_remote_code: the user's own config), refused before any model loads when its format,
    encoder, pooling or LLM width does not match the run."""
    from ocrmem.memory.hub import check_adapter_against_run, read_adapter_config
    from ocrmem.memory.model import OcrMemModel

    adapter_dir = Path(adapter_dir) if adapter_dir is not None else settings.adapter_dir
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserFileNotFoundError(f"no adapter at {adapter_dir}: run `ocrmem train` first or pass --adapter DIR")
    check_adapter_against_run(read_adapter_config(adapter_dir), adapter_dir, settings)
    ms = settings.model
    model = OcrMemModel.from_pretrained(adapter_dir, trust_remote_code=ms.trust_remote_code,
                                        llm=ms.base_llm_model_name, ocr_model=ms.ocr_model_name)
    if model.settings.render.model_dump(exclude={"workers"}) != settings.render.model_dump(exclude={"workers"}):
        print(f"WARNING: the adapter {adapter_dir} was trained on other render settings than "
              f"params.yaml's render section; the eval pages are rendered with params.yaml's", file=sys.stderr)
    return model


def example_figures(tok, rows: list[dict], mtpp: int) -> ExampleFigures:
    hist = [history_ids(tok, r["history"]) for r in rows]
    kept = [len(history_ids(tok, memory_text(r))) for r in rows]
    mem = [memory_budget(r, mtpp) for r in rows]
    return ExampleFigures(hist, kept, mem, [k / m if m else None for k, m in zip(kept, mem)],
                          [len(h) / m if m else None for h, m in zip(hist, mem)],
                          [answer_cut(tok, h, m, r["target"]) for h, m, r in zip(hist, mem, rows)])


def answer_cut(tok, hist: list[int], budget: int, target: str) -> bool:
    """Whether the history holds the answer and the budget-truncated text (its last `budget` tokens, what
    truncated_text reads) does not: the questions only a memory of the whole history can answer."""
    return contains(tok.decode(hist), target) and not contains(tok.decode(recent_tokens(hist, budget)), target)


def condition_inputs(settings: Settings, tok, mtpp: int, rows: list[dict], hist, conditions: list[str]):
    """Per condition the inputs of every row, and those of the reconstruction probe (or None)."""
    d, ev = settings.data, settings.eval
    kw = dict(max_prompt_tokens=d.max_prompt_tokens, max_target_tokens=d.max_target_tokens,
              full_text_max_tokens=ev.full_text_max_tokens)
    inputs = {c: [build_condition_input(c, r, tok, mtpp, h, **kw) for r, h in zip(rows, hist)] for c in conditions}
    if not ev.reconstruction_probe:
        return inputs, None
    recon = [build_condition_input("ocr_memory", r, tok, mtpp, h, **{**kw, "max_target_tokens": 10**9},
                                   prompt=PROMPTS["reconstruct"], target=memory_text(r))
             for r, h in zip(rows, hist)]
    return inputs, recon


@contextmanager
def _soft_prompt_of(model, condition: str, soft_prompts: dict):
    """Run `condition` with its own trained soft prompt (the trained text baselines), then restore."""
    if condition not in soft_prompts:
        yield
        return
    keep = model.soft_prompt.vectors.detach().clone()
    model.soft_prompt.vectors.data.copy_(soft_prompts[condition])
    try:
        yield
    finally:
        model.soft_prompt.vectors.data.copy_(keep)


def run_conditions(model, inputs: dict, recon_inputs, rows: list[dict], pages, batch_size: int,
                   max_new_tokens: int | list[int], progress: bool = True, soft_prompts: dict | None = None,
                   desc: str = "evaluate", score_loss: bool = True):
    """Every condition (and the probe): ({condition: (losses, predictions)}, probe predictions, seconds).
    `max_new_tokens`: one budget, or one per row."""
    from tqdm.auto import tqdm

    soft_prompts = soft_prompts or {}
    total = sum(sum(not it.skipped for it in v) for v in inputs.values()) + (len(rows) if recon_inputs else 0)
    bar = tqdm(total=total, desc=desc, unit="ex", disable=not progress, file=sys.stderr)
    results, seconds, recon_preds = {}, {}, None
    with torch.no_grad():
        for c, items in inputs.items():
            bar.set_postfix_str(c)
            t0 = time.perf_counter()
            with _soft_prompt_of(model, c, soft_prompts):
                results[c] = _run_condition(model, c, items, rows, pages, batch_size, max_new_tokens, bar,
                                            score_loss)
            seconds[c] = time.perf_counter() - t0
        if recon_inputs is not None:
            bar.set_postfix_str("reconstruction")
            t0 = time.perf_counter()
            budget = [min(len(it.target_ids) + 8, 1024) for it in recon_inputs]
            _, recon_preds = _run_condition(model, "ocr_memory", recon_inputs, rows, pages, batch_size,
                                            budget, bar, score_loss=False)
            seconds["reconstruction"] = time.perf_counter() - t0
    bar.close()
    return results, recon_preds, seconds


def example_record(i: int, r: dict, f: ExampleFigures, inputs: dict, results: dict, recon_preds) -> dict:
    """One line of metrics/eval_examples.jsonl: the example's figures and each condition's answer."""
    rec = {"id": r["id"], "prompt": r["prompt"], "target": r["target"], "pages": len(r["pages"]),
           "cut_chars": r.get("cut_chars", 0), "history_tokens": len(f.hist[i]), "kept_text_tokens": f.kept_tok[i],
           "memory_tokens": f.mem_tok[i], "compression": rounded(f.compression[i], 4),
           "history_compression": rounded(f.history_compression[i], 4),
           "bucket": bucket_of(f.compression[i]) if f.compression[i] is not None else None,
           "answer_cut": f.answer_cut[i], "conditions": {}}
    for c, items in inputs.items():
        it, (loss, pred) = items[i], (results[c][0][i], results[c][1][i])
        rec["conditions"][c] = {
            "prediction": pred, "correct": None if pred is None else exact_match(pred, r["target"]),
            "contains": None if pred is None else contains(pred, r["target"]),
            "loss": None if loss is None else rounded(loss[0]), "target_tokens": None if loss is None else loss[1],
            "skipped": it.skipped,
            "memory_tokens": it.memory_tokens, "text_memory_tokens": len(it.text_memory_ids),
            "input_tokens": len(it.prompt_ids) + it.memory_tokens,
        }
    if recon_preds is not None:
        src = memory_text(r)
        rec["reconstruction"] = {"prediction": recon_preds[i], "precision": rounded(char_precision(recon_preds[i], src), 4)}
    return rec


