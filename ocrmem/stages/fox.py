"""The fox stage: the Fox table of each projector kind of `fox.projectors` beside the critics' controls
(mean-pooled frames, truncated text), by text kind and compression point.

    ocrmem fox [--params params.yaml]      # ocrmem.evaluation.fox.fox -> metrics/fox.json, plots/fox*.csv, fox.png

Trains every kind on stage 1's corpus (`pretrain` settings; its render and encode are shared), so it takes
about as long as `ocrmem pretrain` once per kind: benchmark/dvc.yaml's `fox` stage, outside the default
`dvc repro`. Resumable per kind.
"""

from __future__ import annotations

HELP = "projector kinds and the critics' controls read back by text kind and compression -> metrics/fox.json"
SETTINGS = "models"
METRICS = "metrics/fox.json"


def run(args, s) -> int:
    from ocrmem.evaluation.fox import fox

    fox(s)
    return 0
