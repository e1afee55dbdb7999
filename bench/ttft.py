"""Time to first token: one question over a long history, as full text, OCR memory and truncated text.

    python bench/ttft.py --quick --out bench/results/ttft-cpu-quick.json       # 1k and 4k tokens, < 5 min
    python bench/ttft.py --out bench/results/ttft-cpu.json                     # 1k, 4k, 16k, 32k (CPU: long)
    python bench/ttft.py --device cuda --dtype bfloat16 --out bench/results/ttft-cuda.json
    python bench/ttft.py --models tiny --lengths 512 --reps 1       # the GPU mode's code path, on a CPU
    python bench/ttft.py --plot bench/results/ttft-cpu-quick.json              # -> the same name, .png

CPU: the default models of params.yaml (SmolLM2-135M-Instruct; the PP-OCRv6 recognizer `ppocr_rec`
in onnxruntime reads every drawn line, 16 frames -> one memory token, 6 tokens a line) with an
untrained projector (timing does not depend on training), render.max_pages raised so the whole
history fits. Memory tokens count the drawn lines of each page (what the LLM reads). GPU: the real-size shapes of bench/shapes.py (DeepSeek-OCR-2's vision tower on
1024px pages, a Qwen2-0.5B-shaped LLM; random weights, the tiny stand-in tokenizer).
Conditions, each timed to its first generated token (greedy, after a warm-up call):
  full_text       the history's tokens in the memory slot;
  ocr_cold        a fresh MemoryLLM, the encoder's line cache emptied: lay out, draw, encode, project
                  every page, then prefill;
  ocr_warm        the page cache holds every page but the last, and none of the last page's lines is in
                  the recognizer's line cache (a whole new page of text): one page drawn, its lines
                  read, full prefill;
  ocr_warm_kv     a session that grew by its last page: also the KV of the template head and of the
                  full pages is reused, only the last page and the question are prefilled;
  truncated       the most recent history tokens, as many as the memory has tokens.
Conditions run interleaved (one call of each, `reps` rounds), so load drifting over the run hits
all alike. Each call's time is split by hooks into draw, encode (+ lines the recognizer read),
projector, prefill (the LLM's first forward) and other (layout, hashing, tokenising, assembly).
Speed-ups are given by wall clock (the TTFT) and, beside them, by this process's CPU time, which
other jobs on a shared CPU sway less (it counts spinning threads too).
Peak memory: CUDA: torch's peak allocated above the start of the call; CPU: the largest resident set size (RSS, /proc/self/statm sampled every 2 ms) above the
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

from ocrmem.memory.prompt import memory_prompt
from ocrmem.memory.render import draw_page
from ocrmem.serving.caches import crop_cache, drawn_caps, page_key, page_layout
from ocrmem.serving.memory_llm import MemoryLLM

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


class Split:
    """Hooks that split a call's time: draw (pages drawn), encode (+ lines the recognizer read),
    projector, prefill (the LLM's first forward in the call; its positions too); other = the rest."""

    def __init__(self, model, device):
        import ocrmem.serving.caches as session

        self.model, self.device, self.session, self.parts, self.handles = model, device, session, {}, []
        self._draw = session.draw_page

    def _add(self, name: str, dt: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + dt

    def _hook(self, module, name: str, first_only: bool = False):
        t0 = []

        def pre(_m, args, kwargs):
            if first_only and f"{name}_s" in self.parts:
                return
            if first_only:
                x = kwargs.get("inputs_embeds", kwargs.get("input_ids"))
                self.parts["prefill_positions"] = int(x.shape[1]) if x is not None else None
            sync(self.device)
            t0.append(time.perf_counter())

        def post(_m, args, kwargs, out):
            if t0:
                sync(self.device)
                self._add(f"{name}_s", time.perf_counter() - t0.pop())
        self.handles += [module.register_forward_pre_hook(pre, with_kwargs=True),
                         module.register_forward_hook(post, with_kwargs=True)]

    def __enter__(self):
        m, self.parts = self.model, {}
        self._hook(m.encoder, "encode")
        self._hook(m.projector, "projector")
        self._hook(m.llm, "prefill", first_only=True)
        rec = m.encoder.encoder
        self._read0 = getattr(rec, "lines_read", None)

        def draw(*a, **k):
            t0 = time.perf_counter()
            try:
                return self._draw(*a, **k)
            finally:
                self._add("draw_s", time.perf_counter() - t0)
        self.session.draw_page = draw
        return self

    def __exit__(self, *exc):
        self.session.draw_page = self._draw
        for h in self.handles:
            h.remove()
        self.handles = []
        if self._read0 is not None:
            self.parts["lines_read"] = self.model.encoder.encoder.lines_read - self._read0


def peak_memory(device):
    """A context measuring peak memory of a call: torch's allocator on CUDA, RSS on the CPU (MiB)."""
    if device.type != "cuda":
        return PeakRSS()

    class Cuda:
        def __enter__(self):
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
            return self

        def __exit__(self, *exc):
            self.delta_mib = (torch.cuda.max_memory_allocated(device) - self.start) / 2**20
    return Cuda()


def timed_rounds(runs: dict, model, device, reps: int, label: str) -> dict:
    """{name: (setup, fn)} -> per name: median seconds, all calls, peak memory delta, time split of the
    last call. One call of each condition per round, `reps` rounds."""
    got = {name: {"all_s": [], "peak": [], "cpu": []} for name in runs}
    for _ in range(reps):
        for name, (setup, fn) in runs.items():
            state = setup() if setup else None
            sync(device)
            with peak_memory(device) as mem, Split(model, device) as split:
                t0, c0 = time.perf_counter(), time.process_time()
                fn(state)
                sync(device)
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            got[name]["all_s"].append(dt)
            got[name]["cpu"].append(cpu)
            got[name]["peak"].append(mem.delta_mib)
            parts = dict(split.parts)
            parts["other_s"] = dt - sum(v for k, v in parts.items() if k.endswith("_s"))
            got[name]["split"] = parts
            print(f"  {label}  {name:12s} {dt:8.3f} s  " +
                  " ".join(f"{k[:-2] if k.endswith('_s') else k}={v:.3g}" for k, v in parts.items() if v is not None),
                  flush=True)
    return {name: {"s": statistics.median(g["all_s"]), "all_s": g["all_s"], "peak_mib": max(g["peak"]),
                   "cpu_s": statistics.median(g["cpu"]), "split": g["split"]} for name, g in got.items()}


def text_ttft(model, tok, memory_ids):
    """First token with `memory_ids` (text) in the memory slot: the same surroundings as OCR memory."""
    ids, _ = memory_prompt(tok, PROMPT, memory_ids)
    x = torch.tensor([ids], device=model.device)

    def run(_):
        return model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=1)
    return run


def ocr_runs(model, history: str) -> dict:
    """(setup, fn) per OCR condition. Cold runs first each round and leaves its session (all pages cached,
    the prompt's KV held) to the warm conditions; the model fingerprint (once per model) is computed first."""
    rs = model.settings.render
    base = MemoryLLM(model).pages.base
    pages = page_layout(history, rs).pages
    last_key = page_key(base, pages[-1])
    soft = len(model.soft_prompt()) if model.soft_prompt is not None else 0
    before_last = MemoryLLM(model).prompt_ids(PROMPT)[1] + soft + sum(
        model.page_memory_tokens(drawn_caps(model, pages[:-1])))  # prompt positions ahead of the last page
    held = {}

    def cold_setup():
        model.encoder.clear_cache()
        llm = MemoryLLM(model)
        llm.pages._base = base
        held["chat"] = chat = llm.session(history)
        return chat

    def warm_setup():
        llm = held["chat"].llm
        llm.pages.cache._store.pop(last_key, None)  # every page but the last stays cached
        forget = getattr(model.encoder.encoder, "forget", None)
        if forget:  # and none of the last page's lines was read before: a whole new page of text
            forget(model.encoder.preprocess([draw_page(pages[-1], rs)]))
        fresh = MemoryLLM(model, page_cache=llm.pages.cache)  # a from-scratch call but for the page cache
        fresh.pages._base = base
        return fresh

    def kv_setup():
        """The session as it was before its last page came: the KV of the positions ahead of that page
        (causal: the same as a session over the history without its last page would hold)."""
        chat = held["chat"]
        chat.prefix.embeds = chat.prefix.embeds[:before_last].clone()
        crop_cache(chat.prefix.cache, before_last)
        warm_setup()
        return chat

    answer = lambda x: x.answer(PROMPT, max_new_tokens=1) if hasattr(x, "prefix") else (  # noqa: E731
        x.answer(history, PROMPT, max_new_tokens=1))
    return {"ocr_cold": (cold_setup, answer), "ocr_warm": (warm_setup, answer), "ocr_warm_kv": (kv_setup, answer)}


def measure_length(model, n_tokens: int, device, reps: int, skip_full_above: int | None) -> dict:
    tok = model.tokenizer
    history = make_history(tok, n_tokens)
    hist_ids = tok(history, add_special_tokens=False).input_ids
    paged = page_layout(history, model.settings.render)
    assert paged.cut_chars == 0, "render.max_pages too small for this history"
    mem_tokens = sum(model.page_memory_tokens(drawn_caps(model, paged.pages)))
    row = {"text_tokens": len(hist_ids), "chars": len(history), "pages": len(paged.pages),
           "lines": sum(len(p) for p in paged.pages), "memory_tokens": mem_tokens,
           "compression": len(hist_ids) / mem_tokens}
    runs = ocr_runs(model, history)
    runs["truncated"] = (None, text_ttft(model, tok, hist_ids[-mem_tokens:]))
    if skip_full_above is None or len(hist_ids) <= skip_full_above:
        runs["full_text"] = (None, text_ttft(model, tok, hist_ids))
    else:
        row["skipped"] = ["full_text"]
    got = timed_rounds(runs, model, device, reps, f"{len(hist_ids)} tokens")
    for name in CONDITIONS:
        r = got.get(name)
        row[f"ttft_{name}_s"] = r["s"] if r else None  # None: not measured, see skipped
        if r:
            row[f"{name}_all_s"], row[f"{name}_peak_mib"], row[f"{name}_split"] = r["all_s"], r["peak_mib"], r["split"]
            row[f"{name}_process_cpu_s"] = r["cpu_s"]  # this process's CPU time: less swayed by other jobs
    full, full_cpu = row["ttft_full_text_s"], row.get("full_text_process_cpu_s")
    for name in ("ocr_cold", "ocr_warm", "ocr_warm_kv", "truncated"):
        row[f"speedup_{name}"] = full / row[f"ttft_{name}_s"] if full else None
        row[f"speedup_cpu_{name}"] = full_cpu / row[f"{name}_process_cpu_s"] if full_cpu else None
    row["target_speedup"] = 0.8 * row["compression"]  # the done-when for ocr_warm
    return row


def build_model(kind: str, device: str, dtype: str, max_pages: int):
    """default: params.yaml's models; real / tiny: bench/shapes.py's DeepSeek-OCR-2 tower + a
    Qwen2-0.5B-shaped LLM (real) or their tiny versions (tiny: the same code path, runs on a CPU).
    The projector is untrained either way."""
    from ocrmem.memory.model import OcrMemModel
    from ocrmem.settings import Settings, load_settings

    if kind == "default":
        s = load_settings("params.yaml")
        s = Settings.model_validate({**s.model_dump(), "render": {**s.render.model_dump(), "max_pages": max_pages}})
        return OcrMemModel.build(s).to(device)
    import shapes

    from ocrmem.memory.encoder import DeepseekOcr2Encoder, FrozenEncoder
    from ocrmem.memory.projector import build_projector

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
           title=f"TTFT, {res['encoder'].get('kind', res['models'])} memory, {res['machine']['card']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    out = Path(json_path).with_suffix(".png")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot -> {out}")
    return out


def done_when(top: dict) -> dict:
    """The issues' criteria at the longest length, by wall clock: ocr_warm at least 0.8 x compression faster
    than full text; ocr_cold no slower than full text; at a >= 4x point, ocr_warm >= 3x faster."""
    sp, cold = top["speedup_ocr_warm"], top.get("speedup_ocr_cold")
    return {"at_text_tokens": top["text_tokens"], "speedup_ocr_warm": sp, "target_0.8x_compression":
            top["target_speedup"], "holds": None if sp is None else sp >= top["target_speedup"],
            "speedup_ocr_cold": cold, "cold_holds": None if cold is None else cold >= 1.0,
            "compression": top["compression"],
            "warm_3x_at_4x_holds": None if sp is None or top["compression"] < 4 else sp >= 3.0}


def report(rows: list[dict]) -> None:
    table("time to first token (s)", ["text tokens", "memory", "compression"] + CONDITIONS,
          [[r["text_tokens"], r["memory_tokens"], r["compression"]] + [r[f"ttft_{c}_s"] for c in CONDITIONS]
           for r in rows])
    table("speed-up over full text (wall clock; process CPU time)", ["text tokens", "0.8 x compression"] + CONDITIONS[1:],
          [[r["text_tokens"], r["target_speedup"]] + [f"{r[f'speedup_{c}'] or 0:.2f}; {r[f'speedup_cpu_{c}'] or 0:.2f}"
                                                      for c in CONDITIONS[1:]] for r in rows])
    top = rows[-1]
    keys = sorted({k for c in CONDITIONS for k in top.get(f"{c}_split", {})})
    table(f"where the time goes at {top['text_tokens']} tokens (s)", ["condition"] + keys,
          [[c] + [top[f"{c}_split"].get(k) for k in keys] for c in CONDITIONS if f"{c}_split" in top])


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
        r["over_trained_context"] = bool(ctx and max(r["text_tokens"], r["memory_tokens"]) > ctx)
    result = {"machine": machine(device), "models": kind, "llm_max_position_embeddings": ctx, "reps": reps,
              "encoder": model.encoder.fingerprint(), "lengths": rows, "done_when": done_when(rows[-1])}
    if a.quick:
        result["not_run"] = "--quick: 16k and 32k tokens not run (see README)"
    report(rows)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))
        print(f"\nresults -> {a.out}")


if __name__ == "__main__":
    main()
