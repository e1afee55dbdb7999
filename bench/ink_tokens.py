"""What ink-width strips save in memory tokens: a line pays only for the tokens its ink reaches.

    python bench/ink_tokens.py --out bench/results/ink-tokens.json                     # ~1 min, no model run
    OCRMEM_MODEL__TOKEN_POOL=32 python bench/ink_tokens.py --out bench/results/ink-tokens-pool32.json
    python bench/ink_tokens.py --adapter READER --out F.json    # and what a reader reads back, both ways

Stage 1's held-out texts (the Fox table's: `pretrain.n_eval` texts of the evaluation kinds, from whole
documents never trained on) are drawn at each render point of `pretrain.points` and priced by the
render stage itself (ocrmem.memory.lines), twice: every drawn line paying its full `per_line` tokens
(`model.recognizer_ink_width: false`), and each line paying only the width buckets its ink reaches
(`true`). Per text kind and point it prints the compression both ways (text tokens on the pages over
the memory tokens they cost, summed over the kind's texts) and the gain, the second over the first.
With `--adapter` a trained reader (its own model and render settings) also reads every text back each
way (`ocrmem.evaluation.reading`, the Fox precision): what the tokens that ink-width strips drop were
worth to it. The frames they drop hold only the blank strip's features, but the strip cut to its
bucket changes the features the recognizer computes for the ink (its receptive field is the strip).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocrmem.common.errors import UserError  # noqa: E402
from ocrmem.data.manifest import read_manifest, render_dataset  # noqa: E402
from ocrmem.evaluation.reading import point_settings  # noqa: E402
from ocrmem.memory.encoder import tokens_per_line, tokens_per_page  # noqa: E402
from ocrmem.memory.hub import load_tokenizer, read_adapter_config  # noqa: E402
from ocrmem.settings import Settings, load_settings  # noqa: E402
from ocrmem.training.pretrain import corpus, pretrain_settings  # noqa: E402


def compression_by_kind(settings: Settings, point: str, ink: bool, tokenizer, out: Path) -> dict[str, float]:
    """Text tokens over memory tokens per text kind, the held-out texts drawn at `point`."""
    model = settings.model.model_copy(update={"recognizer_ink_width": ink})
    ps = point_settings(settings.model_copy(update={"model": model}), point, out / f"ink-{ink}")
    render_dataset(ps, ["eval"], tokenizer=tokenizer, tokens_per_page=tokens_per_page(ps),
                   tokens_per_line=tokens_per_line(ps), progress=False, examples={"eval": corpus(ps)["eval"]})
    rows, sums = read_manifest(ps, "eval"), {}
    for r in rows:
        t, m = sums.get(r["meta"]["kind"], (0, 0))
        sums[r["meta"]["kind"]] = (t + r["kept_text_tokens"], m + r["vision_tokens"])
    return {kind: round(t / m, 3) for kind, (t, m) in sums.items()}


def read_both_ways(settings: Settings, adapter: str, out: Path) -> list[dict]:
    """The reader's reading table (precision, compression per kind and point) without and with ink width."""
    from ocrmem.evaluation.reading import reading_table
    from ocrmem.memory.model import OcrMemModel

    got = {}
    for ink in (False, True):
        model = OcrMemModel.from_pretrained(adapter, recognizer_ink_width=ink).eval()
        ms, rs = model.settings.model, model.settings.render
        s = pretrain_settings(settings.model_copy(update={"model": ms, "render": rs}))
        got[ink] = reading_table(model, s, corpus(s)["eval"], s.pretrain.points, out / f"read-{ink}", progress=False)
    return [{"text_kind": f["text_kind"], "point": f["point"], "compression_full_lines": f["compression"],
             "compression_ink": i["compression"], "gain": round(i["compression"] / f["compression"], 3),
             "precision_full_lines": f["precision"], "precision_ink": i["precision"], "n": f["n"]}
            for f, i in zip(got[False], got[True])]


def priced_both_ways(settings: Settings, out: Path) -> list[dict]:
    tok, rows = load_tokenizer(settings.model), []
    for point in settings.pretrain.points:
        full, ink = (compression_by_kind(settings, point, i, tok, out) for i in (False, True))
        rows += [{"text_kind": k, "point": point, "compression_full_lines": full[k], "compression_ink": ink[k],
                  "gain": round(ink[k] / full[k], 3)} for k in full]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--adapter", help="a trained reader (adapter directory) to read every text back both ways")
    a = ap.parse_args()
    settings = load_settings(a.params)
    with tempfile.TemporaryDirectory(prefix="ocrmem-ink-") as tmp:
        rows = read_both_ways(settings, a.adapter, Path(tmp)) if a.adapter else priced_both_ways(settings, Path(tmp))
    pool = read_adapter_config(a.adapter)["model"]["token_pool"] if a.adapter else settings.model.token_pool
    print(f"token_pool {pool}, n_eval {settings.pretrain.n_eval}, n_chars {settings.pretrain.n_chars}")
    print(f"{'text kind':<12}{'point':>7}{'full lines':>12}{'ink width':>11}{'gain':>7}"
          + ("  precision full / ink" if a.adapter else ""))
    for r in rows:
        print(f"{r['text_kind']:<12}{r['point']:>7}{r['compression_full_lines']:>11.2f}x{r['compression_ink']:>10.2f}x"
              f"{r['gain']:>7.2f}" + (f"  {r['precision_full_lines']:.3f} / {r['precision_ink']:.3f}" if a.adapter
                                      else ""))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        corpus_args = settings.pretrain.model_dump(include={"n_eval", "n_chars", "seed", "points"})
        Path(a.out).write_text(json.dumps({"token_pool": pool, "adapter": a.adapter, "pretrain": corpus_args,
                                           "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # bad input: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
