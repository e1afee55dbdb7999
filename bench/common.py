"""Shared benchmark helpers: timing with warm-up and medians, peak memory, tables, result files."""

from __future__ import annotations

import datetime as dt
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 2, reps: int = 5) -> dict:
    """Median seconds of `reps` calls after `warmup`, and peak GPU memory (GiB) over them."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": reps, "peak_gib": peak}


def machine(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = None
    info = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "torch": torch.__version__, "python": platform.python_version(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["card"] = torch.cuda.get_device_name(device)
    else:
        info["card"] = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return info


def table(title: str, header: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [f"\n## {title}", line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
    text = "\n".join(out)
    print(text, flush=True)
    return text


def _fmt(c) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        return f"{c:.3g}" if abs(c) < 1000 else f"{c:,.0f}"
    return str(c)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nresults -> {path}")
    return path
