"""The Fox table against the critics' controls: what each projector kind reads back, by text kind and
compression, beside the mean-pool and truncated-text controls at the same memory-token budget.

    ocrmem fox [--params params.yaml]    # fox(settings) -> metrics/fox.json, plots/fox.csv, fox_curves.csv, fox.png

Each kind of `fox.projectors` learns to `reconstruct` stage 1's corpus (ocrmem.training.pretrain: the same
texts, pages and features, so one render and one encode serve every kind) for `fox.max_steps` steps. The
held-out texts (whole documents never trained on) are then drawn at each render point of `pretrain.points`
and read back (ocrmem.evaluation.reading). The controls, at each text's own memory-token budget:
  mean_pool       a projector kind: the frames of a memory token averaged (their order lost) through the
                  same MLP, arXiv 2512.03643's control; it runs when fox.projectors lists it.
  truncated_text  the text's most recent tokens, as many as its memory costs, taken as the answer itself:
                  the best any reader of the truncated text could do, so it is never tuned to lose.
A row per (text kind, projector, point): `compression` (text tokens / memory tokens, measured), `precision`
(the Fox table's: the share of the answer's words found in the text), `accuracy` (1 - edit distance / the
page text's length, so what the memory lost counts) and `n`. A killed run resumes: a finished kind is read
from its directory, an unfinished one from its last checkpoint; a directory trained under other settings
starts over.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ocrmem.common.io import write_csv, write_json
from ocrmem.evaluation.conditions import history_ids, recent_tokens
from ocrmem.evaluation.fox_report import format_table, plot
from ocrmem.evaluation.reading import kind_figures, point_settings, read_back
from ocrmem.evaluation.scoring import char_precision, mean, rounded, word_precision
from ocrmem.settings import Settings
from ocrmem.training.pretrain import corpus, pretrain_settings

CONTROL = "truncated_text"
KEY, DONE = "run.json", "fox_rows.json"  # in each kind's directory: what it was trained under; its finished rows
# Settings that do not change what a kind learns or reads (a change resumes instead of starting over).
UNKEYED = {"train": {"output_dir", "max_steps", "report_to", "logging_steps", "save_steps", "save_total_limit",
                     "dataloader_num_workers", "gradcheck_at_start"},
           "pretrain": {"output_dir", "reader_dir", "points", "max_steps"}}


def kind_settings(settings: Settings, kind: str) -> Settings:
    """Stage 1's settings with projector `kind`, its own checkpoint dir and fox.max_steps."""
    s = pretrain_settings(settings)
    model = s.model.model_copy(update={"projector": kind})
    train = s.train.model_copy(update={"output_dir": str(Path(settings.fox.output_dir) / kind),
                                       "max_steps": settings.fox.max_steps})
    return s.model_copy(update={"model": model, "train": train})


def run_key(s: Settings) -> dict:
    """What a kind's checkpoints depend on."""
    d = s.model_dump(mode="json", include={"model", "render", "data", "features", "train", "pretrain"})
    for section, fields in UNKEYED.items():
        for f in fields:
            d[section].pop(f, None)
    return d


def finished(kdir: Path, key: dict, want: dict) -> dict | None:
    """A kind's saved result when its directory holds one for `key` and `want` (steps, points, the eval
    settings it was read back with); else None, after clearing a directory that other settings trained."""
    saved = json.loads((kdir / KEY).read_text()) if (kdir / KEY).is_file() else None
    if saved is not None and saved != key:
        print(f"{kdir}: trained under other settings; starting it over")
        shutil.rmtree(kdir)
    kdir.mkdir(parents=True, exist_ok=True)
    write_json(kdir / KEY, key)
    done = json.loads((kdir / DONE).read_text()) if (kdir / DONE).is_file() else None
    return done if done and {k: done.get(k) for k in want} == want else None


def loss_curve():
    """A callback that keeps the run's logged training loss, steps of a resumed run included."""
    from transformers import TrainerCallback

    class LossCurve(TrainerCallback):
        points: list[dict] = []

        def on_train_end(self, args, state, control, **kw):
            self.points = [{"step": h["step"], "loss": round(h["loss"], 5)} for h in state.log_history if "loss" in h]

    return LossCurve()


def run_kind(settings: Settings, kind: str, examples: list, progress: bool) -> dict:
    """Train projector `kind` (or resume it) and read the held-out texts back at every point."""
    from ocrmem.memory.model import OcrMemModel
    from ocrmem.training.trainer import train

    s, points = kind_settings(settings, kind), list(settings.pretrain.points)
    kdir = Path(s.train.output_dir)
    want = {"steps": settings.fox.max_steps, "points": points, "eval": settings.eval.model_dump(mode="json")}
    if done := finished(kdir, run_key(s), want):
        print(f"{kind}: read from {kdir / DONE}")
        return done
    model, curve = OcrMemModel.build(s), loss_curve()
    trained = train(s, model=model, callbacks=[curve], metrics_path=None)
    pages = Path(settings.pretrain.out_dir) / "points"  # shared by the kinds and by `ocrmem pretrain`
    got = {p: read_back(model.eval(), point_settings(s, p, pages), examples, progress) for p in points}
    done = {**want, "parameters": trained["trainable_parameters"], "curve": curve.points, "read": got}
    write_json(kdir / DONE, done)
    return done


def truncated(tokenizer, got: list[dict]) -> list[dict]:
    """The truncated-text control of each read-back text: its last `memory_tokens` tokens as the answer."""
    cut = [tokenizer.decode(recent_tokens(history_ids(tokenizer, g["text"]), g["memory_tokens"])) for g in got]
    return [{**g, "prediction": p, "precision": char_precision(p, g["text"])} for g, p in zip(got, cut)]


def rows_of(projector: str, point: str, got: list[dict], parameters: int | None) -> list[dict]:
    """A row per text kind: compression (summed tokens), precision and accuracy (means over texts), n."""
    rows = []
    for kind in dict.fromkeys(g["kind"] for g in got):
        fig = kind_figures(got, kind)  # its "precision" is read_back's 1 - edit distance / length: accuracy
        words = mean([word_precision(g["prediction"], g["text"]) for g in got if g["kind"] == kind])
        rows.append({"text_kind": kind, "projector": projector, "point": point, "compression": fig["compression"],
                     "precision": rounded(words, 4), "accuracy": fig["precision"], "n": fig["n"],
                     "parameters": parameters})
    return rows


def fox(settings: Settings, progress: bool = True, metrics_path: str | Path = "metrics/fox.json",
        plots_dir: str | Path = "plots") -> list[dict]:
    """Render and encode stage 1's corpus (once), train and read back each projector kind, add the
    truncated-text control; write the table, its curves and the PNG; returns the rows."""
    from ocrmem.data.features import encode
    from ocrmem.data.manifest import render
    from ocrmem.memory.hub import load_tokenizer

    s0, examples = pretrain_settings(settings), corpus(settings)
    render(s0, progress, examples=examples)
    encode(s0, progress=progress)
    results = {k: run_kind(settings, k, examples["eval"], progress) for k in settings.fox.projectors}
    tok = load_tokenizer(settings.model)
    first = next(iter(results.values()))["read"]  # every kind's memory costs the same tokens: one control
    rows = [r for p, got in first.items() for r in rows_of(CONTROL, p, truncated(tok, got), None)]
    for kind, res in results.items():
        rows += [r for p, got in res["read"].items() for r in rows_of(kind, p, got, res["parameters"])]
    curves = [{"projector": k, **c} for k, res in results.items() for c in res["curve"]]
    write_outputs(rows, curves, Path(metrics_path), Path(plots_dir))
    print(format_table(rows))
    return rows


def write_outputs(rows: list[dict], curves: list[dict], metrics_path: Path, plots_dir: Path) -> None:
    write_json(metrics_path, rows)
    write_csv(plots_dir / "fox.csv", list(rows[0]), rows)
    write_csv(plots_dir / "fox_curves.csv", ["projector", "step", "loss"], curves)
    plot(rows, curves, plots_dir / "fox.png")
