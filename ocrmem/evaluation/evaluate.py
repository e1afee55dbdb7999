"""Evaluation: the same held-out examples under four conditions, side by side.

    ocrmem evaluate [--params params.yaml] [--adapter DIR]      # evaluate(settings)

Conditions (`eval.conditions`, a subset of `settings.CONDITIONS`):

* `no_memory`       the prompt alone, no memory tokens (page_counts 0): the floor;
* `truncated_text`  the most recent history as text, cut to EXACTLY the token budget the OCR
                    memory of that example costs (pages x memory_tokens_per_page): the fair baseline;
* `ocr_memory`      the rendered pages through the frozen encoder + trained projector (cached
                    features when the cache exists and matches this model, else pixel values);
* `truncated_text_trained`, `full_text_trained`: the same two text memories, read with a soft prompt
                    trained like OCR memory's (ocrmem/training/baselines.py): the fair trained baselines;
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
and ocr_memory accuracy by compression bucket. The reconstruction probe asks the model to repeat its
memory, scored by character precision 1 - levenshtein / len(source): on `eval.probe_examples` held-out
English prose texts drawn as the run draws its pages (`reconstruction.precision`; documents the
stage-1 reader never saw; Chinese and random strings are stage 1's table, metrics/pretrain.json) and,
with `eval.reconstruction_probe`, on the eval examples' own pages (`reconstruction.sheets.precision`,
also by bucket).

Outputs (relative to `out_dir`, the repo root by default):
    metrics/eval.json              flat numeric keys for `dvc metrics show/diff`
    <adapter>/README.md            the run's own adapter's model card: its Evaluation section
    metrics/eval_examples.jsonl    per example: ids, token counts, each condition's prediction
    plots/eval_conditions.csv      condition, exact_match, contains, loss, perplexity, n
    plots/accuracy_vs_compression.csv   bucket, compression, exact_match, n
    plots/eval.png                 only where matplotlib is installed
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ocrmem.common.card import fill_evaluation
from ocrmem.common.errors import UserError
from ocrmem.common.io import write_csv, write_json, write_jsonl
from ocrmem.common.tracking import DummyRun, check_key, start_run
from ocrmem.evaluation.conditions import TRAINED_TEXT, load_soft_prompt, with_budgets
from ocrmem.evaluation.reading import prose_probe
from ocrmem.evaluation.report import eval_report, log_run, plot
from ocrmem.evaluation.runner import (
    ExampleFigures,
    condition_inputs,
    example_figures,
    example_record,
    load_adapter_model,
    memory_pages,
    run_conditions,
)
from ocrmem.evaluation.scoring import answer_loss, bucket_order, mean, rounded, sign_test
from ocrmem.settings import CONDITIONS, Settings

TABLE_KEYS = ("exact_match", "contains", "loss", "perplexity", "n", "memory_tokens", "text_memory_tokens", "seconds")


def _condition_row(c: str, examples: list[dict], losses: list, seconds: float) -> dict:
    """One row of the condition table: token-weighted loss, exact match and contains over the scored examples."""
    scored = [e["conditions"][c] for e in examples if not e["conditions"][c]["skipped"]]
    loss = answer_loss([x for x in losses if x is not None])
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
    metrics.update(_paired_on_cut(examples, "ocr_memory", "truncated_text_trained"))
    return metrics, table


def _paired_on_cut(examples: list[dict], a: str, b: str) -> dict:
    """`a` against `b` on the questions whose answer the truncated text cut, pair by pair: wins, losses
    and the sign test's p (does `a` read what the budget's text lost, beyond chance?)."""
    pairs = [(e["conditions"][a], e["conditions"][b]) for e in examples
             if e["answer_cut"] and a in e["conditions"] and b in e["conditions"]]
    pairs = [(x["correct"], y["correct"]) for x, y in pairs if not (x["skipped"] or y["skipped"])]
    if not pairs:
        return {}
    wins, losses = sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)
    key = f"{a}.vs_{b}.answer_cut"
    return {f"{key}.wins": wins, f"{key}.losses": losses, f"{key}.sign_test_p": rounded(sign_test(wins, losses), 6)}


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


def _eval_rows(settings: Settings) -> list[dict]:
    from ocrmem.data.manifest import read_manifest

    rows = read_manifest(settings, "eval")
    if settings.eval.max_examples is not None:
        rows = rows[: settings.eval.max_examples]
    if not rows:
        raise UserError("the eval split has no examples: nothing to evaluate")
    return rows


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
    own_adapter = model is None and adapter_dir is None
    model = (model if model is not None else load_adapter_model(settings, adapter_dir)).eval()
    tok, mtpp = model.tokenizer, model.memory_tokens_per_page
    rows = _eval_rows(settings)
    rows = with_budgets(model, rows)  # what each example's OCR memory costs: every budget is matched to it
    conditions = [c for c in CONDITIONS if c in settings.eval.conditions]  # canonical order
    probe = settings.eval.reconstruction_probe
    pages, source = memory_pages(settings, model, rows) if "ocr_memory" in conditions or probe else (None, None)
    f = example_figures(tok, rows, mtpp)
    inputs, recon_inputs = condition_inputs(settings, tok, mtpp, rows, f.hist, conditions)
    soft = {c: load_soft_prompt(settings, c) for c in conditions if c in TRAINED_TEXT}
    ev = settings.eval
    results, recon_preds, seconds = run_conditions(model, inputs, recon_inputs, rows, pages, ev.batch_size,
                                                   ev.max_new_tokens, progress, soft)
    examples = [example_record(i, r, f, inputs, results, recon_preds) for i, r in enumerate(rows)]
    metrics, table = _condition_metrics(examples, inputs, results, seconds, f)
    metrics.update(_compression_metrics(rows, f, mtpp))
    if "ocr_memory" in conditions:
        metrics["ocr_memory.from_cache"] = int(source == "features")
    buckets = _bucket_rows(examples, "ocr_memory" in conditions, recon_preds is not None, metrics)
    if recon_preds is not None:
        metrics["reconstruction.sheets.precision"] = rounded(mean([e["reconstruction"]["precision"]
                                                                  for e in examples]), 4)
        metrics["reconstruction.sheets.seconds"] = round(seconds["reconstruction"], 2)
    if ev.probe_examples:
        t0 = time.perf_counter()
        metrics.update(prose_probe(model, settings, ev.probe_examples, progress))
        metrics["reconstruction.seconds"] = round(time.perf_counter() - t0, 2)
    metrics["seconds.total"] = round(time.perf_counter() - t_start, 2)
    metrics = _finite(metrics)
    figure = _write(Path(out_dir), metrics, examples, table, buckets, recon_preds is not None)
    if own_adapter:  # its card's Evaluation section holds this run's figures
        fill_evaluation(settings.adapter_dir, metrics)
    print(eval_report(table, buckets, metrics, source))
    print(f"\nresults: {Path(out_dir) / 'metrics/eval.json'} (dvc metrics show), plots/ (dvc plots show), per-example "
          f"answers in metrics/eval_examples.jsonl; adapter: {adapter_dir or settings.adapter_dir} "
          f"(ocrmem generate --adapter ...)")
    run = start_run(settings, "eval")
    if not isinstance(run, DummyRun):
        log_run(run, settings, metrics, table, buckets, examples, rows, conditions, figure)
    run.finish()
    return metrics
