"""Evaluation: the same held-out examples under four conditions, side by side.

    ocrmem evaluate [--params params.yaml] [--adapter DIR]      # evaluate(settings)

Conditions (`eval.conditions`, a subset of `settings.CONDITIONS`):

* `no_memory`       the prompt alone, no memory tokens (page_counts 0): the floor;
* `truncated_text`  the most recent history as text, cut to EXACTLY the token budget the OCR
                    memory of that example costs (pages x memory_tokens_per_page): the fair baseline;
* `ocr_memory`      the rendered pages through the frozen encoder + trained projector (cached
                    features when the cache exists and matches this model, else pixel values);
* `truncated_text_trained`, `full_text_trained`: the same two text memories, read with a soft prompt
                    trained like OCR memory's (ocrmem/baselines.py): the fair trained baselines;
* `full_text`       the whole history as text: the ceiling; skipped per example where the history
                    is longer than `eval.full_text_max_tokens` (the count is reported).

Text memory is laid out as one user turn "Memory:\\n<history tokens>\\n\\n<prompt>" through the chat
template; the history token ids are spliced in as they are (never decoded and re-tokenized), so
the truncated baseline holds exactly the budgeted number of tokens.

Per condition: teacher-forced target loss (token mean) and perplexity, and greedy exact match
(one-word targets: the first word of the answer; else the whole normalised answer) plus the lenient
`contains` (the target's words appear in the answer: chat models answer text memory in sentences),
and exact match on the questions whose answer the budget-truncated text cut (`answer_cut`).
Per example: compression = text tokens on the pages / memory tokens (DeepSeek-OCR's Fox figure)
and ocr_memory accuracy by compression bucket. Optional `eval.reconstruction_probe`: the model is
asked to repeat the memory text; character precision 1 - levenshtein / len(source) by bucket.

Outputs (relative to `out_dir`, the repo root by default):
    metrics/eval.json              flat numeric keys for `dvc metrics show/diff`
    metrics/eval_examples.jsonl    per example: ids, token counts, each condition's prediction
    plots/eval_conditions.csv      condition, exact_match, contains, loss, perplexity, n
    plots/accuracy_vs_compression.csv   bucket, compression, exact_match, n
    plots/eval.png                 only where matplotlib is installed
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ocrmem.conditions import (CondInput, TRAINED_TEXT, build_condition_input, collate, history_ids,  # noqa: F401
                               load_soft_prompt, recent_tokens, with_budgets)
from ocrmem.dataset import PROMPTS, CachedPages, PixelPages
from ocrmem.errors import UserError, UserFileNotFoundError
from ocrmem.io import write_csv, write_json, write_jsonl
from ocrmem.report import eval_report, log_run, plot
from ocrmem.scoring import bucket_of, bucket_order, char_precision, contains, exact_match, mean, rounded
from ocrmem.settings import CONDITIONS, Settings
from ocrmem.tracking import DummyRun, check_key, start_run

# ---------------------------------------------------------------------------------------------
# memory pages


def memory_pages(settings: Settings, model, rows: list[dict]):
    """(pages callable, source name): cached features when the cache exists, matches and holds every
    eval page; else pixel values read from the rendered PNGs."""
    from ocrmem.features import CacheMismatchError, FeatureCache, cache_fingerprint

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
# the evaluate stage, step by step


@dataclass
class ExampleFigures:
    """Token figures of each eval example (index = manifest row)."""

    hist: list[list[int]]  # history token ids
    kept_tok: list[int]  # tokens of the history on the pages
    mem_tok: list[int]  # memory tokens the pages cost
    compression: list[float | None] = field(default_factory=list)  # kept_tok / mem_tok
    history_compression: list[float | None] = field(default_factory=list)  # whole history / mem_tok
    answer_cut: list[bool] = field(default_factory=list)  # the answer is in the history, not in its last mem_tok tokens


def _load_model(settings: Settings, adapter_dir: str | Path | None):
    from ocrmem.model.ocrmem import OcrMemModel

    adapter_dir = Path(adapter_dir) if adapter_dir is not None else settings.adapter_dir
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserFileNotFoundError(f"no adapter at {adapter_dir}: run `ocrmem train` first or pass --adapter DIR")
    model = OcrMemModel.from_pretrained(adapter_dir)
    if model.settings.render.model_dump(exclude={"workers"}) != settings.render.model_dump(exclude={"workers"}):
        print(f"evaluate: WARNING the adapter {adapter_dir} was trained on other render settings than "
              f"params.yaml's render section; the eval pages are rendered with params.yaml's", file=sys.stderr)
    return model


def _eval_rows(settings: Settings) -> list[dict]:
    from ocrmem.data import read_manifest

    rows = read_manifest(settings, "eval")
    if settings.eval.max_examples is not None:
        rows = rows[: settings.eval.max_examples]
    if not rows:
        raise UserError("the eval split has no examples: nothing to evaluate")
    return rows


def _figures(tok, rows: list[dict], mtpp: int) -> ExampleFigures:
    hist = [history_ids(tok, r["history"]) for r in rows]
    kept = [len(history_ids(tok, r["history"][r.get("cut_chars", 0):])) for r in rows]
    mem = [r.get("memory_tokens", len(r["pages"]) * mtpp) for r in rows]
    return ExampleFigures(hist, kept, mem, [k / m if m else None for k, m in zip(kept, mem)],
                          [len(h) / m if m else None for h, m in zip(hist, mem)],
                          [answer_cut(tok, h, m, r["target"]) for h, m, r in zip(hist, mem, rows)])


def answer_cut(tok, hist: list[int], budget: int, target: str) -> bool:
    """Whether the history holds the answer and the budget-truncated text (its last `budget` tokens, what
    truncated_text reads) does not: the questions only a memory of the whole history can answer."""
    return contains(tok.decode(hist), target) and not contains(tok.decode(recent_tokens(hist, budget)), target)


def _inputs(settings: Settings, tok, mtpp: int, rows: list[dict], hist, conditions: list[str]):
    """Per condition the inputs of every row, and those of the reconstruction probe (or None)."""
    d, ev = settings.data, settings.eval
    kw = dict(max_prompt_tokens=d.max_prompt_tokens, max_target_tokens=d.max_target_tokens,
              full_text_max_tokens=ev.full_text_max_tokens)
    inputs = {c: [build_condition_input(c, r, tok, mtpp, h, **kw) for r, h in zip(rows, hist)] for c in conditions}
    if not ev.reconstruction_probe:
        return inputs, None
    recon = [build_condition_input("ocr_memory", r, tok, mtpp, h, **{**kw, "max_target_tokens": 10**9},
                                   prompt=PROMPTS["reconstruct"], target=r["history"][r.get("cut_chars", 0):])
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


def _run_all(model, ev, inputs: dict, recon_inputs, rows: list[dict], pages, progress: bool,
             soft_prompts: dict | None = None, desc: str = "evaluate", score_loss: bool = True):
    """Every condition (and the probe): ({condition: (losses, predictions)}, probe predictions, seconds)."""
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
                results[c] = _run_condition(model, c, items, rows, pages, ev.batch_size, ev.max_new_tokens, bar,
                                            score_loss)
            seconds[c] = time.perf_counter() - t0
        if recon_inputs is not None:
            bar.set_postfix_str("reconstruction")
            t0 = time.perf_counter()
            budget = [min(len(it.target_ids) + 8, 1024) for it in recon_inputs]
            _, recon_preds = _run_condition(model, "ocr_memory", recon_inputs, rows, pages, ev.batch_size,
                                            budget, bar, score_loss=False)
            seconds["reconstruction"] = time.perf_counter() - t0
    bar.close()
    return results, recon_preds, seconds


def _example_record(i: int, r: dict, f: ExampleFigures, inputs: dict, results: dict, recon_preds) -> dict:
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
            "loss": None if loss is None else rounded(loss[0]), "skipped": it.skipped,
            "memory_tokens": it.memory_tokens, "text_memory_tokens": len(it.text_memory_ids),
            "input_tokens": len(it.prompt_ids) + it.memory_tokens,
        }
    if recon_preds is not None:
        src = r["history"][r.get("cut_chars", 0):]
        rec["reconstruction"] = {"prediction": recon_preds[i], "precision": rounded(char_precision(recon_preds[i], src), 4)}
    return rec


TABLE_KEYS = ("exact_match", "contains", "loss", "perplexity", "n", "memory_tokens", "text_memory_tokens", "seconds")


def _condition_row(c: str, examples: list[dict], losses: list, seconds: float) -> dict:
    """One row of the condition table: token-weighted loss, exact match and contains over the scored examples."""
    scored = [e["conditions"][c] for e in examples if not e["conditions"][c]["skipped"]]
    losses = [x for x in losses if x is not None]
    ntok = sum(n for _, n in losses)
    loss = sum(x * n for x, n in losses) / ntok if ntok else None
    return {"condition": c, "exact_match": rounded(mean([float(s["correct"]) for s in scored]), 4),
            "contains": rounded(mean([float(s["contains"]) for s in scored]), 4), "loss": rounded(loss),
            "perplexity": rounded(math.exp(min(loss, 50.0)), 3) if loss is not None else None,
            "n": len(scored), "memory_tokens": rounded(mean([s["memory_tokens"] for s in scored]), 2),
            "text_memory_tokens": rounded(mean([s["text_memory_tokens"] for s in scored]), 2),
            "seconds": round(seconds, 2)}


def _condition_metrics(examples, inputs, results, seconds, f: ExampleFigures) -> tuple[dict, list[dict]]:
    """The flat per-condition metrics and the condition table."""
    metrics: dict = {"n_examples": len(examples), "answer_cut.n": sum(e["answer_cut"] for e in examples)}
    table = []
    for c in inputs:
        row = _condition_row(c, examples, results[c][0], seconds[c])
        table.append(row)
        metrics.update({f"{c}.{k}": row[k] for k in TABLE_KEYS})
        if c == "full_text":
            metrics["full_text.skipped"] = len(examples) - row["n"]
        cut = [e["conditions"][c] for e in examples if e["answer_cut"] and not e["conditions"][c]["skipped"]]
        if cut:  # where only the whole history holds the answer: what a memory must add to the truncated text
            metrics[f"{c}.exact_match_answer_cut"] = rounded(mean([float(s["correct"]) for s in cut]), 4)
        if c == "truncated_text":
            matched = [len(inputs[c][i].text_memory_ids) == f.mem_tok[i] for i in range(len(examples))]
            metrics["truncated_text.budget_matched"] = rounded(sum(matched) / len(examples), 4)
    return metrics, table


def _compression_metrics(rows: list[dict], f: ExampleFigures, mtpp: int) -> dict:
    comps = [x for x in f.compression if x is not None]
    return {
        "compression.mean": rounded(mean(comps), 4), "compression.min": rounded(min(comps), 4) if comps else None,
        "compression.max": rounded(max(comps), 4) if comps else None,
        "compression.history_mean": rounded(mean(f.history_compression), 4),
        "compression.overall": rounded(sum(f.kept_tok) / sum(f.mem_tok), 4) if sum(f.mem_tok) else None,
        "memory_tokens_per_page": mtpp, "pages.mean": rounded(mean([len(r["pages"]) for r in rows]), 3),
        "examples_cut": sum(1 for r in rows if r.get("cut_chars", 0) > 0),
    }


def _bucket_rows(examples: list[dict], with_ocr: bool, with_recon: bool, metrics: dict) -> list[dict]:
    """ocr_memory accuracy (and probe precision) per compression bucket; adds their metrics."""
    by_bucket: dict[str, list[dict]] = {}
    for e in examples:
        if e["bucket"] is not None:
            by_bucket.setdefault(e["bucket"], []).append(e)
    buckets = []
    for b in sorted(by_bucket, key=bucket_order):
        es = by_bucket[b]
        row = {"bucket": b, "compression": rounded(mean([e["compression"] for e in es]), 4), "n": len(es)}
        if with_ocr:
            row["exact_match"] = rounded(mean([float(e["conditions"]["ocr_memory"]["correct"]) for e in es]), 4)
            metrics[f"ocr_memory.bucket.{b}.exact_match"] = row["exact_match"]
        if with_recon:
            row["reconstruction_precision"] = rounded(mean([e["reconstruction"]["precision"] for e in es]), 4)
            metrics[f"reconstruction.bucket.{b}.precision"] = row["reconstruction_precision"]
        metrics[f"ocr_memory.bucket.{b}.n"] = len(es)
        buckets.append(row)
    return buckets


def _finite(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if v is not None and not (isinstance(v, float) and not math.isfinite(v))}


def _write(out_dir: Path, metrics: dict, examples: list[dict], table: list[dict], buckets: list[dict],
           with_recon: bool) -> Path | None:
    """metrics/eval.json, metrics/eval_examples.jsonl, plots/*.csv (+ plots/eval.png); returns the figure."""
    write_json(out_dir / "metrics/eval.json", metrics)
    write_jsonl(out_dir / "metrics/eval_examples.jsonl", examples)
    write_csv(out_dir / "plots/eval_conditions.csv", ["condition", "exact_match", "contains", "loss", "perplexity", "n"],
              table)
    write_csv(out_dir / "plots/accuracy_vs_compression.csv",
              ["bucket", "compression", "exact_match", "n"] + (["reconstruction_precision"] if with_recon else []),
              buckets)
    return plot(out_dir / "plots/eval.png", table, buckets)


def evaluate(settings: Settings, adapter_dir: str | Path | None = None, model=None,
             out_dir: str | Path = ".", progress: bool = True) -> dict:
    """The evaluate stage: every condition of settings.eval on the eval split; writes metrics and plots
    under `out_dir`, logs to WandB when tracking is on; returns the metrics."""
    t_start = time.perf_counter()
    check_key(settings)  # first: a missing WandB key stops before anything loads
    model = (model if model is not None else _load_model(settings, adapter_dir)).eval()
    tok, mtpp = model.tokenizer, model.memory_tokens_per_page
    rows = _eval_rows(settings)
    rows = with_budgets(model, rows)  # what each example's OCR memory costs: every budget is matched to it
    conditions = [c for c in CONDITIONS if c in settings.eval.conditions]  # canonical order
    probe = settings.eval.reconstruction_probe
    pages, source = memory_pages(settings, model, rows) if "ocr_memory" in conditions or probe else (None, None)
    f = _figures(tok, rows, mtpp)
    inputs, recon_inputs = _inputs(settings, tok, mtpp, rows, f.hist, conditions)
    soft = {c: load_soft_prompt(settings, c) for c in conditions if c in TRAINED_TEXT}
    results, recon_preds, seconds = _run_all(model, settings.eval, inputs, recon_inputs, rows, pages, progress, soft)
    examples = [_example_record(i, r, f, inputs, results, recon_preds) for i, r in enumerate(rows)]
    metrics, table = _condition_metrics(examples, inputs, results, seconds, f)
    metrics.update(_compression_metrics(rows, f, mtpp))
    if "ocr_memory" in conditions:
        metrics["ocr_memory.from_cache"] = int(source == "features")
    buckets = _bucket_rows(examples, "ocr_memory" in conditions, recon_preds is not None, metrics)
    if recon_preds is not None:
        metrics["reconstruction.precision"] = rounded(mean([e["reconstruction"]["precision"] for e in examples]), 4)
        metrics["reconstruction.seconds"] = round(seconds["reconstruction"], 2)
    metrics["seconds.total"] = round(time.perf_counter() - t_start, 2)
    metrics = _finite(metrics)
    figure = _write(Path(out_dir), metrics, examples, table, buckets, recon_preds is not None)
    print(eval_report(table, buckets, metrics, source))
    print(f"\nresults: {Path(out_dir) / 'metrics/eval.json'} (dvc metrics show), plots/ (dvc plots show), per-example "
          f"answers in metrics/eval_examples.jsonl; adapter: {adapter_dir or settings.adapter_dir} "
          f"(ocrmem generate --adapter ...)")
    run = start_run(settings, "eval")
    if not isinstance(run, DummyRun):
        log_run(run, settings, metrics, table, buckets, examples, rows, conditions, figure)
    run.finish()
    return metrics
