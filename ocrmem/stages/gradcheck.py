"""The gradcheck stage: one real batch through the model; exit 1 when the gradient does not reach
the projector alone.

    ocrmem gradcheck [--params params.yaml]      # ocrmem.training.gradcheck.gradcheck
"""

from __future__ import annotations

HELP = "gradient-flow smoke test on one real batch"
SETTINGS = "models"
METRICS = "metrics/gradcheck.json"


def run(args, s) -> int:
    from ocrmem.training.gradcheck import gradcheck

    return 0 if gradcheck(s)["ok"] else 1
