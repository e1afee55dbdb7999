"""The Fox table (ocrmem fox): each projector kind and the critics' controls, read back by text kind and
compression; the two scores; the truncated-text control at the memory's own budget; resuming per kind."""

import csv
import json

import pytest

from ocrmem.evaluation.scoring import char_precision, word_precision
from ocrmem.tasks.reading import EVAL_KINDS


def test_precision_counts_the_answer_words_found_and_accuracy_what_was_lost():
    text = "the cat sat on the mat"
    assert word_precision("the cat sat", text) == 1.0  # all it says is right ...
    assert char_precision("the cat sat", text) == pytest.approx(11 / 22)  # ... but half the text is lost
    assert word_precision("the the the the", text) == 0.5  # a right word repeated counts as often as it occurs
    assert word_precision("a dog sat", text) == pytest.approx(1 / 3)
    assert word_precision("", text) == 0.0
    assert word_precision("你好吗", "你好") == pytest.approx(2 / 3)  # Chinese: a character is a word


class Chars:
    """A tokenizer of one token a character (the control's arithmetic without a model)."""

    def __call__(self, text, add_special_tokens=False):
        return type("Enc", (), {"input_ids": [ord(c) for c in text]})()

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_truncated_text_keeps_as_many_recent_tokens_as_the_memory_costs():
    from ocrmem.evaluation.fox import CONTROL, rows_of, truncated

    got = [{"kind": "prose_en", "text": "abcdefghij", "text_tokens": 10, "memory_tokens": 4, "prediction": "?"},
           {"kind": "random", "text": "xyz", "text_tokens": 3, "memory_tokens": 5, "prediction": "?"}]
    cut = truncated(Chars(), got)
    assert [g["prediction"] for g in cut] == ["ghij", "xyz"]
    rows = {r["text_kind"]: r for r in rows_of(CONTROL, "fs24", cut, None)}
    assert rows["prose_en"]["accuracy"] == 0.4 and rows["prose_en"]["precision"] == 0.0  # "ghij" is no word of it
    assert rows["prose_en"]["compression"] == 2.5 and rows["random"]["accuracy"] == 1.0


def test_a_kind_trained_under_other_settings_starts_over_and_a_finished_one_is_read(tmp_path, capsys):
    from ocrmem.evaluation.fox import DONE, finished, run_key
    from ocrmem.settings import Settings

    s = Settings()
    assert run_key(s) == run_key(s.model_copy(update={"train": s.train.model_copy(update={"max_steps": 9})}))
    kdir, key, want = tmp_path / "mlp2x_gelu", run_key(s), {"steps": 40, "points": ["fs24"]}
    assert finished(kdir, key, want) is None
    (kdir / DONE).write_text(json.dumps({**want, "read": {}}))
    assert finished(kdir, key, want) == {**want, "read": {}}
    assert finished(kdir, key, {**want, "steps": 80}) is None  # more steps: resumed, read back again
    (kdir / "checkpoint-40").mkdir()
    other = run_key(s.model_copy(update={"render": s.render.model_copy(update={"font_size": 20})}))
    assert finished(kdir, other, want) is None
    assert not (kdir / "checkpoint-40").exists() and "starting it over" in capsys.readouterr().out


@pytest.mark.slow
def test_fox_writes_the_table_curves_and_plot_and_resumes_per_kind(tmp_path, tiny_models, monkeypatch):
    from conftest import tiny_settings_dict

    from ocrmem.evaluation import fox as F
    from ocrmem.settings import Settings

    s = Settings.model_validate(tiny_settings_dict(tmp_path, tiny_models, pretrain={
        "out_dir": str(tmp_path / "pre"), "n_train": 8, "n_eval": 8, "n_chars": 300, "batch_size": 4,
        "points": ["fs24", "fs16"]}, fox={"projectors": ["mlp2x_gelu", "mean_pool"], "max_steps": 2,
                                          "output_dir": str(tmp_path / "fox")}))
    rows = F.fox(s, progress=False, metrics_path=tmp_path / "fox.json", plots_dir=tmp_path)
    assert json.loads((tmp_path / "fox.json").read_text()) == rows
    got = {(r["text_kind"], r["projector"], r["point"]): r for r in rows}
    assert set(got) == {(k, p, pt) for k in EVAL_KINDS for p in ("truncated_text", "mlp2x_gelu", "mean_pool")
                        for pt in ("fs24", "fs16")}
    for (k, p, pt), r in got.items():
        assert 0 <= r["precision"] <= 1 and 0 <= r["accuracy"] <= 1 and r["n"] == 2
        assert r["compression"] == got[k, "truncated_text", pt]["compression"]  # one budget for all
    curves = list(csv.DictReader((tmp_path / "fox_curves.csv").open()))
    assert {c["projector"] for c in curves} == {"mlp2x_gelu", "mean_pool"} and max(int(c["step"]) for c in curves) == 2
    assert (tmp_path / "fox.png").stat().st_size > 0 and len(list(csv.DictReader((tmp_path / "fox.csv").open()))) == 24
    monkeypatch.setattr("ocrmem.training.trainer.train", lambda *a, **k: pytest.fail("a finished kind retrained"))
    assert F.fox(s, progress=False, metrics_path=tmp_path / "again.json", plots_dir=tmp_path) == rows
