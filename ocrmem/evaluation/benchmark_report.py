"""What the benchmark shows: the cell and compression tables, the printed Fox-style table, the PNGs.

The per-example records come from ocrmem/evaluation/benchmark.py; this module only aggregates and presents them.
"""

from __future__ import annotations

from pathlib import Path

from ocrmem.common.io import write_csv, write_json, write_jsonl
from ocrmem.evaluation.scoring import answer_loss, mean, rounded

CELL_COLUMNS = ["point", "compression", "condition", "kind", "lang", "pages", "depth", "n", "exact_match",
                "contains", "loss", "pages_drawn", "history_tokens", "memory_tokens"]
CURVE_COLUMNS = ["point", "compression", "condition", "n", "exact_match", "contains", "loss"]


def _scores(group: list[tuple[dict, dict]]) -> dict:
    """Mean exact match and contains, and the answer loss (scoring.answer_loss), of (example, condition record) pairs."""
    loss = answer_loss([(c["loss"], c["target_tokens"]) for _, c in group if c["loss"] is not None])
    return {"n": len(group), "exact_match": rounded(mean([float(c["correct"]) for _, c in group]), 4),
            "contains": rounded(mean([float(c["contains"]) for _, c in group]), 4),
            "loss": rounded(loss, 4) if loss is not None else None}


def aggregate(examples: list[dict], points: dict, conditions: list[str]) -> tuple[list[dict], list[dict]]:
    """(cells: point x condition x kind x lang x pages x depth, curve: point x condition), skipped
    examples (none at the benchmark's full-text limit) left out."""
    cells: dict[tuple, list] = {}
    curve: dict[tuple, list] = {}
    for e in examples:
        m = e["meta"]
        for c in conditions:
            rec = e["conditions"][c]
            if rec["skipped"]:
                continue
            cells.setdefault((e["point"], c, m["kind"], m["lang"], m["pages_asked"], m["depth"]), []).append((e, rec))
            curve.setdefault((e["point"], c), []).append((e, rec))
    cell_rows = []
    for (p, c, kind, lang, pages, depth), group in cells.items():
        cell_rows.append({"point": p, "compression": points[p]["compression"], "condition": c, "kind": kind,
                          "lang": lang, "pages": pages, "depth": depth, **_scores(group),
                          "pages_drawn": rounded(mean([e["pages"] for e, _ in group]), 2),
                          "history_tokens": rounded(mean([e["history_tokens"] for e, _ in group]), 1),
                          "memory_tokens": rounded(mean([r["memory_tokens"] or r["text_memory_tokens"]
                                                         for _, r in group]), 1)})
    curve_rows = [{"point": p, "compression": points[p]["compression"], "condition": c, **_scores(group)}
                  for (p, c), group in curve.items()]
    return cell_rows, curve_rows


def fox_table(curve: list[dict], conditions: list[str]) -> str:
    """Accuracy by compression point, one column per condition (DeepSeek-OCR's Fox table, turned to QA)."""
    points = sorted({(r["compression"], r["point"]) for r in curve})
    by = {(r["point"], r["condition"]): r for r in curve}
    head = f"{'point':<6} {'compression':>11}  " + "  ".join(f"{c:>22}" for c in conditions)
    lines = ["exact match (answer loss) by compression point:", head]
    for comp, p in points:
        cells = [by.get((p, c)) for c in conditions]
        lines.append(f"{p:<6} {comp:>11.2f}  " + "  ".join(
            f"{'-':>22}" if r is None else f"{r['exact_match']:>13.3f} ({r['loss'] if r['loss'] is not None else 'n/a':>6})"
            for r in cells))
    return "\n".join(lines)


def _grid(cells: list[dict], point: str, condition: str, key: str, pages: list, depths: list):
    import numpy as np

    g = np.full((len(depths), len(pages)), np.nan)
    for d_i, d in enumerate(depths):
        for p_i, p in enumerate(pages):
            vals = [r[key] for r in cells if r["point"] == point and r["condition"] == condition
                    and r["pages"] == p and r["depth"] == d and r[key] is not None]
            if vals:
                g[d_i, p_i] = sum(v * 1.0 for v in vals) / len(vals)
    return g


def heatmap_png(path: Path, cells: list[dict], point: str, conditions: list[str]) -> Path:
    """Depth x length heatmaps at one point: exact match (top row) and answer loss (bottom), per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r for r in cells if r["point"] == point]
    pages = sorted({r["pages"] for r in cells})
    depths = sorted({r["depth"] for r in cells})
    kinds = [("exact_match", "viridis", 1.0)] + ([("loss", "magma_r", None)] if any(r["loss"] is not None
                                                                                     for r in cells) else [])
    fig, axes = plt.subplots(len(kinds), len(conditions), figsize=(2.6 * len(conditions) + 1, 3.2 * len(kinds) + 0.3),
                             squeeze=False)
    for j, c in enumerate(conditions):
        for i, (key, cmap, vmax) in enumerate(kinds):
            ax, g = axes[i][j], _grid(cells, point, c, key, pages, depths)
            im = ax.imshow(g, cmap=cmap, vmin=0, vmax=vmax, aspect="auto", origin="upper")
            for (y, x), v in __import__("numpy").ndenumerate(g):
                if v == v:  # not NaN
                    ax.text(x, y, f"{v:.2f}" if key == "exact_match" else f"{v:.1f}", ha="center", va="center",
                            fontsize=7, color="white" if key == "exact_match" and v < 0.5 else "black")
            ax.set_xticks(range(len(pages)), [str(p) for p in pages])
            ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
            ax.set_title(f"{c}\n{'exact match' if i == 0 else 'answer loss'}", fontsize=8)
            ax.set_xlabel("history length (pages)", fontsize=7)
            if j == 0:
                ax.set_ylabel("needle depth", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"memory benchmark at point {point}: accuracy by needle depth x history length")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def compression_png(path: Path, curve: list[dict], conditions: list[str]) -> Path:
    """Exact match and answer loss vs compression (text tokens per memory token), one line per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    nan = float("nan")
    for c in conditions:
        rs = sorted((r for r in curve if r["condition"] == c), key=lambda r: r["compression"])
        a.plot([r["compression"] for r in rs], [r["exact_match"] for r in rs], marker="o", label=c)
        a.plot([r["compression"] for r in rs], [r["contains"] for r in rs], marker="x", ls=":", color=a.lines[-1].get_color())
        b.plot([r["compression"] for r in rs], [nan if r["loss"] is None else r["loss"] for r in rs], marker="o", label=c)
    a.set_ylim(-0.02, 1.02)
    for ax, lab in ((a, "exact match (o), contains (x)"), (b, "answer loss (nats/token; --loss)")):
        ax.set_xlabel("compression of the rendered history (text tokens / OCR memory tokens)")
        ax.set_ylabel(lab)
    a.legend(fontsize=7)
    fig.suptitle("accuracy vs compression (every condition at the OCR memory's token budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_outputs(out: Path, metrics: dict, examples: list[dict], cells: list[dict], curve: list[dict],
                  spec) -> list[Path]:
    """metrics/benchmark.json, metrics/benchmark_examples.jsonl, plots/benchmark_*.csv and PNGs; prints the
    table; returns the PNGs."""
    conditions = metrics["conditions"]
    write_json(out / "metrics/benchmark.json", metrics)
    write_jsonl(out / "metrics/benchmark_examples.jsonl", examples)
    write_csv(out / "plots/benchmark_cells.csv", CELL_COLUMNS, cells)
    write_csv(out / "plots/benchmark_compression.csv", CURVE_COLUMNS, curve)
    (out / "plots/benchmark_heatmaps").mkdir(parents=True, exist_ok=True)
    pngs = [heatmap_png(out / f"plots/benchmark_heatmaps/{p}.png", cells, p, conditions) for p in spec.points]
    pngs.append(compression_png(out / "plots/benchmark_compression.png", curve, conditions))
    print(fox_table(curve, conditions))
    print(f"\nbenchmark: {metrics['n_examples']} examples in {metrics['seconds.total']:.0f}s -> "
          f"{out / 'metrics/benchmark.json'}, plots/benchmark_*.csv, {', '.join(str(p) for p in pngs)}")
    return pngs


def log_benchmark(settings, metrics: dict, cells: list[dict], curve: list[dict], pngs: list[Path]) -> None:
    """WandB panels when tracking is on: the cell and compression tables, the curve, the PNGs."""
    from ocrmem.common.tracking import DummyRun, start_run

    run = start_run(settings, "benchmark")
    if not isinstance(run, DummyRun):
        import wandb

        run.summary.update({f"benchmark/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        ct = wandb.Table(columns=CURVE_COLUMNS, data=[[r[k] for k in CURVE_COLUMNS] for r in curve])
        run.log({"benchmark/cells": wandb.Table(columns=CELL_COLUMNS, data=[[r[k] for k in CELL_COLUMNS] for r in cells]),
                 "benchmark/compression": ct,
                 "benchmark/accuracy_vs_compression": wandb.plot.scatter(ct, "compression", "exact_match",
                                                                         title="exact match vs compression"),
                 **{f"benchmark/{_panel(p)}": wandb.Image(str(p)) for p in pngs}})
    run.finish()


def _panel(png: Path) -> str:
    """WandB key of a PNG: heatmap_<point> for plots/benchmark_heatmaps/<point>.png, else its stem."""
    return f"heatmap_{png.stem}" if png.parent.name == "benchmark_heatmaps" else png.stem
