"""How well a memory reads, DeepSeek-OCR's Fox table: reconstruction precision by text kind and compression.

    rows = reading_table(model, settings, examples, points=["fs24", "fs20", "fs16"])

Each compression point is a render density (ocrmem.settings.BENCH_POINTS: the same line height, so the
same memory tokens a line, and smaller glyphs, so more text a token). The held-out texts are drawn at
each point, the model is asked to repeat its memory (the `reconstruct` prompt), and each example scores
1 - edit distance / length of the text on its pages. Compression is measured: the text tokens on the
pages over the memory tokens they cost, summed over the row's examples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ocrmem.data.dataset import PixelPages
from ocrmem.data.manifest import memory_text, read_manifest, render_dataset
from ocrmem.data.sources import Example
from ocrmem.evaluation.conditions import with_budgets
from ocrmem.evaluation.runner import condition_inputs, example_figures, run_conditions
from ocrmem.evaluation.scoring import char_precision, mean, rounded
from ocrmem.settings import BENCH_POINTS, Settings

PROBE_KIND = "prose_en"  # evaluate's reconstruction probe: held-out English prose (stage 1's table has the rest)


def point_settings(settings: Settings, point: str, out_dir: str | Path) -> Settings:
    """The run's settings drawn at one compression point, its pages under out_dir/<point>."""
    render = settings.render.model_copy(update=BENCH_POINTS[point])
    data = settings.data.model_copy(update={"out_dir": str(Path(out_dir) / point)})
    ev = settings.eval.model_copy(update={"reconstruction_probe": True})
    return settings.model_copy(update={"render": render, "data": data, "eval": ev})


def read_back(model, ps: Settings, examples: list[Example], progress: bool = True) -> list[dict]:
    """Each held-out example drawn under `ps` and read back: kind, precision, text and memory tokens, the
    prediction and the text on its pages."""
    from ocrmem.memory.encoder import build_encoder

    encoder, model.encoder = model.encoder, build_encoder(model.settings.model, ps.render)  # this point's grid
    try:
        return _read_back(model, ps, examples, progress)
    finally:
        model.encoder = encoder


def _read_back(model, ps: Settings, examples: list[Example], progress: bool) -> list[dict]:
    from ocrmem.memory.encoder import tokens_per_line, tokens_per_page

    render_dataset(ps, ["eval"], tokenizer=model.tokenizer, tokens_per_page=tokens_per_page(ps),
                   tokens_per_line=tokens_per_line(ps), progress=False, examples={"eval": examples})
    rows = with_budgets(model, read_manifest(ps, "eval"))
    tok, mtpp = model.tokenizer, model.memory_tokens_per_page
    f = example_figures(tok, rows, mtpp)
    _, probe = condition_inputs(ps, tok, mtpp, rows, f.hist, [])
    _, preds, _ = run_conditions(model, {}, probe, rows, PixelPages(ps.rendered_dir, model.encoder),
                                 ps.eval.batch_size, 1, progress, desc="read back")
    return [{"kind": r["meta"].get("kind", "text"), "precision": char_precision(p, memory_text(r)),
             "text_tokens": k, "memory_tokens": m, "prediction": p, "text": memory_text(r)}
            for r, p, k, m in zip(rows, preds, f.kept_tok, f.mem_tok)]


def reading_table(model, settings: Settings, examples: list[Example], points: list[str], out_dir: str | Path,
                  progress: bool = True) -> list[dict]:
    """One row per (text kind, point): precision (mean over examples), compression (measured), n."""
    rows = []
    for point in points:
        got = read_back(model, point_settings(settings, point, out_dir), examples, progress)
        for kind in dict.fromkeys(g["kind"] for g in got):
            rows.append({"text_kind": kind, "point": point, "projector": settings.model.projector,
                         **kind_figures(got, kind)})
    return rows


def kind_figures(got: list[dict], kind: str) -> dict:
    """Precision (mean over the kind's examples), compression (text over memory tokens, summed) and n."""
    mine = [g for g in got if g["kind"] == kind]
    return {"compression": rounded(sum(g["text_tokens"] for g in mine) / max(1, sum(g["memory_tokens"] for g in mine)), 3),
            "precision": rounded(mean([g["precision"] for g in mine]), 4), "n": len(mine)}


def prose_probe(model, settings: Settings, n: int, progress: bool = True) -> dict:
    """Held-out prose (whole documents that pretraining never saw) drawn as this run draws its memory and
    read back: eval.json's reconstruction.precision, .compression and .n."""
    from ocrmem.tasks.reading import make_reading_examples

    p = settings.pretrain
    examples = make_reading_examples("eval", n, p.n_chars, p.seed, (PROBE_KIND,))
    with tempfile.TemporaryDirectory(prefix="ocrmem-probe-") as tmp:
        ps = settings.model_copy(update={"data": settings.data.model_copy(update={"out_dir": tmp}),
                                         "eval": settings.eval.model_copy(update={"reconstruction_probe": True})})
        got = read_back(model, ps, examples, progress)
    return {f"reconstruction.{k}": v for k, v in kind_figures(got, PROBE_KIND).items()}


def format_table(rows: list[dict]) -> str:
    """The printed table: a line per text kind, precision (compression) per point."""
    points = list(dict.fromkeys(r["point"] for r in rows))
    by = {(r["text_kind"], r["point"]): r for r in rows}
    lines = [f"{'text kind':<12}" + "".join(f"{p:>18}" for p in points)]
    for kind in dict.fromkeys(r["text_kind"] for r in rows):
        cells = [by.get((kind, p)) for p in points]
        lines.append(f"{kind:<12}" + "".join(f"{c['precision']:>9.3f} ({c['compression']:.2f}x)" if c else f"{'-':>18}"
                                             for c in cells))
    return "precision (compression: text tokens per memory token) by render point:\n" + "\n".join(lines)
