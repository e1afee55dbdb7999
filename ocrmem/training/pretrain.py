"""Stage 1: a reader trained once on general text, shipped with the project, that stage 2 starts from.

    ocrmem pretrain [--params params.yaml]     # pretrain(settings) -> pretrained/reader, metrics/pretrain.json

LLaVA and DeepSeek-OCR align their projector once on a large general corpus and fine-tune from it per
task; OCR-MEM does the same. The projector and soft prompt learn to `reconstruct` the texts of
ocrmem.tasks.reading (real prose in English and Chinese, shuffled prose, random strings, chats, logs)
from their pages through the frozen LLM, after the usual alignment. The run's own model, render and
feature settings apply, so the reader fits the stage-2 runs that name it (`train.init_from`).
Held-out documents are then read back at each render point of `pretrain.points`: the Fox table.
A killed run resumes from its last checkpoint; render and encode redo nothing already done.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ocrmem.common.errors import ConfigError
from ocrmem.common.io import write_json
from ocrmem.settings import Settings
from ocrmem.tasks.reading import EVAL_KINDS, KINDS, make_reading_examples


def pretrain_settings(settings: Settings) -> Settings:
    """The run's settings with the pretrain section's data, steps and the reconstruction objective."""
    p = settings.pretrain
    data = settings.data.model_copy(update={"out_dir": p.out_dir, "max_target_tokens": p.max_target_tokens})
    train = settings.train.model_copy(update={
        "output_dir": p.output_dir, "max_steps": p.max_steps, "per_device_train_batch_size": p.batch_size,
        "learning_rate": p.learning_rate, "objectives": {"reconstruct": 1.0}, "init_from": None, "seed": p.seed})
    ev = settings.eval.model_copy(update={"conditions": [], "reconstruction_probe": True})
    return settings.model_copy(update={"data": data, "train": train, "eval": ev})


def corpus(settings: Settings) -> dict:
    p = settings.pretrain
    if unknown := [k for k in p.kinds if k not in KINDS]:
        raise ConfigError([f"pretrain.kinds: {', '.join(unknown)} is not a reading kind; use some of {', '.join(KINDS)}"])
    return {"train": make_reading_examples("train", p.n_train, p.n_chars, p.seed, tuple(p.kinds)),
            "eval": make_reading_examples("eval", p.n_eval, p.n_chars, p.seed, EVAL_KINDS)}


def ship(adapter_dir: Path, reader_dir: Path) -> None:
    """The trained adapter to reader_dir, whole or not at all: copied beside it, then renamed in place."""
    tmp = reader_dir.with_name(reader_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(adapter_dir, tmp)
    shutil.rmtree(reader_dir, ignore_errors=True)
    tmp.rename(reader_dir)


def pretrain(settings: Settings, progress: bool = True, resume: bool = True,
             metrics_path: str | Path = "metrics/pretrain.json") -> dict:
    """Render and encode the reading corpus, train the reader, read the held-out texts back at each point,
    ship the reader to pretrain.reader_dir and write the table to `metrics_path`; returns the metrics."""
    from ocrmem.data.features import encode
    from ocrmem.data.manifest import render
    from ocrmem.evaluation.reading import format_table, reading_table
    from ocrmem.memory.model import OcrMemModel
    from ocrmem.training.trainer import train

    t0, s, p = time.time(), pretrain_settings(settings), settings.pretrain
    examples = corpus(settings)
    render(s, progress, examples=examples)
    encode(s, progress=progress)
    model = OcrMemModel.build(s)
    trained = train(s, model=model, resume=resume, metrics_path=None)
    rows = reading_table(model.eval(), s, examples["eval"], list(p.points), Path(p.out_dir) / "points", progress)
    ship(s.adapter_dir, Path(p.reader_dir))
    metrics = {"table": rows, "train": trained, "seconds": round(time.time() - t0, 1),
               "corpus": {"train": len(examples["train"]), "eval": len(examples["eval"]),
                          "kinds": sorted({e.meta["kind"] for e in examples["train"]})}}
    write_json(metrics_path, metrics)
    print(format_table(rows))
    print(f"reader: {p.reader_dir} (train.init_from), table: {metrics_path}")
    return metrics
