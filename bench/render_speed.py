"""Rendering throughput: pages per second on one process and on all cores, Latin and CJK.

    python bench/render_speed.py [--page-size 1024] [--pages 96]

Draws full pages (the text fills each page) with the default font, with and without PNG encoding,
in one process and in a pool of 1..N processes, in one run; then the time to keep the end of a
2.2 MB history (layout wraps from the end backwards: its cost follows what is kept, not the length).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

# bench/ is the script's directory, so Python finds its siblings (common, shapes) without any path edits.
from common import machine, save, table

from ocrmem.memory.render import lines_per_page, png_bytes, render_pages
from ocrmem.settings import RenderSettings

LATIN = ("The quick brown fox jumps over the lazy dog while the committee reviews the quarterly memory "
         "report and writes down every number it can find. ")
CJK = "长上下文记忆把很长的对话历史渲染成页面图像，再由冻结的视觉编码器压缩成少量视觉令牌。日本語の文章も同じく描画します。"


def _page_text(script: str, rs: RenderSettings) -> str:
    unit = LATIN if script == "latin" else CJK
    chars_per_line = rs.page_size // (rs.font_size // 2 if script == "latin" else rs.font_size)
    return (unit * (chars_per_line * lines_per_page(rs) // len(unit) + 2))


def _work(args) -> int:
    script, page_size, n, encode = args
    rs = RenderSettings(page_size=page_size, max_pages=1, workers=1)
    text = _page_text(script, rs)
    for i in range(n):
        page = render_pages(text[i % 7:], rs).pages[0]
        if encode:
            png_bytes(page)
    return n


def rate(script: str, page_size: int, pages: int, procs: int, encode: bool) -> float:
    chunks = [pages // procs] * procs
    t0 = time.perf_counter()
    if procs == 1:
        _work((script, page_size, pages, encode))
    else:
        with ProcessPoolExecutor(procs) as ex:
            list(ex.map(_work, [(script, page_size, c, encode) for c in chunks]))
    return sum(chunks) / (time.perf_counter() - t0)


def truncation_seconds(reps: int = 3) -> float:
    """Median seconds to render the end of a 2.2 MB history onto 2 pages (was an assertion in test_render)."""
    rs = RenderSettings(page_size=512, font_size=24, max_pages=2)
    text = "a few words on a line\n" * 100_000
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        render_pages(text, rs)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--page-size", type=int, default=1024)
    ap.add_argument("--pages", type=int, default=96)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    procs = sorted({1, 2, cores} & set(range(1, cores + 1)))
    _work(("latin", args.page_size, 2, True))  # warm-up: font load, glyph cache
    rows = []
    for script in ("latin", "cjk"):
        for encode in (False, True):
            rates = [rate(script, args.page_size, args.pages, p, encode) for p in procs]
            rows.append([script, "draw + PNG" if encode else "draw", *rates, rates[-1] / rates[0]])
    header = ["text", "work", *[f"{p} proc pages/s" for p in procs], f"x{procs[-1]} vs 1"]
    text = table(f"1. rendering {args.page_size}px pages ({cores} cores)", header, rows)
    trunc = truncation_seconds()
    text += "\n" + table("truncation: the last 2 pages of a 2.2 MB history (512px, 24px font)", ["seconds"], [[trunc]])
    save(f"render-{args.page_size}.json", {"machine": machine(__import__('torch').device("cpu")), "rows": rows,
                                           "header": header, "table": text, "truncation_2_2mb_s": trunc})


if __name__ == "__main__":
    main()
