"""The memory benchmark: how much history the memory holds, where in it it fails, at which compression.

    ocrmem benchmark [--params params.yaml] [--size cpu|gpu] [--adapter DIR] [--kinds ...] [--pages ...]
                     [--depths ...] [--points ...] [--conditions ...]          # benchmark(settings, ...)
    ocrmem benchmark --points fs20 --no-report    # one point's results only (benchmark/dvc.yaml's matrix)
    ocrmem benchmark --report-only                # the report from the saved points (benchmark_report)

For each compression point (render settings that put more or less text on a line of the same
height, so the same trained adapter reads them at a different text-per-memory-token ratio), the
task generators of ocrmem/tasks/needles.py write a grid of kinds x lengths (pages) x needle depths x
samples; the grid is rendered (ocrmem/data/manifest.py, render.max_pages raised to the longest length) and
every condition of `eval.conditions` runs on it through evaluate's own machinery (the same inputs,
the same token budget per example, the trained text baselines' soft prompts): only the data differ.

Each point's results are saved under <data.out_dir>/benchmark/<point>/ (examples.jsonl, point.json)
before the report reads them, so DVC runs the points as separate stages and reruns only a changed one.

Outputs (under `out_dir`):
    metrics/benchmark.json            flat per point x condition figures + run facts (dvc metrics show)
    metrics/benchmark_examples.jsonl  per example: meta, token counts, each condition's answer
    plots/benchmark_cells.csv         point, condition, kind, lang, pages, depth -> accuracy, loss
    plots/benchmark_compression.csv   point, compression, condition -> accuracy, loss (the Fox-table shape)
    plots/benchmark_heatmaps/<point>.png, plots/benchmark_compression.png
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ocrmem.common.errors import UserError
from ocrmem.common.io import write_json, write_jsonl
from ocrmem.settings import BENCH_POINTS as POINTS
from ocrmem.settings import CONDITIONS, Settings
from ocrmem.tasks.haystack import LANGS
from ocrmem.tasks.needles import KINDS, make_needle_examples


@dataclass
class BenchSpec:
    """What one benchmark run covers."""

    kinds: tuple[str, ...]
    langs: tuple[str, ...]
    pages: tuple[int, ...]  # history lengths, in pages at each point's render settings
    depths: tuple[float, ...]
    samples: int  # examples per (kind, lang, pages, depth) cell
    points: tuple[str, ...] = ()  # empty: settings.benchmark.points
    batch_size: int = 4
    seed: int = 0
    conditions: tuple[str, ...] = field(default_factory=tuple)  # empty: settings.eval.conditions
    point_pages: tuple[int, ...] = field(default_factory=tuple)  # lengths off the trained point (empty: pages)
    score_loss: bool = True  # teacher-forced answer loss too (a second forward pass per example and condition)


# cpu: the full depth x length grid at the trained render settings, a short slice at the denser points;
# generation only, and the zero-shot text conditions left out (they answer in sentences: 0.00 exact in
# every evaluate run) so that it fits 15 minutes on 2 shared cores.
SIZES = {
    "cpu": BenchSpec(kinds=("niah_single",), langs=("en",), pages=(1, 2, 4, 16), depths=(0.0, 0.25, 0.5, 0.75, 1.0),
                     samples=1, point_pages=(1, 2), score_loss=False,
                     conditions=("no_memory", "truncated_text_trained", "ocr_memory", "full_text_trained")),
    "gpu": BenchSpec(kinds=KINDS, langs=LANGS, pages=(1, 2, 4, 8, 16, 32), depths=tuple(i / 10 for i in range(11)),
                     samples=8, batch_size=8),
}


def resolve_spec(size: str, points=None, **overrides) -> BenchSpec:
    """SIZES[size] at `points` with the given fields replaced (None: keep); refuses unknown names in one line."""
    if size not in SIZES:
        raise UserError(f"--size {size!r}: use one of {', '.join(SIZES)}")
    spec = SIZES[size]
    overrides["points"] = points
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    spec = BenchSpec(**{**spec.__dict__, **changes})
    for name, allowed, values in (("kinds", KINDS, spec.kinds), ("langs", LANGS, spec.langs),
                                  ("points", tuple(POINTS), spec.points), ("conditions", CONDITIONS, spec.conditions)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise UserError(f"--{name} {' '.join(map(str, bad))}: unknown; use any of {', '.join(allowed)}")
    if not spec.points:
        raise UserError("--points: name at least one compression point (or set benchmark.points in params.yaml)")
    if not spec.pages or min(spec.pages) < 1 or not spec.depths or not all(0 <= d <= 1 for d in spec.depths):
        raise UserError(f"--pages {spec.pages} / --depths {spec.depths}: pages are >= 1, depths fractions in [0, 1]")
    if spec.samples < 1:
        raise UserError(f"--samples {spec.samples}: at least 1")
    return spec


def point_dir(settings: Settings, point: str) -> Path:
    """Where one point's rendered grid and results live (one DVC stage's output)."""
    return Path(settings.data.out_dir) / "benchmark" / point


def point_settings(settings: Settings, point: str, spec: BenchSpec) -> Settings:
    """The settings one point runs under: its render overrides, pages enough for the longest history
    (+2: a history never loses its start), its own data dir, and the full text always scored."""
    render = settings.render.model_copy(update={**POINTS[point], "max_pages": max(spec.pages + spec.point_pages) + 2})
    data = settings.data.model_copy(update={"out_dir": str(point_dir(settings, point))})
    ev = settings.eval.model_copy(update={"reconstruction_probe": False, "probe_examples": 0,
                                          "full_text_max_tokens": 10**9})
    return settings.model_copy(update={"render": render, "data": data, "eval": ev})


def chars_per_page(rs, lang: str) -> int:
    """Characters of the benchmark's haystack prose that one page holds under `rs`."""
    from ocrmem.memory import render as R
    from ocrmem.tasks.haystack import corpus_sentences, join

    text = join(list(corpus_sentences(lang)[:400]), lang)
    _, cut = R.layout(text, rs.model_copy(update={"max_pages": 1}))
    return len(text) - cut


def trained_point(settings: Settings, point: str) -> bool:
    """Whether `point` renders as the adapter was trained (params.yaml's render settings)."""
    return all(getattr(settings.render, k) == v for k, v in POINTS[point].items())


def grid_examples(spec: BenchSpec, rs, first: bool = True) -> list:
    """Every example of the grid at render settings `rs` (lengths in pages become characters there);
    the points off the trained render settings (first=False) use `spec.point_pages` when set."""
    out, lengths = [], spec.pages if first or not spec.point_pages else spec.point_pages
    for lang in spec.langs:
        cpp = chars_per_page(rs, lang)
        for kind in spec.kinds:
            for pages in lengths:
                for depth in spec.depths:
                    exs = make_needle_examples(kind, lang, int(pages * cpp * 0.93), depth, spec.samples, spec.seed)
                    for e in exs:
                        e.meta["pages_asked"] = pages
                    out += exs
    return out


def render_grid(settings: Settings, examples: list) -> list[dict]:
    """Render the grid (a rerun with the same fingerprint draws nothing) and return its manifest rows."""
    from ocrmem.data.manifest import read_manifest, render_split
    from ocrmem.memory.encoder import tokens_per_line, tokens_per_page
    from ocrmem.memory.hub import load_tokenizer

    render_split(settings, "eval", examples, load_tokenizer(settings.model), tokens_per_page(settings),
                 progress=True, tokens_per_line=tokens_per_line(settings))
    return read_manifest(settings, "eval")


def _conditions(settings: Settings, spec: BenchSpec, asked=None) -> list[str]:
    """Conditions asked for (--conditions) as given; else the size's that eval.conditions runs (a pipeline
    without trained baselines has none to load), or all of eval.conditions."""
    ev = tuple(settings.eval.conditions)
    wanted = asked or ([c for c in spec.conditions if c in ev] if spec.conditions else ev)
    return [c for c in CONDITIONS if c in wanted]  # canonical order


def _soft_prompts(settings: Settings, conditions: list[str]) -> dict:
    """The trained text baselines' soft prompts (`ocrmem baselines`); a missing one is a one-line error."""
    from ocrmem.evaluation.conditions import TRAINED_TEXT, load_soft_prompt

    try:
        return {c: load_soft_prompt(settings, c) for c in conditions if c in TRAINED_TEXT}
    except FileNotFoundError as e:
        raise UserError(f"{e}; or leave the trained baselines out with --conditions") from None


def run_point(model, settings: Settings, point: str, spec: BenchSpec, conditions: list[str], soft: dict,
              progress: bool = True) -> tuple[list[dict], dict]:
    """One compression point: render its grid, run every condition through evaluate's machinery;
    returns (per-example records, the point's facts)."""
    from ocrmem.data.dataset import PixelPages
    from ocrmem.evaluation.conditions import with_budgets
    from ocrmem.evaluation.runner import condition_inputs, example_figures, example_record, run_conditions
    from ocrmem.memory.encoder import build_encoder

    t0 = time.perf_counter()
    ps = point_settings(settings, point, spec)
    model.encoder = build_encoder(model.settings.model, ps.render)  # the line grid of this point's pages
    rows = with_budgets(model, render_grid(ps, grid_examples(spec, ps.render, first=trained_point(settings, point))))
    tok, mtpp = model.tokenizer, model.memory_tokens_per_page
    f = example_figures(tok, rows, mtpp)
    inputs, _ = condition_inputs(ps, tok, mtpp, rows, f.hist, conditions)
    budgets = [len(it.target_ids) + 2 for it in inputs[conditions[0]]]  # every condition has the same targets
    pages = PixelPages(ps.rendered_dir, model.encoder)
    results, _, seconds = run_conditions(model, inputs, None, rows, pages, spec.batch_size, budgets, progress, soft,
                                         desc=f"benchmark {point}", score_loss=spec.score_loss)
    examples = [{**example_record(i, r, f, inputs, results, None), "point": point, "meta": r["meta"]}
                for i, r in enumerate(rows)]
    facts = {"compression": round(sum(f.kept_tok) / max(1, sum(f.mem_tok)), 4), "examples": len(rows),
             "examples_cut": sum(1 for r in rows if r.get("cut_chars", 0) > 0),
             "pages_mean": round(sum(len(r["pages"]) for r in rows) / len(rows), 3),
             "memory_tokens_mean": round(sum(f.mem_tok) / len(rows), 1),
             "history_tokens_mean": round(sum(map(len, f.hist)) / len(rows), 1),
             "seconds": round(time.perf_counter() - t0, 1), **{f"seconds.{c}": round(s, 1) for c, s in seconds.items()},
             "render": POINTS[point]}
    return examples, facts


def benchmark(settings: Settings, size: str | None = None, adapter_dir: str | Path | None = None,
              out_dir: str | Path = ".", progress: bool = True, model=None, report: bool = True,
              points: list[str] | None = None, **overrides) -> dict | None:
    """The benchmark on a trained adapter (default train.output_dir/adapter): every point (default
    benchmark.points) of the chosen size's grid (default benchmark.size; fields overridable: kinds,
    langs, pages, depths, samples, conditions, batch_size, seed). Saves each point's results, then
    (report=True) writes metrics/benchmark.json, its CSVs and PNGs and returns the metrics."""
    from ocrmem.common.tracking import check_key
    from ocrmem.evaluation.runner import load_adapter_model

    size = size or settings.benchmark.size
    spec = resolve_spec(size, points or settings.benchmark.points, **overrides)
    check_key(settings)  # a missing WandB key stops before anything loads
    conditions = _conditions(settings, spec, overrides.get("conditions"))
    soft = _soft_prompts(settings, conditions)
    model = (model if model is not None else load_adapter_model(settings, adapter_dir)).eval()
    run = {"size": size, "conditions": conditions, "spec": dict(spec.__dict__)}  # what every point ran
    for point in spec.points:
        examples, facts = run_point(model, settings, point, spec, conditions, soft, progress)
        save_point(point_dir(settings, point), examples, {"facts": facts, "run": run})
        print(f"benchmark {point}: {len(examples)} examples, compression {facts['compression']:.2f}, "
              f"{facts['seconds']:.0f}s -> {point_dir(settings, point)}")
    return benchmark_report(settings, out_dir, list(spec.points)) if report else None


def save_point(directory: Path, examples: list[dict], point: dict) -> None:
    """A point's per-example records, then its facts: point.json is written last, so it marks a complete point."""
    (directory / "point.json").unlink(missing_ok=True)
    write_jsonl(directory / "examples.jsonl", examples)
    write_json(directory / "point.json", point)


def benchmark_report(settings: Settings, out_dir: str | Path = ".", points: list[str] | None = None) -> dict:
    """The report of saved points (default benchmark.points): aggregates, writes metrics/benchmark.json,
    the CSVs and PNGs, logs WandB panels; returns the metrics. A point not yet run is a one-line error."""
    from ocrmem.evaluation.benchmark_report import aggregate, log_benchmark, write_outputs

    points = points or settings.benchmark.points
    facts, runs, examples = {}, {}, []
    for p in points:
        d = point_dir(settings, p)
        if not (d / "point.json").exists():
            raise UserError(f"benchmark point {p!r} has no results in {d}: run `ocrmem benchmark --points {p}` "
                            "(or `dvc repro benchmark/dvc.yaml`) first")
        saved = json.loads((d / "point.json").read_text())
        facts[p], runs[p] = saved["facts"], saved["run"]
        examples += [json.loads(line) for line in (d / "examples.jsonl").read_text().splitlines() if line]
    first = runs[points[0]]
    conditions, spec = first["conditions"], BenchSpec(**{**first["spec"], "points": tuple(points)})
    mixed = [p for p in points if runs[p]["conditions"] != conditions]
    if mixed:
        raise UserError(f"benchmark points {mixed} ran other conditions than {points[0]!r}: rerun them")
    cells, curve = aggregate(examples, facts, conditions)
    metrics = {"size": first["size"], "n_examples": len(examples), "conditions": conditions,
               "spec": {**first["spec"], "points": list(points)}, "points": facts,
               **{f"{r['point']}.{r['condition']}.{k}": r[k] for r in curve for k in ("exact_match", "contains", "loss")},
               "seconds.total": round(sum(f["seconds"] for f in facts.values()), 1)}
    pngs = write_outputs(Path(out_dir), metrics, examples, cells, curve, spec)
    log_benchmark(settings, metrics, cells, curve, pngs)
    return metrics
