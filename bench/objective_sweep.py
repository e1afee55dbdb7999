"""Which objective mix (and learning rate) makes the CPU default learn fastest? Measured, not guessed.

    python bench/objective_sweep.py [--params params.yaml] [--steps 60] [--out bench/results/objective_sweep.json]

Trains the projector once per variant from the same rendered data and feature cache (run
`ocrmem render` and `ocrmem encode` first), then reports held-out QA loss and greedy exact match
on the eval split. Same seed, same data order, one process: only the variant differs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = {
    "qa lr3e-3": ({"qa": 1.0}, 3e-3),
    "qa lr1e-2": ({"qa": 1.0}, 1e-2),
    "qa+reconstruct lr3e-3": ({"qa": 0.5, "reconstruct": 0.5}, 3e-3),
    "qa+reconstruct lr1e-2": ({"qa": 0.5, "reconstruct": 0.5}, 1e-2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--out", default="bench/results/objective_sweep.json")
    args = ap.parse_args()
    os.environ["WANDB_MODE"] = "disabled"
    from ocrmem.evaluation.evaluate import evaluate
    from ocrmem.memory import OcrMemModel, load_llm
    from ocrmem.settings import load_settings
    from ocrmem.training.trainer import train

    base = load_settings(args.params)
    llm, tok = load_llm(base.model)
    results = []
    for name in args.variants:
        mix, lr = VARIANTS[name]
        with tempfile.TemporaryDirectory() as tmp:
            s = base.model_copy(deep=True)
            s.train.objectives, s.train.learning_rate, s.train.max_steps = mix, lr, args.steps
            s.train.output_dir, s.train.report_to, s.tracking.wandb_mode = tmp, "none", "disabled"
            s.train.save_steps = args.steps
            model = OcrMemModel.build(s, llm=llm, tokenizer=tok)
            t0 = time.time()
            m = train(s, model=model, resume=False, metrics_path=None)
            s.eval.conditions, s.eval.max_examples = ["ocr_memory"], 64  # scored exactly as `ocrmem evaluate`
            em = evaluate(s, model=model.eval(), out_dir=tmp, progress=False)["ocr_memory.exact_match"]
            results.append({"variant": name, "objectives": mix, "learning_rate": lr, "steps": args.steps,
                            "eval_qa_loss": m["eval_loss_after"], "exact_match": em,
                            "seconds": round(time.time() - t0, 1)})
            print(json.dumps(results[-1]))
    print(f"\n{'variant':28s} {'eval QA loss':>12s} {'exact match':>12s} {'s':>6s}")
    for r in results:
        print(f"{r['variant']:28s} {r['eval_qa_loss']:12.3f} {r['exact_match']:12.2%} {r['seconds']:6.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch_threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
