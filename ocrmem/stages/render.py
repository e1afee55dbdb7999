"""The render stage: every split's examples drawn to pages, with a manifest and compression figures.

    ocrmem render [--params params.yaml]      # ocrmem.data.manifest.render
"""

from __future__ import annotations

HELP = "render history text to page images + manifest"
SETTINGS = "models"
METRICS = None


def run(args, s) -> int:
    from ocrmem.data.manifest import render

    render(s)
    return 0


def summary(params: str = "params.yaml") -> dict:
    """The render figures of all splits (rendered_dir/stats.json's total)."""
    from ocrmem.settings import load_settings
    from ocrmem.stages import read_json

    return read_json(load_settings(params).rendered_dir / "stats.json").get("total", {})
