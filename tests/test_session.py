"""A growing memory (ocrmem.serving.caches): a session that grows page by page answers exactly as a
from-scratch call does, draws and encodes only what changed, and never serves a stale page.
Tiny random Llama, 128px pages of 11 lines, 3 pages at most; the one-token-per-line pixel encoder,
and for the answers-identical and stale-page tests also the real PP-OCRv6 recognizer (the default),
whose from-scratch reference is another model instance with its own, empty line cache."""

import pytest
import torch

from ocrmem.memory.render import lines_per_page
from ocrmem.serving.caches import all_lines, drawn_caps, page_layout
from ocrmem.serving.memory_llm import MemoryLLM
from ocrmem.settings import Settings

ENCODERS = {"pixel_lines": {"encoder": "pixel_lines", "ocr_model_name": "pixel_lines", "pixel_downsample": 2},
            "ppocr_rec": {"encoder": "ppocr_rec", "ocr_model_name": "rapidocr:PP-OCRv6_rec_small", "token_pool": 16},
            "ppocr_rec_ink": {"encoder": "ppocr_rec", "ocr_model_name": "rapidocr:PP-OCRv6_rec_small", "token_pool": 16,
                              "recognizer_ink_width": True}}  # ink-width strips (issue 24)


def _settings(llm_dir, encoder: str = "pixel_lines", **render) -> Settings:
    return Settings.model_validate({
        "model": {"base_llm_model_name": str(llm_dir), **ENCODERS[encoder]},
        "render": {"page_size": 128, "margin": 4, "font_size": 8, "line_spacing": 1.25, "max_pages": 3, **render},
        "tracking": {"wandb_mode": "disabled"},
    })


@pytest.fixture(scope="module")
def models(tiny_models):
    """(encoder, copy) -> a model built once; copy 1 is a second instance: a from-scratch reference
    that shares no cache (page or recognizer line cache) with copy 0."""
    from ocrmem.memory.model import OcrMemModel

    built = {}

    def get(encoder: str = "pixel_lines", copy: int = 0):
        if (encoder, copy) not in built:
            built[encoder, copy] = OcrMemModel.build(_settings(tiny_models["llm"], encoder))
        return built[encoder, copy]
    return get


@pytest.fixture(scope="module")
def model(models):
    return models()


def _fresh(model) -> MemoryLLM:
    return MemoryLLM(model)  # its own, empty page cache: a from-scratch call


def _scratch(models, encoder: str, clear: bool = True) -> MemoryLLM:
    """A from-scratch call: another model instance (nothing shared with copy 0), an empty page cache and,
    with `clear`, an empty recognizer line cache (without: it holds only lines this instance read itself,
    each in its own run, so what it serves is what reading them again gives)."""
    ref = models(encoder, 1)
    if clear:
        ref.encoder.clear_cache()
    return MemoryLLM(ref)


def _memory_tokens(model, paged) -> int:
    return sum(model.page_memory_tokens(drawn_caps(model, paged.pages)))


def _facts(a: int, b: int) -> str:
    return "".join(f"Fact {i}: item {i} is word{i}. " for i in range(a, b))


def test_pages_are_line_chunks_and_appending_never_moves_a_full_page(model):
    rs = model.settings.render
    per = lines_per_page(rs)
    text = _facts(0, 20)
    before = page_layout(text, rs)
    after = page_layout(text + _facts(20, 25), rs)
    assert len(before.pages) >= 2 and before.cut_chars == 0
    assert all(len(p) == per for p in before.pages[:-1])
    assert after.pages[: len(before.pages) - 1] == before.pages[:-1]  # full pages stay as they were
    for n in range(200, 206):  # past the budget: a full budget of the most recent lines, never a short chunk
        long = page_layout(_facts(0, n), rs)
        assert len(all_lines(_facts(0, n), rs)) > rs.max_pages * per and long.cut_chars > 0
        assert [len(p) for p in long.pages] == [per] * rs.max_pages and long.n_lines == rs.max_pages * per
        assert _facts(0, n)[long.cut_chars:].rstrip().endswith(f"word{n - 1}.")


@pytest.mark.parametrize("extra", ["", "\n\n\n", "x" * 300, "\n" + "short line\n" * 7])
def test_training_and_serving_lay_out_a_long_history_the_same_way(model, tmp_path, extra):
    """The render stage's pages of a history past the page budget (what the adapter trains on) are the
    pages MemoryLLM puts in its memory for the same history: same pixels, same cut."""
    from ocrmem.common.io import load_png
    from ocrmem.data.manifest import read_manifest, render_dataset
    from ocrmem.data.sources import Example

    history = _facts(0, 160) + extra + _facts(160, 171)
    s = model.settings.model_copy(update={"data": model.settings.data.model_copy(update={"out_dir": str(tmp_path)})})
    render_dataset(s, ["eval"], examples={"eval": [Example(id="long", history=history, prompt="q", target="a")]},
                   progress=False)
    row = read_manifest(s, "eval")[0]
    served = _fresh(model).render(history)
    assert row["cut_chars"] == served.cut_chars > 0 and row["page_lines"] == served.page_lines
    assert row["blank_lines"] == served.blank_lines
    assert len(row["pages"]) == len(served.pages) == s.render.max_pages
    for rel, sha, img in zip(row["pages"], row["sha256"], served.pages):
        assert list(load_png(s.rendered_dir / rel, sha).getdata()) == list(img.getdata())


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_growing_session_answers_exactly_as_a_from_scratch_call(models, encoder):
    model = models(encoder)
    llm = _fresh(model)
    chat = llm.session()
    rs, per = model.settings.render, lines_per_page(model.settings.render)
    steps = [_facts(0, 3), _facts(3, 14), _facts(14, 24), _facts(24, 70), "and one more"]
    questions = ["What is item 2?", "Which word is item 13?"]
    seen_pages = []
    models(encoder, 1).encoder.clear_cache()
    for k, more in enumerate(steps):
        chat.append(more)
        seen_pages.append(len(chat.paged().pages))
        scratch = _scratch(models, encoder, clear=False)
        for q in questions:
            inc = chat.answer(q, max_new_tokens=6)
            ref = scratch.answer(chat.text, q, max_new_tokens=6)
            assert inc.token_ids == ref.token_ids and inc.text == ref.text, (k, q)
            assert inc.cut_chars == ref.cut_chars and inc.page_lines == ref.page_lines
        assert torch.equal(llm.pages(chat.paged().pages), scratch.pages(chat.paged().pages)), k
        # the second question reused the prefix KV: the template's head and every memory page
        assert chat.prefix.reused >= _memory_tokens(model, chat.paged()) > 0
    assert seen_pages[0] == 1 and len(set(seen_pages)) >= 3  # appends crossed page boundaries
    assert seen_pages[-1] == rs.max_pages and chat.paged().cut_chars > 0  # one exceeded max_pages
    assert chat.paged().n_lines <= rs.max_pages * per


def test_chat_turns_grow_like_their_formatted_text(model):
    llm = _fresh(model)
    turns = [{"role": "user", "content": "remember k: v"}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": _facts(0, 20)}]
    chat = llm.session(turns[:1]).append(turns[1]).append(turns[2:])
    ref = _fresh(model).answer(turns, "What is k?", max_new_tokens=4)
    assert chat.answer("What is k?", max_new_tokens=4).token_ids == ref.token_ids


def test_only_the_last_page_is_drawn_and_encoded_again(model):
    llm = _fresh(model)
    chat = llm.session(_facts(0, 30))
    chat.answer("q?", max_new_tokens=1)
    n = len(chat.paged().pages)
    assert n >= 3 - 1 and llm.pages.rendered == llm.pages.encoded == n
    chat.append(" x")  # changes the last page only
    chat.answer("q?", max_new_tokens=1)
    assert llm.pages.rendered == llm.pages.encoded == n + 1
    chat.answer("another question?", max_new_tokens=1)  # nothing changed: nothing drawn
    assert llm.pages.rendered == n + 1
    # a new session over the same history (the same MemoryLLM): every page from the cache
    llm.session(chat.text).answer("q?", max_new_tokens=1)
    assert llm.pages.rendered == n + 1 and llm.pages.cache.hits > 0


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_a_page_whose_text_changed_is_drawn_again(models, encoder):
    """Appending to the last word rewraps the last line: that page has other text, so another key.
    The recognizer reads again exactly the lines whose pixels changed, nothing it read before."""
    model = models(encoder)
    llm = _fresh(model)
    rec = model.encoder.encoder
    rs = model.settings.render
    base = "word " * 120  # the last line is full of words: appending letters to the last word rewraps it
    chat = llm.session(base.rstrip())
    before = chat.paged().pages
    chat.answer("q?", max_new_tokens=1)
    drawn, read = llm.pages.rendered, getattr(rec, "lines_read", 0)
    chat.append("w" * 12)
    after = chat.paged().pages
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed == [len(before) - 1] and after[-1][-1] != before[-1][-1]
    inc = chat.answer("q?", max_new_tokens=3)
    assert llm.pages.rendered == drawn + len(after) - len(before) + 1  # the changed page, and any new one
    if encoder.startswith("ppocr_rec"):  # only new line texts were read: the rewrapped last line(s) and any new page's
        old = {ln for p in before for ln in p}
        assert rec.lines_read - read == len({ln for p in after for ln in p if ln.strip() and ln not in old}) > 0
    # what the cache served is what drawing that text from scratch gives
    ref_llm = _scratch(models, encoder)
    ref = ref_llm.answer(chat.text, "q?", max_new_tokens=3)
    assert inc.token_ids == ref.token_ids
    assert torch.equal(llm.pages(after), ref_llm.pages(after))
    assert page_layout(chat.text, rs).pages == after


def test_answer_keeps_the_pages_it_used(model):
    llm = _fresh(model)
    a = llm.answer(_facts(0, 200), "q?", max_new_tokens=2)
    assert len(a.pages) == model.settings.render.max_pages and a.pages[0].size == (128, 128)
    assert a.memory_tokens == len(a.pages) * model.memory_tokens_per_page
    assert llm.pages.rendered == len(a.pages)  # the Answer's images were drawn for it, not by the cache


def test_incremental_line_layout_equals_a_fresh_one_however_the_text_is_cut(model):
    """Appends cut anywhere: inside a word, between \\r and \\n, after blank lines, in CJK text."""
    import random

    from ocrmem.serving.caches import LineLayout

    rs = model.settings.render
    text = ("first line\r\nsecond  line with   spaces\n\n\n" + _facts(0, 6) + "\r\r\n\t indented\n" +
            "長い日本語の文章がここで折り返されるかどうか" * 3 + "\n\n  \n" + "x" * 70 + " end\n\n")
    rng = random.Random(0)
    for trial in range(5):
        grow, pos = LineLayout(rs), 0
        while pos < len(text):
            pos = min(len(text), pos + rng.randint(1, 12))
            assert grow.lines(text[:pos]) == LineLayout(rs).lines(text[:pos]), (trial, pos)
    assert all_lines(text, rs) == LineLayout(rs).lines(text) and all_lines(text, rs)
