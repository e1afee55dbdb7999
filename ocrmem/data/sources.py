"""Where examples come from: JSONL files, plain text, and the ids that name their files.

An `Example` is a long `history` (rendered to pages: the memory), a `prompt` (given as text) and
its `target`; `continuation` is what follows the history (the `continue` objective), if known.
The synthetic memory task is in ocrmem/tasks/lookup.py; `ocrmem.data.manifest.load_examples` picks by settings.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocrmem.common.errors import UserError, read_utf8
from ocrmem.common.io import sha256_bytes

SPLITS = ("train", "eval")


class DataError(UserError):
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
        out = "x" + sha256_bytes(str(s).encode())[:8]
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
# files

def format_chat(turns: list, where: str) -> str:
    parts = []
    for j, t in enumerate(turns):
        if not isinstance(t, dict) or not isinstance(t.get("role"), str) or not isinstance(t.get("content"), str):
            raise DataError(f"{where}: history[{j}] must be an object with string 'role' and 'content', got {t!r:.80}")
        parts.append(f"{t['role']}: {t['content']}")
    return "\n\n".join(parts)


def jsonl_records(path: str | os.PathLike, fix: str):
    """(where "FILE:LINE", line number, object) of each non-blank line of a JSONL file; a missing file,
    undecodable bytes, bad JSON or a non-object raise DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file: {fix}")
    with io.StringIO(read_utf8(path)) as f:  # undecodable bytes: named by file and line
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
            yield where, lineno, rec


def read_jsonl(path: str | os.PathLike) -> list[Example]:
    """Examples of a JSONL file: history (string or chat turns), prompt, target, [id, continuation, meta]."""
    path = Path(path)
    out = []
    for where, lineno, rec in jsonl_records(path, "fix data.train_files / data.eval_files in params.yaml"):
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
    if not out:
        raise DataError(f"{path}: no examples (the file is empty or blank): add JSON lines or remove it from "
                        "data.train_files / data.eval_files")
    return out


def read_text_corpus(path: str | os.PathLike, history_chars: int, continuation_chars: int) -> list[Example]:
    """Split a long plain-text file into consecutive (history, continuation) windows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file: fix data.train_files / data.eval_files in params.yaml")
    text = read_utf8(path)
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
    if not out:
        raise DataError(f"{path}: no text (the file is empty or blank): remove it from data.train_files / "
                        "data.eval_files")
    used = len(out) * step if len(text) >= step else len(text)
    if text[used:].strip():  # a tail shorter than one window: say so rather than drop it silently
        print(f"{path}: the last {len(text) - used} of {len(text)} characters are shorter than one window "
              f"(data.text_history_chars + data.text_continuation_chars = {step}) and are not used: lower "
              "those to use more of the file", file=sys.stderr)
    return out
