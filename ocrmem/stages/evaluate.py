"""The evaluate stage: every condition on the same held-out examples, side by side.

    ocrmem evaluate [--params params.yaml] [--adapter DIR]      # ocrmem.evaluation.evaluate.evaluate

The adapter is refused before any model loads when its format, encoder, pooling or LLM width is not
the run's (ocrmem.memory.hub.check_adapter_against_run). The adapter itself is never written to: it
is the train stage's output (`ocrmem.common.card.export_adapter` copies it with these figures in its card).
"""

from __future__ import annotations

HELP = "every condition side by side -> metrics/eval.json"
SETTINGS = "models"
METRICS = "metrics/eval.json"


def add_arguments(p) -> None:
    p.add_argument("--adapter", default=None, help="adapter dir (default: train.output_dir/adapter)")


def run(args, s) -> int:
    from ocrmem.evaluation.evaluate import evaluate

    evaluate(s, adapter_dir=args.adapter)
    return 0
