"""Ingest speed (issue 24): the recognizer runs a graph cut at the features, ink-width strips keep a
line's features a function of its own pixels and its token count unchanged, cached and served
features stay bit-identical, and reading lines on several threads changes no bit."""

from __future__ import annotations

import pytest
import torch

from ocrmem.memory.render import draw_page, render_pages
from ocrmem.settings import ModelSettings, RenderSettings

REC = {"encoder": "ppocr_rec", "ocr_model_name": "rapidocr:PP-OCRv6_rec_small", "token_pool": 16}
SMALL = {"page_size": 256, "font_size": 16, "margin": 8}
LINES = ["The quick brown fox jumps over", "a cat.", "", "kilo: owl; alpha: red; bravo: pig;", "x"]


def _encoder(ink: bool, threads: int = 1, **render):
    from ocrmem.memory.recognizer import LineRecognizerEncoder

    enc = LineRecognizerEncoder.from_settings(ModelSettings(**REC, recognizer_ink_width=ink), RenderSettings(**render))
    enc.threads = threads
    return enc


@pytest.fixture(scope="module")
def ink():
    return _encoder(True)


def test_width_buckets_are_token_aligned():
    from ocrmem.memory.recognizer import width_buckets

    assert width_buckets(768, 128) == [128, 256, 384, 512, 640, 768]
    assert width_buckets(768, 8) == [128, 256, 384, 512, 640, 768]
    assert width_buckets(720, 24) == [384, 720]  # lcm(128, 24) = 384: a bucket never splits a memory token
    assert _encoder(False).buckets == [768]


def test_features_graph_stops_at_the_neck(ink):
    from ocrmem.memory.recognizer import CTC_OUTPUT, LAYERS

    graph = ink.features_graph()
    assert [o.name for o in graph.graph.output] == [LAYERS["neck"][0]]
    assert CTC_OUTPUT not in {o for n in graph.graph.node for o in n.output}
    assert not any(n.op_type == "Softmax" and n.output[0] == CTC_OUTPUT for n in graph.graph.node)


def test_ink_width_strips_end_in_blank_frames_and_a_line_costs_only_its_bucket(ink):
    from ocrmem.memory.recognizer import INK, INK_TOP, PAD

    full = _encoder(False)
    px = ink.preprocess([draw_page(LINES, RenderSettings())])
    strips, wide = ink.line_strips(px), full.line_strips(px)
    assert [s is None for s in strips] == [s is None for s in wide] == [not ln for ln in LINES] + [True] * 11
    for s, w in zip(strips, wide):
        if s is not None:  # the bucket holds the ink and PAD background; the strip is the full one, cut
            end = int((w[INK_TOP:].min(0) < INK).nonzero()[0][-1]) + 1
            assert s.shape[1] in ink.buckets and s.shape[1] >= min(end + PAD, full.width)
            assert (s == w[:, :s.shape[1]]).all() and (w[INK_TOP:, s.shape[1]:] == 255).all()
    assert [s.shape[1] for s in strips if s is not None] == [640, 128, 640, 128]
    assert ink.ink_tokens(px) == [[5, 1, 0, 5, 1] + [0] * 11]  # a bucket in memory tokens (128 px = 16 frames)
    spill = ink.preprocess([draw_page(["jumping gypsy [_]", ""], RenderSettings())])
    assert full.line_strips(spill)[1] is not None  # the descenders of line 0 reach into line 1's box:
    assert ink.line_strips(spill)[1] is None  # not its own ink, so a blank line (not read, blank features)
    assert ink.ink_tokens(spill)[0][1] == 0
    assert ink.tokens_per_page == full.tokens_per_page and ink.out_dim == full.out_dim
    feats = ink(px).reshape(len(strips), ink.frames, ink.out_dim)
    blank = full(full.preprocess([draw_page([], RenderSettings())]))[0, :ink.frames]
    assert torch.equal(feats[1, 128 // 8:], blank[128 // 8:])  # "a cat.": frames past its bucket
    assert torch.equal(feats[2], blank)  # a blank line
    assert not torch.equal(feats[1, :4], blank[:4])


def test_a_lines_features_depend_on_its_pixels_alone(ink):
    """Bit-identical whatever else is on the page, the batch of pages, the threads reading the lines
    or the line cache."""
    rs = RenderSettings()
    one = ink.preprocess([draw_page(LINES[:2], rs)])
    other = ink.preprocess([draw_page(LINES[:1] + ["something else entirely", "more"], rs),
                            draw_page(LINES[:2], rs)])
    ink.clear_cache()
    alone = ink(one)
    threaded = _encoder(True, threads=2)
    threaded.cache_lines = 0
    both = threaded(other)
    f = ink.frames
    assert torch.equal(both[1], alone[0])  # the same page within a batch of pages, read on 2 threads
    assert torch.equal(both[0, :f], alone[0, :f])  # the same first line under another second line
    assert threaded.lines_read == 4 and ink(one).equal(alone)  # distinct inked lines; from the line cache


def test_cached_features_and_served_memory_are_bit_identical(pipeline):
    """With ink-width strips: the encode stage's cache equals the recognizer on the rendered PNGs, and
    a served page (PageEmbedder: drawn from its lines) equals the projector on the features of the
    render stage's page of the same text, bit for bit. A line costs what its ink pays for, the same in
    the manifest and in serving, and every frame it does not pay for is the blank strip's."""
    from ocrmem.data.dataset import PixelPages
    from ocrmem.data.features import FeatureCache, cache_fingerprint
    from ocrmem.data.manifest import read_manifest
    from ocrmem.memory import OcrMemModel, build_encoder
    from ocrmem.memory.encoder import tokens_per_line
    from ocrmem.memory.lines import kept_tokens, row_caps
    from ocrmem.serving.caches import PageCache, PageEmbedder, page_layout

    s = pipeline(model={**REC, "recognizer_ink_width": True}, render=SMALL,
                 data={"synthetic": {"difficulty": "lookup", "n_train": 3, "n_eval": 2}},
                 features={"batch_size": 2})
    enc = build_encoder(s.model, s.render)
    cache = FeatureCache(s.features_dir, cache_fingerprint(enc, s))
    assert cache.index["fingerprint"]["encoder"]["buckets"] == enc.encoder.buckets
    pixels, per_line = PixelPages(s.rendered_dir, enc), tokens_per_line(s)
    model = OcrMemModel.build(s).eval()
    for r in read_manifest(s, "eval"):
        feats = cache.get(r["sha256"])
        assert torch.equal(feats, enc(pixels(r)))
        caps = row_caps(r)
        assert r["vision_tokens"] == sum(kept_tokens(c, per_line) for c in caps) < sum(r["page_lines"]) * per_line
        _assert_unpaid_frames_blank(feats, caps, enc.encoder, per_line)
        assert PageEmbedder(model, PageCache()).with_caps(page_layout(r["history"], s.render).pages)[1] == caps
    text = "Fact 1: the owl is red. " * 4 + "\nA short line.\n\nend"
    rendered = render_pages(text, s.render).pages
    served = PageEmbedder(model, PageCache())(page_layout(text, s.render).pages)
    with torch.no_grad():
        ref = model.embed_memory(features=enc(enc.preprocess(rendered)))
    assert torch.equal(served, ref)


def _assert_unpaid_frames_blank(feats, caps, enc, per_line):
    """Frames past each line's paid tokens are the blank strip's; its last paid token holds ink."""
    import numpy as np

    from ocrmem.memory.recognizer import HEIGHT

    blank = torch.from_numpy(enc.features(np.full((HEIGHT, enc.width), 255, np.uint8)))
    lines, pool = feats.reshape(len(feats), -1, enc.frames, feats.shape[-1]), enc.frames // per_line
    for p, page in enumerate(caps):
        for i in range(lines.shape[1]):
            n = min(page[i], per_line) if i < len(page) else 0
            assert torch.equal(lines[p, i, n * pool:], blank[n * pool:]), (p, i, n)
            assert n == 0 or not torch.equal(lines[p, i, (n - 1) * pool:n * pool], blank[(n - 1) * pool:n * pool])


def test_the_ctc_head_reads_ink_width_features_back(ink):
    """The alignment reads cached neck features through the CTC head: ink-width features read as the
    full-width ones do (the frames past the bucket read as nothing)."""
    from ocrmem.training.align import ctc_frames

    text = "kilo: owl; alpha: red; bravo: pig;"
    feats = ink(ink.preprocess(render_pages(text, RenderSettings()).pages))
    best = ink.ctc_argmax(feats.reshape(-1, ink.frames, 120))
    assert ctc_frames(best[0], ink.alphabet)[0] == text
    assert ctc_frames(best[1], ink.alphabet)[0] == ""
