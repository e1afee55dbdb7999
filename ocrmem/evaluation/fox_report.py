"""What the Fox table shows: the printed table and the PNG (metrics/fox.json and plots/fox*.csv are
written by ocrmem/evaluation/fox.py; `dvc plots show` draws the CSVs with .dvc/plots/fox_*.json).
"""

from __future__ import annotations

from pathlib import Path

SCORES = (("accuracy", "-"), ("precision", ":"))  # solid: accuracy (what was lost counts); dotted: precision


def plot(rows: list[dict], curves: list[dict], path: Path) -> Path | None:
    """A panel per text kind (accuracy and precision by compression, a line per projector and control),
    and the projectors' learning curves; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    kinds = list(dict.fromkeys(r["text_kind"] for r in rows))
    projectors = list(dict.fromkeys(r["projector"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(3.6 * (len(kinds) + 1), 3.6))
    colors = {p: f"C{i}" for i, p in enumerate(projectors)}
    for ax, kind in zip(axes, kinds):
        for proj in projectors:
            mine = sorted((r for r in rows if r["text_kind"] == kind and r["projector"] == proj),
                          key=lambda r: r["compression"])
            for score, style in SCORES:
                ax.plot([r["compression"] for r in mine], [r[score] for r in mine], style, marker="o",
                        color=colors[proj], label=f"{proj} {score}")
        ax.set(title=kind, xlabel="compression (text / memory tokens)", ylim=(0, 1))
    axes[0].set_ylabel("solid: accuracy, dotted: precision")
    axes[0].legend(fontsize=6)
    for proj in dict.fromkeys(c["projector"] for c in curves):
        mine = [c for c in curves if c["projector"] == proj]
        axes[-1].plot([c["step"] for c in mine], [c["loss"] for c in mine], color=colors.get(proj), label=proj)
    axes[-1].set(title="learning curves", xlabel="step", ylabel="reconstruct loss")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cell(r: dict | None) -> str:
    return f"{r['accuracy']:.3f} / {r['precision']:.3f} ({r['compression']:.2f}x)" if r else "-"


def format_table(rows: list[dict]) -> str:
    """The printed table: a line per (text kind, projector), accuracy / precision (compression) per point."""
    points = list(dict.fromkeys(r["point"] for r in rows))
    by = {(r["text_kind"], r["projector"], r["point"]): r for r in rows}
    lines = [f"{'text kind':<12}{'projector':<16}" + "".join(f"{p:>26}" for p in points)]
    for kind in dict.fromkeys(r["text_kind"] for r in rows):
        for proj in dict.fromkeys(r["projector"] for r in rows):
            lines.append(f"{kind:<12}{proj:<16}" + "".join(f"{cell(by.get((kind, proj, p))):>26}" for p in points))
    return "accuracy / precision (compression: text tokens per memory token) by render point:\n" + "\n".join(lines)
