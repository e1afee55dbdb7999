"""Figures of rendered splits (stats.json): pages, characters, text vs memory tokens, compression,
glyphs the font lacks. Written by the render stage (ocrmem/data/manifest.py)."""

from __future__ import annotations

from collections import Counter


def split_stats(rows: list[dict]) -> dict:
    tt = [r["text_tokens"] for r in rows]
    has_tok = bool(rows) and all(t is not None for t in tt)
    vis = sum(r["vision_tokens"] or 0 for r in rows) if rows else 0
    missing: Counter = Counter()
    for r in rows:
        missing.update(r["missing_glyphs"])
    comps = [r["compression"] for r in rows if r["compression"] is not None]
    return {
        "examples": len(rows),
        "pages": sum(len(r["pages"]) for r in rows),
        "history_chars": sum(r["history_chars"] for r in rows),
        "kept_chars": sum(r["kept_chars"] for r in rows),
        "cut_chars": sum(r["cut_chars"] for r in rows),
        "examples_truncated": sum(1 for r in rows if r["cut_chars"] > 0),
        "text_tokens": sum(tt) if has_tok else None,
        "kept_text_tokens": sum(r["kept_text_tokens"] for r in rows) if has_tok else None,
        "vision_tokens": vis if rows and rows[0]["vision_tokens"] is not None else None,
        "compression_mean": sum(comps) / len(comps) if comps else None,
        "compression_overall": (sum(r["kept_text_tokens"] for r in rows) / vis) if has_tok and vis else None,
        "missing_glyphs": dict(missing.most_common()),
        "missing_glyphs_total": sum(missing.values()),
    }


def total_stats(per_split: dict[str, dict]) -> dict:
    vals = list(per_split.values())

    def add(k):
        xs = [v[k] for v in vals]
        return None if not xs or any(x is None for x in xs) else sum(xs)

    tot = {k: add(k) for k in ("examples", "pages", "history_chars", "kept_chars", "cut_chars",
                                "examples_truncated", "text_tokens", "kept_text_tokens", "vision_tokens")}  # fmt: skip
    n = tot["examples"] or 0
    means = [(v["compression_mean"], v["examples"]) for v in vals if v["compression_mean"] is not None]
    tot["compression_mean"] = sum(m * k for m, k in means) / n if means and len(means) == len(vals) and n else None
    tot["compression_overall"] = (
        tot["kept_text_tokens"] / tot["vision_tokens"] if tot["kept_text_tokens"] and tot["vision_tokens"] else None
    )
    missing: Counter = Counter()
    for v in vals:
        missing.update(v["missing_glyphs"])
    tot["missing_glyphs"] = dict(missing.most_common())
    tot["missing_glyphs_total"] = sum(missing.values())
    return tot
