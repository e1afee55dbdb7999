"""The benchmark's task generators (ocrmem/tasks/needles.py, ocrmem/tasks/conversation.py): seeded, the needle
once at the asked depth, the latest value as the conversation answer, real Chinese."""

from __future__ import annotations

import re

import pytest

from ocrmem.tasks.conversation import SLOTS
from ocrmem.tasks.haystack import LANGS, corpus_sentences, insert_at
from ocrmem.tasks.needles import KINDS, make_needle_examples

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lang", LANGS)
def test_seeded_output_is_identical_and_seed_changes_it(kind, lang):
    a = make_needle_examples(kind, lang, 3000, 0.4, n=3, seed=7)
    b = make_needle_examples(kind, lang, 3000, 0.4, n=3, seed=7)
    c = make_needle_examples(kind, lang, 3000, 0.4, n=3, seed=8)
    assert a == b
    assert [e.history for e in a] != [e.history for e in c]
    assert len({e.history for e in a}) == 3  # the n examples differ from each other


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("n_chars", (800, 6000))
@pytest.mark.parametrize("depth", DEPTHS)
def test_single_needle_once_at_the_requested_depth(lang, n_chars, depth):
    longest = max(map(len, corpus_sentences(lang)))
    for ex in make_needle_examples("niah_single", lang, n_chars, depth, n=3):
        needle = ex.meta["needle"]
        assert ex.history.count(needle) == 1 and ex.history.count(ex.target) == 1
        at = ex.history.index(needle) / (len(ex.history) - len(needle))
        # within one sentence of the asked depth (the needle goes between two sentences)
        assert abs(at - depth) <= (longest + 2) / len(ex.history), (at, depth)
        assert abs(ex.meta["chars"] - n_chars) <= longest + len(needle) + 2


@pytest.mark.parametrize("kind", ("niah_multikey", "niah_multivalue", "niah_multiquery", "vt"))
@pytest.mark.parametrize("depth", DEPTHS)
def test_every_needle_once_and_answers_in_the_history(kind, depth):
    for ex in make_needle_examples(kind, "en", 4000, depth, n=2):
        assert ex.history.count(ex.meta["needle"]) == 1
        for value in ex.target.split():  # each answer stated (assigned) exactly once
            assert ex.history.count(f"VAR {value} =" if kind == "vt" else f" {value}.") == 1, value
        positions = [ex.history.index(v) for v in ex.target.split()]
        if kind in ("niah_multivalue", "vt"):  # answers in text order, the first one at the asked depth
            assert positions == sorted(positions)
        assert ex.history.count("special magic number" if kind != "vt" else " = ") == ex.meta["n_needles"]


def test_variable_chain_links_in_order():
    ex = make_needle_examples("vt", "en", 2000, 0.0)[0]
    names = ex.target.split()
    value = re.search(r"value (\d+)", ex.prompt).group(1)
    assert f"VAR {names[0]} = {value}." in ex.history
    for a, b in zip(names, names[1:]):
        assert f"VAR {b} = VAR {a}." in ex.history
        assert ex.history.index(f"VAR {a} =") < ex.history.index(f"VAR {b} =")


def _stated_values(history: str, phrase: str, lang: str) -> list[str]:
    """Every value the user gave for `phrase`, in the order said."""
    pat = (rf"(?i){re.escape(phrase)} is (?:now )?(\w+)\." if lang == "en" else rf"{re.escape(phrase)}(?:现在)?是(\w+?)。")
    return re.findall(pat, history)


@pytest.mark.parametrize("lang", LANGS)
def test_conversation_answer_is_the_latest_value(lang):
    updated = 0
    for depth in DEPTHS:
        for ex in make_needle_examples("conversation", lang, 5000, depth, n=6, seed=1):
            phrase = SLOTS[ex.meta["key"]][0 if lang == "en" else 1]
            said = _stated_values(ex.history, phrase, lang)
            assert said and said[-1] == ex.target, (said, ex.target)
            updated += len(said) > 1
            assert ex.meta["updated"] == (len(said) > 1)
            assert (ex.history.count("Session ") if lang == "en" else ex.history.count("次对话")) >= 2
    assert updated >= 5  # corrections really happen (about half the examples past depth 0)


def test_conversation_latest_statement_at_depth():
    for depth in DEPTHS:
        for ex in make_needle_examples("conversation", "en", 5000, depth, n=4):
            longest = max(map(len, ex.history.split("\n")))
            at = ex.history.index(ex.meta["needle"]) / (len(ex.history) - len(ex.meta["needle"]))
            # within one turn, plus the other statements that may stand before it
            assert abs(at - depth) <= (longest + 5 * 60) / len(ex.history), (at, depth)


@pytest.mark.parametrize("kind", KINDS)
def test_chinese_variants_are_chinese(kind):
    ex = make_needle_examples(kind, "zh", 3000, 0.5)[0]
    han = sum("\u4e00" <= ch <= "\u9fff" for ch in ex.history)
    assert han / len(ex.history) > 0.6
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in ex.prompt) >= 8
    if kind == "conversation":
        assert all("\u4e00" <= ch <= "\u9fff" for ch in ex.target)


def test_insert_at_keeps_order_on_ties_and_places_depths():
    units = [f"u{i}" for i in range(10)]
    assert insert_at(units, [(1.0, "a"), (1.0, "b")])[-2:] == ["a", "b"]
    assert insert_at(units, [(0.0, "x")])[0] == "x"
    assert insert_at(units, [(0.5, "m")]).index("m") == 5


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="kind"):
        make_needle_examples("nope", "en", 100, 0.5)
    with pytest.raises(ValueError, match="lang"):
        make_needle_examples("vt", "fr", 100, 0.5)
    with pytest.raises(ValueError, match="depth"):
        make_needle_examples("vt", "en", 100, 1.5)
