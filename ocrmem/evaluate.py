"""Evaluation: the same held-out examples under four conditions, side by side.

    ocrmem evaluate [--params params.yaml] [--adapter DIR]

Conditions (`eval.conditions`, a subset of `settings.CONDITIONS`):

* `no_memory`       the prompt alone, no memory tokens (page_counts 0): the floor;
* `truncated_text`  the most recent history as text, cut to EXACTLY the token budget the OCR
                    memory of that example costs (pages x memory_tokens_per_page): the fair baseline;
* `ocr_memory`      the rendered pages through the frozen encoder + trained projector (cached
                    features when the cache exists and matches this model, else pixel values);
* `full_text`       the whole history as text: the ceiling; skipped per example where the history
                    is longer than `eval.full_text_max_tokens` (the count is reported).

Text memory is laid out as one user turn "Memory:\\n<history tokens>\\n\\n<prompt>" through the chat
template; the history token ids are spliced in as they are (never decoded and re-tokenized), so
the truncated baseline holds exactly the budgeted number of tokens.

Per condition: teacher-forced target loss (token mean) and perplexity, and greedy exact match
(one-word targets: the first word of the answer; else the whole normalised answer) plus the lenient
`contains` (the target's words appear in the answer: chat models answer text memory in sentences).
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

import csv
import json
import math
import os
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ocrmem.dataset import (PROMPTS, CachedPages, PixelPages, chat_prompt, clip_prompt, memory_prompt,
                            target_ids)
from ocrmem.render import write_atomic
from ocrmem.settings import CONDITIONS, Settings

BUCKETS = ((0, 2), (2, 4), (4, 8), (8, 12), (12, 16), (16, math.inf))


# ---------------------------------------------------------------------------------------------
# scoring


_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize(s: str) -> str:
    """strip, lowercase, punctuation -> space, collapse whitespace."""
    return " ".join(s.strip().lower().translate(_PUNCT).split())


def exact_match(prediction: str, target: str) -> bool:
    """One-word targets: the first word of the prediction; otherwise the whole normalised string."""
    t, p = normalize(target), normalize(prediction)
    if len(t.split()) == 1:
        return (p.split() or [""])[0] == t
    return p == t


def contains(prediction: str, target: str) -> bool:
    """Lenient: the normalised target appears as whole words in the normalised prediction
    ("The value of delta is black." contains "black"). Reported beside exact_match."""
    t, p = normalize(target), normalize(prediction)
    return bool(t) and f" {t} " in f" {p} "


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute: cost 1), O(len(a) * len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_precision(prediction: str, source: str) -> float:
    """1 - levenshtein(prediction, source) / len(source), clamped to [0, 1]."""
    if not source:
        return 1.0 if not prediction else 0.0
    return max(0.0, 1.0 - levenshtein(prediction, source) / len(source))


def _bucket_name(lo: float, hi: float) -> str:
    return f"<{hi:g}" if lo == 0 else (f">={lo:g}" if hi == math.inf else f"{lo:g}-{hi:g}")


BUCKET_NAMES = [_bucket_name(lo, hi) for lo, hi in BUCKETS]


def bucket_of(compression: float) -> str:
    """The Fox-table bucket of a compression ratio: <2, 2-4, 4-8, 8-12, 12-16, >=16."""
    for (lo, hi), name in zip(BUCKETS, BUCKET_NAMES):
        if compression < hi:
            return name
    return BUCKET_NAMES[-1]


def bucket_order(name: str) -> int:
    return BUCKET_NAMES.index(name)


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
    skipped: bool = False  # full_text over eval.full_text_max_tokens


def history_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


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
    prompt = clip_prompt(tokenizer, prompt, max_prompt_tokens)
    if condition == "no_memory":
        return CondInput(condition, chat_prompt(tokenizer, prompt), tgt)
    if condition == "ocr_memory":  # the same "Memory:" turn as the text conditions, pages in the slot
        ids, pos = memory_prompt(tokenizer, prompt)
        return CondInput(condition, ids, tgt, n_pages=n_pages, memory_tokens=n_pages * memory_tokens_per_page,
                         memory_pos=pos)
    if condition == "truncated_text":
        budget = n_pages * memory_tokens_per_page
        mem = hist_ids[len(hist_ids) - budget:] if budget else []  # the most recent `budget` tokens
        return CondInput(condition, memory_prompt(tokenizer, prompt, mem)[0], tgt, text_memory_ids=mem)
    # full_text
    if len(hist_ids) > full_text_max_tokens:
        return CondInput(condition, [], tgt, text_memory_ids=[], skipped=True)
    return CondInput(condition, memory_prompt(tokenizer, prompt, hist_ids)[0], tgt, text_memory_ids=list(hist_ids))


def collate(items: list[CondInput], pad_id: int, with_target: bool) -> dict:
    """Right-padded text batch (+ labels when with_target) and page_counts."""
    seqs = [it.prompt_ids + (it.target_ids if with_target else []) for it in items]
    n = max(len(s) for s in seqs)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    labels = torch.full((len(items), n), -100, dtype=torch.long)
    for i, (it, s) in enumerate(zip(items, seqs)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
        if with_target:
            labels[i, len(it.prompt_ids): len(s)] = torch.tensor(it.target_ids, dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask,
             "page_counts": torch.tensor([it.n_pages for it in items], dtype=torch.long),
             "memory_pos": torch.tensor([it.memory_pos for it in items], dtype=torch.long)}
    if with_target:
        batch["labels"] = labels
    return batch


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
# the evaluation


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


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _round(x, nd=5):
    return None if x is None else round(float(x), nd)


def evaluate(settings: Settings, adapter_dir: str | Path | None = None, model=None,
             out_dir: str | Path = ".", progress: bool = True) -> dict:
    """Evaluate every condition of settings.eval on the eval split; write metrics and plots; return metrics."""
    from tqdm.auto import tqdm

    from ocrmem.data import read_manifest
    from ocrmem.model.ocrmem import OcrMemModel

    t_start = time.perf_counter()
    ev = settings.eval
    if model is None:
        adapter_dir = Path(adapter_dir) if adapter_dir is not None else settings.adapter_dir
        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"no adapter at {adapter_dir}: run `ocrmem train` first or pass --adapter DIR")
        model = OcrMemModel.from_pretrained(adapter_dir)
        if model.settings.render.model_dump(exclude={"workers"}) != settings.render.model_dump(exclude={"workers"}):
            print(f"evaluate: WARNING the adapter {adapter_dir} was trained on other render settings than "
                  f"params.yaml's render section; the eval pages are rendered with params.yaml's", file=sys.stderr)
    model.eval()
    tok = model.tokenizer
    mtpp = model.memory_tokens_per_page
    rows = read_manifest(settings, "eval")
    if ev.max_examples is not None:
        rows = rows[: ev.max_examples]
    if not rows:
        raise ValueError("the eval split has no examples: nothing to evaluate")
    conditions = [c for c in CONDITIONS if c in ev.conditions]  # canonical order
    pages, source = (memory_pages(settings, model, rows) if "ocr_memory" in conditions or ev.reconstruction_probe
                     else (None, None))

    # per example figures
    hist = [history_ids(tok, r["history"]) for r in rows]
    kept_tok = [len(history_ids(tok, r["history"][r.get("cut_chars", 0):])) for r in rows]
    mem_tok = [len(r["pages"]) * mtpp for r in rows]
    compression = [k / m if m else None for k, m in zip(kept_tok, mem_tok)]
    history_compression = [len(h) / m if m else None for h, m in zip(hist, mem_tok)]

    d = settings.data
    kw = dict(max_prompt_tokens=d.max_prompt_tokens, max_target_tokens=d.max_target_tokens,
              full_text_max_tokens=ev.full_text_max_tokens)
    inputs = {c: [build_condition_input(c, r, tok, mtpp, h, **kw) for r, h in zip(rows, hist)] for c in conditions}
    recon_inputs = None
    if ev.reconstruction_probe:
        sources = [r["history"][r.get("cut_chars", 0):] for r in rows]
        recon_inputs = [build_condition_input("ocr_memory", r, tok, mtpp, h, **{**kw, "max_target_tokens": 10**9},
                                              prompt=PROMPTS["reconstruct"], target=src)
                        for r, h, src in zip(rows, hist, sources)]

    total = sum(sum(not it.skipped for it in v) for v in inputs.values()) + (len(rows) if recon_inputs else 0)
    bar = tqdm(total=total, desc="evaluate", unit="ex", disable=not progress, file=sys.stderr)
    results, seconds = {}, {}
    with torch.no_grad():
        for c in conditions:
            bar.set_postfix_str(c)
            t0 = time.perf_counter()
            results[c] = _run_condition(model, c, inputs[c], rows, pages, ev.batch_size, ev.max_new_tokens, bar)
            seconds[c] = time.perf_counter() - t0
        recon_preds = None
        if recon_inputs is not None:
            bar.set_postfix_str("reconstruction")
            t0 = time.perf_counter()
            budget = [min(len(it.target_ids) + 8, 1024) for it in recon_inputs]
            _, recon_preds = _run_condition(model, "ocr_memory", recon_inputs, rows, pages, ev.batch_size,
                                            budget, bar, score_loss=False)
            seconds["reconstruction"] = time.perf_counter() - t0
    bar.close()

    # -- per example records -----------------------------------------------------------------
    examples = []
    for i, r in enumerate(rows):
        rec = {"id": r["id"], "prompt": r["prompt"], "target": r["target"], "pages": len(r["pages"]),
               "cut_chars": r.get("cut_chars", 0), "history_tokens": len(hist[i]), "kept_text_tokens": kept_tok[i],
               "memory_tokens": mem_tok[i], "compression": _round(compression[i], 4),
               "history_compression": _round(history_compression[i], 4),
               "bucket": bucket_of(compression[i]) if compression[i] is not None else None, "conditions": {}}
        for c in conditions:
            it = inputs[c][i]
            loss, pred = results[c][0][i], results[c][1][i]
            rec["conditions"][c] = {
                "prediction": pred, "correct": None if pred is None else exact_match(pred, r["target"]),
                "contains": None if pred is None else contains(pred, r["target"]),
                "loss": None if loss is None else _round(loss[0]), "skipped": it.skipped,
                "memory_tokens": it.memory_tokens, "text_memory_tokens": len(it.text_memory_ids),
                "input_tokens": len(it.prompt_ids) + it.memory_tokens,
            }
        if recon_preds is not None:
            src = r["history"][r.get("cut_chars", 0):]
            rec["reconstruction"] = {"prediction": recon_preds[i], "precision": _round(char_precision(
                recon_preds[i], src), 4)}
        examples.append(rec)

    # -- aggregate ---------------------------------------------------------------------------
    metrics: dict[str, float | int] = {"n_examples": len(rows)}
    table = []
    for c in conditions:
        scored = [e["conditions"][c] for e in examples if not e["conditions"][c]["skipped"]]
        losses = [l for l in results[c][0] if l is not None]
        ntok = sum(n for _, n in losses)
        loss = sum(l * n for l, n in losses) / ntok if ntok else None
        em = _mean([float(s["correct"]) for s in scored])
        row = {"condition": c, "exact_match": _round(em, 4),
               "contains": _round(_mean([float(s["contains"]) for s in scored]), 4), "loss": _round(loss),
               "perplexity": _round(math.exp(min(loss, 50.0)), 3) if loss is not None else None,
               "n": len(scored), "memory_tokens": _round(_mean([s["memory_tokens"] for s in scored]), 2),
               "text_memory_tokens": _round(_mean([s["text_memory_tokens"] for s in scored]), 2),
               "seconds": round(seconds[c], 2)}
        table.append(row)
        for k in ("exact_match", "contains", "loss", "perplexity", "n", "memory_tokens", "text_memory_tokens", "seconds"):
            metrics[f"{c}.{k}"] = row[k]
        if c == "full_text":
            metrics["full_text.skipped"] = len(rows) - len(scored)
        if c == "truncated_text":
            matched = [len(inputs[c][i].text_memory_ids) == mem_tok[i] for i in range(len(rows))]
            metrics["truncated_text.budget_matched"] = _round(sum(matched) / len(rows), 4)
    comps = [x for x in compression if x is not None]
    metrics.update({
        "compression.mean": _round(_mean(comps), 4), "compression.min": _round(min(comps), 4) if comps else None,
        "compression.max": _round(max(comps), 4) if comps else None,
        "compression.history_mean": _round(_mean([x for x in history_compression if x is not None]), 4),
        "compression.overall": _round(sum(kept_tok) / sum(mem_tok), 4) if sum(mem_tok) else None,
        "memory_tokens_per_page": mtpp, "pages.mean": _round(_mean([len(r["pages"]) for r in rows]), 3),
        "examples_cut": sum(1 for r in rows if r.get("cut_chars", 0) > 0),
    })
    if "ocr_memory" in conditions:
        metrics["ocr_memory.from_cache"] = int(source == "features")

    by_bucket: dict[str, list[dict]] = {}
    for e in examples:
        if e["bucket"] is not None:
            by_bucket.setdefault(e["bucket"], []).append(e)
    buckets = []
    for b in sorted(by_bucket, key=bucket_order):
        es = by_bucket[b]
        row = {"bucket": b, "compression": _round(_mean([e["compression"] for e in es]), 4), "n": len(es)}
        if "ocr_memory" in conditions:
            row["exact_match"] = _round(_mean([float(e["conditions"]["ocr_memory"]["correct"]) for e in es]), 4)
            metrics[f"ocr_memory.bucket.{b}.exact_match"] = row["exact_match"]
        if recon_preds is not None:
            row["reconstruction_precision"] = _round(_mean([e["reconstruction"]["precision"] for e in es]), 4)
            metrics[f"reconstruction.bucket.{b}.precision"] = row["reconstruction_precision"]
        metrics[f"ocr_memory.bucket.{b}.n"] = len(es)
        buckets.append(row)
    if recon_preds is not None:
        metrics["reconstruction.precision"] = _round(_mean([e["reconstruction"]["precision"] for e in examples]), 4)
        metrics["reconstruction.seconds"] = round(seconds["reconstruction"], 2)
    metrics["seconds.total"] = round(time.perf_counter() - t_start, 2)
    metrics = {k: v for k, v in metrics.items() if v is not None and not (isinstance(v, float) and not math.isfinite(v))}

    # -- write -------------------------------------------------------------------------------
    out_dir = Path(out_dir)
    (out_dir / "metrics").mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "metrics/eval.json", (json.dumps(metrics, indent=2) + "\n").encode())
    write_atomic(out_dir / "metrics/eval_examples.jsonl",
                 "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples).encode("utf-8"))
    _write_csv(out_dir / "plots/eval_conditions.csv", ["condition", "exact_match", "contains", "loss", "perplexity", "n"],
               table)
    _write_csv(out_dir / "plots/accuracy_vs_compression.csv",
               ["bucket", "compression", "exact_match", "n"] + (["reconstruction_precision"] if recon_preds else []),
               buckets)
    figure = _plot(out_dir / "plots/eval.png", table, buckets)
    print(_summary(table, buckets, metrics, source))
    if settings.tracking.wandb_mode != "disabled":
        _log_wandb(settings, metrics, table, buckets, examples, rows, conditions, figure)
    return metrics


# ---------------------------------------------------------------------------------------------
# outputs


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    os.replace(tmp, path)


def _plot(path: Path, table: list[dict], buckets: list[dict]) -> Path | None:
    """Bar chart of the conditions and accuracy vs compression; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar([r["condition"] for r in table], [r["exact_match"] or 0 for r in table])
    a.set_ylabel("exact match")
    a.set_ylim(0, 1)
    a.set_title("conditions")
    a.tick_params(axis="x", labelrotation=20)
    bs = [r for r in buckets if r.get("exact_match") is not None]
    b.plot([r["compression"] for r in bs], [r["exact_match"] for r in bs], marker="o")
    for r in bs:
        b.annotate(f"{r['bucket']} (n={r['n']})", (r["compression"], r["exact_match"]), fontsize=8)
    b.set_xlabel("compression (text tokens / memory tokens)")
    b.set_ylabel("ocr_memory exact match")
    b.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(x, nd=3):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _summary(table: list[dict], buckets: list[dict], m: dict, source: str | None) -> str:
    lines = [f"{'condition':<16}{'exact_match':>12}{'contains':>10}{'loss':>9}{'ppl':>10}{'mem tok':>9}{'n':>5}{'sec':>8}"]
    for r in table:
        mem = r["memory_tokens"] if r["condition"] == "ocr_memory" else r["text_memory_tokens"]
        lines.append(f"{r['condition']:<16}{_fmt(r['exact_match']):>12}{_fmt(r['contains']):>10}{_fmt(r['loss']):>9}"
                     f"{_fmt(r['perplexity'], 2):>10}{_fmt(mem, 1):>9}{r['n']:>5}{r['seconds']:>8.1f}")
    if "full_text.skipped" in m and m["full_text.skipped"]:
        lines.append(f"full_text skipped on {m['full_text.skipped']} examples over eval.full_text_max_tokens")
    lines.append(f"compression (text tokens on the pages / memory tokens): mean {_fmt(m.get('compression.mean'), 2)}, "
                 f"range {_fmt(m.get('compression.min'), 2)}-{_fmt(m.get('compression.max'), 2)}, "
                 f"{m['memory_tokens_per_page']} memory tokens/page, {m['examples_cut']} histories cut to fit the pages"
                 + (f"; memory from {source}" if source else ""))
    if buckets:
        lines.append(f"{'bucket':<8}{'compression':>12}{'ocr exact':>11}{'n':>5}"
                     + (f"{'recon prec':>12}" if "reconstruction_precision" in buckets[0] else ""))
        for r in buckets:
            lines.append(f"{r['bucket']:<8}{_fmt(r['compression'], 2):>12}{_fmt(r.get('exact_match')):>11}{r['n']:>5}"
                         + (f"{_fmt(r['reconstruction_precision']):>12}" if "reconstruction_precision" in r else ""))
    return "\n".join(lines)


def _log_wandb(settings: Settings, metrics: dict, table: list[dict], buckets: list[dict], examples: list[dict],
               rows: list[dict], conditions: list[str], figure: Path | None) -> None:
    try:
        import wandb
    except ImportError:
        print("evaluate: wandb is not installed: not logged (tracking.wandb_mode is "
              f"{settings.tracking.wandb_mode!r})", file=sys.stderr)
        return
    t = settings.tracking
    if t.wandb_mode == "online" and not os.environ.get("WANDB_API_KEY"):
        print("evaluate: tracking.wandb_mode=online needs WANDB_API_KEY in the environment: not logged",
              file=sys.stderr)
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    wdir = Path.cwd()  # ./wandb/: never inside the DVC-tracked checkpoints (it would dirty the train stage)
    run = wandb.init(mode=t.wandb_mode, project=t.project, entity=t.entity,
                     name=(t.run_name + "-eval") if t.run_name else None, dir=str(wdir), job_type="eval",
                     config={"ocrmem": settings.model_dump()}, reinit="finish_previous")
    try:
        run.summary.update({f"eval/{k}": v for k, v in metrics.items()})
        cols = ["condition", "exact_match", "contains", "loss", "perplexity", "n"]
        cond = wandb.Table(columns=cols, data=[[r[k] for k in cols] for r in table])
        logs = {"eval/conditions": cond,
                "eval/conditions_bar": wandb.plot.bar(cond, "condition", "exact_match", title="exact match by condition")}
        if buckets and "exact_match" in buckets[0]:
            bt = wandb.Table(columns=["bucket", "compression", "exact_match", "n"],
                             data=[[r["bucket"], r["compression"], r["exact_match"], r["n"]] for r in buckets])
            logs["eval/accuracy_vs_compression"] = wandb.plot.line(bt, "compression", "exact_match",
                                                                   title="ocr_memory exact match vs compression")
        if figure is not None:
            logs["eval/figure"] = wandb.Image(str(figure))
        n = max(t.log_pages, 1)
        samples = wandb.Table(columns=["id", "page", "prompt", "target", "compression"]
                              + [f"{c}" for c in conditions])
        for e, r in list(zip(examples, rows))[:n]:
            page = wandb.Image(str(settings.rendered_dir / r["pages"][0])) if r["pages"] else None
            samples.add_data(e["id"], page, e["prompt"], e["target"], e["compression"],
                             *[e["conditions"][c]["prediction"] for c in conditions])
        logs["eval/samples"] = samples
        run.log(logs)
    finally:
        run.finish()
