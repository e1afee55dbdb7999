"""Text to page images: pure and deterministic.

`render_pages(text, rs)` lays `text` out on square grayscale pages and returns them with what was
kept: when the text needs more than `rs.max_pages` pages the most recent text (the end) is kept and
the start is dropped, so `text[result.cut_chars:]` is exactly the text on the pages (whitespace at
line breaks aside).

Layout rules (fixed, so line i of a page always sits at y = margin + i * line_height):
* explicit line breaks are kept, a blank line stays a blank line;
* CJK (Han, kana, Hangul, CJK and fullwidth punctuation) wraps per character, everything else per
  word, a word longer than the line is broken by characters;
* whitespace at a wrap point is swallowed; indentation at the start of a paragraph is kept;
* tabs are drawn as 4 spaces, control/format characters (other than line breaks) are not drawn.

Pillow's BASIC layout engine is used (no raqm) so output does not depend on optional libraries.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

from ocrmem.common.errors import UserError
from ocrmem.common.io import load_png, png_bytes, save_png  # noqa: F401 (page PNGs: written and checked in io.py)
from ocrmem.memory.lines import blank_lines
from ocrmem.settings import RenderSettings

RENDERER_VERSION = "2"  # bump when the layout or drawing changes: it invalidates rendered data
TAB = "    "
# A code point no font maps (plane-16 private use, last one): its glyph is the font's .notdef.
_NOTDEF_PROBE = "\U0010fffd"

_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")

_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x2FF0, 0x303F),  # ideographic description, CJK symbols and punctuation
    (0x3040, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x3130, 0x318F),  # Hangul compatibility Jamo
    (0x3190, 0x31FF),  # Kanbun, Bopomofo ext, CJK strokes, Katakana phonetic ext
    (0x3200, 0x33FF),  # enclosed CJK letters, CJK compatibility
    (0x3400, 0x4DBF),  # CJK ext A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul Jamo ext A
    (0xAC00, 0xD7FF),  # Hangul syllables, Jamo ext B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # halfwidth and fullwidth forms
    (0x20000, 0x3FFFF),  # CJK ext B.. (planes 2 and 3)
)


def _cjk_class() -> str:
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _CJK_RANGES)


# one CJK char | a run of whitespace | a run of anything else (a "word")
_TOKEN = re.compile(f"([{_cjk_class()}])|(\\s+)|([^\\s{_cjk_class()}]+)")


def _invisible(ch: str) -> bool:
    """Control and format characters: zero width, never drawn, never 'missing'."""
    return unicodedata.category(ch) in ("Cc", "Cf") and ch != "\t"


def _clean(s: str) -> str:
    """What is drawn/measured for a piece of a line."""
    if s.isprintable() and "\t" not in s:
        return s
    return "".join(TAB if c == "\t" else c for c in s if not _invisible(c))


# ---------------------------------------------------------------------------------------------
# fonts


def default_font_path() -> str:
    import noto_cjk_sans_otc

    return str(noto_cjk_sans_otc.FONT_PATH)


@lru_cache(maxsize=8)
def _load_font_cached(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size=size, index=0, layout_engine=ImageFont.Layout.BASIC)


def resolve_font_path(path: str | None) -> str:
    if path is None:
        return default_font_path()
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(
            f"render.font_path = {path!r}: no such font file: point render.font_path in params.yaml at a "
            f"TTF/OTF/TTC file, or set it to null to use the bundled Noto Sans CJK"
        )
    return str(p.resolve())


def load_font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    """The font at `path` (None: bundled Noto Sans CJK, face 0), cached per process."""
    resolved = resolve_font_path(path)
    try:
        return _load_font_cached(resolved, int(size))
    except OSError as e:
        raise UserError(
            f"render.font_path = {path!r}: cannot be read as a font ({e}): use a TTF/OTF/TTC file"
        ) from None


class _Metrics:
    """Cached widths and glyph-presence checks for one font object."""

    MAX_WORDS = 200_000

    def __init__(self, font: ImageFont.FreeTypeFont):
        self.font = font
        self.widths: dict[str, float] = {}
        self.present: dict[str, bool] = {}
        self.glyphs: dict[str, tuple] = {}
        self._notdef = self._signature(_NOTDEF_PROBE)

    def width(self, s: str) -> float:
        w = self.widths.get(s)
        if w is None:
            if len(self.widths) > self.MAX_WORDS:
                self.widths.clear()
            c = _clean(s)
            w = self.font.getlength(c) if c else 0.0
            self.widths[s] = w
        return w

    def glyph(self, ch: str) -> tuple[Image.Image | None, int, int, float]:
        """(mask, dx, dy, advance) of one character, rasterised once per font and cached."""
        g = self.glyphs.get(ch)
        if g is None:
            adv = self.font.getlength(ch)
            left, top, right, bottom = self.font.getbbox(ch, anchor="la")
            mask = None
            if right > left and bottom > top:
                mask = Image.new("L", (right - left, bottom - top), 0)
                ImageDraw.Draw(mask).text((-left, -top), ch, font=self.font, fill=255, anchor="la")
                if mask.getbbox() is None:
                    mask = None
            g = self.glyphs[ch] = (mask, left, top, adv)
        return g

    def _signature(self, ch: str) -> tuple:
        mask = self.font.getmask(ch)
        return (mask.size, bytes(mask), self.font.getlength(ch))

    def has_glyph(self, ch: str) -> bool:
        """False when the font would draw `ch` as its .notdef glyph (whitespace/controls: True)."""
        p = self.present.get(ch)
        if p is None:
            if ch.isspace() or _invisible(ch):
                p = True
            else:
                p = self._signature(ch) != self._notdef
            self.present[ch] = p
        return p


_METRICS: dict[int, _Metrics] = {}


def _metrics(font: ImageFont.FreeTypeFont) -> _Metrics:
    m = _METRICS.get(id(font))
    if m is None or m.font is not font:
        m = _METRICS[id(font)] = _Metrics(font)
    return m


def missing_glyphs(text: str, font: ImageFont.FreeTypeFont) -> dict[str, int]:
    """Characters of `text` the font cannot draw (it has no glyph for them), with their counts."""
    m = _metrics(font)
    return {ch: n for ch, n in sorted(Counter(text).items()) if not m.has_glyph(ch)}


# ---------------------------------------------------------------------------------------------
# layout


def line_height(rs: RenderSettings) -> int:
    return max(1, round(rs.font_size * rs.line_spacing))


def lines_per_page(rs: RenderSettings) -> int:
    usable = rs.page_size - 2 * rs.margin
    return max(1, 1 + (usable - rs.font_size) // line_height(rs))


def line_width(rs: RenderSettings) -> int:
    return rs.page_size - 2 * rs.margin


def line_boxes(rs: RenderSettings) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each line slot, top to bottom: the one page grid that render_pages draws on,
    line encoders crop, and the manifest's page_lines count."""
    lh, x0, x1 = line_height(rs), rs.margin, rs.page_size - rs.margin
    return [(x0, rs.margin + i * lh, x1, min(rs.page_size, rs.margin + (i + 1) * lh)) for i in range(lines_per_page(rs))]


def wrap_line(text: str, start: int, end: int, font: ImageFont.FreeTypeFont, max_width: float) -> list[tuple[int, int]]:
    """Greedy wrap of the hard line text[start:end] (no line breaks inside).

    Returns (start, end) offsets into `text` of each visual line; an empty hard line gives one
    empty visual line. Greedy wrapping restarted at any returned line start reproduces the rest.
    """
    m = _metrics(font)
    out: list[tuple[int, int]] = []
    cur = start  # start of the visual line being filled
    content_end = start  # end of its last non-space token
    width = 0.0
    has_content = False

    def emit(next_start: int) -> None:
        nonlocal cur, content_end, width, has_content
        out.append((cur, content_end))
        cur = content_end = next_start
        width, has_content = 0.0, False

    for tok in _TOKEN.finditer(text, start, end):
        a, b = tok.span()
        s = tok.group()
        w = m.width(s)
        if tok.group(2) is not None:  # whitespace
            if not has_content and cur != start:
                cur = content_end = b  # swallowed at a wrap point
            elif width + w <= max_width:
                width += w  # between words, or indentation of the paragraph
            elif has_content:
                emit(b)  # the line breaks here; the whitespace is swallowed
            else:
                cur = content_end = b  # indentation wider than the line: dropped
                width = 0.0
            continue
        if width + w <= max_width:
            width += w
            content_end, has_content = b, True
            continue
        if has_content:
            emit(a)
        elif cur != a:  # only indentation before a word that does not fit after it
            cur = content_end = a
            width = 0.0
        if w <= max_width:
            width, content_end, has_content = w, b, True
            continue
        # a word longer than the line: break it by characters (at least one per line)
        for i in range(a, b):
            cw = m.width(text[i])
            if has_content and width + cw > max_width:
                emit(i)
            width += cw
            content_end, has_content = i + 1, True
    out.append((cur, content_end))
    return out


def layout(text: str, rs: RenderSettings, font: ImageFont.FreeTypeFont | None = None) -> tuple[list[tuple[int, int]], int]:
    """Visual lines (offsets into text) that fit in rs.max_pages pages, and the number of leading
    characters dropped. The end of the text is kept; trailing blank lines are not laid out.

    Hard lines are wrapped from the last one backwards and wrapping stops once the page budget is
    full, so a long text costs time in proportion to what is kept, not to its length (apart from
    the O(n) split into hard lines).
    """
    font = font or load_font(rs.font_path, rs.font_size)
    capacity = rs.max_pages * lines_per_page(rs)
    max_w = line_width(rs)
    kept: list[list[tuple[int, int]]] = []  # wrapped hard lines, last first
    n = 0
    cut = 0
    seen_content = False
    for hs, he in reversed(hard_lines(text)):
        if not seen_content:
            if text[hs:he].strip() == "":
                continue  # trailing blank lines
            seen_content = True
        wrapped = wrap_line(text, hs, he, font, max_w)
        if n + len(wrapped) > capacity:
            wrapped = wrapped[len(wrapped) - (capacity - n) :] if capacity > n else []
            kept.append(wrapped)
            n = capacity
            cut = wrapped[0][0] if wrapped else -1
            break
        kept.append(wrapped)
        n += len(wrapped)
    return keep_recent([ln for group in reversed(kept) for ln in group], text, rs, truncated=cut != 0)


def keep_recent(lines: list[tuple[int, int]], text: str, rs: RenderSettings,
                truncated: bool | None = None) -> tuple[list[tuple[int, int]], int]:
    """The page budget, one rule for training and serving: of a text's visual lines (front to back), the
    last rs.max_pages x lines_per_page, never fewer; cut short (`truncated`, by default: more lines than
    that), the blank lines at its top are dropped, as they would spend the budget on nothing.
    Returns (kept lines, leading characters dropped)."""
    capacity = rs.max_pages * lines_per_page(rs)
    if not (len(lines) > capacity if truncated is None else truncated):
        return lines, 0
    kept = lines[-capacity:]
    while kept and text[kept[0][0]:kept[0][1]].strip() == "":
        kept = kept[1:]
    return kept, kept[0][0] if kept else len(text)


def page_chunks(lines: list, rs: RenderSettings) -> list[list]:
    """Kept lines as pages: chunks of lines_per_page from the first kept line (always one page, maybe empty)."""
    per = lines_per_page(rs)
    return [lines[p:p + per] for p in range(0, max(1, len(lines)), per)]


# ---------------------------------------------------------------------------------------------
# drawing


@dataclass
class RenderResult:
    pages: list[Image.Image]
    kept_chars: int  # characters of text on the pages (text[cut_chars:])
    cut_chars: int  # leading characters dropped to fit rs.max_pages
    missing_glyphs: dict[str, int] = field(default_factory=dict)
    n_lines: int = 0
    page_lines: list[int] = field(default_factory=list)  # lines drawn on each page (the rest of its grid is blank)
    blank_lines: list[list[int]] = field(default_factory=list)  # which of them hold no text (no memory tokens)


def _colour(c: str) -> int:
    try:
        return ImageColor.getcolor(c, "L")
    except ValueError:
        raise UserError(f"render colour {c!r} is not a colour: use e.g. '#000000' or 'black'") from None


def _draw_line(img: Image.Image, s: str, x0: int, y: int, font: ImageFont.FreeTypeFont, fg: int) -> None:
    """Draw one line from cached glyph masks (FreeType rasterises each character once per process,
    which is several times faster than ImageDraw.text for dense pages); pen at x0, ascender at y."""
    m = _metrics(font)
    x = float(x0)
    for ch in s:
        mask, dx, dy, adv = m.glyph(ch)
        if mask is not None:
            img.paste(fg, (int(round(x)) + dx, y + dy), mask)
        x += adv


def draw_page(lines: list[str], rs: RenderSettings, font: ImageFont.FreeTypeFont | None = None) -> Image.Image:
    """One page (mode "L") with line i of `lines` (already `clean_line`d) on grid row i."""
    font = font or load_font(rs.font_path, rs.font_size)
    fg = _colour(rs.foreground)
    img = Image.new("L", (rs.page_size, rs.page_size), _colour(rs.background))
    for s, (x0, y0, _, _) in zip(lines, line_boxes(rs)):
        _draw_line(img, s, x0, y0, font, fg)
    return img


def hard_lines(text: str, start: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each hard line of text[start:] (`start`: where a hard line begins)."""
    spans, pos = [], start
    for mb in _LINE_BREAK.finditer(text, start):
        spans.append((pos, mb.start()))
        pos = mb.end()
    spans.append((pos, len(text)))
    return spans


def wrap_hard_line(text: str, span: tuple[int, int], rs: RenderSettings, font: ImageFont.FreeTypeFont) -> list[tuple[int, int]]:
    return wrap_line(text, span[0], span[1], font, line_width(rs))


def clean_line(s: str) -> str:
    """A line's text as it is drawn (tabs expanded, control characters dropped)."""
    return _clean(s)


def render_pages(text: str, rs: RenderSettings) -> RenderResult:
    """Lay `text` out on at most rs.max_pages pages (mode "L", page_size square), keeping its end."""
    font = load_font(rs.font_path, rs.font_size)
    lines, cut = layout(text, rs, font)
    chunks = page_chunks(lines, rs)
    drawn = [[_clean(text[a:b]) for a, b in chunk] for chunk in chunks]
    kept = text[cut:]
    return RenderResult(pages=[draw_page(p, rs, font) for p in drawn], kept_chars=len(kept), cut_chars=cut,
                        missing_glyphs=missing_glyphs(kept, font), n_lines=len(lines),
                        page_lines=[len(p) for p in drawn], blank_lines=[blank_lines(p) for p in drawn])
