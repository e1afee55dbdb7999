"""What the user is told: a text tail that does not fill a window, a passing gradient check, the mean
loss of a resumed run, an empty history and glyphs the font lacks (issue 12, items 8 and 10)."""

from __future__ import annotations

import pytest
from conftest import StopAt

from ocrmem.cli import main
from ocrmem.data.sources import read_text_corpus
from ocrmem.memory import OcrMemModel
from ocrmem.training.trainer import train


def test_text_source_reports_its_tail(tmp_path, capsys):
    p = tmp_path / "licence.txt"
    p.write_text("".join(chr(97 + i % 26) for i in range(1000)))
    assert len(read_text_corpus(p, 300, 50)) == 2  # two whole windows: 700 characters
    err = capsys.readouterr().err
    assert f"{p}: the last 300 of 1000 characters are shorter than one window" in err
    p.write_text("x" * 700)  # nothing left over: nothing to say
    read_text_corpus(p, 300, 50)
    assert capsys.readouterr().err == ""


def test_passing_gradient_check_says_so(pipeline, capsys):
    s = pipeline(train={"max_steps": 1})
    train(s, metrics_path=None)
    assert "step-0 gradient check passed" in capsys.readouterr().out


def test_mean_train_loss_covers_the_steps_before_a_resume(pipeline, tmp_path):
    s = pipeline(train={"max_steps": 4, "save_steps": 2})
    straight = s.model_copy(deep=True)
    straight.train.output_dir = str(tmp_path / "straight")
    whole = train(straight, metrics_path=None)
    s.train.output_dir = str(tmp_path / "resumed")
    train(s, callbacks=[StopAt(2)], metrics_path=None)
    resumed = train(s, metrics_path=None)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert resumed["mean_train_loss"] == pytest.approx(whole["mean_train_loss"], rel=1e-3)


def test_generate_notices_empty_history_and_missing_glyphs(make_settings, tmp_path, capsys):
    adapter = OcrMemModel.build(make_settings()).save_adapter(tmp_path / "adapter")
    empty, odd = tmp_path / "empty.txt", tmp_path / "odd.txt"
    empty.write_text("")
    odd.write_text("alpha \U0010fffd beta")  # a code point no font draws
    for h in (empty, odd):
        assert main(["generate", "--adapter", str(adapter), "--history", str(h), "--prompt", "q",
                     "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "the history is empty: answering without memory pages" in err
    assert "the font cannot draw 1 characters of the history" in err
