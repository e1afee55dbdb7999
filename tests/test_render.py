import hashlib

import pytest
from PIL import Image, ImageChops

from ocrmem.memory import render as R
from ocrmem.settings import RenderSettings

CJK_TEXT = "记忆是通过图像压缩的长文本。\n日本語のテキストも描けます。\n한국어 문장도 잘 보입니다."


def _png(img):
    return R.png_bytes(img)


def _ink(img) -> int:
    return sum(img.histogram()[:128])


def _lines(text, rs):
    lines, cut = R.layout(text, rs)
    return [text[a:b] for a, b in lines], cut


def test_deterministic_bytes_and_page_size(tmp_path):
    rs = RenderSettings(page_size=256, font_size=16, margin=8)
    text = "The quick brown fox jumps over the lazy dog. " * 5
    a, b = R.render_pages(text, rs), R.render_pages(text, rs)
    assert len(a.pages) == 1
    assert a.pages[0].size == (256, 256) and a.pages[0].mode == "L"
    assert _png(a.pages[0]) == _png(b.pages[0])
    sha1 = R.save_png(a.pages[0], tmp_path / "a.png")
    sha2 = R.save_png(b.pages[0], tmp_path / "b.png")
    assert sha1 == sha2 == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    other = R.render_pages(text.replace("fox", "cat"), rs)
    assert _png(other.pages[0]) != _png(a.pages[0])


def test_colours_and_blank_text():
    rs = RenderSettings(page_size=128, font_size=12, margin=4, foreground="#ffffff", background="#000000")
    r = R.render_pages("", rs)
    assert len(r.pages) == 1 and r.pages[0].getextrema() == (0, 0)
    r = R.render_pages("hi", rs)
    assert r.pages[0].getextrema()[1] > 200


def test_cjk_no_missing_glyphs_and_ink():
    rs = RenderSettings(page_size=512, font_size=24)
    r = R.render_pages(CJK_TEXT, rs)
    assert r.missing_glyphs == {}
    assert r.cut_chars == 0 and r.kept_chars == len(CJK_TEXT)
    assert _ink(r.pages[0]) > 500
    font = R.load_font(None, 24)
    notdef = font.getmask(R._NOTDEF_PROBE)
    for ch in "记日한の":
        m = font.getmask(ch)
        assert m.getbbox() is not None
        assert (m.size, bytes(m)) != (notdef.size, bytes(notdef))


def test_missing_glyphs_counted():
    rs = RenderSettings(page_size=512, font_size=24)
    text = "abc \ue000 x\ue000\n\t\U0001f600 中"
    r = R.render_pages(text, rs)
    assert r.missing_glyphs == {"\ue000": 2, "\U0001f600": 1}
    font = R.load_font(None, 24)
    assert R.missing_glyphs(" \n\t\u3000\u200b", font) == {}  # whitespace / format chars are not missing


def test_missing_font_path_error(tmp_path):
    with pytest.raises(ValueError, match="render.font_path"):
        R.load_font(str(tmp_path / "nope.ttf"), 24)
    assert R.load_font(None, 24) is R.load_font(None, 24)  # cached per process


def test_cjk_wraps_per_char_latin_per_word():
    rs = RenderSettings(page_size=200, font_size=20, margin=10, max_pages=50)  # 180px per line: 9 CJK chars
    cjk = "记" * 30
    lines, _ = _lines(cjk, rs)
    assert [len(x) for x in lines] == [9, 9, 9, 3]
    words = "hello world again these words wrap by word only"
    lines, _ = _lines(words, rs)
    assert len(lines) > 1
    assert " ".join(lines) == words  # no word split, the space at each break swallowed
    long = "x" * 60
    lines, _ = _lines(long, rs)
    assert len(lines) > 1 and "".join(lines) == long  # too long for a line: broken by characters
    font = R.load_font(None, 20)
    assert all(font.getlength(x) <= 180 for x in lines)


def test_paragraphs_and_blank_lines_kept():
    rs = RenderSettings(page_size=512, font_size=20, max_pages=5)
    lines, _ = _lines("first\nsecond\n\nthird\r\nfourth\n\n", rs)
    assert lines == ["first", "second", "", "third", "fourth"]
    lines, _ = _lines("  indented para", rs)
    assert lines == ["  indented para"]


def test_fixed_row_positions():
    rs = RenderSettings(page_size=512, font_size=24)
    r1 = R.render_pages("alpha: red\nbravo: blue", rs).pages[0]
    r2 = R.render_pages("alpha: red\nbravo: cat", rs).pages[0]
    lh = R.line_height(rs)
    top = (0, 0, 512, rs.margin + lh)
    assert ImageChops.difference(r1.crop(top), r2.crop(top)).getbbox() is None
    assert ImageChops.difference(r1, r2).getbbox() is not None


def test_truncation_keeps_the_end():
    rs = RenderSettings(page_size=256, font_size=16, margin=8, max_pages=1)
    per_page = R.lines_per_page(rs)
    text = "\n".join(f"line {i}" for i in range(100))
    r = R.render_pages(text, rs)
    assert len(r.pages) == 1
    assert r.cut_chars > 0 and r.kept_chars + r.cut_chars == len(text)
    kept = text[r.cut_chars :]
    assert kept.endswith("line 99") and kept.startswith(f"line {100 - per_page}\n")
    rs2 = rs.model_copy(update={"max_pages": 3})
    r2 = R.render_pages(text, rs2)
    assert len(r2.pages) == 3 and text[r2.cut_chars :].startswith(f"line {100 - 3 * per_page}\n")
    # mid-paragraph cut: the kept text is a suffix starting at a wrapped line
    long = " ".join(f"w{i}" for i in range(3000))
    r3 = R.render_pages(long, rs)
    assert long.endswith(long[r3.cut_chars :]) and long[r3.cut_chars :].startswith("w")
    assert long[r3.cut_chars - 1] == " "
    # the kept text renders to the same page
    assert _png(R.render_pages(long[r3.cut_chars :], rs).pages[0]) == _png(r3.pages[0])


def test_truncation_of_a_large_text_keeps_the_page_budget():
    """A 2.2 MB history still gives max_pages pages of its end (its time: bench/render_speed.py)."""
    rs = RenderSettings(page_size=512, font_size=24, max_pages=2)
    text = "a few words on a line\n" * 100_000  # 2.2 MB
    r = R.render_pages(text, rs)
    assert len(r.pages) == 2 and r.cut_chars > 2_000_000
    assert text[r.cut_chars:] == "a few words on a line\n" * (2 * R.lines_per_page(rs))


def test_save_png_atomic_overwrite(tmp_path):
    p = tmp_path / "sub" / "x.png"
    img = Image.new("L", (8, 8), 255)
    R.save_png(img, p)
    R.save_png(Image.new("L", (8, 8), 0), p)
    assert Image.open(p).getextrema() == (0, 0)
    assert sorted(x.name for x in p.parent.iterdir()) == ["x.png"]
