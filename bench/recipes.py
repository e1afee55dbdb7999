"""Which training recipe makes the memory read, and at which compression? Learning curves, measured.

    python bench/recipes.py --out bench/results/recipes-cuda.json                    # GPU: the full set
    python bench/recipes.py --steps 6 --every 3 --fox-steps 4 --out /tmp/r.json     # CPU smoke run
    python bench/recipes.py --plot bench/results/recipes-cuda.json                  # -> the same name, .png
    python bench/recipes.py --recipes --fox-pools 8 12 16 --fox-steps 60 --fox-every 20   # CPU Fox table only

Everything comes from params.yaml (override with OCRMEM_<SECTION>__<FIELD>, e.g. a bigger
OCRMEM_DATA__SYNTHETIC__N_TRAIN); the script calls the stage functions themselves (render, encode,
train, baselines, evaluate), so a recipe here is exactly what `dvc repro` would train. One rendered
dataset, one feature cache, one frozen LLM, the same seed, steps, batch and learning rate for all:

  qa        alignment, then QA only (params.yaml's recipe)
  recon_qa  alignment, reconstruction for the first half of the steps, then QA (LLaVA / DeepSeek-OCR)
  mix       alignment, then reconstruction and QA mixed 50/50
  + the trained text baselines (`ocrmem baselines`) at the same steps, then `evaluate` (all six
    conditions and the reconstruction probe) for each recipe.

Learning curves: every --every steps, held-out ocr_memory exact match, its answer loss and the
reconstruction probe's character precision. Fox table: reconstruction-only training at several
`model.token_pool` values (compression points), precision against compression.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import torch
from common import machine
from transformers import TrainerCallback

from ocrmem.common.io import write_json

RECIPES = {  # name -> stages of (train.objectives, last step as a fraction of --steps)
    "qa": [({"qa": 1.0}, 1.0)],
    "recon_qa": [({"reconstruct": 1.0}, 0.5), ({"qa": 1.0}, 1.0)],
    "mix": [({"qa": 0.5, "reconstruct": 0.5}, 1.0)],
}
FOX = [({"reconstruct": 1.0}, 1.0)]
KEEP = ("exact_match", "loss", "exact_match_answer_cut")


def quiet_evaluate(settings, model, out_dir: Path, conditions: list[str]) -> dict:
    """`evaluate` on the held-out split with these conditions, its table printed to nowhere."""
    from ocrmem.evaluation.evaluate import evaluate

    s = settings.model_copy(deep=True)
    s.eval.conditions, s.eval.reconstruction_probe = conditions, True
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluate(s, model=model, out_dir=out_dir, progress=False)
    model.train()
    return metrics


class Curve(TrainerCallback):
    """A learning-curve point every `every` optimizer steps before the last (the final evaluation adds that one)."""

    def __init__(self, settings, model, every: int, last: int, out_dir: Path):
        self.settings, self.model, self.every, self.last, self.out_dir = settings, model, every, last, out_dir
        self.points: list[dict] = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < self.last:
            m = quiet_evaluate(self.settings, self.model, self.out_dir / "curve", ["ocr_memory"])
            self.add(state.global_step, m, state.log_history)

    def add(self, step: int, m: dict, log_history: list[dict]) -> None:
        train_loss = [h["loss"] for h in log_history if "loss" in h]  # the last logged mean: overfitting shows
        self.points.append({"step": step, "exact_match": m["ocr_memory.exact_match"], "loss": m.get("ocr_memory.loss"),
                            "reconstruction_precision": m["reconstruction.sheets.precision"],
                            "train_loss": train_loss[-1] if train_loss else None})
        print(f"  step {step}: {json.dumps(self.points[-1])}", flush=True)


def run_recipe(base, llm, tok, name: str, stages, steps: int, every: int, root: Path, conditions: list[str]) -> dict:
    """Train one recipe stage by stage (a later stage resumes the earlier one's checkpoint), then evaluate."""
    from ocrmem.memory import OcrMemModel
    from ocrmem.training.trainer import train

    s = base.model_copy(deep=True)
    s.train.output_dir = str(root / name)
    shutil.rmtree(s.train.output_dir, ignore_errors=True)
    llm.cpu()  # alignment runs before the Trainer moves the model: projector, features and embeddings together
    model = OcrMemModel.build(s, llm=llm, tokenizer=tok)
    curve, t0, figures = Curve(s, model, every, steps, root / name), time.perf_counter(), {}
    for objectives, until in stages:
        s.train.objectives, s.train.max_steps = objectives, max(1, round(steps * until))
        s.train.save_steps = s.train.max_steps
        figures = train(s, model=model, resume=True, callbacks=[curve], metrics_path=None)
    seconds = time.perf_counter() - t0
    final = quiet_evaluate(s, model, root / name, conditions)
    curve.add(steps, final, [{"loss": figures["final_loss"]}] if figures.get("final_loss") is not None else [])
    out = {"recipe": name, "stages": [{"objectives": o, "until_step": round(steps * u)} for o, u in stages],
           "token_pool": s.model.token_pool, "train_seconds": round(seconds, 1), "curve": curve.points,
           "align_token_accuracy": figures.get("align_token_accuracy"),
           "compression_mean": final.get("compression.mean"),
           "reconstruction_precision": final.get("reconstruction.sheets.precision"),
           "conditions": {c: {k: final.get(f"{c}.{k}") for k in KEEP} for c in conditions}}
    print(json.dumps({k: out[k] for k in ("recipe", "token_pool", "train_seconds", "compression_mean",
                                          "reconstruction_precision", "conditions")}), flush=True)
    return out


def run_all(args) -> dict:
    from ocrmem.data.features import encode
    from ocrmem.data.manifest import render
    from ocrmem.memory import load_llm
    from ocrmem.settings import load_settings
    from ocrmem.training.baselines import baselines

    base = load_settings(args.params)
    base.train.report_to, base.tracking.wandb_mode = "none", "disabled"
    base.train.output_dir = str(Path(args.root) / "qa")  # the baselines stage writes beside it: root/baselines
    result = {"machine": machine(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
              "steps": args.steps, "every": args.every, "batch": base.train.per_device_train_batch_size,
              "learning_rate": base.train.learning_rate, "align_steps": base.train.align_steps,
              "n_train": base.data.synthetic.n_train, "n_eval": base.data.synthetic.n_eval,
              "task": base.data.synthetic.difficulty, "fox_steps": args.fox_steps, "recipes": [], "fox": []}
    t0 = time.perf_counter()
    render(base, progress=False)
    encode(base, progress=False)
    result["prepare_seconds"] = round(time.perf_counter() - t0, 1)
    base.train.max_steps, base.train.save_steps = args.steps, args.steps
    result["baselines"] = baselines(base) if args.recipes else None  # a Fox-only run compares no QA
    llm, tok = load_llm(base.model)
    conditions = list(base.eval.conditions)
    for name in args.recipes:
        result["recipes"].append(run_recipe(base, llm, tok, name, RECIPES[name], args.steps, args.every,
                                            Path(args.root), conditions))
        write_json(args.out, result)
    for k in args.fox_pools:
        s = base.model_copy(deep=True)
        s.model.token_pool = k
        result["fox"].append(run_recipe(s, llm, tok, f"recon_pool{k}", FOX, args.fox_steps,
                                        args.fox_every or args.fox_steps, Path(args.root), ["ocr_memory"]))
        write_json(args.out, result)
    return result


def plot(path: str) -> Path:
    """Learning curves per recipe (exact match, held-out answer loss, reconstruction precision) and the
    Fox table's precision against compression."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = json.loads(Path(path).read_text())
    panels = ([0, 1] if r["recipes"] else []) + [2] + ([3] if r["fox"] else [])  # a run draws what it measured
    fig, axes = plt.subplots(1, len(panels), figsize=(4.75 * len(panels), 4.2))
    ax = dict(zip(panels, axes))
    for rec in r["recipes"]:
        steps = [p["step"] for p in rec["curve"]]
        for i, key in enumerate(("exact_match", "loss", "reconstruction_precision")):
            line, = ax[i].plot(steps, [p[key] for p in rec["curve"]], marker="o", label=f"ocr_memory, {rec['recipe']}")
            for stage in rec["stages"][:-1]:  # where a staged recipe switches objective
                ax[i].axvline(stage["until_step"], color=line.get_color(), alpha=0.3, linewidth=3)
    for c, style in (("truncated_text_trained", ":"), ("full_text_trained", "--")):
        got = r["recipes"][0]["conditions"].get(c, {}) if r["recipes"] else {}
        for a, key in zip([ax.get(0), ax.get(1)], ("exact_match", "loss")):
            if got.get(key) is not None:
                a.axhline(got[key], color="gray", linestyle=style, label=f"{c} (same steps)")
    for f in r["fox"]:  # the reconstruction-only runs' own curves
        ax[2].plot([p["step"] for p in f["curve"]], [p["reconstruction_precision"] for p in f["curve"]], marker="s",
                   linestyle="--", label=f"reconstruction only, token_pool {f['token_pool']}")
    fox = sorted(r["fox"], key=lambda f: f["compression_mean"] or 0)
    if fox:
        ax[3].plot([f["compression_mean"] for f in fox], [f["reconstruction_precision"] for f in fox], marker="o")
    for f in fox:
        ax[3].annotate(f"token_pool {f['token_pool']}", (f["compression_mean"], f["reconstruction_precision"]))
    titles = ("held-out QA exact match", "held-out answer loss (nats/token)", "reconstruction character precision",
              f"Fox table: reconstruction-only, {r.get('fox_steps', '')} steps")
    for i, a in ax.items():
        a.set_title(titles[i], fontsize=10)
        a.set_xlabel("compression (text tokens / memory tokens)" if i == 3 else "step")
        if i != 1:
            a.set_ylim(0, 1.02)
        a.grid(alpha=0.3)
    if r["recipes"]:
        ax[0].legend(fontsize=8, loc="best")
        ax[1].set_yscale("log")  # a staged recipe's QA loss before its QA stage is 10x its end
    if r["fox"]:
        ax[2].legend(fontsize=8)
    fig.suptitle(f"{r['task']}: {r['n_train']} train / {r['n_eval']} held-out sheets, batch {r['batch']}, "
                 f"lr {r['learning_rate']}, {r['machine'].get('card', '')}", fontsize=10)
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--fox-pools", nargs="*", type=int, default=[8, 16, 32])
    ap.add_argument("--fox-steps", type=int, default=600)
    ap.add_argument("--fox-every", type=int, help="a Fox learning-curve point every N steps (default: the end only)")
    ap.add_argument("--root", default="runs/recipes", help="scratch directory for the runs' checkpoints")
    ap.add_argument("--out", default="bench/results/recipes.json")
    ap.add_argument("--plot", metavar="JSON", help="only draw the PNG of an earlier run")
    args = ap.parse_args()
    if args.plot:
        print(plot(args.plot))
        return
    os.environ.setdefault("WANDB_MODE", "disabled")
    result = run_all(args)
    write_json(args.out, result)
    print(f"wrote {args.out}; plot: {plot(args.out)}")


if __name__ == "__main__":
    main()
