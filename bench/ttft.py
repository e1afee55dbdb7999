"""Time to first token: one question over a long history, as full text, OCR memory and truncated text.

    python bench/ttft.py --quick --out bench/results/ttft-cpu-quick.json       # 1k and 4k tokens, < 5 min
    python bench/ttft.py --out bench/results/ttft-cpu.json                     # 1k, 4k, 16k, 32k (CPU: long)
    python bench/ttft.py --device cuda --dtype bfloat16 --out bench/results/ttft-cuda.json
    python bench/ttft.py --models tiny --lengths 512 --reps 1       # the GPU mode's code path, on a CPU
    python bench/ttft.py --plot bench/results/ttft-cpu-quick.json              # -> the same name, .png

CPU: the default models of params.yaml (SmolLM2-135M-Instruct, pixel_lines encoder) with an
untrained projector (timing does not depend on training), render.max_pages raised so the whole
history fits. GPU: the real-size shapes of bench/shapes.py (DeepSeek-OCR-2's vision tower on
1024px pages, a Qwen2-0.5B-shaped LLM; random weights, the tiny stand-in tokenizer).
Conditions, each timed to its first generated token (greedy, after a warm-up call):
  full_text       the history's tokens in the memory slot;
  ocr_cold        a fresh MemoryLLM: lay out, draw, encode, project every page, then prefill;
  ocr_warm        the page cache holds every page but the last: one page drawn and encoded, full prefill;
  ocr_warm_kv     a session that grew by its last page: also the KV of the template head and of the
                  full pages is reused, only the last page and the question are prefilled;
  truncated       the most recent history tokens, as many as the memory has tokens.
Peak memory: the largest resident set size (RSS, /proc/self/statm sampled every 2 ms) above the
RSS at the start of the call; memory freed by an earlier call and reused makes this a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from common import machine, sync, table

from ocrmem.dataset import memory_prompt
from ocrmem.inference import MemoryLLM
from ocrmem.render import lines_per_page
from ocrmem.session import all_lines, page_key, page_layout

PROMPT = "Which city did the grey heron fly to on day 3? Answer with one word."
WORDS = ("red green blue grey amber silver violet golden heron otter badger falcon lynx crane maple cedar "
         "Lisbon Oslo Quito Hanoi Dakar Perth Tunis Lima boxes lanterns letters barrels maps keys").split()
CONDITIONS = ["full_text", "ocr_cold", "ocr_warm", "ocr_warm_kv", "truncated"]


def make_history(tok, n_tokens: int) -> str:
    """Deterministic prose-like chat history of about n_tokens tokens (cut after the turn that reaches it)."""
    out, i, chars = [], 0, 0
    while chars < 6 * n_tokens + 400:  # more than enough: English runs at ~4 characters a token
        w = [WORDS[(i * k + k * k) % len(WORDS)] for k in (1, 3, 5, 7, 11)]
        out.append(f"user: On day {i} the {w[0]} {w[1]} carried {i % 17 + 2} {w[4]} from {w[2]} to {w[3]}; "
                   f"note it.\n\nassistant: Noted: day {i}, {w[0]} {w[1]}, {w[3]}.\n\n")
        chars += len(out[-1])
        i += 1
    text = "".join(out)
    ends = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    at = ends[min(n_tokens, len(ends)) - 1][1]
    stop = text.find("\n\n", at)
    return text[: stop if stop >= 0 else len(text)]


class PeakRSS:
    """Largest RSS above the RSS at entry, sampled every 2 ms from /proc/self/statm (bytes)."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.delta_mib = (self.peak - self.start) / 2**20


def timed(fn, device, reps: int, setup=None) -> dict:
    """Median seconds of `reps` calls of fn (setup() before each, untimed) and the largest RSS delta."""
    times, peaks = [], []
    for _ in range(reps):
        state = setup() if setup else None
        sync(device)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            fn(state)
            sync(device)
            times.append(time.perf_counter() - t0)
        peaks.append(mem.delta_mib)
    return {"s": statistics.median(times), "all_s": times, "peak_rss_delta_mib": max(peaks)}


def text_ttft(model, tok, memory_ids):
    """First token with `memory_ids` (text) in the memory slot: the same surroundings as OCR memory."""
    ids, _ = memory_prompt(tok, PROMPT, memory_ids)
    x = torch.tensor([ids], device=model.device)

    def run(_):
        return model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=1)
    return run


def split_last_page(text: str, rs) -> int:
    """Offset where the history's last page starts (its lines are what a warm cache lacks)."""
    lines = all_lines(text, rs)
    per = lines_per_page(rs)
    return lines[(len(lines) - 1) // per * per][0]


def ocr_runs(model, history: str, device) -> dict:
    """(setup, fn) per OCR condition; the model fingerprint (a once-per-model cost) is computed before timing."""
    rs = model.settings.render
    warm_llm = MemoryLLM(model)
    warm_llm.answer(history, PROMPT, max_new_tokens=1)  # fills the page cache
    last_key = page_key(warm_llm.pages.base, page_layout(history, rs).pages[-1])
    cut = split_last_page(history, rs)

    def cold_setup():
        llm = MemoryLLM(model)
        llm.pages._base = warm_llm.pages.base
        return llm

    def warm_setup():
        warm_llm.pages.cache._store.pop(last_key, None)  # every page but the last stays cached
        return warm_llm

    def kv_setup():
        chat = warm_llm.session(history[:cut])
        chat.answer(PROMPT, max_new_tokens=1)  # the session as it was before its last page came
        chat.append(history[cut:])
        warm_setup()
        return chat

    answer = lambda llm: llm.answer(history, PROMPT, max_new_tokens=1)  # noqa: E731
    return {"ocr_cold": (cold_setup, answer), "ocr_warm": (warm_setup, answer),
            "ocr_warm_kv": (kv_setup, lambda chat: chat.answer(PROMPT, max_new_tokens=1))}


def measure_length(model, n_tokens: int, device, reps: int, skip_full_above: int | None) -> dict:
    tok = model.tokenizer
    history = make_history(tok, n_tokens)
    hist_ids = tok(history, add_special_tokens=False).input_ids
    paged = page_layout(history, model.settings.render)
    assert paged.cut_chars == 0, "render.max_pages too small for this history"
    mem_tokens = len(paged.pages) * model.memory_tokens_per_page
    row = {"text_tokens": len(hist_ids), "chars": len(history), "pages": len(paged.pages),
           "memory_tokens": mem_tokens, "compression": len(hist_ids) / mem_tokens}
    runs = {"truncated": (None, text_ttft(model, tok, hist_ids[-mem_tokens:]))}
    runs.update(ocr_runs(model, history, device))
    if skip_full_above is None or len(hist_ids) <= skip_full_above:
        runs["full_text"] = (None, text_ttft(model, tok, hist_ids))
    for name in CONDITIONS:
        if name not in runs:
            row[f"ttft_{name}_s"] = None  # not measured: see skipped
            row.setdefault("skipped", []).append(name)
            continue
        setup, fn = runs[name]
        r = timed(fn, device, reps, setup)
        row[f"ttft_{name}_s"], row[f"{name}_all_s"] = r["s"], r["all_s"]
        row[f"{name}_peak_rss_delta_mib"] = r["peak_rss_delta_mib"]
        print(f"  {len(hist_ids)} tokens  {name:12s} {r['s']:.3f} s", flush=True)
    full = row["ttft_full_text_s"]
    for name in ("ocr_cold", "ocr_warm", "ocr_warm_kv", "truncated"):
        row[f"speedup_{name}"] = full / row[f"ttft_{name}_s"] if full else None
    return row


def breakdown(model, n_tokens: int, device) -> dict:
    """Where a cold and a warm answer spend their time: layout, draw, preprocess, encode, projector, prefill."""
    from ocrmem.render import draw_page, load_font

    rs, tok = model.settings.render, model.tokenizer
    history = make_history(tok, n_tokens)
    out, t = {}, time.perf_counter

    def clock(name, fn):
        sync(device)
        t0 = t()
        v = fn()
        sync(device)
        out[name] = out.get(name, 0.0) + t() - t0
        return v

    paged = clock("layout_s", lambda: page_layout(history, rs))
    font = load_font(rs.font_path, rs.font_size)
    imgs = clock("draw_all_pages_s", lambda: [draw_page(p, rs, font) for p in paged.pages])
    with torch.no_grad():
        pv = clock("preprocess_all_s", lambda: model.encoder.preprocess(imgs))
        feats = clock("encoder_all_s", lambda: model.encode_pages(pv))
        clock("projector_all_s", lambda: model.projector(feats.to(model.device)))
        clock("draw_one_page_s", lambda: draw_page(paged.pages[-1], rs, font))
        clock("encode_one_page_s", lambda: model.embed_memory(pixel_values=model.encoder.preprocess(imgs[-1:])))
    llm = MemoryLLM(model)
    llm.pages._base = clock("model_fingerprint_once_s", lambda: llm.pages.base)
    llm.answer(history, PROMPT, max_new_tokens=1)
    clock("ocr_warm_all_pages_cached_s", lambda: llm.answer(history, PROMPT, max_new_tokens=1))
    out["pages"] = len(paged.pages)
    return out


def build_model(kind: str, device: str, dtype: str, max_pages: int):
    """default: params.yaml's models; real / tiny: bench/shapes.py's DeepSeek-OCR-2 tower + a
    Qwen2-0.5B-shaped LLM (real) or their tiny versions (tiny: the same code path, runs on a CPU).
    The projector is untrained either way."""
    from ocrmem.model.ocrmem import OcrMemModel
    from ocrmem.settings import Settings, load_settings

    if kind == "default":
        s = load_settings("params.yaml")
        s = Settings.model_validate({**s.model_dump(), "render": {**s.render.model_dump(), "max_pages": max_pages}})
        return OcrMemModel.build(s).to(device)
    import shapes
    from ocrmem.model.encoder import DeepseekOcr2Encoder, FrozenEncoder
    from ocrmem.model.projector import build_projector

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    with torch.device(device):
        enc = FrozenEncoder(DeepseekOcr2Encoder.from_config(shapes.vision_config(kind), dt))
    lm = shapes.llm("0.5b" if kind == "real" else "small", dt).to(device).requires_grad_(False).eval()
    proj = build_projector("linear", enc.out_dim, lm.get_input_embeddings().weight.shape[1], out_scale=0.02)
    s = Settings.model_validate({"render": {"page_size": enc.encoder.image_size, "font_size": 24, "max_pages": max_pages}})
    return OcrMemModel(enc, proj, lm, s, shapes.tokenizer()).to(device=device, dtype=dt).eval()


def plot(json_path: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(Path(json_path).read_text())
    rows = res["lengths"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in CONDITIONS:
        pts = [(r["text_tokens"], r[f"ttft_{name}_s"]) for r in rows if r.get(f"ttft_{name}_s")]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="history length (text tokens)", ylabel="time to first token (s)",
           title=f"TTFT, {res['machine']['card']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    out = Path(json_path).with_suffix(".png")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot -> {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1k and 4k tokens, one timed call each (< 5 min on 2 cores)")
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="history lengths in text tokens")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per condition (median)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", choices=["default", "real", "tiny"], default=None,
                    help="default (params.yaml; the CPU default) or bench/shapes.py's real (the cuda default) / tiny sizes")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--skip-full-text-above", type=int, default=None,
                    help="do not time full text beyond this many tokens (reported as null and listed in skipped)")
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--plot", default=None, metavar="JSON", help="only draw the plot of a results file")
    a = ap.parse_args()
    if a.plot:
        plot(a.plot)
        return
    lengths = a.lengths or ([1024, 4096] if a.quick else [1024, 4096, 16384, 32768])
    reps = a.reps or (1 if a.quick else 3)
    device = torch.device(a.device)
    kind = a.models or ("real" if device.type == "cuda" else "default")
    model = build_model(kind, a.device, a.dtype, max_pages=10_000)
    ctx = getattr(model.llm.config, "max_position_embeddings", None)
    warm = MemoryLLM(model)  # warm-up: kernels, font glyphs, tokenizer
    warm.answer(make_history(model.tokenizer, 256), PROMPT, max_new_tokens=1)
    text_ttft(model, model.tokenizer, [5] * 256)(None)
    rows = [measure_length(model, n, device, reps, a.skip_full_text_above) for n in lengths]
    for r in rows:
        r["over_trained_context"] = bool(ctx and r["text_tokens"] > ctx)
    result = {"machine": machine(device), "models": kind, "llm_max_position_embeddings": ctx, "reps": reps,
              "encoder": model.encoder.fingerprint(), "lengths": rows,
              "breakdown": breakdown(model, lengths[-1], device)}
    table("time to first token (s)", ["text tokens", "memory", "compression"] + CONDITIONS,
          [[r["text_tokens"], r["memory_tokens"], r["compression"]] + [r[f"ttft_{c}_s"] for c in CONDITIONS]
           for r in rows])
    table(f"where the time goes at {rows[-1]['text_tokens']} tokens (s)", list(result["breakdown"]),
          [list(result["breakdown"].values())])
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))
        print(f"\nresults -> {a.out}")


if __name__ == "__main__":
    main()
