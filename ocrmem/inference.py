"""Answer prompts about a long history with a trained OCR memory.

    llm = MemoryLLM.from_pretrained("checkpoints/adapter")
    a = llm.answer(history, "What is the value of delta? Answer with one word.")
    a.text, a.cut_chars, a.pages, a.memory_tokens

The history (a string, or chat turns [{"role", "content"}] formatted as `ocrmem.sources.format_chat`
formats them for training) is rendered with the adapter's render settings: when it needs more
than render.max_pages pages its most recent text is kept and `cut_chars` says how many leading
characters were dropped. The pages go through the frozen encoder and the trained projector in
front of the chat-templated prompt; the answer is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ocrmem.dataset import clip_prompt, memory_prompt, pad_text
from ocrmem.render import RenderResult, render_pages
from ocrmem.sources import format_chat


@dataclass
class Answer:
    text: str
    cut_chars: int  # leading characters of the history that did not fit render.max_pages
    pages: list[Image.Image] = field(default_factory=list)  # the memory pages as rendered
    memory_tokens: int = 0  # LLM positions the memory took
    missing_glyphs: dict[str, int] = field(default_factory=dict)  # characters the font cannot draw (tofu)


def history_text(history: str | list[dict]) -> str:
    """A history as the text that is rendered: strings as they are, chat turns as training formats them."""
    if isinstance(history, str):
        return history
    if isinstance(history, (list, tuple)):
        return format_chat(list(history), "history")
    raise TypeError(f"history must be a string or a list of chat turns, got {type(history).__name__}")


class MemoryLLM:
    def __init__(self, model, max_prompt_tokens: int | None = None):
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.render_settings = model.settings.render
        self.max_prompt_tokens = max_prompt_tokens

    @classmethod
    def from_pretrained(cls, adapter_dir: str | Path, device: str | torch.device | None = None,
                        max_prompt_tokens: int | None = None, **model_overrides) -> "MemoryLLM":
        """Load an adapter (OcrMemModel.from_pretrained; overrides go to its model settings)."""
        from ocrmem.model.ocrmem import OcrMemModel

        model = OcrMemModel.from_pretrained(adapter_dir, **model_overrides)
        if device is not None:
            model.to(device)
        return cls(model, max_prompt_tokens=max_prompt_tokens)

    def render(self, history: str | list[dict]) -> RenderResult:
        return render_pages(history_text(history), self.render_settings)

    @torch.no_grad()
    def answer_batch(self, histories: list[str | list[dict]], prompts: list[str], max_new_tokens: int = 64,
                     batch_size: int = 8) -> list[Answer]:
        """One answer per (history, prompt) pair, in order."""
        if len(histories) != len(prompts):
            raise ValueError(f"{len(histories)} histories but {len(prompts)} prompts: give one prompt per history")
        model, tok = self.model, self.tokenizer
        out: list[Answer] = []
        for s in range(0, len(prompts), batch_size):
            rendered = [self.render(h) for h in histories[s: s + batch_size]]
            ids, where = [], []
            for p in prompts[s: s + batch_size]:
                x, pos = memory_prompt(tok, clip_prompt(tok, p, self.max_prompt_tokens) if self.max_prompt_tokens else p)
                ids.append(x)
                where.append(pos)
            text = pad_text(ids, tok.pad_token_id)
            counts = torch.tensor([len(r.pages) for r in rendered], dtype=torch.long)
            pages = [p for r in rendered for p in r.pages]
            kw = {"pixel_values": model.encoder.preprocess(pages)} if pages else {}
            text = {k: v.to(model.device) for k, v in text.items()}
            lines = torch.tensor([n for r in rendered for n in r.page_lines], dtype=torch.long)
            new = model.generate(**text, page_counts=counts, memory_pos=torch.tensor(where), page_lines=lines,
                                 max_new_tokens=max_new_tokens, **kw)
            for r, row in zip(rendered, new.cpu().tolist()):
                out.append(Answer(text=tok.decode(row, skip_special_tokens=True).strip(), cut_chars=r.cut_chars,
                                  pages=r.pages, memory_tokens=sum(model.page_memory_tokens(r.page_lines)),
                                  missing_glyphs=r.missing_glyphs))
        return out

    def answer(self, history: str | list[dict], prompt: str, max_new_tokens: int = 64) -> Answer:
        return self.answer_batch([history], [prompt], max_new_tokens=max_new_tokens)[0]
