"""The feature cache: equal to on-the-fly features, refused when made by another encoder or render,
resumable, and a rerun with nothing changed does no work."""

import json

import pytest
import torch

from ocrmem.data.dataset import MemoryCollator, PixelPages, build_datasets
from ocrmem.data.features import INDEX, CacheMismatchError, FeatureCache, build_cache, cache_fingerprint, encode
from ocrmem.data.manifest import read_manifest
from ocrmem.memory import OcrMemModel, build_encoder


@pytest.mark.parametrize("encoder", ["pixels", "deepseek_ocr2"])
def test_cached_features_equal_on_the_fly(pipeline, tiny_models, encoder):
    extra = {} if encoder == "pixels" else {"model": {"encoder": "deepseek_ocr2",
                                                      "ocr_model_name": str(tiny_models["deepseek_ocr2"])},
                                            "data": {"synthetic": {"n_train": 4, "n_eval": 2}},
                                            "features": {"batch_size": 3}}
    s = pipeline(**extra)
    enc = build_encoder(s.model, s.render)
    cache = FeatureCache(s.features_dir, cache_fingerprint(enc, s))
    rows = read_manifest(s, "train")
    pixels = PixelPages(s.rendered_dir, enc)
    for row in rows[:4]:
        live = enc(pixels(row))
        cached = cache.get(row["sha256"])
        assert cached.shape == live.shape
        if encoder == "pixels":
            assert torch.equal(cached, live)
        else:  # batched differently (3 per batch vs 1): float sums may differ in the last bits
            torch.testing.assert_close(cached, live, rtol=1e-5, atol=1e-5)


def test_training_batches_match_either_way(pipeline):
    """The loss a training batch gives is the same from the cache and from the pages."""
    s = pipeline()
    model = OcrMemModel.build(s).eval()
    cached, _, k1 = build_datasets(s, model, cached=True)
    pixels, _, k2 = build_datasets(s, model, cached=False)
    assert (k1, k2) == ("features", "pixel_values")
    b1 = MemoryCollator(model.tokenizer.pad_token_id, k1)([cached[i] for i in range(4)])
    b2 = MemoryCollator(model.tokenizer.pad_token_id, k2)([pixels[i] for i in range(4)])
    for b in (b1, b2):
        b.pop("objective_ids")
    with torch.no_grad():
        assert torch.equal(model(**b1).loss, model(**b2).loss)


def test_rerun_does_no_work_and_interrupted_run_resumes(pipeline, capsys):
    s = pipeline(features={"shard_pages": 8})
    index = json.loads((s.features_dir / INDEX).read_text())
    assert index["complete"] and len(index["shards"]) == 3  # 24 pages, 8 per shard
    mtimes = {p.name: p.stat().st_mtime_ns for p in s.features_dir.iterdir()}
    encode(s, progress=False)
    assert "up to date" in capsys.readouterr().out
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in s.features_dir.iterdir()}
    # simulate a kill after the first shard: the index lists one shard and is not complete
    index["shards"] = index["shards"][:1]
    index["pages"] = {k: v for k, v in index["pages"].items() if v == index["shards"][0]}
    index["complete"] = False
    (s.features_dir / INDEX).write_text(json.dumps(index))
    with pytest.raises(CacheMismatchError, match="incomplete"):
        FeatureCache(s.features_dir)
    encode(s, progress=False)
    assert "(16 encoded now)" in capsys.readouterr().out
    assert len(FeatureCache(s.features_dir).index["pages"]) == 24


def test_cache_of_another_encoder_or_render_is_refused(pipeline, make_settings):
    s = pipeline()
    other = make_settings(model={"pixel_patch_size": 32})
    enc = build_encoder(other.model, other.render)
    with pytest.raises(CacheMismatchError, match="encoder"):
        FeatureCache(s.features_dir, cache_fingerprint(enc, other))
    other = make_settings(render={"font_size": 11})
    enc = build_encoder(other.model, other.render)
    with pytest.raises(CacheMismatchError, match="render"):
        FeatureCache(s.features_dir, cache_fingerprint(enc, other))
    with pytest.raises(CacheMismatchError, match="rerun `ocrmem encode`"):
        build_datasets(other, OcrMemModel.build(other))


def test_unfrozen_encoder_has_no_cache(make_settings):
    s = make_settings(model={"encoder_frozen": False})
    with pytest.raises(ValueError, match="encoder_frozen is false"):
        build_cache(s)
