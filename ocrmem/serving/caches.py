"""A memory that grows page by page: reuse what is already rendered, encoded and prefilled.

    llm = MemoryLLM.from_pretrained("checkpoints/adapter")
    chat = llm.session()
    chat.append([{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}])
    chat.answer("What did we decide?").text
    chat.append("more text")                       # only the last, partly filled page is redrawn

Pages are chunks of `lines_per_page` visual lines of the history laid out front to back
(`page_layout`), so text appended later never changes an earlier full page while the history fits
render.max_pages pages. Past that budget the memory holds the most recent budget of lines, exactly
as the render stage lays out training pages (one rule: memory.render.keep_recent), so pages shift
with each new line and are drawn anew. `MemoryLLM.answer` uses the same layout, so a session
answers exactly as a from-scratch call on the same history does.

Two caches, both keyed by content, so neither can serve something stale:
* `PageCache` (on the MemoryLLM, shared by its sessions): sha256 of the page's lines, the render
  settings, the encoder's fingerprint and the trained tensors -> that page's memory embeddings (and,
  with ink-width strips, the memory tokens each of its lines' ink pays for).
  A page whose text changed (the last line rewrapped) has another key and is drawn again.
* `PrefixCache` (one per session): the LLM's KV cache of the last prompt and the input
  embeddings it was computed from. A new prompt reuses the KV of its longest common prefix of
  identical input embeddings (the chat template's head and the memory pages that did not change)
  and prefills only the rest, so it is exact whatever the encoder, projector or template do.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ocrmem.memory.lines import page_caps
from ocrmem.memory.render import clean_line, draw_page, hard_lines, keep_recent, load_font, page_chunks, wrap_hard_line


@dataclass
class PagedText:
    pages: list[list[str]]  # each page's lines as drawn, at most lines_per_page each
    cut_chars: int  # leading characters of the text not on the pages (render.max_pages)
    n_lines: int


class LineLayout:
    """Visual lines of a text that grows at its end. A hard line followed by more text after its
    line break cannot change any more: it is wrapped once and kept; only the last one is wrapped
    again. Trailing blank hard lines are not laid out (they are, once text follows them)."""

    def __init__(self, rs):
        self.rs, self.font = rs, load_font(rs.font_path, rs.font_size)
        self.groups: list[tuple[list[tuple[int, int]], bool]] = []  # (visual lines, blank?) per finished hard line
        self.seen = ""  # the text up to `done` (a new text must start with it)
        self.done = 0

    def lines(self, text: str) -> list[tuple[int, int]]:
        if not text.startswith(self.seen):  # not an extension of what was laid out: start over
            self.groups, self.seen, self.done = [], "", 0
        spans = hard_lines(text, self.done)
        # a break at the very end may still grow ("\r" + "\n" is one break): that line stays open
        finished = spans[:-1] if spans[-1][0] < len(text) or len(spans) < 2 else spans[:-2]
        for sp in finished:
            self.groups.append((wrap_hard_line(text, sp, self.rs, self.font), text[sp[0]:sp[1]].strip() == ""))
        if finished:
            self.done = spans[len(finished)][0]
            self.seen = text[:self.done]
        groups = self.groups + [(wrap_hard_line(text, sp, self.rs, self.font), text[sp[0]:sp[1]].strip() == "")
                                for sp in spans[len(finished):]]
        while groups and groups[-1][1]:
            groups.pop()
        return [ln for g, _ in groups for ln in g]


def all_lines(text: str, rs) -> list[tuple[int, int]]:
    """Every visual line of `text` front to back, no page budget (trailing blank lines dropped)."""
    return LineLayout(rs).lines(text)


def page_layout(text: str, rs, lines: list[tuple[int, int]] | None = None) -> PagedText:
    """The history as the render stage lays it out for training (memory.render.keep_recent, page_chunks):
    a full budget of its most recent visual lines, in pages of lines_per_page.
    `lines`: its visual lines when already known (a session's LineLayout)."""
    kept, cut = keep_recent(all_lines(text, rs) if lines is None else lines, text, rs)
    pages = [[clean_line(text[a:b]) for a, b in chunk] for chunk in page_chunks(kept, rs)]
    return PagedText(pages=pages, cut_chars=cut, n_lines=len(kept))


class PageCache:
    """Content hash of a page -> (its memory embeddings [t, hidden], its lines' ink tokens or None); least
    recently used goes first."""

    def __init__(self, max_pages: int = 4096):
        self.max_pages = max_pages
        self._store: OrderedDict[str, tuple[torch.Tensor, list[int] | None]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str) -> tuple | None:
        v = self._store.get(key)
        if v is None:
            self.misses += 1
            return None
        self.hits += 1
        self._store.move_to_end(key)
        return v

    def put(self, key: str, value: tuple) -> None:
        self._store[key] = value
        self._store.move_to_end(key)
        while len(self._store) > self.max_pages:
            self._store.popitem(last=False)

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)


def model_fingerprint(model) -> str:
    """What a page's memory embeddings depend on besides its text: render settings, encoder, trained tensors."""
    h = hashlib.sha256()
    h.update(json.dumps({"render": model.settings.render.model_dump(), "encoder": model.encoder.fingerprint()},
                        sort_keys=True, default=str).encode())
    for name, p in sorted(model.trainable_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def page_key(base: str, lines: list[str]) -> str:
    return hashlib.sha256(json.dumps([base, lines], ensure_ascii=False).encode()).hexdigest()


@dataclass
class PageEmbedder:
    """Pages of lines -> memory embeddings [P, t, hidden] through the page cache; draws and encodes
    only the pages it has not seen (in one batch, through the encoder's preprocess and the model's
    embed_memory), and counts what it drew and encoded. `with_caps` adds the caps of the pages'
    lines (`ocrmem.memory.lines`), priced by the ink the encoder saw when it cuts lines to their ink."""

    model: object
    cache: PageCache
    rendered: int = 0
    encoded: int = 0
    _base: str | None = None

    @property
    def base(self) -> str:
        if self._base is None:
            self._base = model_fingerprint(self.model)
        return self._base

    def __call__(self, pages: list[list[str]]) -> torch.Tensor:
        return self.with_caps(pages)[0]

    @torch.no_grad()
    def with_caps(self, pages: list[list[str]]) -> tuple[torch.Tensor, list[list[int]]]:
        """(memory embeddings [P, t, hidden], each page's line caps) of pages of lines."""
        keys = [page_key(self.base, p) for p in pages]
        found = [self.cache.get(k) for k in keys]
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            pixels = drawn_pixels(self.model, [pages[i] for i in todo])
            self.rendered += len(todo)
            mem, ink = self.model.embed_memory(pixel_values=pixels), self.model.encoder.ink_tokens(pixels)
            self.encoded += len(todo)
            for j, (i, m) in enumerate(zip(todo, mem)):
                found[i] = (m.clone(), None if ink is None else ink[j])  # not a view: the batch it came from can go
                self.cache.put(keys[i], found[i])
        ink = [f[1] for f in found]
        caps = page_caps(pages, None if any(i is None for i in ink) else ink)
        return torch.stack([f[0] for f in found]), caps


def drawn_pixels(model, pages: list[list[str]]) -> torch.Tensor:
    """Pages of lines drawn with the model's render settings, as its encoder takes them."""
    rs = model.settings.render
    font = load_font(rs.font_path, rs.font_size)
    return model.encoder.preprocess([draw_page(p, rs, font) for p in pages])


def drawn_caps(model, pages: list[list[str]]) -> list[list[int]]:
    """The caps of pages' lines (`ocrmem.memory.lines`) as `PageEmbedder.with_caps` gives them, without
    encoding the pages (drawn only when the encoder prices their ink)."""
    if not pages or not model.encoder.prices_ink:
        return page_caps(pages)
    return page_caps(pages, model.encoder.ink_tokens(drawn_pixels(model, pages)))


def crop_cache(cache, n: int) -> None:
    """Keep the KV of the first n positions (a negative count works in transformers 4.x and 5.x alike)."""
    extra = cache.get_seq_length() - n
    if extra > 0:
        cache.crop(-extra)


class PrefixCache:
    """The LLM's KV cache of a session's last prompt, with the input embeddings it was computed from."""

    def __init__(self):
        self.embeds: torch.Tensor | None = None  # [L, hidden]
        self.cache = None
        self.reused = 0  # positions whose KV the last `reuse` kept

    def reuse(self, embeds: torch.Tensor):
        """(KV cache cropped to the longest common prefix of identical input embeddings, its length);
        (None, 0) when nothing matches. At least the last position is left to prefill (its logits)."""
        self.reused = 0
        if self.cache is None or not hasattr(self.cache, "crop"):
            return None, 0
        m = min(len(self.embeds), len(embeds) - 1)
        same = (self.embeds[:m] == embeds[:m]).all(-1)
        n = m if bool(same.all()) else int((~same).nonzero()[0])
        if n == 0:
            return None, 0
        crop_cache(self.cache, n)
        self.reused = n
        return self.cache, n

    def store(self, embeds: torch.Tensor, cache) -> None:
        """Keep the prompt's KV (generated tokens cropped off) for the next question."""
        if hasattr(cache, "crop"):
            crop_cache(cache, len(embeds))
            self.embeds, self.cache = embeds, cache
        else:  # a model whose cache cannot be cropped: no reuse, every answer prefills in full
            self.embeds = self.cache = None

    def clear(self) -> None:
        self.embeds = self.cache = None
