"""The generate stage: a trained memory answers questions about a long history.

    ocrmem generate --adapter checkpoints/adapter --history FILE --prompt "..."
    ocrmem generate --adapter checkpoints/adapter --input questions.jsonl --output answers.jsonl
    ocrmem generate --adapter /abs/adapter --llm PATH_OR_ID --ocr-model PATH_OR_ID [--trust-remote-code] ...

The adapter loads from any working directory (its local models are found from where it was trained,
or named with --llm / --ocr-model); remote code runs only with --trust-remote-code.

The work is `ocrmem.serving.generate.generate`; this module reads the arguments and prints.
"""

from __future__ import annotations

import sys

from ocrmem.common.errors import UserError

HELP = "answer a prompt about a long history with a trained memory"
SETTINGS = "none"
METRICS = None


def add_arguments(p) -> None:
    p.add_argument("--adapter", required=True)
    p.add_argument("--history", help="text file, or .json list of chat turns (one question)")
    p.add_argument("--prompt", help="the question about --history")
    p.add_argument("--input", help='JSONL of questions: {"history": str | [turns], "prompt": str, "id"?: str}')
    p.add_argument("--output", help="JSONL of answers, one per question (written atomically)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--llm", metavar="PATH_OR_ID", help="your copy of the LLM the adapter names (checked against it)")
    p.add_argument("--ocr-model", metavar="PATH_OR_ID", help="your copy of the OCR model the adapter names")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the models to run their own Python code (the adapter's config never does)")


def _check(args) -> None:
    one = args.history is not None and args.prompt is not None and args.input is None and args.output is None
    many = args.input is not None and args.output is not None and args.history is None and args.prompt is None
    if not (one or many):
        raise UserError("give --history FILE --prompt TEXT, or --input FILE.jsonl --output FILE.jsonl")


def run(args, s: None) -> int:
    from ocrmem.serving.generate import generate, read_history

    _check(args)
    history = read_history(args.history) if args.history else None
    out = generate(args.adapter, history=history, prompt=args.prompt, input_path=args.input,
                   output_path=args.output, max_new_tokens=args.max_new_tokens, llm=args.llm,
                   ocr_model=args.ocr_model, trust_remote_code=args.trust_remote_code)
    if args.input:
        print(f"{out['questions']} answers -> {args.output} ({out['pages_rendered']} pages drawn, "
              f"{out['pages_from_cache']} from the page cache)")
        return 0
    print(out.text)
    if out.missing_glyphs:
        print(f"(the font cannot draw {sum(out.missing_glyphs.values())} characters of the history, drawn as "
              f"boxes: {''.join(out.missing_glyphs)[:20]!r}; set render.font_path to a font that has them)",
              file=sys.stderr)
    print(_held(history, out), file=sys.stderr)
    return 0


def _held(history, answer) -> str:
    """How much of the history the memory holds, in characters and pages (and what the budget cut)."""
    from ocrmem.serving.memory_llm import history_text

    n, pages = len(history_text(history)), len(answer.page_lines)
    cut = f"; the oldest {answer.cut_chars:,} did not fit the page budget" if answer.cut_chars else ""
    return (f"(memory: {n - answer.cut_chars:,} of {n:,} characters of the history on {pages} "
            f"page{'s' * (pages != 1)}, {answer.memory_tokens:,} memory tokens{cut})")
