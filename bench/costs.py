"""What each step costs, side by side in one process: encoding, the training step, prefill, the loader.

    python bench/costs.py                                  # CPU: tiny tower + small LLM, ~2 min
    python bench/costs.py --device cuda --vision real --llm 0.5b 7b --dtype bfloat16   # GPU, real sizes

Random weights, real architectures (bench/shapes.py). Each comparison is a ratio of medians taken
in the same run after warm-up; absolute times are meaningful only from a GPU (the card is named in
the result file, bench/results/costs-<device>.json).
  2. encoding: pages/s through the frozen encoder, by batch size;
  3. training step (B samples x 2 pages + T text tokens): a minimal hand-written step vs OcrMemModel
     from cached features vs running the encoder each step (no_grad; autograd on but frozen) vs an
     unfrozen encoder;
  4. prefill: the history as OCR-MEM memory vs as text at the render settings' compression ratio;
  +  loader: one batch from the feature cache (DataLoader, as training reads it) vs one step.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import shapes
import torch

# bench/ is the script's directory, so Python finds its siblings (common, shapes) without any path edits.
from common import machine, measure, save, table

from ocrmem.memory.encoder import DeepseekOcr2Encoder, FrozenEncoder
from ocrmem.memory.model import OcrMemModel
from ocrmem.memory.projector import build_projector
from ocrmem.settings import Settings

DT = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(vision: str, llm_kind: str, device, dtype) -> OcrMemModel:
    with torch.device(device):  # initialise on the target device: a 450M tower is slow to init on a CPU
        enc = FrozenEncoder(DeepseekOcr2Encoder.from_config(shapes.vision_config(vision), dtype))
    lm = shapes.llm(llm_kind, dtype).to(device)
    lm.requires_grad_(False)
    lm.eval()
    hidden = lm.get_input_embeddings().weight.shape[1]
    proj = build_projector("linear", enc.out_dim, hidden, out_scale=0.02)
    settings = Settings.model_validate({"render": {"page_size": 1024}})
    return OcrMemModel(enc, proj, lm, settings).to(device)


def make_batch(model, bsz: int, pages: int, text: int, device, dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    vocab = model.llm.get_input_embeddings().weight.shape[0]
    ids = torch.randint(5, vocab, (bsz, text), generator=g)
    labels = ids.clone()
    labels[:, : text // 2] = -100  # loss on the second half ("target")
    pv = torch.randint(0, 256, (bsz * pages, 3, model.encoder.encoder.image_size, model.encoder.encoder.image_size),
                       generator=g, dtype=torch.uint8)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "page_counts": torch.full((bsz,), pages)}
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        feats = model.encoder(pv.to(device)).to(dtype)
    return {**batch, "pixel_values": pv.to(device)}, {**batch, "features": feats}


def encode_speed(model, device, batch_sizes, reps) -> list[list]:
    rows = []
    size = model.encoder.encoder.image_size
    for bs in batch_sizes:
        pv = torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8, device=device)
        r = measure(lambda: model.encoder(pv), device, warmup=1, reps=reps)
        rows.append([bs, bs / r["median_s"], r["median_s"] * 1000, r["peak_gib"]])
    return rows


def train_steps(model, pix_batch, feat_batch, device, dtype, reps) -> list[list]:
    amp = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def opt_for(params):
        return torch.optim.AdamW(params, lr=1e-5)

    def step_fn(batch, opt):
        def step():
            with amp:
                loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    def reference_step(opt):
        # The floor: project cached features, concatenate before the text, LM loss, backward, step.
        emb = model.llm.get_input_embeddings()

        def step():
            with amp:
                mem = model.projector(feat_batch["features"]).reshape(len(feat_batch["input_ids"]), -1,
                                                                      model.projector.out_dim)
                x = torch.cat([mem.to(emb.weight.dtype), emb(feat_batch["input_ids"])], 1)
                labels = torch.cat([torch.full(mem.shape[:2], -100, device=device), feat_batch["labels"]], 1)
                loss = model.llm(inputs_embeds=x, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    proj_opt = opt_for(model.projector.parameters())
    model.train()
    results = [("minimal hand-written step, cached features", reference_step(proj_opt)),
               ("OcrMemModel step, cached features", step_fn(feat_batch, proj_opt)),
               ("OcrMemModel step, encoder each step (no_grad)", step_fn(pix_batch, proj_opt))]
    rows = []
    for name, fn in results:
        r = measure(fn, device, warmup=2, reps=reps)
        rows.append([name, r["median_s"] * 1000, r["peak_gib"]])
    enc = model.encoder
    enc.frozen = False  # autograd on, weights still frozen: no graph is recorded (BACKGROUND.md)
    r = measure(step_fn(pix_batch, proj_opt), device, warmup=2, reps=reps)
    rows.append(["encoder each step, autograd on but frozen", r["median_s"] * 1000, r["peak_gib"]])
    enc.encoder.requires_grad_(True)
    enc.encoder.train()
    all_opt = opt_for([p for p in model.parameters() if p.requires_grad])
    r = measure(step_fn(pix_batch, all_opt), device, warmup=2, reps=reps)
    rows.append(["encoder unfrozen (trained too)", r["median_s"] * 1000, r["peak_gib"]])
    enc.encoder.requires_grad_(False)
    enc.frozen = True
    enc.train(False)
    base = rows[0][1]
    for row in rows:
        row.append(row[1] / base)
    return rows


def prefill(model, bsz, pages, text, ratio, device, dtype, reps) -> list[list]:
    emb = model.llm.get_input_embeddings()
    mem_tokens = pages * model.memory_tokens_per_page
    vocab = emb.weight.shape[0]
    hist_text = int(round(mem_tokens * ratio))
    mem = torch.randn(bsz, mem_tokens, model.projector.out_dim, device=device, dtype=emb.weight.dtype) * 0.02
    txt = torch.randint(5, vocab, (bsz, text), device=device)
    hist = torch.randint(5, vocab, (bsz, hist_text + text), device=device)

    @torch.no_grad()
    def as_memory():
        model.llm(inputs_embeds=torch.cat([mem, emb(txt)], 1), logits_to_keep=1)

    @torch.no_grad()
    def as_text():
        model.llm(input_ids=hist, logits_to_keep=1)

    a = measure(as_memory, device, warmup=1, reps=reps)
    b = measure(as_text, device, warmup=1, reps=reps)
    return [[f"memory: {mem_tokens} vision + {text} text tokens", mem_tokens + text, a["median_s"] * 1000, a["peak_gib"], 1.0],
            [f"text: {hist_text} history + {text} text tokens ({ratio:.2f}x)", hist_text + text, b["median_s"] * 1000,
             b["peak_gib"], b["median_s"] / a["median_s"]]]


def loader_speed(model, bsz, pages, text, workers, step_ms) -> list[list]:
    """Batches the Trainer would read: cached features from safetensors shards, tokenized text, collated."""
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader

    from ocrmem.data.dataset import CachedPages, MemoryCollator, MemoryDataset
    from ocrmem.data.features import FeatureCache

    tok = shapes.tokenizer()
    n = bsz * 8
    tmp = Path(tempfile.mkdtemp())
    tensors = {f"{i:064x}": torch.randn(model.encoder.tokens_per_page, model.encoder.out_dim).to(torch.bfloat16)
               for i in range(n * pages)}
    save_file(tensors, str(tmp / "shard-00000.safetensors"))
    (tmp / "index.json").write_text(json.dumps({"fingerprint": {}, "complete": True,
                                                 "pages": {k: "shard-00000.safetensors" for k in tensors}}))
    words = " ".join(["memory"] * text)
    rows = [{"prompt": words, "target": "answer", "pages": ["p"] * pages,
             "sha256": [f"{i * pages + j:064x}" for j in range(pages)]} for i in range(n)]
    ds = MemoryDataset(rows, tok, CachedPages(FeatureCache(tmp)), max_prompt_tokens=text)
    out = []
    for w in workers:
        dl = DataLoader(ds, batch_size=bsz, num_workers=w, collate_fn=MemoryCollator(tok.pad_token_id, "features"),
                        persistent_workers=w > 0)
        for _ in dl:  # warm-up: workers started, shards opened
            pass
        t0 = time.perf_counter()
        batches = 0
        for _ in range(3):
            for _ in dl:
                batches += 1
        ms = (time.perf_counter() - t0) / batches * 1000
        out.append([w, ms, step_ms, ms / step_ms])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vision", default="tiny", choices=["tiny", "real"])
    ap.add_argument("--llm", nargs="+", default=["small"], choices=["small", "0.5b", "7b"])
    ap.add_argument("--dtype", default="float32", choices=list(DT))
    ap.add_argument("--batch", type=int, default=4, help="samples per step (ANCHORS: 4)")
    ap.add_argument("--pages", type=int, default=2, help="pages per sample (ANCHORS: 2)")
    ap.add_argument("--text", type=int, default=512, help="text tokens per sample (ANCHORS: 512)")
    ap.add_argument("--ratio", type=float, default=None,
                    help="text tokens per memory token for prefill (default: data/rendered/stats.json, else 10)")
    ap.add_argument("--encode-batches", type=int, nargs="+", default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device, dtype = torch.device(args.device), DT[args.dtype]
    ratio = args.ratio
    stats = Path("data/rendered/stats.json")
    if ratio is None and stats.is_file():
        ratio = json.loads(stats.read_text())["total"].get("compression_overall")
    ratio = ratio or 10.0
    info = machine(device)
    print(f"# OCR-MEM costs on {info['card']} ({args.dtype}); B={args.batch} x {args.pages} pages + {args.text} text")
    results = {"machine": info, "args": vars(args), "ratio": ratio, "llms": {}}
    texts = []
    for i, llm_kind in enumerate(args.llm):
        t0 = time.time()
        model = build(args.vision, llm_kind, device, dtype)
        counts = {"encoder": sum(p.numel() for p in model.encoder.parameters()),
                  "llm": sum(p.numel() for p in model.llm.parameters())}
        print(f"\n# LLM {llm_kind}: {counts['llm'] / 1e6:.0f}M params; vision tower {counts['encoder'] / 1e6:.0f}M "
              f"(built in {time.time() - t0:.0f}s)")
        r = {"params": counts}
        if i == 0:
            bs = args.encode_batches or ([1, 4, 8] if device.type == "cpu" else [1, 8, 32, 64])
            rows = encode_speed(model, device, bs, args.reps)
            texts.append(table("2. encoding (frozen vision tower)", ["batch", "pages/s", "ms/batch", "peak GiB"], rows))
            r["encode"] = rows
        pix, feat = make_batch(model, args.batch, args.pages, args.text, device, dtype)
        rows = train_steps(model, pix, feat, device, dtype, args.reps)
        texts.append(table(f"3. training step, LLM {llm_kind}", ["step", "ms", "peak GiB", "x minimal"], rows))
        r["train_step"] = rows
        rows = prefill(model, args.batch, args.pages, args.text, ratio, device, dtype, args.reps)
        texts.append(table(f"4. prefill, LLM {llm_kind}", ["input", "tokens", "ms", "peak GiB", "x memory"], rows))
        r["prefill"] = rows
        if i == 0:
            rows = loader_speed(model, args.batch, args.pages, args.text, args.workers, r["train_step"][1][1])
            texts.append(table("loader: one cached-feature batch vs one OcrMemModel step",
                               ["workers", "loader ms/batch", "step ms", "loader/step"], rows))
            r["loader"] = rows
        results["llms"][llm_kind] = r
        del model, pix, feat
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["tables"] = "\n".join(texts)
    save(args.out or f"costs-{device.type}.json", results)


if __name__ == "__main__":
    main()
