"""How many memory tokens each drawn line of a page costs: the one rule training, evaluation and serving apply.

A line encoder gives every line of the page grid the same number of memory tokens (`per_line`). A page
pays only for its drawn lines that hold text: the lines below its last drawn line cost nothing, and
neither do blank lines between drawn ones (a paragraph break, the gap between chat turns). With
ink-width strips (`model.recognizer_ink_width`) a line pays only for the tokens its ink reaches (the
encoder's `ink_tokens`): its blank tail, which holds nothing but the blank strip's features, costs
nothing either.

A page's lines are given as caps: the most memory tokens each line keeps (0 for a blank line, ALL for
a line that keeps all it has). The render stage records what the caps need in the manifest
(`page_lines`, `blank_lines`, `ink_tokens`), serving computes them from the lines it lays out and the
pages it draws, and the model keeps the first min(cap, per_line) tokens of each line
(`OcrMemModel._kept_tokens`).
"""

from __future__ import annotations

ALL = 1 << 20  # a cap no line reaches: the line keeps every memory token it has


def blank_lines(lines: list[str]) -> list[int]:
    """Which of a page's drawn lines (as drawn: `render.clean_line`) hold no text."""
    return [i for i, s in enumerate(lines) if not s.strip()]


def line_caps(page_lines: list[int], blank: list[list[int]] | None = None,
              ink: list[list[int]] | None = None) -> list[list[int]]:
    """Each page's caps up to its last drawn line: 0 where the line is blank, else what its ink pays for
    (`ink`: per grid line of each page) or ALL. `blank` None (a manifest written before blank lines were
    recorded): no line is blank."""
    blank = [set(b) for b in blank] if blank else [set()] * len(page_lines)
    return [[0 if i in b else (ALL if ink is None else ink[p][i]) for i in range(n)]
            for p, (n, b) in enumerate(zip(page_lines, blank))]


def row_caps(row) -> list[list[int]]:
    """`line_caps` of a manifest row (rows rendered before `ink_tokens` was recorded have none)."""
    return line_caps(row.get("page_lines") or [], row.get("blank_lines"), row.get("ink_tokens"))


def page_caps(pages: list[list[str]], ink: list[list[int]] | None = None) -> list[list[int]]:
    """`line_caps` of pages given as the text of their drawn lines (what serving lays out)."""
    return line_caps([len(p) for p in pages], [blank_lines(p) for p in pages], ink)


def kept_tokens(caps: list[int], per_line: int) -> int:
    """Memory tokens one page whose lines have these caps keeps."""
    return sum(min(int(c), per_line) for c in caps)
