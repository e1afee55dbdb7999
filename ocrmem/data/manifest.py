"""The render stage: every split's examples drawn to pages, with a manifest and compression figures.

    ocrmem render [--params params.yaml]      # -> render(settings)

`render_dataset` renders every split to `settings.rendered_dir/<split>/`:

    <id>-p<k>.png     the pages of one example (k = 0, 1, ...)
    manifest.jsonl    one JSON line per example (schema: `MANIFEST_FIELDS`), written atomically
                      LAST: it is the completion marker of the split
    fingerprint       sha256 of (renderer version, render settings, font, examples, tokenizer,
                      tokens_per_page); a rerun with the same fingerprint does nothing
    progress.jsonl    the examples rendered so far (a killed run resumes from it); removed at the end
    stats.json        this split's figures
and `settings.rendered_dir/stats.json` with the figures of every rendered split and their total.
Examples come from ocrmem/data/sources.py (files) or ocrmem/tasks/lookup.py (the synthetic task).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence, TypedDict

from ocrmem.common.errors import ConfigError, UserError, UserFileNotFoundError
from ocrmem.common.faults import fault_point
from ocrmem.common.io import fmt, jsonl, sha256_file, write_json, write_jsonl, write_text
from ocrmem.common.stats import split_stats, total_stats
from ocrmem.data.sources import SPLITS, Example, read_jsonl, read_text_corpus, unique_ids
from ocrmem.memory import render as R
from ocrmem.memory.lines import kept_tokens, row_caps
from ocrmem.settings import RenderSettings, Settings
from ocrmem.tasks.lookup import make_synthetic


class ManifestRow(TypedDict):
    """One example of a rendered split: a line of manifest.jsonl."""

    id: str
    history: str
    prompt: str
    target: str
    continuation: str | None
    meta: dict
    pages: list[str]  # page PNGs relative to rendered_dir
    sha256: list[str]  # of each page PNG
    history_chars: int
    kept_chars: int  # characters of the history on the pages
    cut_chars: int  # leading characters the page budget dropped
    missing_glyphs: dict[str, int]
    text_tokens: int | None  # of the whole history, by the LLM's tokenizer
    kept_text_tokens: int | None  # of the text on the pages
    vision_tokens: int | None  # memory tokens the pages cost
    compression: float | None  # kept_text_tokens / vision_tokens
    page_lines: list[int]  # lines drawn on each page
    blank_lines: list[list[int]] | None  # which of them hold no text and cost no memory tokens
    ink_tokens: list[list[int]] | None  # ink-width strips: memory tokens each grid line's ink pays for


MANIFEST_FIELDS = tuple(ManifestRow.__annotations__)


def memory_text(row) -> str:
    """The text on an example's pages: the history less what the page budget cut from its start."""
    return row["history"][row.get("cut_chars", 0):]


def render(settings: Settings, progress: bool = True, examples: dict[str, list[Example]] | None = None) -> dict:
    """The render stage: every split with the base LLM's tokenizer counting text tokens and the
    encoder's page cost for the compression figures; returns the figures (see render_dataset).
    `examples`: each split's examples (default: data.source's)."""
    from ocrmem.memory.encoder import tokens_per_line, tokens_per_page
    from ocrmem.memory.hub import load_tokenizer

    return render_dataset(settings, tokenizer=load_tokenizer(settings.model), tokens_per_page=tokens_per_page(settings),
                          tokens_per_line=tokens_per_line(settings), progress=progress, examples=examples)


def load_examples(settings: Settings, split: str) -> list[Example]:
    """The examples of `split` ("train" or "eval") from settings.data.source, ids unique and safe."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    d = settings.data
    if d.source == "synthetic":
        s = d.synthetic
        exs = make_synthetic(s.n_train if split == "train" else s.n_eval, s.difficulty, s.seed, split)
    else:
        files = d.train_files if split == "train" else d.eval_files
        if not files:
            raise ConfigError(
                [f"data.{split}_files = []: data.source={d.source!r} needs at least one file: list the "
                 f"{'JSONL' if d.source == 'jsonl' else '.txt'} files in params.yaml or use data.source=synthetic"]
            )  # fmt: skip
        exs = []
        for fpath in files:
            if d.source == "jsonl":
                exs += read_jsonl(fpath)
            else:
                exs += read_text_corpus(fpath, d.text_history_chars, d.text_continuation_chars)
    return unique_ids(exs)


def _render_key(rs: RenderSettings) -> dict:
    d = rs.model_dump()
    d.pop("workers", None)  # does not change the output
    font = R.resolve_font_path(rs.font_path)
    d["font_file"] = [os.path.basename(font), os.path.getsize(font)]
    d["renderer_version"] = R.RENDERER_VERSION
    return d


def fingerprint(rs: RenderSettings, examples: Sequence[Example], tokenizer=None, tokens_per_page=None,
                tokens_per_line=None, ink=None) -> str:
    h = hashlib.sha256()
    tok_name = None if tokenizer is None else getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    head = {"render": _render_key(rs), "tokenizer": tok_name, "tokens_per_page": tokens_per_page,
            **({"tokens_per_line": tokens_per_line} if tokens_per_line else {}),  # old fingerprints stay valid
            **({"ink_tokens": ink.ink_rule()} if ink is not None else {})}
    h.update(json.dumps(head, sort_keys=True).encode())
    for ex in examples:
        h.update(json.dumps(asdict(ex), sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


# -- worker side (top level: picklable under "spawn") -----------------------------------------
_W: dict = {}


def _worker_init(rs: RenderSettings, out_dir: str, ink=None) -> None:
    _W["rs"], _W["out"], _W["ink"] = rs, Path(out_dir), ink


def _render_one(job: tuple[str, str]) -> dict:
    ex_id, history = job
    rs, out = _W["rs"], _W["out"]
    res = R.render_pages(history, rs)
    names, shas, ink = [], [], _W["ink"]
    for k, page in enumerate(res.pages):
        name = f"{ex_id}-p{k}.png"
        shas.append(R.save_png(page, out / name))
        names.append(name)
    return {"id": ex_id, "files": names, "sha256": shas, "kept_chars": res.kept_chars,
            "cut_chars": res.cut_chars, "missing_glyphs": res.missing_glyphs, "page_lines": res.page_lines,
            "blank_lines": res.blank_lines,
            "ink_tokens": ink.ink_tokens(ink.preprocess(res.pages)) if ink is not None and res.pages else None}  # fmt: skip


def _n_workers(rs: RenderSettings, n_jobs: int) -> int:
    w = rs.workers or os.cpu_count() or 1
    return max(1, min(w, n_jobs))


def _run_jobs(jobs: list[tuple[str, str]], rs: RenderSettings, out_dir: Path, desc: str, progress: bool, ink=None):
    from tqdm import tqdm

    workers = _n_workers(rs, len(jobs))
    bar = tqdm(total=len(jobs), desc=desc, unit="ex", disable=not progress or not jobs, file=sys.stderr)
    try:
        if workers == 1:
            _worker_init(rs, str(out_dir), ink)
            for job in jobs:
                yield _render_one(job)
                bar.update()
        else:
            ctx = mp.get_context("spawn")
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            with ctx.Pool(workers, initializer=_worker_init, initargs=(rs, str(out_dir), ink)) as pool:
                for r in pool.imap(_render_one, jobs, chunksize=chunk):
                    yield r
                    bar.update()
    finally:
        bar.close()


def _read_progress(path: Path, fp: str, out_dir: Path) -> dict[str, dict]:
    """Results of a killed run with the same fingerprint whose pages are still intact."""
    done: dict[str, dict] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return done
    if not lines or lines[0] != json.dumps({"fingerprint": fp}):
        return done
    for line in lines[1:]:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line
        if all((out_dir / f).is_file() and sha256_file(out_dir / f) == s for f, s in zip(r["files"], r["sha256"])):
            done[r["id"]] = r
    return done


def _count_tokens(tokenizer, texts: list[str]) -> list[int]:
    out = []
    for i in range(0, len(texts), 256):
        batch = texts[i : i + 256]
        enc = tokenizer(batch, add_special_tokens=False)
        ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc
        out += [len(x) for x in ids]
    return out


def _up_to_date(settings: Settings, split: str, fp: str) -> dict | None:
    """The split's stats when it is completely rendered with fingerprint `fp`, else None."""
    out = settings.rendered_dir / split
    manifest, fp_file = out / "manifest.jsonl", out / "fingerprint"
    if not (manifest.is_file() and fp_file.is_file() and fp_file.read_text().strip() == fp):
        return None
    rows = read_manifest(settings, split)
    if not all(page_path(settings, p).is_file() and sha256_file(page_path(settings, p)) == h  # a page copied over
               for row in rows for p, h in zip(row["pages"], row["sha256"])):  # another: rendered again
        return None
    stats_file = out / "stats.json"
    return json.loads(stats_file.read_text()) if stats_file.is_file() else split_stats(rows)


def _draw(examples: list[Example], rs: RenderSettings, out: Path, fp: str, desc: str, progress: bool, ink=None):
    """Draw the examples not yet drawn by a killed run with the same fingerprint; returns
    (results by id, examples drawn now). The manifest is removed first: until it is written
    again the split is incomplete."""
    out.mkdir(parents=True, exist_ok=True)
    for p in (out / "fingerprint", out / "manifest.jsonl"):
        p.unlink(missing_ok=True)
    prog_file = out / "progress.jsonl"
    done = _read_progress(prog_file, fp, out)
    if not done:
        write_text(prog_file, jsonl([{"fingerprint": fp}]))
    jobs = [(ex.id, ex.history) for ex in examples if ex.id not in done]
    with open(prog_file, "a", encoding="utf-8") as plog:
        for n, r in enumerate(_run_jobs(jobs, rs, out, desc, progress, ink), 1):
            fault_point("render", n)  # tests only: its pages are drawn, its progress line is not
            done[r["id"]] = r
            plog.write(jsonl([r]))
            plog.flush()
    return done, len(jobs)


def _token_counts(tokenizer, examples: list[Example], done: dict) -> tuple[list, list]:
    """(history tokens, tokens of the kept part) per example; None without a tokenizer."""
    if tokenizer is None:
        return [None] * len(examples), [None] * len(examples)
    text_tok = _count_tokens(tokenizer, [ex.history for ex in examples])
    kept_tok = list(text_tok)
    cut_idx = [i for i, ex in enumerate(examples) if done[ex.id]["cut_chars"] > 0]
    if cut_idx:
        kt = _count_tokens(tokenizer, [examples[i].history[done[examples[i].id]["cut_chars"]:] for i in cut_idx])
        for i, k in zip(cut_idx, kt):
            kept_tok[i] = k
    return text_tok, kept_tok


def _manifest_row(ex: Example, r: dict, split: str, tt: int | None, kt: int | None, tokens_per_page,
                  tokens_per_line: int | None = None) -> ManifestRow:
    # line encoders: a page costs only what the lines drawn on it pay for (ocrmem.memory.lines)
    vis = sum(kept_tokens(c, tokens_per_line) for c in row_caps(r)) if tokens_per_line else (
        len(r["files"]) * tokens_per_page if tokens_per_page else None)
    return {
        "id": ex.id, "history": ex.history, "prompt": ex.prompt, "target": ex.target,
        "continuation": ex.continuation, "meta": ex.meta,
        "pages": [f"{split}/{f}" for f in r["files"]], "sha256": r["sha256"],
        "history_chars": len(ex.history), "kept_chars": r["kept_chars"], "cut_chars": r["cut_chars"],
        "missing_glyphs": r["missing_glyphs"],
        "text_tokens": tt, "kept_text_tokens": kt, "vision_tokens": vis,
        "compression": (kt / vis) if kt is not None and vis else None, "page_lines": r["page_lines"],
        "blank_lines": r.get("blank_lines"), "ink_tokens": r.get("ink_tokens"),
    }  # fmt: skip


def _remove_stale(out: Path, rows: list[dict]) -> None:
    """Pages of an earlier, different render that this one does not use; torn atomic writes."""
    keep = {f for r in rows for f in (p.split("/", 1)[1] for p in r["pages"])}
    for p in out.glob("*.png"):
        if p.name not in keep:
            p.unlink()
    for p in out.glob(".*.tmp"):
        p.unlink()


def _finish(out: Path, rows: list[dict], fp: str) -> dict:
    stats = split_stats(rows)
    write_json(out / "stats.json", stats)
    write_jsonl(out / "manifest.jsonl", rows)  # completion marker
    write_text(out / "fingerprint", fp + "\n")
    (out / "progress.jsonl").unlink(missing_ok=True)
    return stats


def render_split(settings: Settings, split: str, examples: list[Example] | None = None, tokenizer=None,
                 tokens_per_page: int | None = None, progress: bool = True, tokens_per_line: int | None = None) -> dict:
    """Render one split; returns its stats plus 'rendered' (examples drawn now) and 'up_to_date'."""
    examples = unique_ids(list(examples if examples is not None else load_examples(settings, split)))
    if not examples:  # else encode and train would run on nothing and fail far from the cause
        raise UserError(f"the {split!r} split has no examples: nothing to render; check data.source and its files")
    from ocrmem.memory.encoder import ink_pricer

    ink = ink_pricer(settings) if tokens_per_line else None
    fp = fingerprint(settings.render, examples, tokenizer, tokens_per_page, tokens_per_line, ink)
    stats = _up_to_date(settings, split, fp)
    if stats is not None:
        return {**stats, "rendered": 0, "up_to_date": True, "fingerprint": fp}
    out = settings.rendered_dir / split
    done, n_drawn = _draw(examples, settings.render, out, fp, f"render {split}", progress, ink)
    text_tok, kept_tok = _token_counts(tokenizer, examples, done)
    rows = [_manifest_row(ex, done[ex.id], split, tt, kt, tokens_per_page, tokens_per_line)
            for ex, tt, kt in zip(examples, text_tok, kept_tok)]
    _remove_stale(out, rows)
    stats = _finish(out, rows, fp)
    return {**stats, "rendered": n_drawn, "up_to_date": False, "fingerprint": fp}


def render_dataset(
    settings: Settings,
    splits: Iterable[str] = SPLITS,
    tokenizer=None,
    tokens_per_page: int | None = None,
    progress: bool = True,
    examples: dict[str, list[Example]] | None = None,
    tokens_per_line: int | None = None,
) -> dict:
    """Render `splits` under settings.rendered_dir; write stats.json; print a summary.

    Returns {"splits": {split: stats + rendered/up_to_date}, "total": stats, "did_work": bool}.
    `examples` overrides load_examples per split (tests, custom sources).
    """
    t0 = time.perf_counter()
    results = {}
    for split in splits:
        exs = examples.get(split) if examples else None
        results[split] = render_split(settings, split, exs, tokenizer, tokens_per_page, progress, tokens_per_line)

    # stats.json covers every split that is complete on disk, not only the ones rendered now
    per_split = {}
    for p in sorted(settings.rendered_dir.glob("*/manifest.jsonl")):
        st = p.parent / "stats.json"
        if st.is_file() and (p.parent / "fingerprint").is_file():
            per_split[p.parent.name] = json.loads(st.read_text())
    for s, r in results.items():
        per_split[s] = {k: v for k, v in r.items() if k not in ("rendered", "up_to_date", "fingerprint")}
    total = total_stats(per_split)
    write_json(settings.rendered_dir / "stats.json", {"splits": per_split, "total": total})

    did_work = any(not r["up_to_date"] for r in results.values())
    print(render_report(results, total, settings.rendered_dir, time.perf_counter() - t0))
    return {"splits": results, "total": total, "did_work": did_work}


def render_report(results: dict, total: dict, root: Path, dt: float) -> str:
    """The lines `ocrmem render` prints: per split what was done, truncation and missing glyphs."""
    lines = [f"render -> {root}  ({dt:.1f}s)"]
    for s, r in results.items():
        state = "up to date, nothing to do" if r["up_to_date"] else f"rendered {r['rendered']} examples"
        lines.append(
            f"  {s}: {r['examples']} examples, {r['pages']} pages, {r['history_chars']} chars, "
            f"{r['examples_truncated']} truncated; compression {fmt(r['compression_overall'], 2, 'n/a')} "
            f"text tokens/vision token; {state}"
        )
        if r["examples_truncated"]:
            lines.append(
                f"  {s}: WARNING {r['examples_truncated']} histories did not fit render.max_pages: their "
                f"start was dropped ({r['cut_chars']} chars); raise render.max_pages or render.page_size"
            )
        if r["missing_glyphs_total"]:
            top = "".join(list(r["missing_glyphs"])[:20])
            lines.append(f"  {s}: WARNING {r['missing_glyphs_total']} characters the font cannot draw: {top!r}")
    lines.append(
        f"  total: {total['examples']} examples, {total['pages']} pages, "
        f"compression {fmt(total['compression_overall'], 2, 'n/a')}"
    )
    return "\n".join(lines)


def read_manifest(settings: Settings, split: str) -> list[ManifestRow]:
    """The manifest rows of a completely rendered split (page paths relative to rendered_dir)."""
    out = settings.rendered_dir / split
    manifest = out / "manifest.jsonl"
    if not manifest.is_file():
        raise UserFileNotFoundError(
            f"{manifest} not found: the {split!r} split has not been rendered (completely): run `ocrmem render`"
        )
    with open(manifest, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def page_path(settings: Settings, rel: str) -> Path:
    """Absolute path of a manifest page entry."""
    return settings.rendered_dir / rel
