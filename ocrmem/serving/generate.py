"""`ocrmem generate` as a library: a trained memory answers one question about a history, or a JSONL file
of questions (each history's pages drawn and encoded once, through the page cache).

    generate("checkpoints/adapter", history=text, prompt="What is item 3?")        # -> Answer
    generate("checkpoints/adapter", input_path="qs.jsonl", output_path="as.jsonl")  # -> counts
    generate("/abs/adapter", history=text, prompt="...", llm="./my-copy-of-the-llm")      # your own LLM copy
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ocrmem.common.errors import UserError, read_utf8
from ocrmem.common.io import write_jsonl
from ocrmem.data.sources import DataError, format_chat, jsonl_records
from ocrmem.serving.memory_llm import Answer, MemoryLLM, history_text


def generate(adapter: str | Path, history=None, prompt: str | None = None, input_path: str | Path | None = None,
             output_path: str | Path | None = None, max_new_tokens: int = 64, llm: str | None = None,
             ocr_model: str | None = None, trust_remote_code: bool = False) -> Answer | dict:
    """One answer (history + prompt), or every question of `input_path` answered into `output_path`.
    A questions file is checked line by line before the model loads. `llm`, `ocr_model` and
    `trust_remote_code` go to MemoryLLM.from_pretrained."""
    if input_path is not None:
        read_questions(input_path)
    llm = MemoryLLM.from_pretrained(adapter, llm=llm, ocr_model=ocr_model, trust_remote_code=trust_remote_code)
    if input_path is not None:
        return answer_file(llm, input_path, output_path, max_new_tokens=max_new_tokens)
    return llm.answer(history, prompt, max_new_tokens=max_new_tokens)


def read_history(path: str | Path):
    """A --history file: text, or a .json list of chat turns; says so when it is empty."""
    path = str(path)
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


def read_questions(path: str | Path) -> list[dict]:
    """Lines {"history": str | [turns], "prompt": str, "id"?: str} of a JSONL file; a bad line raises
    DataError naming the file and line (all lines are checked before any model loads)."""
    rows = []
    for where, lineno, rec in jsonl_records(path, "pass a JSONL file of questions to --input"):
        if not isinstance(rec.get("prompt"), str):
            raise DataError(f"{where}: expected an object with a string 'prompt', got {json.dumps(rec)[:80]}")
        hist = rec.get("history", "")
        if not isinstance(hist, (str, list)):
            raise DataError(f"{where}: 'history' must be a string or a list of chat turns, got {type(hist).__name__}")
        if isinstance(hist, list):
            format_chat(hist, f"{where}")  # raises DataError on a bad turn
        rows.append({"id": str(rec.get("id", f"line-{lineno}")), "history": hist, "prompt": rec["prompt"]})
    return rows


def answer_file(llm: MemoryLLM, input_path: str | Path, output_path: str | Path, max_new_tokens: int = 64,
                progress: bool = True) -> dict:
    """Answer every question of a JSONL file into another (written atomically, one line per question).
    Questions about the same history share its pages through the page cache."""
    from tqdm import tqdm

    rows = read_questions(input_path)
    out = []
    for r in tqdm(rows, desc="answering", unit="q", disable=not progress, file=sys.stderr):
        a = llm.answer(r["history"], r["prompt"], max_new_tokens=max_new_tokens)
        out.append({"id": r["id"], "prompt": r["prompt"], "answer": a.text, "cut_chars": a.cut_chars,
                    "memory_tokens": a.memory_tokens})
    write_jsonl(output_path, out)
    return {"questions": len(out), "pages_rendered": llm.pages.rendered, "pages_from_cache": llm.pages.cache.hits}
