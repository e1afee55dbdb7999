"""Adapters a user can hand on (issue 23): remote code only on the caller's word, frozen parts found from
any working directory (or named with --llm / --ocr-model and checked), and format checks before any model
loads, each a one-line error with exit 2."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import tiny_settings_dict

from ocrmem.cli import main
from ocrmem.common.errors import UserError
from ocrmem.memory.model import OcrMemModel
from ocrmem.serving.memory_llm import MemoryLLM
from ocrmem.settings import Settings

MODEL = {"encoder": "pixel_lines", "ocr_model_name": "pixel_lines", "pixel_downsample": 2}
RENDER = {"page_size": 128, "margin": 4, "font_size": 8, "max_pages": 1}


def _adapter(llm, out: Path, **model) -> Path:
    s = Settings.model_validate({"model": {"base_llm_model_name": str(llm), **MODEL, **model}, "render": RENDER})
    return OcrMemModel.build(s).save_adapter(out)


def _edit(adapter: Path, **fields) -> None:
    f = adapter / "adapter_config.json"
    cfg = json.loads(f.read_text())
    for k, v in fields.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    f.write_text(json.dumps(cfg))


def _exits_2(capsys, argv, *expected) -> str:
    capsys.readouterr()  # what came before (progress bars of models built in the test)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for e in expected:
        assert e in err, err
    return err


def _no_models(monkeypatch):
    """Any model load fails the test: the checks must come first."""
    monkeypatch.setattr("ocrmem.memory.model.load_llm", lambda *a, **k: pytest.fail("the LLM loaded"))
    monkeypatch.setattr("ocrmem.memory.model.build_encoder", lambda *a, **k: pytest.fail("the encoder loaded"))


@pytest.fixture
def history(tmp_path) -> Path:
    h = tmp_path / "history.txt"
    h.write_text("Fact 1: alpha is red. Fact 2: beta is blue.")
    return h


# -- 1. remote code only on the caller's word ------------------------------------------------------------

EVIL = '''import pathlib
pathlib.Path({marker!r}).write_text("remote code ran")
from transformers import LlamaConfig, LlamaForCausalLM


class EvilConfig(LlamaConfig):
    pass


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
'''


@pytest.fixture
def evil(tmp_path, tiny_models):
    """(adapter, marker): an adapter whose config asks for remote code and names a local copy of the tiny
    LLM whose config.json auto_map points at Python code that writes `marker` when imported."""
    llm = tmp_path / f"evil-llm-{uuid.uuid4().hex[:8]}"  # a fresh name: transformers caches dynamic modules by it
    shutil.copytree(tiny_models["llm"], llm)
    marker = tmp_path / "remote-code-ran"
    (llm / "evil_code.py").write_text(EVIL.format(marker=str(marker)))
    cfg = json.loads((llm / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForCausalLM": "evil_code.EvilForCausalLM"}
    (llm / "config.json").write_text(json.dumps(cfg))
    adapter = _adapter(tiny_models["llm"], tmp_path / "adapter")
    _edit(adapter, model={"base_llm_model_name": str(llm), "trust_remote_code": True})
    return adapter, marker


def test_the_adapter_config_never_enables_remote_code(evil, capsys, history):
    adapter, marker = evil
    with pytest.raises(UserError, match="--trust-remote-code"):
        OcrMemModel.from_pretrained(adapter)
    with pytest.raises(UserError, match="trust_remote_code=True"):
        MemoryLLM.from_pretrained(adapter)
    _exits_2(capsys, ["generate", "--adapter", str(adapter), "--history", str(history), "--prompt", "q"],
             "auto_map", "--trust-remote-code")
    assert not marker.exists()


def test_remote_code_runs_when_the_caller_allows_it(evil):
    adapter, marker = evil
    model = OcrMemModel.from_pretrained(adapter, trust_remote_code=True)
    assert marker.read_text() == "remote code ran" and type(model.llm).__name__ == "EvilForCausalLM"


def test_the_training_path_keeps_its_own_setting(evil):
    """params.yaml's model.trust_remote_code (the user's own config) still allows it when building."""
    _, marker = evil
    llm = json.loads((evil[0] / "adapter_config.json").read_text())["model"]["base_llm_model_name"]
    s = Settings.model_validate({"model": {"base_llm_model_name": llm, "trust_remote_code": True, **MODEL},
                                 "render": RENDER})
    OcrMemModel.build(s)
    assert marker.exists()


def test_evaluate_takes_remote_code_from_the_runs_own_params(evil, tmp_path, tiny_models):
    from ocrmem.evaluation.runner import load_adapter_model

    adapter, marker = evil
    llm = json.loads((adapter / "adapter_config.json").read_text())["model"]["base_llm_model_name"]
    d = tiny_settings_dict(tmp_path, tiny_models, model={**MODEL, "base_llm_model_name": llm}, render=RENDER)
    with pytest.raises(UserError, match="--trust-remote-code"):
        load_adapter_model(Settings.model_validate(d), adapter)
    assert not marker.exists()
    d["model"]["trust_remote_code"] = True
    assert type(load_adapter_model(Settings.model_validate(d), adapter).llm).__name__ == "EvilForCausalLM"


# -- 2. resolution from any working directory -------------------------------------------------------------


def _project(tmp_path, tiny_models, monkeypatch) -> Path:
    """An adapter trained in a project that names its LLM relatively (./models/llm), as params.yaml does."""
    proj = tmp_path / "proj"
    shutil.copytree(tiny_models["llm"], proj / "models" / "llm")
    monkeypatch.chdir(proj)
    adapter = _adapter("./models/llm", Path("checkpoints/adapter"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return (proj / adapter).resolve()


def test_an_adapter_answers_from_another_directory(tmp_path, tiny_models, monkeypatch, capsys, history):
    adapter = _project(tmp_path, tiny_models, monkeypatch)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["paths"]["base_llm_model_name"]["from_adapter"] == "../../models/llm"
    ask = ["generate", "--adapter", str(adapter), "--history", str(history), "--prompt", "q", "--max-new-tokens", "2"]
    assert main(ask) == 0
    answer = capsys.readouterr().out
    moved = tmp_path / "moved"  # the whole project moved: the path from the adapter still finds the LLM
    (tmp_path / "proj").rename(moved)
    adapter = moved / "checkpoints" / "adapter"
    ask[2] = str(adapter)
    assert main(ask) == 0 and capsys.readouterr().out == answer
    _edit(adapter, paths={})  # an adapter of format 1 records nothing: the adapter's parents are searched
    assert main(ask) == 0 and capsys.readouterr().out == answer


def test_a_missing_llm_is_one_line_naming_the_flag(tmp_path, tiny_models, monkeypatch, capsys, history):
    adapter = _project(tmp_path, tiny_models, monkeypatch)
    copy = tmp_path / "my-llm"
    (tmp_path / "proj" / "models" / "llm").rename(copy)
    ask = ["generate", "--adapter", str(adapter), "--history", str(history), "--prompt", "q", "--max-new-tokens", "2"]
    _exits_2(capsys, ask, "its LLM './models/llm' is not on this machine", "--llm PATH_OR_ID")
    assert main(ask + ["--llm", str(copy)]) == 0
    MemoryLLM.from_pretrained(adapter, llm=str(copy))
    _exits_2(capsys, ask + ["--llm", str(tmp_path / "nope")], "does not exist", "--llm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id that is not in the cache: asked nowhere, one line
    _edit(adapter, model={"base_llm_model_name": "nobody/no-such-llm"})
    _exits_2(capsys, ask, "its LLM 'nobody/no-such-llm': not a local directory", "--llm PATH_OR_ID")


def test_an_llm_of_another_width_is_refused(tmp_path, tiny_models, capsys, history):
    from ocrmem.memory.standins import build_tiny_llm

    adapter = _adapter(tiny_models["llm"], tmp_path / "adapter")
    narrow = build_tiny_llm(tmp_path / "narrow", hidden=32)
    ask = ["generate", "--adapter", str(adapter), "--history", str(history), "--prompt", "q"]
    _exits_2(capsys, ask + ["--llm", str(narrow)], "64-wide", "is 32 wide")
    with pytest.raises(UserError, match="is 32 wide"):
        MemoryLLM.from_pretrained(adapter, llm=str(narrow))


# -- 3. format checks before any model loads --------------------------------------------------------------


@pytest.fixture
def adapter(tmp_path, tiny_models):
    return _adapter(tiny_models["llm"], tmp_path / "adapter")


def test_a_future_format_is_refused_before_any_model_loads(adapter, monkeypatch, capsys, history, tmp_path,
                                                           tiny_models):
    _edit(adapter, format="ocrmem-adapter/99")
    _no_models(monkeypatch)
    with pytest.raises(UserError, match="newer than this ocrmem reads"):
        OcrMemModel.from_pretrained(adapter)
    _exits_2(capsys, ["generate", "--adapter", str(adapter), "--history", str(history), "--prompt", "q"],
             "ocrmem-adapter/99", "upgrade ocrmem")
    params = _params(tmp_path, tiny_models, model=MODEL, render=RENDER)
    _exits_2(capsys, ["evaluate", "--params", str(params), "--adapter", str(adapter)], "newer than this ocrmem")


def test_another_encoder_is_refused(adapter, monkeypatch, capsys, history, tmp_path, tiny_models):
    params = _params(tmp_path, tiny_models, model={"encoder": "pixels", "ocr_model_name": "pixels"}, render=RENDER)
    _no_models(monkeypatch)
    _exits_2(capsys, ["evaluate", "--params", str(params), "--adapter", str(adapter)],
             "model.encoder = 'pixel_lines'", "'pixels'")
    monkeypatch.undo()
    _edit(adapter, encoder_fingerprint={"lines": 99})  # generate: the encoder built here is not the one it read
    monkeypatch.setattr("ocrmem.memory.model.load_llm", lambda *a, **k: pytest.fail("the LLM loaded"))
    _exits_2(capsys, ["generate", "--adapter", str(adapter), "--history", str(history), "--prompt", "q"],
             "trained on another encoder", "lines 99 there")


def test_another_pooling_and_llm_width_are_refused_by_evaluate(adapter, monkeypatch, capsys, tmp_path, tiny_models):
    from ocrmem.memory.standins import build_tiny_llm

    _no_models(monkeypatch)
    _edit(adapter, model={"token_pool": 2})
    params = _params(tmp_path, tiny_models, model=MODEL, render=RENDER)
    _exits_2(capsys, ["evaluate", "--params", str(params), "--adapter", str(adapter)], "model.token_pool = 2")
    _edit(adapter, model={"token_pool": 1})
    narrow = build_tiny_llm(tmp_path / "narrow", hidden=32)
    params = _params(tmp_path, tiny_models, model={**MODEL, "base_llm_model_name": str(narrow)}, render=RENDER)
    _exits_2(capsys, ["evaluate", "--params", str(params), "--adapter", str(adapter)], "is 32 wide",
             "model.base_llm_model_name")


def _params(tmp_path, tiny_models, **sections) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(tiny_settings_dict(tmp_path, tiny_models, **sections)))
    return p


# -- 4. the model card ---------------------------------------------------------------------------------


def test_train_writes_a_model_card_with_its_figures(pipeline, tmp_path):
    from ocrmem.training.trainer import train

    s = pipeline(train={"max_steps": 2, "save_steps": 100})
    m = train(s, metrics_path=tmp_path / "train.json")
    card = (s.adapter_dir / "README.md").read_text()
    for want in (f"{m['steps']} optimizer steps in {m['train_seconds']} s", f"final {m['final_loss']}",
                 f"{m['eval_loss_before']} before training, {m['eval_loss_after']} after",
                 "16 training examples, 8 held-out examples", "data.source = `synthetic`", "Noto Sans CJK",
                 "SIL Open Font License 1.1", "stand-in built by `ocrmem standins`", "page_size 256",
                 "MemoryLLM.from_pretrained", "--trust-remote-code", f"base_model: {s.model.base_llm_model_name}"):
        assert want in card, want


def test_the_default_parts_carry_their_licences():
    from ocrmem.common.card import model_card
    from ocrmem.settings import load_settings

    card = model_card(load_settings(Path(__file__).resolve().parents[1] / "params.yaml").model_dump(mode="json"),
                      {"steps": 40}, {"training examples": 512})
    assert "SmolLM2-135M-Instruct" in card and "PP-OCRv6 small text-line recognizer" in card
    assert card.count("Apache-2.0") >= 3 and "Baidu / PaddleOCR" in card and "512 training examples" in card


def test_a_users_own_data_is_named_in_the_card():
    from ocrmem.common.card import model_card

    s = Settings.model_validate({"data": {"source": "jsonl", "train_files": ["mine.jsonl"]}}).model_dump(mode="json")
    assert "`mine.jsonl`: their own licence applies" in model_card(s, {})
    assert "- the reading corpus (public domain)\n" in model_card(s, {}, data_note="the reading corpus (public domain)")


def test_an_exported_adapter_carries_the_evaluation_figures(tmp_path, tiny_models, monkeypatch, capsys, history):
    """evaluate never writes into train's output: export_adapter copies the adapter, card filled in the copy."""
    from ocrmem.common.card import export_adapter, model_card

    adapter = _project(tmp_path, tiny_models, monkeypatch)
    s = Settings.model_validate({"model": {"base_llm_model_name": "./models/llm", **MODEL}}).model_dump(mode="json")
    (adapter / "README.md").write_text(model_card(s, {"steps": 3}))
    before = {p.name: p.read_bytes() for p in adapter.iterdir()}
    metrics = {"n_examples": 48, "no_memory.exact_match": 0.0, "no_memory.loss": 9.3, "no_memory.memory_tokens": 0,
               "ocr_memory.exact_match": 0.0833, "ocr_memory.loss": 1.93, "ocr_memory.memory_tokens": 18.0,
               "ocr_memory.exact_match_answer_cut": 0.0476, "full_text_trained.exact_match": 0.19,
               "full_text_trained.loss": 1.6, "full_text_trained.text_memory_tokens": 37.7,
               "compression.overall": 2.09, "reconstruction.precision": 0.94}
    out = export_adapter(adapter, tmp_path / "release" / "adapter", metrics)
    assert {p.name: p.read_bytes() for p in adapter.iterdir()} == before  # the source is untouched
    card = (out / "README.md").read_text()
    for want in ("48 held-out examples", "| ocr_memory | 0.08 | 1.93 | 18.0 OCR | 0.05 |",
                 "| full_text_trained | 0.19 | 1.60 | 37.7 text | - |", ("compression (history tokens per memory "
                 "token): 2.090"), "reconstruction precision (held-out English prose read back): 0.940", "## How to load"):
        assert want in card, want
    assert "Not in this card" not in card and sorted(p.name for p in out.iterdir()) == sorted(before)
    cfg = json.loads((out / "adapter_config.json").read_text())  # its path to the models, from where it is now
    assert cfg["paths"]["base_llm_model_name"]["from_adapter"] == "../../proj/models/llm"
    assert main(["generate", "--adapter", str(out), "--history", str(history), "--prompt", "q",
                 "--max-new-tokens", "2"]) == 0
    with pytest.raises(UserError, match="already exists"):
        export_adapter(adapter, out, metrics)


# -- 5. a full disk (ENOSPC planted by OCRMEM_FAULT_ENOSPC, ocrmem/common/io.py) ----------------------------


def _full_disk_line(capsys, argv, *expected) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.replace("\r", "\n").splitlines() if "no space left on the device" in x]
    assert "Traceback" not in err and len(lines) == 1, err  # the rest: progress bars
    last = lines[0]
    for e in expected:
        assert e in last, last
    return last


def test_a_full_disk_leaves_no_adapter_that_reads_complete(adapter, monkeypatch):
    from ocrmem.common.errors import DiskFullError
    from ocrmem.common.io import write_json

    model = OcrMemModel.from_pretrained(adapter)
    monkeypatch.setenv("OCRMEM_FAULT_ENOSPC", "adapter.safetensors")
    with pytest.raises(DiskFullError, match=r"adapter\.safetensors: no space left on the device: writing it needs "
                                            r"\d+ bytes, .* free in"):
        model.save_adapter(adapter)
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter.safetensors"]  # the old one; no temp file
    with pytest.raises(UserError, match="adapter_config.json not found"):
        OcrMemModel.from_pretrained(adapter)
    monkeypatch.setenv("OCRMEM_FAULT_ENOSPC", "x.json")
    with pytest.raises(DiskFullError, match=r"x\.json: .* needs 10 bytes") as e:
        write_json(adapter / "x.json", [1, 2, 3], indent=None)
    assert isinstance(e.value, OSError) and not (adapter / "x.json").exists() and len(list(adapter.iterdir())) == 1
    monkeypatch.delenv("OCRMEM_FAULT_ENOSPC")
    model.save_adapter(adapter)
    OcrMemModel.from_pretrained(adapter)


def test_render_encode_and_train_on_a_full_disk(tmp_path, tiny_models, monkeypatch, capsys):
    p = str(_params(tmp_path, tiny_models, train={"max_steps": 1}))
    monkeypatch.setenv("OCRMEM_FAULT_ENOSPC", "-p0.png")
    _full_disk_line(capsys, ["render", "--params", p], "-p0.png", "bytes")
    assert not list((tmp_path / "data").rglob("manifest.jsonl")) and not list((tmp_path / "data").rglob("*.tmp"))
    monkeypatch.delenv("OCRMEM_FAULT_ENOSPC")
    assert main(["render", "--params", p]) == 0
    monkeypatch.setenv("OCRMEM_FAULT_ENOSPC", "shard-00000")
    _full_disk_line(capsys, ["encode", "--params", p], "shard-00000.safetensors")
    assert not list((tmp_path / "data").rglob("shard-*")) and not list((tmp_path / "data").rglob("*.tmp"))
    monkeypatch.delenv("OCRMEM_FAULT_ENOSPC")
    assert main(["encode", "--params", p]) == 0
    monkeypatch.setenv("OCRMEM_FAULT_ENOSPC", "adapter/adapter.safetensors")
    _full_disk_line(capsys, ["train", "--params", p], "adapter.safetensors", "writing it needs 1.0 MiB")
    assert not (tmp_path / "ckpt" / "adapter" / "adapter_config.json").exists()
    _exits_2(capsys, ["evaluate", "--params", p], "no adapter at")
