"""The encode stage: the frozen encoder runs once over the rendered pages; training reads the cache.

    ocrmem encode [--params params.yaml]      # ocrmem.data.features.encode
"""

from __future__ import annotations

HELP = "cache the frozen encoder's features of every page"
SETTINGS = "models"
METRICS = None


def run(args, s) -> int:
    from ocrmem.data.features import encode

    encode(s)
    return 0
