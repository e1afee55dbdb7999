"""The baselines stage: the trained text baselines' soft prompts, at the OCR memory's budget.

    ocrmem baselines [--params params.yaml]      # ocrmem.training.baselines.baselines
"""

from __future__ import annotations

HELP = "train the text baselines' soft prompts (same budget as OCR memory)"
SETTINGS = "models"
METRICS = "metrics/baselines.json"


def run(args, s) -> int:
    from ocrmem.training.baselines import baselines

    baselines(s)
    return 0
