"""The read stage: what a trained memory holds of your own text, page by page.

    ocrmem read --adapter checkpoints/adapter --history FILE [--score]

Prints the frozen LLM's reconstruction of each memory page (the text it can read back from the pages
alone) and, with --score, its character precision against the text on that page. This is how to check,
on your own data, that the memory holds what you think it holds. The work is ocrmem.serving.read.read.
"""

from __future__ import annotations

HELP = "print what a trained memory holds of a history: its reconstruction, page by page"
SETTINGS = "none"
METRICS = None


def add_arguments(p) -> None:
    p.add_argument("--adapter", required=True)
    p.add_argument("--history", required=True, help="text file, or .json list of chat turns")
    p.add_argument("--score", action="store_true", help="also print each page's character precision")
    p.add_argument("--batch-size", type=int, default=4, help="pages read at once")


def run(args, s: None) -> int:
    from ocrmem.evaluation.scoring import mean
    from ocrmem.serving.generate import read_history
    from ocrmem.serving.memory_llm import MemoryLLM
    from ocrmem.serving.read import coverage, read

    history = read_history(args.history)
    readings, cut = read(MemoryLLM.from_pretrained(args.adapter), history, batch_size=args.batch_size)
    for r in readings:
        score = f", precision {r.precision:.3f}" if args.score else ""
        print(f"--- page {r.page + 1}/{len(readings)} ({len(r.text):,} characters, {r.memory_tokens} memory "
              f"tokens{score}) ---\n{r.reconstruction}")
    print(coverage(history, readings, cut))
    if args.score:
        weighted = sum(r.precision * len(r.text) for r in readings) / max(1, sum(len(r.text) for r in readings))
        per_page = mean([r.precision for r in readings])
        print(f"precision: {weighted:.3f} over its characters (per page: mean {per_page:.3f})")
    return 0
