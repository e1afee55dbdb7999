"""What evaluation shows: the printed table, the figure, and the WandB run's tables and sample pages.

The files (metrics/eval.json, plots/*.csv) are written by ocrmem/evaluation/evaluate.py; this module only
presents them.
"""

from __future__ import annotations

from pathlib import Path

from ocrmem.common.io import fmt
from ocrmem.settings import Settings


def plot(path: Path, table: list[dict], buckets: list[dict]) -> Path | None:
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


def eval_report(table: list[dict], buckets: list[dict], m: dict, source: str | None) -> str:
    """The table `ocrmem evaluate` prints: one row per condition, compression, buckets."""
    lines = [f"{'condition':<24}{'exact_match':>12}{'contains':>10}{'loss':>9}{'ppl':>10}{'mem tok':>9}{'n':>5}{'sec':>8}"]
    for r in table:
        mem = r["memory_tokens"] if r["condition"] == "ocr_memory" else r["text_memory_tokens"]
        lines.append(f"{r['condition']:<24}{fmt(r['exact_match']):>12}{fmt(r['contains']):>10}{fmt(r['loss']):>9}"
                     f"{fmt(r['perplexity'], 2):>10}{fmt(mem, 1):>9}{r['n']:>5}{r['seconds']:>8.1f}")
    if "full_text.skipped" in m and m["full_text.skipped"]:
        lines.append(f"full_text skipped on {m['full_text.skipped']} examples over eval.full_text_max_tokens")
    lines.append(f"compression (text tokens on the pages / memory tokens): mean {fmt(m.get('compression.mean'), 2)}, "
                 f"range {fmt(m.get('compression.min'), 2)}-{fmt(m.get('compression.max'), 2)}, "
                 f"{m['memory_tokens_per_page']} memory tokens/page, {m['examples_cut']} histories cut to fit the pages"
                 + (f"; memory from {source}" if source else ""))
    cut = {k.removesuffix(".exact_match_answer_cut"): v for k, v in m.items() if k.endswith(".exact_match_answer_cut")}
    if cut:
        lines.append(f"exact match on the {m['answer_cut.n']} questions whose answer the truncated text cut: "
                     + ", ".join(f"{c} {fmt(v)}" for c, v in cut.items()))
    if "reconstruction.precision" in m:
        lines.append(f"reads {m.get('reconstruction.n')} held-out English prose pages back: reconstruction precision "
                     f"{fmt(m['reconstruction.precision'])} at compression {fmt(m.get('reconstruction.compression'), 2)}")
    if "reconstruction.sheets.precision" in m:
        lines.append(f"reads the eval examples' own pages back: precision {fmt(m['reconstruction.sheets.precision'])}")
    for k in (k for k in m if k.endswith(".answer_cut.sign_test_p")):
        head = k.removesuffix(".sign_test_p")
        a, b = head.removesuffix(".answer_cut").split(".vs_")
        lines.append(f"{a} against {b} on those questions: {m[head + '.wins']} won, {m[head + '.losses']} lost "
                     f"(sign test p = {m[k]:.2g})")
    if buckets:
        lines.append(f"{'bucket':<8}{'compression':>12}{'ocr exact':>11}{'n':>5}"
                     + (f"{'recon prec':>12}" if "reconstruction_precision" in buckets[0] else ""))
        for r in buckets:
            lines.append(f"{r['bucket']:<8}{fmt(r['compression'], 2):>12}{fmt(r.get('exact_match')):>11}{r['n']:>5}"
                         + (f"{fmt(r['reconstruction_precision']):>12}" if "reconstruction_precision" in r else ""))
    return "\n".join(lines)



def log_run(run, settings: Settings, metrics: dict, table: list[dict], buckets: list[dict], examples: list[dict],
             rows: list[dict], conditions: list[str], figure: Path | None) -> None:
    """The metrics, the condition table and chart, accuracy vs compression, and sample pages with answers."""
    import wandb

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
    samples = wandb.Table(columns=["id", "page", "prompt", "target", "compression"] + list(conditions))
    for e, r in list(zip(examples, rows))[: max(settings.tracking.log_pages, 1)]:
        page = wandb.Image(str(settings.rendered_dir / r["pages"][0])) if r["pages"] else None
        samples.add_data(e["id"], page, e["prompt"], e["target"], e["compression"],
                         *[e["conditions"][c]["prediction"] for c in conditions])
    logs["eval/samples"] = samples
    run.log(logs)
