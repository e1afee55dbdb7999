"""Stage 1 (ocrmem pretrain): a reading corpus with whole documents held out, a reader trained on it and
shipped, its Fox table per text kind and render point, and stage 2 starting from it, checked first."""

import json

import pytest

from ocrmem.tasks.reading import EVAL_KINDS, KINDS, documents, make_reading_examples


def test_held_out_documents_never_reach_training():
    for lang in ("en", "zh"):
        train, held = set(documents(lang, "train")), set(documents(lang, "eval"))
        assert train and held and not train & held
    train_text = "\n".join(e.history for e in make_reading_examples("train", 300, 700))
    for e in make_reading_examples("eval", 40, 700, kinds=("prose_en", "prose_zh")):
        first = e.history.split("\n")[0][:60]
        assert len(first) >= 20 and first not in train_text, e.id


def test_reading_examples_are_seeded_and_cover_the_kinds():
    a, b = make_reading_examples("train", 12, 400), make_reading_examples("train", 12, 400)
    assert [e.history for e in a] == [e.history for e in b]
    assert {e.meta["kind"] for e in a} == set(KINDS) and all(e.target == e.history for e in a)
    assert all(1 <= len(e.history) <= 400 for e in a)
    assert {e.meta["kind"] for e in make_reading_examples("eval", 8, 400, kinds=EVAL_KINDS)} == set(EVAL_KINDS)


def test_a_curriculum_trains_on_its_kinds_and_reads_back_the_fox_kinds():
    from ocrmem.common.errors import ConfigError
    from ocrmem.settings import Settings
    from ocrmem.training.pretrain import corpus

    assert Settings().pretrain.kinds == list(KINDS)  # settings spells the kinds out (it sits a layer below)
    s = Settings.model_validate({"pretrain": {"kinds": ["prose_en"], "n_train": 6, "n_eval": 8, "n_chars": 60}})
    got = corpus(s)
    assert {e.meta["kind"] for e in got["train"]} == {"prose_en"}
    assert {e.meta["kind"] for e in got["eval"]} == set(EVAL_KINDS)
    with pytest.raises(ConfigError, match="pretrain.kinds: poems is not a reading kind"):
        corpus(Settings.model_validate({"pretrain": {"kinds": ["prose_en", "poems"]}}))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_models):
    from conftest import tiny_settings_dict

    from ocrmem.settings import Settings
    from ocrmem.training.pretrain import pretrain

    root = tmp_path_factory.mktemp("pretrain")
    s = Settings.model_validate(tiny_settings_dict(root, tiny_models, pretrain={
        "out_dir": str(root / "pre"), "output_dir": str(root / "pre_ckpt"), "reader_dir": str(root / "reader"),
        "n_train": 8, "n_eval": 8, "n_chars": 400, "max_steps": 2, "batch_size": 4, "points": ["fs24", "fs16"]}))
    return s, pretrain(s, progress=False, metrics_path=root / "pretrain.json"), root


@pytest.mark.slow
def test_pretrain_ships_a_reader_and_its_table(pretrained):
    s, metrics, tmp_path = pretrained
    reader = tmp_path / "reader"
    assert (reader / "adapter_config.json").is_file() and (reader / "adapter.safetensors").is_file()
    rows = json.loads((tmp_path / "pretrain.json").read_text())["table"]
    assert {(r["text_kind"], r["point"]) for r in rows} == {(k, p) for k in EVAL_KINDS for p in ("fs24", "fs16")}
    assert all(0.0 <= r["precision"] <= 1.0 and r["compression"] > 0 and r["n"] == 2 for r in rows)
    by = {(r["text_kind"], r["point"]): r["compression"] for r in rows}
    assert all(by[k, "fs16"] >= by[k, "fs24"] for k in EVAL_KINDS)  # smaller glyphs: no less text per token
    assert metrics["train"]["steps"] == 2 and metrics["corpus"]["train"] == 8


@pytest.mark.slow
def test_stage_two_starts_from_the_reader_and_refuses_a_mismatch(pretrained, make_settings, tmp_path):
    import torch

    from ocrmem.common.errors import UserError
    from ocrmem.memory.model import OcrMemModel, read_adapter
    from ocrmem.training.trainer import start_from_reader

    reader = pretrained[2] / "reader"
    s2 = make_settings(train={"init_from": str(reader), "output_dir": str(tmp_path / "stage2")})
    model = OcrMemModel.build(s2)
    start_from_reader(model, s2)
    want = read_adapter(reader)
    got = dict(model.trainable_parameters())
    assert want and all(torch.equal(got[k], v) for k, v in want.items())
    other = s2.model_copy(update={"model": s2.model.model_copy(update={"pixel_patch_size": 32})})
    with pytest.raises(UserError, match="pixel_patch_size"):
        start_from_reader(OcrMemModel.build(other), other)
