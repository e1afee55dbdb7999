import json
import os

import pytest

from ocrmem.common.errors import ConfigError
from ocrmem.data import manifest as D
from ocrmem.data import sources as SRC
from ocrmem.memory.render import line_height
from ocrmem.settings import Settings
from ocrmem.tasks import lookup as T


def _settings(tmp_path, workers=1, n_train=6, n_eval=3, **data):
    return Settings(
        render={"workers": workers},
        data={"out_dir": str(tmp_path / "data"), "synthetic": {"n_train": n_train, "n_eval": n_eval}, **data},
    )


# -- sources -----------------------------------------------------------------------------------


def test_read_jsonl_and_chat_history(tmp_path):
    p = tmp_path / "conv.jsonl"
    recs = [
        {"history": "plain text", "prompt": "q?", "target": "a"},
        {"id": "x1", "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "prompt": "q2?", "target": "b", "continuation": "more"},
    ]  # fmt: skip
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    exs = SRC.read_jsonl(p)
    assert [e.id for e in exs] == ["conv-1", "x1"]
    assert exs[1].history == "user: hi\n\nassistant: hello"
    assert exs[1].continuation == "more" and exs[0].continuation is None


@pytest.mark.parametrize(
    "line,what",
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"history": "h", "prompt": "p"}), "'target'"),
        (json.dumps({"history": 3, "prompt": "p", "target": "t"}), "'history'"),
        (json.dumps({"history": [{"role": "user"}], "prompt": "p", "target": "t"}), "history[0]"),
        (json.dumps([1, 2]), "JSON object"),
    ],
)
def test_read_jsonl_bad_line_names_file_and_line(tmp_path, line, what):
    p = tmp_path / "bad.jsonl"
    good = json.dumps({"history": "h", "prompt": "p", "target": "t"})
    p.write_text(good + "\n" + good + "\n" + line + "\n")
    with pytest.raises(SRC.DataError) as e:
        SRC.read_jsonl(p)
    assert f"{p}:3" in str(e.value) and what in str(e.value)
    assert isinstance(e.value, ValueError)


def test_sanitize_id():
    for bad in ["../../etc/passwd", "..", ".", "", "/", "a/b", "ä ö", "..\\x"]:
        s = SRC.sanitize_id(bad)
        assert s and s not in (".", "..") and "/" not in s and "\\" not in s and not s.startswith(".")
        assert all(c.isalnum() or c in "._-" for c in s)
    assert SRC.sanitize_id("ok-id_1.2") == "ok-id_1.2"
    exs = SRC.unique_ids([SRC.Example("a/b", "", "", ""), SRC.Example("a_b", "", "", ""), SRC.Example("a/b", "", "", "")])
    assert [e.id for e in exs] == ["a_b", "a_b-1", "a_b-2"]
    assert exs[0].meta["source_id"] == "a/b"


def test_read_text_corpus(tmp_path):
    p = tmp_path / "book.txt"
    p.write_text("".join(chr(97 + i % 26) for i in range(1000)))
    exs = SRC.read_text_corpus(p, 300, 50)
    assert len(exs) == 2
    assert exs[0].history == p.read_text()[:300] and exs[0].target == p.read_text()[300:350]
    assert exs[1].history.startswith(p.read_text()[350:360]) and exs[0].prompt == "Continue the text."


def test_load_examples_dispatch(tmp_path):
    with pytest.raises(ConfigError, match="data.train_files"):
        D.load_examples(_settings(tmp_path, source="jsonl"), "train")
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"id": "../x", "history": "h", "prompt": "p", "target": "t"}) + "\n")
    exs = D.load_examples(_settings(tmp_path, source="jsonl", train_files=[str(p), str(p)]), "train")
    assert [e.id for e in exs] == ["x", "x-1"]
    assert len(D.load_examples(_settings(tmp_path), "eval")) == 3


# -- synthetic -----------------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", ["easy", "medium"])
def test_synthetic_deterministic_disjoint_and_answerable(difficulty):
    a = T.make_synthetic(200, difficulty, seed=3, split="train")
    assert a == T.make_synthetic(200, difficulty, seed=3, split="train")
    ev = T.make_synthetic(200, difficulty, seed=3, split="eval")
    assert {x.history for x in a}.isdisjoint({x.history for x in ev})
    assert a != T.make_synthetic(200, difficulty, seed=4, split="train")
    for ex in a:
        key = ex.meta["key"]
        assert f"{key}: {ex.target}\n" in ex.history + "\n"
        assert key in ex.prompt and ex.target in T.VOCAB_16 and ex.meta["difficulty"] == difficulty
    asked = {ex.meta["row"] for ex in a}
    assert asked == ({0} if difficulty == "easy" else set(range(8)))  # easy: always the first (oldest) row
    # chance without memory is 1/16: all 16 answers occur, none dominates
    counts = {w: sum(ex.target == w for ex in T.make_synthetic(4000, difficulty, 0, "train")) for w in T.VOCAB_16}
    assert len(counts) == 16 and max(counts.values()) / 4000 < 0.1 and min(counts.values()) > 0


def test_synthetic_easy_rows_at_fixed_lines():
    from ocrmem.memory.render import layout
    from ocrmem.settings import RenderSettings

    rs = RenderSettings()  # CPU default: 512px, 24px font
    for ex in T.make_synthetic(5, "easy", 0, "train") + T.make_synthetic(5, "hard", 0, "train"):
        lines, cut = layout(ex.history, rs)
        assert cut == 0
        texts = [ex.history[a:b] for a, b in lines]
        rows = [t for t in texts if t]
        step = 2 if ex.meta["difficulty"] == "easy" else 1  # hard: one row per line
        for i, k in enumerate(T.KEYS[: len(rows)]):
            assert texts[i * step].startswith(f"{k}: ")  # row i at y = margin + i*step*line_height
    assert line_height(rs) * 2 < 64 + 1  # easy: one row per 64px patch row


def test_synthetic_hard_prose():
    m = T.make_synthetic(50, "hard", 1, "train")
    assert all(len(x.history.splitlines()) == 16 and x.target in T.VOCAB_32 for x in m)
    h = T.make_synthetic(50, "prose", 1, "train")
    for ex in h:
        assert f"The code word for {ex.meta['key']} is {ex.target}." in ex.history
    assert len({x.history.index("The code word for alpha") for x in h}) > 10  # facts move around


# -- render stage ----------------------------------------------------------------------------------


class FakeTokenizer:
    name_or_path = "fake"

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def _check_outputs(s, n_train=6, n_eval=3):
    rows = D.read_manifest(s, "train")
    assert len(rows) == n_train and len(D.read_manifest(s, "eval")) == n_eval
    for r in rows:
        assert set(D.MANIFEST_FIELDS) <= set(r)
        for rel, sha in zip(r["pages"], r["sha256"]):
            import hashlib

            assert hashlib.sha256((s.rendered_dir / rel).read_bytes()).hexdigest() == sha
    stats = json.loads((s.rendered_dir / "stats.json").read_text())
    assert stats["total"]["examples"] == n_train + n_eval
    assert stats["splits"]["train"]["examples"] == n_train
    return rows, stats


@pytest.mark.parametrize("workers", [1, 2])
def test_render_dataset_and_rerun_is_noop(tmp_path, workers, capsys):
    s = _settings(tmp_path, workers=workers)
    res = D.render_dataset(s, tokenizer=FakeTokenizer(), tokens_per_page=64, progress=False)
    assert res["did_work"]
    rows, stats = _check_outputs(s)
    r = rows[0]
    assert r["pages"] == [f"train/{r['id']}-p0.png"] and r["vision_tokens"] == 64
    assert r["text_tokens"] == len(r["history"].split()) and r["compression"] == r["text_tokens"] / 64
    assert stats["total"]["pages"] == 9 and stats["total"]["examples_truncated"] == 0
    mtimes = {p: p.stat().st_mtime_ns for p in s.rendered_dir.rglob("*.png")}
    res2 = D.render_dataset(s, tokenizer=FakeTokenizer(), tokens_per_page=64, progress=False)
    assert not res2["did_work"] and res2["splits"]["train"]["rendered"] == 0
    assert {p: p.stat().st_mtime_ns for p in s.rendered_dir.rglob("*.png")} == mtimes
    assert "nothing to do" in capsys.readouterr().out
    # a different setting re-renders
    s2 = s.model_copy(update={"render": s.render.model_copy(update={"font_size": 20})})
    assert D.render_dataset(s2, splits=("train",), progress=False)["did_work"]


def test_killed_render_leaves_no_manifest_and_resumes(tmp_path, monkeypatch):
    s = _settings(tmp_path, workers=1)
    D.render_dataset(s, splits=("eval",), progress=False)  # an unrelated complete split
    calls = {"n": 0}
    real = D._render_one

    def dying(job):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real(job)

    monkeypatch.setattr(D, "_render_one", dying)
    with pytest.raises(KeyboardInterrupt):
        D.render_dataset(s, progress=False)
    assert not (s.rendered_dir / "train" / "manifest.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="ocrmem render"):
        D.read_manifest(s, "train")
    assert len(list((s.rendered_dir / "train").glob("*.png"))) == 3

    calls["n"] = -100  # rerun: only the 3 missing examples are rendered
    res = D.render_dataset(s, progress=False)
    assert res["splits"]["train"]["rendered"] == 3 and res["splits"]["eval"]["rendered"] == 0
    _check_outputs(s)
    assert not (s.rendered_dir / "train" / "progress.jsonl").exists()


def test_changed_examples_invalidate_manifest_and_stale_pages(tmp_path):
    s = _settings(tmp_path, n_train=6)
    D.render_dataset(s, splits=("train",), progress=False)
    s2 = _settings(tmp_path, n_train=4)
    res = D.render_dataset(s2, splits=("train",), progress=False)
    assert res["did_work"] and len(D.read_manifest(s2, "train")) == 4
    assert len(list((s2.rendered_dir / "train").glob("*.png"))) == 4


def test_truncated_examples_counted(tmp_path):
    s = Settings(render={"workers": 1, "max_pages": 1}, data={"out_dir": str(tmp_path / "d")})
    exs = [SRC.Example("long", "\n".join(f"row {i}" for i in range(100)), "p", "t")]
    res = D.render_dataset(s, splits=("train",), examples={"train": exs}, tokenizer=FakeTokenizer(),
                           tokens_per_page=10, progress=False)  # fmt: skip
    st = res["splits"]["train"]
    assert st["examples_truncated"] == 1 and st["cut_chars"] > 0
    row = D.read_manifest(s, "train")[0]
    assert row["history"][row["cut_chars"] :].endswith("row 99")
    assert row["kept_text_tokens"] < row["text_tokens"]


def test_read_manifest_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `ocrmem render`"):
        D.read_manifest(_settings(tmp_path), "train")
    assert not os.path.exists(tmp_path / "data")
