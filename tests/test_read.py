"""`ocrmem read`: each memory page read back on its own, scored against the text the page shows."""

import re

import pytest

from ocrmem.cli import main
from ocrmem.serving.caches import page_layout
from ocrmem.serving.memory_llm import Answer, MemoryLLM
from ocrmem.serving.read import page_texts, read

HIST = "".join(f"Fact {i}: item {i} is word{i}. " for i in range(60)) + "\n\nThe last line."


@pytest.fixture(scope="module")
def adapter(tiny_adapter):
    return tiny_adapter


def test_page_texts_are_the_spans_the_memory_pages_show(adapter):
    rs = MemoryLLM.from_pretrained(adapter).render_settings
    texts, cut = page_texts(HIST, rs)
    paged = page_layout(HIST, rs)
    assert cut == paged.cut_chars > 0 and len(texts) == len(paged.pages) == rs.max_pages
    for t, lines in zip(texts, paged.pages):  # the page's drawn lines are its span, wrapped
        assert " ".join(t.split()) == " ".join(" ".join(lines).split())
    assert HIST[cut:].startswith(texts[0]) and HIST.endswith(texts[-1])


def _reader(monkeypatch, keep: float):
    """A reader that reads back the first `keep` of each page's text exactly."""
    def answer_batch(self, histories, prompts, max_new_tokens=64, batch_size=8):
        return [Answer(text=h[: int(len(h) * keep)], cut_chars=0, memory_tokens=7) for h in histories]
    monkeypatch.setattr(MemoryLLM, "answer_batch", answer_batch)


@pytest.mark.parametrize("keep, want", [(1.0, 1.0), (0.5, 0.5), (0.0, 0.0)])
def test_score_is_what_the_reader_got_right(adapter, tmp_path, capsys, monkeypatch, keep, want):
    hist = tmp_path / "notes.txt"
    hist.write_text(HIST)
    _reader(monkeypatch, keep)
    assert main(["read", "--adapter", str(adapter), "--history", str(hist), "--score"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^--- page \d/2 ", out, re.M)) == 2
    pages = [float(x) for x in re.findall(r"precision (\d\.\d+)\) ---", out)]
    assert pages == pytest.approx([want, want], abs=0.02)
    assert float(re.search(r"^precision: (\d\.\d+)", out, re.M).group(1)) == pytest.approx(want, abs=0.02)
    assert re.search(r"the memory holds [\d,]+ of [\d,]+ characters of the history in 2 pages", out)


def test_read_runs_the_real_model_page_by_page(adapter):
    readings, cut = read(MemoryLLM.from_pretrained(adapter), HIST)
    assert len(readings) == 2 and cut > 0
    assert all(isinstance(r.reconstruction, str) and 0.0 <= r.precision <= 1.0 and r.memory_tokens > 0
               for r in readings)


def test_read_names_a_missing_history(adapter, capsys):
    assert main(["read", "--adapter", str(adapter), "--history", "/nope.txt"]) == 2
    assert "--history /nope.txt: no such file" in capsys.readouterr().err
