"""The validate stage: the config reads without error and its values fit together.

    ocrmem validate [--params params.yaml] [--static] [--write metrics/validate.json]

A bad config exits 2 with one line per bad field, before anything heavy loads. `--write` leaves
{"valid": true}: constant content, so a DVC stage depending on it reruns only when the verdict changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ocrmem.common.errors import ConfigError, UserError
from ocrmem.memory.hub import check_model_paths
from ocrmem.settings import Settings


def check_values(s: Settings) -> None:
    """Refuse values that are each valid but fail once used: a missing font file, a page geometry a
    weightless encoder cannot cut (e.g. pixel_downsample not dividing the line height)."""
    from ocrmem.memory.registry import ENCODERS, lookup

    bad = []
    font = s.render.font_path
    if font is not None and not Path(font).expanduser().is_file():
        bad.append(f"render.font_path = {font!r}: no such font file: point it at a TTF/OTF/TTC file, or set it "
                   "to null to use the bundled Noto Sans CJK")
    cls = lookup(ENCODERS, s.model.encoder, "encoder")
    if getattr(cls, "weightless", False):  # building it loads nothing, so its own checks run here
        try:
            cls.from_settings(s.model, s.render)
        except UserError as e:
            bad.append(f"model.encoder = {s.model.encoder!r}: {e}")
    if bad:
        raise ConfigError(bad)


def validate(settings: Settings, static: bool = True, out: str | os.PathLike | None = None) -> dict:
    """The validate stage: the config was read without error (load_settings) and its values fit together
    (check_values); unless `static`, model names must resolve too (check_model_paths; else ConfigError).
    On success writes {"valid": true} to `out`: constant content, so a stage depending on it reruns only
    when validation's verdict changes."""
    check_values(settings)
    if not static:
        check_model_paths(settings)
    if out is not None:
        from ocrmem.common.io import write_json

        write_json(out, {"valid": True}, indent=None)
    m = settings.model
    return {"valid": True, "encoder": m.encoder, "llm": m.base_llm_model_name, "projector": m.projector,
            "deepspeed": settings.train.deepspeed}


HELP = "check the config and exit (2 on a bad field)"
SETTINGS = "load"
METRICS = "metrics/validate.json"


def add_arguments(p) -> None:
    p.add_argument("--static", action="store_true",
                   help="check values only; local model paths are checked by the stages that load them")
    p.add_argument("--write", default=None, metavar="PATH",
                   help="on success also write {\"valid\": true} to PATH (the DVC stage's output)")


def run(args, s: Settings) -> int:
    v = validate(s, static=args.static, out=args.write)
    print(f"{args.params}: valid (encoder={v['encoder']}, llm={v['llm']}, projector={v['projector']}, "
          f"deepspeed={v['deepspeed']})")
    return 0
