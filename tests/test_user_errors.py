"""Bad input and bad config reach the user as one clean message and exit 2, never as a traceback:
empty datasets, non-UTF-8 files, configs that only fail once used, bad records, stale caches,
missing adapters (issue 12, items 3-6)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import repo_params, tiny_settings_dict

from ocrmem.cli import main

REPO = Path(__file__).resolve().parents[1]
LATIN1 = "café".encode("latin-1")  # b'caf\xe9': not UTF-8


def _params(tmp_path, tiny_models, **sections) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(tiny_settings_dict(tmp_path, tiny_models, **sections)))
    return p


def _exits_2(capsys, argv, *expected) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    for e in expected:
        assert e in err, err
    return err


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"history": "h", "prompt": "p", "target": "t"}


# -- item 3: an empty dataset is refused at render, naming the file --------------------------------


@pytest.mark.parametrize("source, name, text", [("jsonl", "empty.jsonl", "\n\n"), ("text", "empty.txt", "")])
def test_empty_dataset_refused_at_render_naming_the_file(tmp_path, tiny_models, capsys, source, name, text):
    f = tmp_path / name
    f.write_text(text)
    good = _jsonl(tmp_path / "good.jsonl", [GOOD]) if source == "jsonl" else tmp_path / "good.txt"
    if source == "text":
        good.write_text("x" * 100)
    p = _params(tmp_path, tiny_models, data={"source": source, "train_files": [str(f)], "eval_files": [str(good)]})
    _exits_2(capsys, ["render", "--params", str(p)], str(f), "no ")
    assert not (tmp_path / "data/rendered/train/manifest.jsonl").exists()


def test_render_split_refuses_no_examples(make_settings):
    from ocrmem.common.errors import UserError
    from ocrmem.data.manifest import render_split

    with pytest.raises(UserError, match="'train' split has no examples"):
        render_split(make_settings(), "train", examples=[], progress=False)


# -- item 4: non-UTF-8 input names the file and the line, and says how to fix it ----------------------


def test_non_utf8_jsonl_names_file_and_line(tmp_path, tiny_models, capsys):
    f = tmp_path / "latin.jsonl"
    f.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"history": "' + LATIN1 + b'", "prompt": "p", "target": "t"}\n')
    p = _params(tmp_path, tiny_models, data={"source": "jsonl", "train_files": [str(f)], "eval_files": [str(f)]})
    _exits_2(capsys, ["render", "--params", str(p)], f"{f}:2", "not UTF-8", "iconv")


def test_non_utf8_text_source_names_file_and_line(tmp_path):
    from ocrmem.common.errors import UserError
    from ocrmem.data.sources import read_text_corpus

    f = tmp_path / "book.txt"
    f.write_bytes(b"line one\nline two\nline " + LATIN1 + b"\n")
    with pytest.raises(UserError, match=rf"{f}:3: not UTF-8 \(byte 0xe9 at column 9\).*iconv"):
        read_text_corpus(f, 10, 5)


def test_non_utf8_history_file_names_file_and_line(tmp_path, capsys, monkeypatch):
    import ocrmem.serving.memory_llm

    monkeypatch.setattr(ocrmem.serving.memory_llm.MemoryLLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("the adapter was loaded before the history was read"))
    h = tmp_path / "chat.txt"
    h.write_bytes(b"ok\n" + LATIN1)
    _exits_2(capsys, ["generate", "--adapter", str(tmp_path), "--history", str(h), "--prompt", "q"], f"{h}:2", "UTF-8")


# -- item 5: validate catches configs that would fail later --------------------------------------


def test_validate_refuses_a_missing_font(tmp_path, capsys):
    p = repo_params(tmp_path, render={"font_path": str(tmp_path / "nope.ttf")})
    _exits_2(capsys, ["validate", "--static", "--params", str(p)], "render.font_path", "nope.ttf", "no such font file")


def test_validate_refuses_downsample_not_dividing_the_line_height(tmp_path, capsys):
    lines = {"encoder": "pixel_lines", "ocr_model_name": "pixel_lines", "token_pool": 1}  # the encoder this checks
    p = repo_params(tmp_path, model=lines, render={"font_size": 20},  # line height 25px, pixel_downsample 2
                     train={"align_steps": 0})
    _exits_2(capsys, ["validate", "--static", "--params", str(p)], "model.pixel_downsample=2 must divide the line height")
    ok = repo_params(tmp_path, model=lines, render={"font_size": 24}, train={"align_steps": 0})
    assert main(["validate", "--static", "--params", str(ok)]) == 0


def test_validate_refuses_a_model_that_is_neither_local_nor_on_the_hub(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = repo_params(tmp_path, model={"base_llm_model_name": "models/nope"})
    t0 = time.perf_counter()
    _exits_2(capsys, ["validate", "--params", str(p)], "model.base_llm_model_name = 'models/nope'",
             "not a local directory, and the hub is unreachable")
    assert time.perf_counter() - t0 < 10


def test_hub_unreachable_without_offline_mode(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    def no_network(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    p = repo_params(tmp_path, model={"base_llm_model_name": "models/nope"})
    _exits_2(capsys, ["train", "--params", str(p)], "'models/nope'", "not a local directory, and the hub is unreachable")


# -- item 6: every input/config error exits 2 with one line, no traceback ----------------------------


@pytest.mark.parametrize("line, expected", [
    ("{not json", "invalid JSON"),
    (json.dumps({"history": "h", "target": "t"}), "'prompt' must be a string, got nothing"),
    (json.dumps({"history": 3, "prompt": "p", "target": "t"}), "'history' must be a string"),
])
def test_bad_jsonl_line_exits_2(tmp_path, tiny_models, capsys, line, expected):
    f = _jsonl(tmp_path / "bad.jsonl", [GOOD, line])
    p = _params(tmp_path, tiny_models, data={"source": "jsonl", "train_files": [str(f)], "eval_files": [str(f)]})
    _exits_2(capsys, ["render", "--params", str(p)], f"{f}:2", expected)


def test_stale_feature_cache_exits_2(pipeline, tmp_path, capsys):
    s = pipeline()
    index = s.features_dir / "index.json"
    data = json.loads(index.read_text())
    data["fingerprint"]["store_dtype"] = "float16"
    index.write_text(json.dumps(data))
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(s.model_dump()))
    _exits_2(capsys, ["gradcheck", "--params", str(p)], "feature cache", "rerun `ocrmem encode`")


def test_missing_adapter_exits_2(tmp_path, tiny_models, capsys):
    p = _params(tmp_path, tiny_models)
    nope = tmp_path / "no-adapter"
    _exits_2(capsys, ["evaluate", "--params", str(p), "--adapter", str(nope)], "no adapter at")
    h = tmp_path / "h.txt"
    h.write_text("history")
    _exits_2(capsys, ["generate", "--adapter", str(nope), "--history", str(h), "--prompt", "q"], "adapter_config.json")


def test_bugs_keep_their_traceback(tmp_path, tiny_models, monkeypatch):
    """Only user errors are caught: a bug still raises (pytest shows its traceback)."""
    monkeypatch.setattr("ocrmem.data.manifest.render", lambda s: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["render", "--params", str(_params(tmp_path, tiny_models))])
