"""Multi-page memory (training and evaluation with render.max_pages > 1) and `ocrmem benchmark` end to
end on the tiny pipeline: its grid, its token budgets, its files, its one-line errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from ocrmem.tasks.needles import make_needle_examples


def _long_examples(n: int, split: str, n_chars: int = 2500) -> list:
    exs = []
    for i in range(n):
        for e in make_needle_examples("niah_single", "en", n_chars, (i % 5) / 4, seed=i, id_prefix=split):
            exs.append(e)
    return exs


def test_training_and_evaluation_with_multi_page_memory(make_settings, tmp_path):
    """Histories of 3+ pages: rendered whole, trained on (every page's memory reaches the LLM and
    proj moves), evaluated with the OCR memory costing every page's tokens."""
    from transformers import AutoTokenizer

    from ocrmem.data.features import encode
    from ocrmem.data.manifest import read_manifest, render_dataset
    from ocrmem.evaluation.evaluate import evaluate
    from ocrmem.memory import OcrMemModel, tokens_per_page
    from ocrmem.training.trainer import train

    s = make_settings(render={"max_pages": 5}, eval={"conditions": ["no_memory", "truncated_text", "ocr_memory"],
                                                     "reconstruction_probe": False})
    tok = AutoTokenizer.from_pretrained(s.model.base_llm_model_name)
    render_dataset(s, tokenizer=tok, tokens_per_page=tokens_per_page(s), progress=False,
                   examples={"train": _long_examples(8, "train"), "eval": _long_examples(4, "eval")})
    encode(s, progress=False)
    rows = read_manifest(s, "train")
    assert min(len(r["pages"]) for r in rows) >= 3 and all(r["cut_chars"] == 0 for r in rows)
    model = OcrMemModel.build(s)
    before = {n: p.detach().clone() for n, p in model.trainable_parameters()}
    m = train(s, model=model, metrics_path=tmp_path / "train.json")
    assert math.isfinite(m["eval_loss_after"])
    assert all(not torch.equal(before[n], p) for n, p in model.trainable_parameters())
    metrics = evaluate(s, model=model, out_dir=tmp_path, progress=False)
    assert metrics["pages.mean"] >= 3
    assert metrics["ocr_memory.memory_tokens"] >= 3 * model.memory_tokens_per_page * 0.5
    assert metrics["truncated_text.budget_matched"] == 1.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_models):
    """A tiny adapter trained for 2 steps; its settings."""
    from conftest import tiny_settings_dict

    from ocrmem.memory import OcrMemModel
    from ocrmem.settings import Settings
    from ocrmem.training.trainer import train

    root = tmp_path_factory.mktemp("bench")
    s = Settings.model_validate(tiny_settings_dict(root, tiny_models, train={"max_steps": 2, "align_steps": 0,
                                                                              "gradcheck_at_start": False}))
    from transformers import AutoTokenizer

    from ocrmem.data.features import encode
    from ocrmem.data.manifest import render_dataset
    from ocrmem.memory import tokens_per_page

    tok = AutoTokenizer.from_pretrained(s.model.base_llm_model_name)
    render_dataset(s, tokenizer=tok, tokens_per_page=tokens_per_page(s), progress=False)
    encode(s, progress=False)
    train(s, model=OcrMemModel.build(s), metrics_path=root / "train.json")
    return s


def test_benchmark_end_to_end(trained, tmp_path):
    from ocrmem.evaluation.benchmark import benchmark, benchmark_report

    conds = ["no_memory", "truncated_text", "ocr_memory", "full_text"]
    m = benchmark(trained, size="cpu", out_dir=tmp_path, progress=False, pages=[1, 3], depths=[0.0, 0.5, 1.0],
                  points=["fs24", "fs16"], conditions=conds, kinds=["niah_single", "conversation"], langs=["en", "zh"],
                  point_pages=[1, 3], score_loss=True)
    assert m["n_examples"] == 2 * 2 * 2 * 2 * 3  # points x kinds x langs x lengths x depths
    assert set(m["points"]) == {"fs24", "fs16"}
    assert m["points"]["fs16"]["compression"] > m["points"]["fs24"]["compression"]  # denser text per token
    assert all(p["examples_cut"] == 0 for p in m["points"].values())
    examples = [json.loads(x) for x in (tmp_path / "metrics/benchmark_examples.jsonl").read_text().splitlines()]
    long = [e for e in examples if e["meta"]["pages_asked"] == 3]
    assert min(e["pages"] for e in long) >= 2  # the length axis really is pages
    for e in examples:  # every condition at the OCR memory's budget (evaluate's own inputs)
        c = e["conditions"]
        assert c["truncated_text"]["text_memory_tokens"] == min(c["ocr_memory"]["memory_tokens"], e["history_tokens"])
        assert c["full_text"]["text_memory_tokens"] == e["history_tokens"] and not c["full_text"]["skipped"]
    cells = list(csv.DictReader((tmp_path / "plots/benchmark_cells.csv").open()))
    assert len(cells) == 2 * 4 * 2 * 2 * 2 * 3  # points x conditions x kinds x langs x lengths x depths
    assert all(0 <= float(r["exact_match"]) <= 1 and r["loss"] for r in cells)
    curve = list(csv.DictReader((tmp_path / "plots/benchmark_compression.csv").open()))
    assert len(curve) == 2 * 4 and all(int(r["n"]) == 24 for r in curve)
    for p in ("heatmaps/fs24", "heatmaps/fs16", "compression"):
        assert (tmp_path / f"plots/benchmark_{p}.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "metrics/benchmark.json").read_text())["fs24.ocr_memory.exact_match"] is not None
    # The report of the saved points (benchmark/dvc.yaml's benchmark_report stage) is the run's own report.
    again = benchmark_report(trained, out_dir=tmp_path / "again", points=["fs24", "fs16"])
    assert again == json.loads(json.dumps(m))
    assert (tmp_path / "again/plots/benchmark_cells.csv").read_text() == (tmp_path / "plots/benchmark_cells.csv").read_text()


def test_benchmark_scores_the_answers_it_got(trained, tmp_path, monkeypatch):
    """Accuracy comes from the predictions: a model that always answers the target scores 1."""
    from ocrmem.evaluation import runner
    from ocrmem.evaluation.benchmark import benchmark

    def oracle(model, condition, items, rows, pages, bs, max_new_tokens, bar, score_loss=True):
        return [(1.0, len(it.target_ids)) for it in items], [r["target"] for r in rows]

    monkeypatch.setattr(runner, "_run_condition", oracle)
    m = benchmark(trained, size="cpu", out_dir=tmp_path, progress=False, pages=[1], depths=[0.5], points=["fs24"],
                  conditions=["no_memory", "ocr_memory"])
    assert m["fs24.no_memory.exact_match"] == 1.0 and m["fs24.ocr_memory.exact_match"] == 1.0


def test_benchmark_logs_its_panels_to_wandb(trained, tmp_path, monkeypatch):
    """With tracking on, the report logs the cell and compression tables, the curve and every PNG (offline run files)."""
    from ocrmem.evaluation import runner
    from ocrmem.evaluation.benchmark import benchmark

    monkeypatch.setattr(runner, "_run_condition", lambda model, c, items, rows, *a, **k: (
        [(1.0, len(it.target_ids)) for it in items], [r["target"] for r in rows]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    s = trained.model_copy(update={"tracking": trained.tracking.model_copy(update={"wandb_mode": "offline"})})
    benchmark(s, size="cpu", out_dir=tmp_path, progress=False, pages=[1], depths=[0.5], points=["fs24", "fs16"],
              conditions=["no_memory", "ocr_memory"])
    files = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "wandb").glob("offline-run-*/files/media/**/*")]
    for panel in ("table/benchmark/cells_", "table/benchmark/compression_", "images/benchmark/benchmark_compression_",
                  "images/benchmark/heatmap_fs24_", "images/benchmark/heatmap_fs16_"):
        assert any(panel in f for f in files), (panel, files)


@pytest.mark.parametrize("args, says", [
    (["--size", "huge"], "--size 'huge'"),
    (["--kinds", "nope"], "--kinds nope"),
    (["--points", "fs99"], "--points fs99"),
    (["--depths", "1.5"], "--depths"),
    (["--report-only", "--points", "fs13"], "benchmark point 'fs13' has no results"),
])
def test_benchmark_refuses_bad_input_in_one_line(trained, tmp_path, capsys, args, says):
    import yaml

    from ocrmem.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(json.loads(trained.model_dump_json())))
    assert main(["benchmark", "--params", str(params), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
