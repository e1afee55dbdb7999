"""The default `lookup` task needs the memory read: any key, any place, answers never seen in training."""

from __future__ import annotations

import pytest

from ocrmem.tasks.lookup import held_out_pair, make_synthetic


@pytest.mark.parametrize("level", ["lookup", "lookup_zh"])
def test_lookup_asks_any_key_anywhere_and_holds_out_the_asked_pairs(level):
    train, evald = make_synthetic(300, level, 0, "train"), make_synthetic(100, level, 0, "eval")
    assert [e.__dict__ for e in make_synthetic(300, level, 0, "train")] == [e.__dict__ for e in train]  # seeded
    sep = "；" if level == "lookup_zh" else "; "
    kv = "：" if level == "lookup_zh" else ": "

    def pairs(e):
        return [tuple(p.split(kv)) for p in e.history.rstrip("。.").split(sep)]

    places = {[k for k, _ in pairs(e)].index(e.meta["key"]) for e in train}
    assert places == set(range(8))  # the asked pair moves over the whole sheet
    assert len({e.meta["key"] for e in train}) == 16
    for e in train:
        assert (e.meta["key"], e.target) in pairs(e)
        assert not any(held_out_pair(k, v) for k, v in pairs(e))  # training never shows a held-out pair
    for e in evald:
        assert (e.meta["key"], e.target) in pairs(e) and held_out_pair(e.meta["key"], e.target)
        assert e.meta["key"] in e.prompt
