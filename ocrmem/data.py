"""Examples (JSONL, plain text, a synthetic memory task) and the render stage.

An `Example` is a long `history` (rendered to pages: the memory), a `prompt` (given as text) and
its `target`. `render_dataset` renders every split to `settings.rendered_dir/<split>/`:

    <id>-p<k>.png     the pages of one example (k = 0, 1, ...)
    manifest.jsonl    one JSON line per example (schema: `MANIFEST_FIELDS`), written atomically
                      LAST: it is the completion marker of the split
    fingerprint       sha256 of (renderer version, render settings, font, examples, tokenizer,
                      tokens_per_page); a rerun with the same fingerprint does nothing
    progress.jsonl    the examples rendered so far (a killed run resumes from it); removed at the end
    stats.json        this split's figures
and `settings.rendered_dir/stats.json` with the figures of every rendered split and their total.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ocrmem import render as R
from ocrmem.settings import ConfigError, RenderSettings, Settings

SPLITS = ("train", "eval")

MANIFEST_FIELDS = (
    "id", "history", "prompt", "target", "continuation", "meta",
    "pages", "sha256", "history_chars", "kept_chars", "cut_chars", "missing_glyphs",
    "text_tokens", "kept_text_tokens", "vision_tokens", "compression",
)  # fmt: skip


class DataError(ValueError):
    """A bad input file or record; the message names the file, the line and what is wrong."""


@dataclass
class Example:
    id: str
    history: str
    prompt: str
    target: str
    continuation: str | None = None
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# ids

_ID_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_id(s: Any) -> str:
    """A safe file-name stem: only [A-Za-z0-9._-], never '', '.', '..', never starting with '.'."""
    out = _ID_BAD.sub("_", str(s)).lstrip("._").rstrip("_")  # no hidden files, no '.', '..'
    if not out:
        out = "x" + hashlib.sha256(str(s).encode()).hexdigest()[:8]
    return out[:120]


def unique_ids(examples: list[Example]) -> list[Example]:
    """Sanitise ids and give duplicates a suffix (-1, -2, ...); the original id goes to meta."""
    seen: set[str] = set()
    for ex in examples:
        base = sanitize_id(ex.id)
        new, k = base, 0
        while new in seen:
            k += 1
            new = f"{base}-{k}"
        seen.add(new)
        if new != ex.id:
            ex.meta = {**ex.meta, "source_id": ex.id}
            ex.id = new
    return examples


# ---------------------------------------------------------------------------------------------
# sources


def format_chat(turns: list, where: str) -> str:
    parts = []
    for j, t in enumerate(turns):
        if not isinstance(t, dict) or not isinstance(t.get("role"), str) or not isinstance(t.get("content"), str):
            raise DataError(f"{where}: history[{j}] must be an object with string 'role' and 'content', got {t!r:.80}")
        parts.append(f"{t['role']}: {t['content']}")
    return "\n\n".join(parts)


def read_jsonl(path: str | os.PathLike) -> list[Example]:
    """Examples of a JSONL file: history (string or chat turns), prompt, target, [id, continuation, meta]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file: fix data.train_files / data.eval_files in params.yaml")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            hist = rec.get("history")
            if isinstance(hist, list):
                hist = format_chat(hist, where)
            elif not isinstance(hist, str):
                raise DataError(
                    f"{where}: 'history' must be a string or a list of chat turns, got "
                    f"{'nothing' if hist is None else type(hist).__name__}"
                )
            for key in ("prompt", "target"):
                if not isinstance(rec.get(key), str):
                    got = "nothing" if key not in rec else type(rec[key]).__name__
                    raise DataError(f"{where}: '{key}' must be a string, got {got}")
            cont = rec.get("continuation")
            if cont is not None and not isinstance(cont, str):
                raise DataError(f"{where}: 'continuation' must be a string or null, got {type(cont).__name__}")
            meta = rec.get("meta", {})
            if not isinstance(meta, dict):
                raise DataError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
            rid = rec.get("id", f"{path.stem}-{lineno}")
            if not isinstance(rid, (str, int)):
                raise DataError(f"{where}: 'id' must be a string, got {type(rid).__name__}")
            out.append(Example(str(rid), hist, rec["prompt"], rec["target"], cont, dict(meta)))
    return out


def read_text_corpus(path: str | os.PathLike, history_chars: int, continuation_chars: int) -> list[Example]:
    """Split a long plain-text file into consecutive (history, continuation) windows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file: fix data.train_files / data.eval_files in params.yaml")
    text = path.read_text(encoding="utf-8", errors="replace")
    step = history_chars + continuation_chars
    out = []
    for i, s in enumerate(range(0, len(text) - step + 1, step)):
        hist, cont = text[s : s + history_chars], text[s + history_chars : s + step]
        out.append(
            Example(f"{path.stem}-{i}", hist, "Continue the text.", cont, cont, {"source": str(path), "offset": s})
        )
    if not out and text.strip():  # shorter than one window: one example, 90/10
        cut = max(1, len(text) * 9 // 10)
        out.append(Example(f"{path.stem}-0", text[:cut], "Continue the text.", text[cut:], text[cut:],
                           {"source": str(path), "offset": 0}))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# synthetic memory task

KEYS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip
VOCAB_16 = (
    "red", "blue", "green", "black", "white", "pink", "gold", "gray",
    "cat", "dog", "fox", "owl", "bee", "cow", "pig", "ant",
)  # fmt: skip
VOCAB_32 = VOCAB_16 + (
    "brown", "silver", "orange", "purple", "yellow", "violet", "tan", "navy",
    "bear", "wolf", "duck", "goat", "frog", "lion", "fish", "horse",
)  # fmt: skip
_FILLER_WORDS = (
    "the", "a", "river", "city", "morning", "quietly", "walked", "across", "old", "bridge", "while",
    "market", "opened", "early", "light", "rain", "fell", "over", "hills", "people", "talked", "about",
    "weather", "train", "arrived", "late", "someone", "carried", "letters", "garden", "window", "evening",
)  # fmt: skip

DIFFICULTIES = {
    # rows, vocabulary, blank line between rows, which rows are asked about
    "easy": (8, VOCAB_16, True, "first"),
    "medium": (8, VOCAB_16, True, "any"),
    "hard": (16, VOCAB_32, False, "any"),
    "prose": (8, VOCAB_32, None, "any"),
}


def _filler_sentence(rng: random.Random) -> str:
    words = [rng.choice(_FILLER_WORDS) for _ in range(rng.randint(6, 12))]
    return " ".join(words).capitalize() + "."


def make_synthetic(n: int, difficulty: str = "easy", seed: int = 0, split: str = "train") -> list[Example]:
    """`n` memory examples: facts in the history, a question about one of them, its one-word answer.

    easy:   a key-value sheet, 8 fixed keys in fixed order, one row per line with a blank line in
            between (row i always lands at the same place on the page), values from 16 words; the
            question is always about the first (oldest) row: recall of a word at a fixed place.
            A frozen SmolLM2 with a linear projector over pixel_lines tokens learns it on the CPU
            in ~75 steps (measured: 100% held-out at step 75, lr 3e-3, batch 8); the truncated-text
            baseline, which keeps the most recent tokens, loses that row.
    medium: the same sheet, the question about any row: the LLM must also route to the right
            memory token (measured: 2 rows ~30% at 125 steps, 8 rows at chance after 150: a GPU
            run, or more steps).
    hard:   16 rows, one per line, 32 words, any row.
    prose:  8 facts ("The code word for bravo is owl.") at random places in random filler prose:
            needs a real OCR encoder (deepseek_ocr2) and 1024px pages.
    Chance without memory: 1/16 (easy, medium), 1/32 (hard, prose). train and eval use disjoint
    seeded streams (seed*2 and seed*2+1); the same arguments always give the same examples.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"data.synthetic.difficulty = {difficulty!r}: use one of {', '.join(DIFFICULTIES)}")
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    rng = random.Random(seed * 2 + SPLITS.index(split))
    n_rows, vocab, spaced, asked = DIFFICULTIES[difficulty]
    keys = KEYS[:n_rows]
    out = []
    for i in range(n):
        values = [rng.choice(vocab) for _ in keys]
        q = 0 if asked == "first" else rng.randrange(n_rows)
        if difficulty == "prose":
            facts = [f"The code word for {k} is {v}." for k, v in zip(keys, values)]
            order = list(range(n_rows))
            rng.shuffle(order)
            sentences = [_filler_sentence(rng) for _ in range(2 * n_rows)]
            for j in order:  # each fact at a random place in the prose
                sentences.insert(rng.randrange(len(sentences) + 1), facts[j])
            history = " ".join(sentences)
            prompt = f"What is the code word for {keys[q]}? Answer with one word."
            continuation = None
        else:
            rows = [f"{k}: {v}" for k, v in zip(keys, values)]
            history = ("\n\n" if spaced else "\n").join(rows)
            prompt = f"What is the value of {keys[q]}? Answer with one word."
            continuation = None  # the sheet is complete: nothing follows it
        out.append(
            Example(
                id=f"syn-{difficulty}-{split}-{i:06d}",
                history=history,
                prompt=prompt,
                target=values[q],
                continuation=continuation,
                meta={"key": keys[q], "difficulty": difficulty, "row": q, "vocab_size": len(vocab)},
            )
        )
    return out


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


# ---------------------------------------------------------------------------------------------
# the render stage


def _render_key(rs: RenderSettings) -> dict:
    d = rs.model_dump()
    d.pop("workers", None)  # does not change the output
    font = R.resolve_font_path(rs.font_path)
    d["font_file"] = [os.path.basename(font), os.path.getsize(font)]
    d["renderer_version"] = R.RENDERER_VERSION
    return d


def fingerprint(rs: RenderSettings, examples: Sequence[Example], tokenizer=None, tokens_per_page=None) -> str:
    h = hashlib.sha256()
    tok_name = None if tokenizer is None else getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    head = {"render": _render_key(rs), "tokenizer": tok_name, "tokens_per_page": tokens_per_page}
    h.update(json.dumps(head, sort_keys=True).encode())
    for ex in examples:
        h.update(json.dumps(asdict(ex), sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


# -- worker side (top level: picklable under "spawn") -----------------------------------------
_W: dict = {}


def _worker_init(rs: RenderSettings, out_dir: str) -> None:
    _W["rs"], _W["out"] = rs, Path(out_dir)


def _render_one(job: tuple[str, str]) -> dict:
    ex_id, history = job
    rs, out = _W["rs"], _W["out"]
    res = R.render_pages(history, rs)
    names, shas = [], []
    for k, page in enumerate(res.pages):
        name = f"{ex_id}-p{k}.png"
        shas.append(R.save_png(page, out / name))
        names.append(name)
    return {"id": ex_id, "files": names, "sha256": shas, "kept_chars": res.kept_chars,
            "cut_chars": res.cut_chars, "missing_glyphs": res.missing_glyphs}  # fmt: skip


def _n_workers(rs: RenderSettings, n_jobs: int) -> int:
    w = rs.workers or os.cpu_count() or 1
    return max(1, min(w, n_jobs))


def _run_jobs(jobs: list[tuple[str, str]], rs: RenderSettings, out_dir: Path, desc: str, progress: bool):
    from tqdm import tqdm

    workers = _n_workers(rs, len(jobs))
    bar = tqdm(total=len(jobs), desc=desc, unit="ex", disable=not progress or not jobs, file=sys.stderr)
    try:
        if workers == 1:
            _worker_init(rs, str(out_dir))
            for job in jobs:
                yield _render_one(job)
                bar.update()
        else:
            ctx = mp.get_context("spawn")
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            with ctx.Pool(workers, initializer=_worker_init, initargs=(rs, str(out_dir))) as pool:
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
        if all((out_dir / f).is_file() and R.sha256_file(out_dir / f) == s for f, s in zip(r["files"], r["sha256"])):
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


def _split_stats(rows: list[dict]) -> dict:
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


def _total_stats(per_split: dict[str, dict]) -> dict:
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


def _write_json(path: Path, obj) -> None:
    R.write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def render_split(
    settings: Settings,
    split: str,
    examples: list[Example] | None = None,
    tokenizer=None,
    tokens_per_page: int | None = None,
    progress: bool = True,
) -> dict:
    """Render one split; returns its stats plus 'rendered' (examples drawn now) and 'up_to_date'."""
    rs = settings.render
    examples = unique_ids(list(examples if examples is not None else load_examples(settings, split)))
    out = settings.rendered_dir / split
    manifest, fp_file, prog_file = out / "manifest.jsonl", out / "fingerprint", out / "progress.jsonl"
    fp = fingerprint(rs, examples, tokenizer, tokens_per_page)

    if (
        manifest.is_file()
        and fp_file.is_file()
        and fp_file.read_text().strip() == fp
        and all(page_path(settings, p).is_file() for row in read_manifest(settings, split) for p in row["pages"])
    ):
        stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").is_file() else None
        if stats is None:
            stats = _split_stats(read_manifest(settings, split))
        return {**stats, "rendered": 0, "up_to_date": True, "fingerprint": fp}

    # Invalidate first: from here until the manifest is written again, the split is incomplete.
    out.mkdir(parents=True, exist_ok=True)
    for p in (fp_file, manifest):
        p.unlink(missing_ok=True)
    done = _read_progress(prog_file, fp, out)
    if not done:
        R.write_atomic(prog_file, (json.dumps({"fingerprint": fp}) + "\n").encode())
    jobs = [(ex.id, ex.history) for ex in examples if ex.id not in done]
    with open(prog_file, "a", encoding="utf-8") as plog:
        for r in _run_jobs(jobs, rs, out, f"render {split}", progress):
            done[r["id"]] = r
            plog.write(json.dumps(r, ensure_ascii=False) + "\n")
            plog.flush()

    # tokens (parent side)
    text_tok = kept_tok = [None] * len(examples)
    if tokenizer is not None:
        text_tok = _count_tokens(tokenizer, [ex.history for ex in examples])
        kept_tok = list(text_tok)
        cut_idx = [i for i, ex in enumerate(examples) if done[ex.id]["cut_chars"] > 0]
        if cut_idx:
            kt = _count_tokens(tokenizer, [examples[i].history[done[examples[i].id]["cut_chars"] :] for i in cut_idx])
            for i, k in zip(cut_idx, kt):
                kept_tok[i] = k

    rows = []
    for ex, tt, kt in zip(examples, text_tok, kept_tok):
        r = done[ex.id]
        vis = len(r["files"]) * tokens_per_page if tokens_per_page else None
        rows.append({
            "id": ex.id, "history": ex.history, "prompt": ex.prompt, "target": ex.target,
            "continuation": ex.continuation, "meta": ex.meta,
            "pages": [f"{split}/{f}" for f in r["files"]], "sha256": r["sha256"],
            "history_chars": len(ex.history), "kept_chars": r["kept_chars"], "cut_chars": r["cut_chars"],
            "missing_glyphs": r["missing_glyphs"],
            "text_tokens": tt, "kept_text_tokens": kt, "vision_tokens": vis,
            "compression": (kt / vis) if kt is not None and vis else None,
        })  # fmt: skip

    # pages of an earlier, different render that this one does not use
    keep = {f for r in rows for f in (p.split("/", 1)[1] for p in r["pages"])}
    for p in out.glob("*.png"):
        if p.name not in keep:
            p.unlink()
    for p in out.glob(".*.tmp"):  # torn atomic writes of a killed run
        p.unlink()

    stats = _split_stats(rows)
    _write_json(out / "stats.json", stats)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    R.write_atomic(manifest, body.encode("utf-8"))  # completion marker
    R.write_atomic(fp_file, (fp + "\n").encode())
    prog_file.unlink(missing_ok=True)
    return {**stats, "rendered": len(jobs), "up_to_date": False, "fingerprint": fp}


def render_dataset(
    settings: Settings,
    splits: Iterable[str] = SPLITS,
    tokenizer=None,
    tokens_per_page: int | None = None,
    progress: bool = True,
    examples: dict[str, list[Example]] | None = None,
) -> dict:
    """Render `splits` under settings.rendered_dir; write stats.json; print a summary.

    Returns {"splits": {split: stats + rendered/up_to_date}, "total": stats, "did_work": bool}.
    `examples` overrides load_examples per split (tests, custom sources).
    """
    t0 = time.perf_counter()
    results = {}
    for split in splits:
        exs = examples.get(split) if examples else None
        results[split] = render_split(settings, split, exs, tokenizer, tokens_per_page, progress)

    # stats.json covers every split that is complete on disk, not only the ones rendered now
    per_split = {}
    for p in sorted(settings.rendered_dir.glob("*/manifest.jsonl")):
        st = p.parent / "stats.json"
        if st.is_file() and (p.parent / "fingerprint").is_file():
            per_split[p.parent.name] = json.loads(st.read_text())
    for s, r in results.items():
        per_split[s] = {k: v for k, v in r.items() if k not in ("rendered", "up_to_date", "fingerprint")}
    total = _total_stats(per_split)
    _write_json(settings.rendered_dir / "stats.json", {"splits": per_split, "total": total})

    did_work = any(not r["up_to_date"] for r in results.values())
    dt = time.perf_counter() - t0
    print(_summary(results, total, settings.rendered_dir, dt))
    return {"splits": results, "total": total, "did_work": did_work}


def _fmt(x, nd=2):
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _summary(results: dict, total: dict, root: Path, dt: float) -> str:
    lines = [f"render -> {root}  ({dt:.1f}s)"]
    for s, r in results.items():
        state = "up to date, nothing to do" if r["up_to_date"] else f"rendered {r['rendered']} examples"
        lines.append(
            f"  {s}: {r['examples']} examples, {r['pages']} pages, {r['history_chars']} chars, "
            f"{r['examples_truncated']} truncated; compression {_fmt(r['compression_overall'])} "
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
        f"compression {_fmt(total['compression_overall'])}"
    )
    return "\n".join(lines)


def read_manifest(settings: Settings, split: str) -> list[dict]:
    """The manifest rows of a completely rendered split (page paths relative to rendered_dir)."""
    out = settings.rendered_dir / split
    manifest = out / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest} not found: the {split!r} split has not been rendered (completely): run `ocrmem render`"
        )
    with open(manifest, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def page_path(settings: Settings, rel: str) -> Path:
    """Absolute path of a manifest page entry."""
    return settings.rendered_dir / rel
