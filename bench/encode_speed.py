"""Ingest speed: the PP-OCRv6 recognizer bare vs OCR-MEM's path, ink-width strips, cores, batching.

    python bench/encode_speed.py --out bench/results/encode-speed-cpu.json            # ~6 min on 2 cores
    python bench/encode_speed.py --quick --out bench/results/encode-speed-quick.json  # < 2 min

All in one process, interleaved call by call, in CPU time of this single-threaded process (wall clock
on a shared machine counts other jobs' turns; ratios are medians of back-to-back pairs):
  ms_per_line_bare     the rapidocr wheel's ONNX graph as shipped (CTC head included), one line at a
                       time, on 48 x 768 strips already normalised (the time of the model alone)
  ms_per_line_ocrmem   `LineRecognizerEncoder` (full-width strips, line cache off) on the pages those
                       strips come from: crop, scale, normalise, features; per inked line
  ratio                ms_per_line_ocrmem / ms_per_line_bare (issue 24's target: <= 1.1)
  ms_per_line_ctc_and_neck  the graph OCR-MEM ran before issue 24 (CTC head and neck as outputs)
  prose_page_speedup   encode time of a prose page (GPL-3, else the KJV corpus) with full-width
                       strips over ink-width strips (model.recognizer_ink_width; target >= 1.5)
  pages_per_s          draw + encode of distinct prose pages, one core and every core (threads)
  batching             ms a line at each width bucket for a batch of 1, 4, 16 strips (one thread)
  whole_text           over every page of the text, no model run: mean ink end and strip width of
                       an inked line as fractions of the full width; lines holding only the line
                       above's descenders (read at full width before, not read now); the speed-up
                       bound if time grew with width alone
Render settings are params.yaml's. Every encoder runs one onnxruntime thread a line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocrmem.memory.hub import resolve_onnx  # noqa: E402
from ocrmem.memory.recognizer import LAYERS, LineRecognizerEncoder, ort_session, width_buckets  # noqa: E402
from ocrmem.memory.render import draw_page, layout, load_font  # noqa: E402
from ocrmem.settings import Settings, load_settings  # noqa: E402

GPL = Path("/usr/share/common-licenses/GPL-3")
NECK = LAYERS["neck"][0]
KJV = Path(__file__).resolve().parents[1] / "ocrmem" / "tasks" / "corpora" / "kjv_en.txt"


def prose() -> tuple[str, str]:
    """(name, text) of real prose: the GPL-3 licence when the system has it, else the KJV corpus."""
    path = GPL if GPL.is_file() else KJV
    return path.name, path.read_text(encoding="utf-8")


def prose_pages(settings: Settings, n: int) -> list[list[str]]:
    """The lines of the first n full pages of prose (the licence's preamble skipped)."""
    from ocrmem.memory.render import clean_line, lines_per_page

    text = prose()[1]
    text = text[text.find("Preamble"):] if "Preamble" in text else text
    rs = settings.render.model_copy(update={"max_pages": 10 * n})  # every line, not only the last page's
    spans = layout(text[:2000 * n], rs)[0]
    per = lines_per_page(rs)
    pages = [[clean_line(text[a:b]) for a, b in spans[i:i + per]] for i in range(0, per * n, per)]
    assert all(len(p) == per for p in pages), "the prose ran out: fewer full pages than asked"
    return pages


def encoders(settings: Settings, threads: int = 1) -> dict[str, LineRecognizerEncoder]:
    ms, rs, path = settings.model, settings.render, resolve_onnx(settings.model.ocr_model_name)
    return {ink: LineRecognizerEncoder(path, rs, ms.recognizer_layer, ms.token_pool, cache_lines=0,
                                       ink_width=ink == "ink", threads=threads) for ink in ("full", "ink")}


def timed(fn, reps: int) -> float:
    """Median CPU seconds of this process over `reps` calls: every run here is single-threaded, and CPU
    time is what other jobs on a shared machine sway least (wall clock counts their turns too)."""
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def line_costs(settings: Settings, pages, rounds: int) -> dict:
    """Bare graph vs OCR-MEM's path on the same full-width strips, alternating call by call."""
    import onnx

    enc = encoders(settings)["full"]
    pixels = enc.preprocess([draw_page(p, settings.render) for p in pages])
    strips = [s for s in enc.line_strips(pixels) if s is not None]
    xs = [np.repeat((s.astype(np.float32) / 127.5 - 1.0)[None, None], 3, axis=1) for s in strips]
    bare = ort_session(onnx.load(str(enc.path)))
    both = onnx.load(str(enc.path))  # what OCR-MEM ran before issue 24: CTC posteriors and the neck
    both.graph.output.append(onnx.helper.make_tensor_value_info(NECK, onnx.TensorProto.FLOAT, None))
    both = ort_session(both)
    runs = {"bare": lambda: [bare.run(None, {"x": x}) for x in xs], "ocrmem": lambda: enc(pixels),
            "ctc_and_neck": lambda: [both.run(None, {"x": x}) for x in xs]}
    times = {k: [] for k in runs}
    for _ in range(rounds + 1):  # the first round warms up
        for k, fn in runs.items():
            times[k].append(timed(fn, 1) / len(xs) * 1e3)
    times = {k: v[1:] for k, v in times.items()}
    ms = {k: statistics.median(v) for k, v in times.items()}
    paired = statistics.median(o / b for o, b in zip(times["ocrmem"], times["bare"]))
    return {"lines": len(xs), "strip": list(strips[0].shape), "ms_per_line_bare": ms["bare"],
            "ms_per_line_ocrmem": ms["ocrmem"], "ratio": paired, "ms_per_line_ctc_and_neck": ms["ctc_and_neck"],
            "rounds_ms": times}


def prose_speedup(settings: Settings, pages, rounds: int) -> dict:
    """Full-width vs ink-width encode of the same prose pages, page by page, alternating; the median
    of the paired ratios; widths the ink-width strips get."""
    encs = encoders(settings)
    pixels = [encs["full"].preprocess([draw_page(p, settings.render)]) for p in pages]
    widths = [s.shape[1] for px in pixels for s in encs["ink"].line_strips(px) if s is not None]
    for e in encs.values():
        e(pixels[0])  # warm-up
    full, ink = [], []
    for _ in range(rounds):
        for px in pixels:
            full.append(timed(lambda: encs["full"](px), 1))
            ink.append(timed(lambda: encs["ink"](px), 1))
    return {"prose_page_speedup": statistics.median(f / i for f, i in zip(full, ink)),
            "s_per_page_full": statistics.median(full), "s_per_page_ink": statistics.median(ink),
            "ink_fraction": sum(widths) / (len(widths) * encs["full"].width),
            "width_histogram": {str(w): widths.count(w) for w in sorted(set(widths))}}


def pages_per_second(settings: Settings, pages, ink: bool) -> dict:
    """Draw + encode distinct pages: one thread, then every core (the encoder's line threads)."""
    font = load_font(settings.render.font_path, settings.render.font_size)
    cores = os.cpu_count() or 1
    out = {"cores": cores, "ink_width": ink}
    for label, threads in (("per_core", 1), ("all_cores", cores)):
        enc = encoders(settings, threads)["ink" if ink else "full"]
        enc(enc.preprocess([draw_page(pages[0], settings.render, font)]))  # warm-up: session, blank features
        t0 = time.perf_counter()
        for i in range(0, len(pages), 4):  # 4 pages a call, like a small encode batch
            enc(enc.preprocess([draw_page(p, settings.render, font) for p in pages[i:i + 4]]))
        out[f"pages_per_s_{label}"] = len(pages) / (time.perf_counter() - t0)
    return out


def batching(settings: Settings, pages, sizes: list[int], reps: int, lines: int = 16) -> dict:
    """ms a line at each width bucket and batch size, one thread (the memory reads lines alone: the
    last bits of a row change with its batch)."""
    enc = encoders(settings)["ink"]
    strips = [s for s in encoders(settings)["full"].line_strips(
        enc.preprocess([draw_page(p, settings.render) for p in pages])) if s is not None]
    sess, rows = ort_session(enc.features_graph()), {}
    for w in width_buckets(enc.width, 8 * settings.model.token_pool):
        x = np.stack([s[:, :w] for s in strips])[:, None].astype(np.float32) / 127.5 - 1.0
        x = np.repeat(x, 3, axis=1)
        row = {}
        for bs in sizes:
            n = max(bs, lines // bs * bs)
            xb = np.resize(x, (n,) + x.shape[1:])
            run = lambda: [sess.run(None, {"x": xb[i:i + bs]}) for i in range(0, n, bs)]  # noqa: E731
            run()
            row[str(bs)] = timed(run, reps) / n * 1e3
        rows[str(w)] = row
    return rows


def whole_text_widths(settings: Settings) -> dict:
    """Over every page of the prose (no model run): the mean ink end and ink-width strip width of an
    inked line, as fractions of the full strip. Encode time grows with width, so 1 / the bucket
    fraction bounds what ink-width strips can save on this text."""
    from ocrmem.memory.recognizer import INK, INK_TOP
    from ocrmem.memory.render import clean_line, lines_per_page

    text, encs = prose()[1], encoders(settings)
    rs = settings.render.model_copy(update={"max_pages": 10**4})
    spans, per = layout(text, rs)[0], lines_per_page(rs)
    font, ends, widths, spill = load_font(rs.font_path, rs.font_size), [], [], 0
    for i in range(0, len(spans), per):
        px = encs["full"].preprocess([draw_page([clean_line(text[a:b]) for a, b in spans[i:i + per]], rs, font)])
        for full, cut in zip(encs["full"].line_strips(px), encs["ink"].line_strips(px)):
            spill += full is not None and cut is None  # only the line above's descenders: not read
            if cut is not None:
                ends.append(int(np.flatnonzero(full[INK_TOP:].min(0) < INK)[-1]) + 1)
                widths.append(cut.shape[1])
    w = encs["full"].width
    return {"pages": -(-len(spans) // per), "inked_lines": len(ends), "descender_only_lines": spill,
            "ink_end_fraction": float(np.mean(ends)) / w, "bucket_fraction": float(np.mean(widths)) / w,
            "speedup_bound": (len(ends) + spill) * w / float(np.sum(widths))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer pages and rounds (< 2 min on 2 cores)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args()
    settings = load_settings(a.params)
    if settings.model.encoder != "ppocr_rec":
        settings = Settings.model_validate({**settings.model_dump(), "model": {
            **settings.model.model_dump(), "encoder": "ppocr_rec", "ocr_model_name": "rapidocr:PP-OCRv6_rec_small"}})
    n_pages, rounds = (2, 2) if a.quick else (6, 4)
    pages = prose_pages(settings, n_pages)
    t0 = time.perf_counter()
    res = {"text": prose()[0], "pages": n_pages, "quick": a.quick, "torch_threads": torch.get_num_threads(),
           "render": settings.render.model_dump(exclude={"workers"})}
    res.update(line_costs(settings, pages[:1], rounds))
    res.update(prose_speedup(settings, pages, rounds))
    res["whole_text"] = whole_text_widths(settings)
    res.update(pages_per_second(settings, pages, settings.model.recognizer_ink_width))
    res["batching_ms_per_line"] = (batching(settings, pages[:1], [1, 8], 1, 8) if a.quick
                                   else batching(settings, pages[:1], [1, 4, 16], 3))
    res["targets"] = {"ratio<=1.1": res["ratio"] <= 1.1, "prose_page_speedup>=1.5": res["prose_page_speedup"] >= 1.5}
    res["wall_s"] = time.perf_counter() - t0
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
