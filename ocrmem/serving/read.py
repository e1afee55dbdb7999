"""What a memory holds: the frozen LLM's reconstruction of a history, page by page, from the pages alone.

    ocrmem read --adapter checkpoints/adapter --history notes.txt [--score]
    readings, cut = read(MemoryLLM.from_pretrained("checkpoints/adapter"), text)

Each page of the memory (laid out as `generate` lays it out) is read on its own with the prompt the
reconstruction objective trains ("Repeat the text of the memory pages exactly."). Its precision is the
Fox figure: 1 - edit distance / length of the page's text, the text as written (the span of the history
the page shows), so a reader that drops or invents characters loses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocrmem.evaluation.scoring import char_precision
from ocrmem.memory.prompt import PROMPTS
from ocrmem.memory.render import keep_recent, page_chunks
from ocrmem.serving.caches import all_lines
from ocrmem.serving.memory_llm import MemoryLLM, history_text


@dataclass
class PageReading:
    page: int  # 0 = the oldest page of the memory
    text: str  # the history's text on this page, as written
    reconstruction: str  # what the LLM reads back from the page
    memory_tokens: int

    @property
    def precision(self) -> float:
        return char_precision(self.reconstruction, self.text)


def page_texts(text: str, rs) -> tuple[list[str], int]:
    """The span of `text` each memory page shows (the page budget's rule), and the characters cut before them."""
    kept, cut = keep_recent(all_lines(text, rs), text, rs)
    return [text[chunk[0][0]:chunk[-1][1]] if chunk else "" for chunk in page_chunks(kept, rs)], cut


def read(llm: MemoryLLM, history, batch_size: int = 4, extra_tokens: int = 8) -> tuple[list[PageReading], int]:
    """Every memory page of `history` read back on its own: ([PageReading], leading characters cut)."""
    texts, cut = page_texts(history_text(history), llm.render_settings)
    budget = max(len(llm.tokenizer(t, add_special_tokens=False).input_ids) for t in texts) + extra_tokens
    answers = llm.answer_batch(texts, [PROMPTS["reconstruct"]] * len(texts), max_new_tokens=budget,
                               batch_size=batch_size)
    return [PageReading(i, t, a.text, a.memory_tokens) for i, (t, a) in enumerate(zip(texts, answers))], cut


def coverage(history, readings: list[PageReading], cut: int) -> str:
    """One line: how much of the history the memory holds, in characters and pages."""
    n = len(history_text(history))
    tokens = sum(r.memory_tokens for r in readings)
    return (f"the memory holds {n - cut:,} of {n:,} characters of the history in {len(readings)} "
            f"page{'s' * (len(readings) != 1)} ({tokens:,} memory tokens)")
