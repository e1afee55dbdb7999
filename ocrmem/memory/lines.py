"""Which drawn lines of a page cost memory tokens: the one rule training, evaluation and serving apply.

A line encoder gives every line of the page grid the same number of memory tokens. The lines below a
page's last drawn line cost nothing, and neither do blank lines between drawn ones (a paragraph break,
the gap between chat turns): the render stage records them in the manifest (`page_lines`,
`blank_lines`), serving reads them off the lines it lays out, and the model keeps the tokens of the
lines a 0/1 mask marks (`OcrMemModel._kept_tokens`).
"""

from __future__ import annotations


def blank_lines(lines: list[str]) -> list[int]:
    """Which of a page's drawn lines (as drawn: `render.clean_line`) hold no text."""
    return [i for i, s in enumerate(lines) if not s.strip()]


def line_mask(page_lines: list[int], blank: list[list[int]] | None = None) -> list[list[int]]:
    """Each page's lines up to its last drawn one: 1 where the line's memory tokens are kept, 0 where it
    is blank. `blank` None (a manifest written before blank lines were recorded): every line is kept."""
    blank = [set(b) for b in blank] if blank else [set()] * len(page_lines)
    return [[0 if i in b else 1 for i in range(n)] for n, b in zip(page_lines, blank)]


def page_masks(pages: list[list[str]]) -> list[list[int]]:
    """`line_mask` of pages given as the text of their drawn lines (what serving lays out)."""
    return line_mask([len(p) for p in pages], [blank_lines(p) for p in pages])
