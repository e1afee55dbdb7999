"""OCR-MEM's own training step through OcrMemTrainer (HF Trainer, optionally DeepSpeed), from cached features.

    python bench/trainer_step.py --llm small --vision tiny                       # CPU
    python bench/trainer_step.py --llm 0.5b --vision real --bf16 --deepspeed configs/ds_zero2.json   # GPU

Random weights of real shape; B samples x 2 pages (256 x 896 cached features each) + T text tokens.
Prints the median step time after warm-up, the time each step waited on the DataLoader, and the
peak GPU memory; appends them to bench/results/trainer_step-<device>.json. DeepSpeed needs the
usual single-process env (MASTER_ADDR, MASTER_PORT, RANK, LOCAL_RANK, WORLD_SIZE), set here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import shapes
import torch

# bench/ is the script's directory, so Python finds its siblings (common, shapes) without any path edits.
from common import RESULTS, machine
from costs import build
from transformers import TrainerCallback

from ocrmem.data.dataset import CachedPages, MemoryCollator, MemoryDataset
from ocrmem.data.features import FeatureCache
from ocrmem.training.trainer import OcrMemTrainer


class StepTimer(TrainerCallback):
    def __init__(self):
        self.t, self.steps = None, []

    def on_step_begin(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.steps.append(time.perf_counter() - self.t)


class TimedLoader:
    """Wraps the train DataLoader: records how long each batch took to arrive (the GPU's wait)."""

    def __init__(self, dl, waits):
        self.dl, self.waits = dl, waits

    def __iter__(self):
        it = iter(self.dl)
        while True:
            t0 = time.perf_counter()
            try:
                b = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - t0)
            yield b

    def __len__(self):
        return len(self.dl)

    def __getattr__(self, name):
        return getattr(self.dl, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vision", default="tiny", choices=["tiny", "real"])
    ap.add_argument("--llm", default="small", choices=["small", "0.5b", "7b"])
    ap.add_argument("--deepspeed", default=None)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--pages", type=int, default=2)
    ap.add_argument("--text", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29731", "RANK": "0", "LOCAL_RANK": "0",
                 "WORLD_SIZE": "1", "WANDB_MODE": "disabled"}.items():
        os.environ.setdefault(k, v)
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = build(args.vision, args.llm, device, dtype)
    model.projector.float()

    from safetensors.torch import save_file
    from transformers import TrainingArguments

    tmp = Path(tempfile.mkdtemp())
    n = args.batch * (args.steps + 5)
    g = torch.Generator().manual_seed(0)
    tensors = {f"{i:064x}": torch.randn(model.encoder.tokens_per_page, model.encoder.out_dim, generator=g).to(dtype)
               for i in range(n * args.pages)}
    save_file(tensors, str(tmp / "shard-00000.safetensors"))
    (tmp / "index.json").write_text(json.dumps({"fingerprint": {}, "complete": True,
                                                 "pages": {k: "shard-00000.safetensors" for k in tensors}}))
    tok = shapes.tokenizer()
    # Same text as bench/costs.py: half prompt, half target (loss on the second half).
    words = " ".join(["memory"] * (args.text // 2))
    rows = [{"prompt": words, "target": words, "pages": ["p"] * args.pages,
             "sha256": [f"{i * args.pages + j:064x}" for j in range(args.pages)]} for i in range(n)]
    ds = MemoryDataset(rows, tok, CachedPages(FeatureCache(tmp)), max_prompt_tokens=args.text,
                       max_target_tokens=args.text // 2)
    targs = TrainingArguments(
        output_dir=str(tmp / "out"), max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=1e-4,
        bf16=args.bf16, deepspeed=args.deepspeed, report_to="none", save_strategy="no", logging_steps=10**6,
        dataloader_num_workers=args.workers, remove_unused_columns=False, use_cpu=not cuda, disable_tqdm=True,
    )
    timer = StepTimer()
    waits: list[float] = []
    trainer = OcrMemTrainer(model=model, args=targs, train_dataset=ds, gradcheck=False, callbacks=[timer],
                            data_collator=MemoryCollator(tok.pad_token_id, "features"))
    get_dl = trainer.get_train_dataloader
    trainer.get_train_dataloader = lambda: TimedLoader(get_dl(), waits)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    warm = 5
    step = statistics.median(timer.steps[warm:])
    wait = statistics.median(waits[warm:]) if len(waits) > warm else None
    res = {"machine": machine(device), "args": vars(args), "step_ms": step * 1000,
           "loader_wait_ms": None if wait is None else wait * 1000,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "steps_timed": len(timer.steps) - warm}
    print(f"\nOcrMemTrainer step ({'DeepSpeed ' + Path(args.deepspeed).stem if args.deepspeed else 'no DeepSpeed'}, "
          f"{'bf16' if args.bf16 else 'fp32'}, LLM {args.llm}): {res['step_ms']:.1f} ms/step median, loader wait "
          f"{res['loader_wait_ms'] if wait is None else round(res['loader_wait_ms'], 2)} ms/step, "
          f"peak {res['peak_gib'] if res['peak_gib'] is None else round(res['peak_gib'], 2)} GiB")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"trainer_step-{device.type}.json"
    prev = json.loads(out.read_text()) if out.is_file() else []
    out.write_text(json.dumps(prev + [res], indent=2))


if __name__ == "__main__":
    main()
