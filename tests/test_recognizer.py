"""The real OCR encoder (PP-OCRv6 small recognizer from the rapidocr wheel): it reads, its features
are cached faithfully, blank lines cost no memory, and the alignment reads the features back."""

from __future__ import annotations

import pytest
import torch
import yaml

from ocrmem.common.errors import ConfigError
from ocrmem.evaluation.scoring import char_precision
from ocrmem.memory.hub import check_model_paths
from ocrmem.memory.lines import ALL, line_caps
from ocrmem.memory.render import layout, render_pages
from ocrmem.settings import ModelSettings, RenderSettings, load_settings

REC = {"encoder": "ppocr_rec", "ocr_model_name": "rapidocr:PP-OCRv6_rec_small", "token_pool": 16}
LATIN = ["kilo: owl; alpha: red; bravo: pig; lima: gray;", "The quick brown fox jumps over 13 lazy dogs."]
CJK = ["北京的天气很好，我们明天去公园。", "记忆：苹果的值是红。"]


@pytest.fixture(scope="module")
def encoder():
    from ocrmem.memory.recognizer import LineRecognizerEncoder

    return LineRecognizerEncoder.from_settings(ModelSettings(**REC), RenderSettings())


def cer(read: list[str], truth: list[str]) -> float:
    return 1 - sum(char_precision(r, t) * len(t) for r, t in zip(read, truth)) / sum(len(t) for t in truth)


@pytest.mark.parametrize("lines", [LATIN, CJK, LATIN[:1] + CJK[:1]], ids=["latin", "cjk", "mixed"])
def test_greedy_ctc_reads_rendered_lines(encoder, lines):
    text, rs = "\n".join(lines), RenderSettings()
    res = render_pages(text, rs)
    drawn = [text[a:b].strip() for a, b in layout(text, rs)[0]]  # as wrapped on the page
    read = encoder.read_lines(encoder.preprocess(res.pages))[0][: res.page_lines[0]]
    assert len(read) == len(drawn) and cer(read, drawn) <= 0.01, read


def test_features_do_not_depend_on_the_batch(encoder):
    pages = [render_pages(t, RenderSettings()).pages[0] for t in LATIN + CJK]
    together = encoder(encoder.preprocess(pages))
    alone = torch.cat([encoder(encoder.preprocess([p])) for p in pages])
    assert together.shape == (4, encoder.tokens_per_page, 120)
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_cached_features_equal_on_the_fly(pipeline):
    from ocrmem.data.dataset import PixelPages
    from ocrmem.data.features import FeatureCache, cache_fingerprint
    from ocrmem.data.manifest import read_manifest
    from ocrmem.memory import build_encoder

    s = pipeline(model=REC, render={"page_size": 256, "font_size": 16, "margin": 8},
                 data={"synthetic": {"difficulty": "lookup", "n_train": 4, "n_eval": 2}})
    enc = build_encoder(s.model, s.render)
    cache = FeatureCache(s.features_dir, cache_fingerprint(enc, s))
    rows = read_manifest(s, "eval")
    pixels = PixelPages(s.rendered_dir, enc)
    for r in rows:
        torch.testing.assert_close(cache.get(r["sha256"]), enc(pixels(r)), atol=1e-4, rtol=1e-4)
        assert r["vision_tokens"] == sum(r["page_lines"]) * (enc.tokens_per_page // 16 // len(enc.encoder.boxes))


def test_blank_lines_cost_no_memory(make_settings):
    """A page's undrawn lines are dropped: changing their features changes nothing."""
    from ocrmem.memory.model import OcrMemModel

    s = make_settings(model={**REC, "soft_prompt_tokens": 2})
    model = OcrMemModel.build(s).eval()
    per_line = model.memory_tokens_per_line
    assert per_line == model.memory_tokens_per_page // len(model.encoder.encoder.boxes) > 0
    feats = torch.randn(2, model.encoder.tokens_per_page, 120)
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]] * 2), "attention_mask": torch.ones(2, 4, dtype=torch.long),
             "labels": torch.tensor([[-100, -100, 3, 4]] * 2), "page_counts": torch.tensor([1, 1]),
             "memory_pos": torch.tensor([1, 1]), "page_lines": torch.tensor([2, 1])}
    out = model(**batch, features=feats)
    assert out.memory_tokens.tolist() == [2 * per_line, per_line]
    frames = model.encoder.encoder.frames
    changed = feats.clone()
    # new values, not a shift: the projector's LayerNorm would cancel a constant added to a frame
    changed[0, 2 * frames:] = torch.randn_like(changed[0, 2 * frames:])  # lines 3.. of page 0 and 2.. of page 1 are blank
    changed[1, frames:] = torch.randn_like(changed[1, frames:])
    torch.testing.assert_close(model(**batch, features=changed).loss, out.loss)

    masked = {**batch, "page_lines": torch.tensor([[ALL, 0, ALL], [0, ALL, 0]])}  # blank lines inside a page too
    out = model(**masked, features=feats)
    assert out.memory_tokens.tolist() == [2 * per_line, per_line]
    changed = feats.clone()
    changed[0, frames:2 * frames] = torch.randn_like(changed[0, frames:2 * frames])
    changed[1, :frames] = torch.randn_like(changed[1, :frames])
    torch.testing.assert_close(model(**masked, features=changed).loss, out.loss)
    changed[0, 2 * frames:3 * frames] = torch.randn_like(changed[0, 2 * frames:3 * frames])  # a kept line: the loss moves
    assert not torch.allclose(model(**masked, features=changed).loss, out.loss)


def test_a_lines_blank_tail_costs_nothing_past_its_cap(make_settings):
    """A line capped at 2 tokens keeps its first 2 (of per_line): the frames past them change nothing."""
    from ocrmem.memory.model import OcrMemModel

    model = OcrMemModel.build(make_settings(model={**REC, "soft_prompt_tokens": 2})).eval()
    per_line, frames, pool = model.memory_tokens_per_line, model.encoder.encoder.frames, model.projector.pool.k
    assert per_line > 2
    feats = torch.randn(1, model.encoder.tokens_per_page, 120)
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([[-100, -100, 3, 4]]), "page_counts": torch.tensor([1]),
             "memory_pos": torch.tensor([1]), "page_lines": torch.tensor([[ALL, 2]])}
    out = model(**batch, features=feats)
    assert out.memory_tokens.tolist() == [per_line + 2] == model.page_memory_tokens([[ALL, 2]])
    changed = feats.clone()
    tail = slice(frames + 2 * pool, 2 * frames)  # line 1's frames past its two tokens
    changed[0, tail] = torch.randn_like(changed[0, tail])
    torch.testing.assert_close(model(**batch, features=changed).loss, out.loss)
    changed[0, frames + pool] += torch.randn(120)  # its second token: the loss moves
    assert not torch.allclose(model(**batch, features=changed).loss, out.loss)


def test_a_blank_line_inside_a_page_costs_nothing_where_training_and_serving_count(make_settings):
    """A paragraph break: the render stage records it, the budget and compression skip it, and the memory a
    user gets holds exactly the tokens of the same text without it."""
    from ocrmem.memory.model import OcrMemModel
    from ocrmem.serving.caches import page_layout
    from ocrmem.serving.memory_llm import MemoryLLM

    res = render_pages("first paragraph\n\nsecond one\n", RenderSettings())
    assert res.page_lines == [3] and res.blank_lines == [[1]]
    assert line_caps(res.page_lines, res.blank_lines) == [[ALL, 0, ALL]]
    s = make_settings(model={**REC, "soft_prompt_tokens": 2})
    llm = MemoryLLM(OcrMemModel.build(s).eval())
    inputs = []
    # capitals: no descender of the line above reaches into the next line's strip, so the strips match
    for history in ("FIRST NOTE\n\nSECOND LINE", "FIRST NOTE\nSECOND LINE"):
        paged = page_layout(history, llm.render_settings)
        ids, where = llm.prompt_ids("q")
        memory, caps = llm.pages.with_caps(paged.pages)
        batch = llm.model.build_inputs(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), None,
                                       torch.tensor([len(paged.pages)]), memory, torch.tensor([where]),
                                       torch.tensor(caps))
        inputs.append(batch[0])
    assert inputs[0].shape == inputs[1].shape and torch.equal(inputs[0], inputs[1])


def test_alignment_reads_the_features_back(encoder, tiny_models):
    from transformers import AutoTokenizer

    from ocrmem.training.align import alignment_targets, ctc_frames

    text = LATIN[0]
    res = render_pages(text, RenderSettings())
    feats = encoder(encoder.preprocess(res.pages))
    best = encoder.ctc_argmax(feats.reshape(-1, encoder.frames, 120))
    read, centres = ctc_frames(best[0], encoder.alphabet)
    assert read == text and len(centres) == len(text.replace(" ", "")) + text.count(" ")
    assert all(a < b for a, b in zip(centres, centres[1:]))  # characters in reading order
    tok = AutoTokenizer.from_pretrained(tiny_models["llm"])
    emb = torch.randn(tok.vocab_size + 16, 8)
    targets, counts = alignment_targets(feats, line_caps(res.page_lines, res.blank_lines), encoder, tok, emb, 16)
    n_tok = len(tok(" " + text, add_special_tokens=False).input_ids)
    drawn = counts[0, : encoder.frames // 16]
    assert drawn.sum() == n_tok and (counts[0, encoder.frames // 16:] == -1).all()


def test_alignment_reads_lines_back_in_chunks_with_the_same_targets(encoder, tiny_models, monkeypatch):
    """The CTC head reads drawn lines back CHUNK at a time (all at once: 22 GB of logits at 1,024 sheets)."""
    from transformers import AutoTokenizer

    from ocrmem.training import align

    res = render_pages(" ".join(LATIN), RenderSettings())
    assert sum(res.page_lines) >= 3
    feats = encoder(encoder.preprocess(res.pages))
    tok = AutoTokenizer.from_pretrained(tiny_models["llm"])
    emb = torch.randn(tok.vocab_size + 16, 8)
    kept = line_caps(res.page_lines, res.blank_lines)
    whole = align.alignment_targets(feats, kept, encoder, tok, emb, 16)
    monkeypatch.setattr(align, "CHUNK", 2)  # a chunk boundary inside the page's lines
    for a, b in zip(whole, align.alignment_targets(feats, kept, encoder, tok, emb, 16)):
        torch.testing.assert_close(a, b)


def test_settings_refuse_what_the_recognizer_cannot_do(tmp_path):
    def load(**sections):
        p = tmp_path / "params.yaml"
        p.write_text(yaml.safe_dump(sections))
        return load_settings(p)

    with pytest.raises(ConfigError, match="encoder_frozen must be true"):
        load(model={**REC, "encoder_frozen": False})
    with pytest.raises(ConfigError, match="align_steps"):
        load(model={"encoder": "pixels", "ocr_model_name": "pixels"}, train={"align_steps": 10})
    with pytest.raises(ConfigError, match="no ONNX recognizer"):
        check_model_paths(load(model={**REC, "ocr_model_name": "./nope.onnx"}))
