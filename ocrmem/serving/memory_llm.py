"""Answer prompts about a long history with a trained OCR memory.

    llm = MemoryLLM.from_pretrained("checkpoints/adapter")
    a = llm.answer(history, "What is the value of delta? Answer with one word.")
    a.text, a.cut_chars, a.pages, a.memory_tokens
    chat = llm.session(history); chat.append(more); chat.answer(prompt)   # a growing memory

The history (a string, or chat turns [{"role", "content"}] formatted as `ocrmem.data.sources.format_chat`
formats them for training) is laid out with the adapter's render settings into pages of whole
line-chunks (`ocrmem.serving.caches.page_layout`): when it needs more than render.max_pages pages the most
recent pages are kept and `cut_chars` says how many leading characters were dropped. The pages go
through the frozen encoder and the trained projector (each page once: `PageCache`) in front of the
chat-templated prompt; the answer is greedy. `answer` is a fresh session's answer, so a session
that grew page by page answers exactly as a from-scratch call does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from pathlib import Path

import torch
from PIL import Image

from ocrmem.data.sources import format_chat
from ocrmem.memory.lines import blank_lines
from ocrmem.memory.prompt import clip_prompt, memory_prompt, pad_right, pad_text
from ocrmem.memory.render import RenderResult, draw_page, load_font, missing_glyphs
from ocrmem.serving.caches import LineLayout, PageCache, PageEmbedder, PrefixCache, page_layout


@dataclass
class Answer:
    text: str
    cut_chars: int  # leading characters of the history that did not fit render.max_pages
    memory_tokens: int = 0  # LLM positions the memory took
    page_lines: list[list[str]] = field(default_factory=list, repr=False)  # each memory page's lines
    render_settings: object = field(default=None, repr=False)
    token_ids: list[int] = field(default_factory=list)

    @cached_property
    def pages(self) -> list[Image.Image]:
        """The memory pages as drawn (drawn on first access: the page cache needs no images)."""
        return [draw_page(p, self.render_settings) for p in self.page_lines]

    @cached_property
    def missing_glyphs(self) -> dict[str, int]:
        """Characters on the pages that the font cannot draw (they show as tofu)."""
        rs = self.render_settings
        return missing_glyphs("".join(c for p in self.page_lines for c in p), load_font(rs.font_path, rs.font_size))


def history_text(history: str | list[dict]) -> str:
    """A history as the text that is rendered: strings as they are, chat turns as training formats them."""
    if isinstance(history, str):
        return history
    if isinstance(history, (list, tuple)):
        return format_chat(list(history), "history")
    raise TypeError(f"history must be a string or a list of chat turns, got {type(history).__name__}")


class MemoryLLM:
    def __init__(self, model, max_prompt_tokens: int | None = None, page_cache: PageCache | None = None):
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.render_settings = model.settings.render
        self.max_prompt_tokens = max_prompt_tokens
        self.pages = PageEmbedder(model, page_cache if page_cache is not None else PageCache())

    @classmethod
    def from_pretrained(cls, adapter_dir: str | Path, device: str | torch.device | None = None,
                        max_prompt_tokens: int | None = None, trust_remote_code: bool = False,
                        llm: str | None = None, ocr_model: str | None = None, **model_overrides) -> "MemoryLLM":
        """Load an adapter from any working directory (OcrMemModel.from_pretrained). `llm` / `ocr_model`: your
        own copy (path or hub id) of the LLM / OCR model it names, checked against its tensors. Remote code
        runs only with trust_remote_code=True, never because the adapter asks. Other overrides go to its
        model settings."""
        from ocrmem.memory.model import OcrMemModel

        model = OcrMemModel.from_pretrained(adapter_dir, trust_remote_code=trust_remote_code, llm=llm,
                                            ocr_model=ocr_model, **model_overrides)
        if device is not None:
            model.to(device)
        return cls(model, max_prompt_tokens=max_prompt_tokens)

    def session(self, history: str | list[dict] | None = None) -> "MemorySession":
        """A memory that grows: append text or turns, ask questions; see ocrmem.serving.caches."""
        return MemorySession(self, history)

    def render(self, history: str | list[dict]) -> RenderResult:
        """The memory pages of a history as `answer` lays them out."""
        text = history_text(history)
        paged = page_layout(text, self.render_settings)
        font = load_font(self.render_settings.font_path, self.render_settings.font_size)
        return RenderResult(pages=[draw_page(p, self.render_settings, font) for p in paged.pages],
                            kept_chars=len(text) - paged.cut_chars, cut_chars=paged.cut_chars,
                            missing_glyphs=missing_glyphs(text[paged.cut_chars:], font), n_lines=paged.n_lines,
                            page_lines=[len(p) for p in paged.pages], blank_lines=[blank_lines(p) for p in paged.pages])

    def prompt_ids(self, prompt: str) -> tuple[list[int], int]:
        p = clip_prompt(self.tokenizer, prompt, self.max_prompt_tokens) if self.max_prompt_tokens else prompt
        return memory_prompt(self.tokenizer, p)

    def _answer(self, paged, ids: list[int], caps: list[list[int]]) -> Answer:
        tok = self.tokenizer
        return Answer(text=tok.decode(ids, skip_special_tokens=True).strip(), cut_chars=paged.cut_chars,
                      memory_tokens=sum(self.model.page_memory_tokens(caps)),
                      page_lines=paged.pages,
                      render_settings=self.render_settings, token_ids=ids)

    @torch.no_grad()
    def answer_batch(self, histories: list[str | list[dict]], prompts: list[str], max_new_tokens: int = 64,
                     batch_size: int = 8) -> list[Answer]:
        """One answer per (history, prompt) pair, in order, `batch_size` at a time (left-padded)."""
        if len(histories) != len(prompts):
            raise ValueError(f"{len(histories)} histories but {len(prompts)} prompts: give one prompt per history")
        model, tok = self.model, self.tokenizer
        out: list[Answer] = []
        for s in range(0, len(prompts), batch_size):
            paged = [page_layout(history_text(h), self.render_settings) for h in histories[s: s + batch_size]]
            memory, caps = self.pages.with_caps([p for r in paged for p in r.pages])
            ids, where = zip(*[self.prompt_ids(p) for p in prompts[s: s + batch_size]])
            text = {k: v.to(model.device) for k, v in pad_text(list(ids), tok.pad_token_id).items()}
            counts = torch.tensor([len(r.pages) for r in paged], dtype=torch.long)
            new = model.generate(**text, page_counts=counts, memory=memory, memory_pos=torch.tensor(where),
                                 page_lines=pad_right(caps, 0), max_new_tokens=max_new_tokens)
            starts = [0] + list(accumulate(len(r.pages) for r in paged))
            for k, (r, row) in enumerate(zip(paged, new.cpu().tolist())):
                row = row[: next((i + 1 for i, t in enumerate(row) if t == tok.eos_token_id), len(row))]
                out.append(self._answer(r, row, caps[starts[k]:starts[k + 1]]))
        return out

    def answer(self, history: str | list[dict], prompt: str, max_new_tokens: int = 64) -> Answer:
        """From scratch (apart from pages already in the page cache): a fresh session's answer."""
        return self.session(history).answer(prompt, max_new_tokens=max_new_tokens)


class MemorySession:
    """A history that grows by `append`; `answer` reuses its pages and the KV cache of its prefix."""

    def __init__(self, llm: MemoryLLM, history: str | list[dict] | None = None):
        self.llm, self.text = llm, ""
        self.prefix = PrefixCache()
        self.layout = LineLayout(llm.render_settings)  # finished hard lines are wrapped once
        self._paged = None
        if history:
            self.append(history)

    def append(self, more: str | dict | list[dict]) -> "MemorySession":
        """Add text (joined as it is) or chat turns (joined as format_chat joins turns)."""
        if isinstance(more, dict):
            more = [more]
        add = history_text(more)
        if isinstance(more, str):
            self.text += add
        elif add:
            self.text = f"{self.text}\n\n{add}" if self.text else add
        self._paged = None
        return self

    def paged(self):
        if self._paged is None:
            self._paged = page_layout(self.text, self.llm.render_settings, self.layout.lines(self.text))
        return self._paged

    @torch.no_grad()
    def answer(self, prompt: str, max_new_tokens: int = 64) -> Answer:
        llm, model = self.llm, self.llm.model
        paged = self.paged()
        memory, caps = llm.pages.with_caps(paged.pages)
        ids, where = llm.prompt_ids(prompt)
        text = {k: v.to(model.device) for k, v in pad_text([ids], llm.tokenizer.pad_token_id).items()}
        embeds, mask, pos, _, _ = model.build_inputs(text["input_ids"], text["attention_mask"], None,
                                                     torch.tensor([len(paged.pages)]), memory, torch.tensor([where]),
                                                     pad_right(caps, 0))
        cache, cached = self.prefix.reuse(embeds[0])
        new, cache = model.decode(embeds, mask, pos, max_new_tokens, cache=cache, cached=cached)
        self.prefix.store(embeds[0], cache)
        return llm._answer(paged, new[0].cpu().tolist(), caps)
