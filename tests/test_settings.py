"""A bad config is refused before anything heavy runs, with one message per bad field."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import repo_params

from ocrmem.cli import main
from ocrmem.common.errors import ConfigError
from ocrmem.memory.hub import check_model_paths
from ocrmem.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any model load during the test is a failure: validation must come first."""
    import transformers

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the config was validated")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", boom)


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/params.gpu.yaml", "tests/data/params.tiny.yaml"])
def test_params_files_name_each_key_once(params_file):
    """DVC refuses a params file that names a key twice; PyYAML (and so pydantic) silently keeps the last."""
    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        keys = [loader.construct_object(k) for k, _ in node.value]
        assert len(keys) == len(set(keys)), f"{params_file}: a key twice in {keys}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    yaml.load((REPO / params_file).read_text(), Loader=Strict)


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/params.gpu.yaml", "tests/data/params.tiny.yaml"])
def test_params_files_spell_out_every_field(params_file, monkeypatch):
    """Each params file is valid and complete: it names every field with the value the stages use, so
    DVC (which reads the file, not pydantic's defaults) sees every param a stage lists."""
    monkeypatch.chdir(REPO)
    assert yaml.safe_load((REPO / params_file).read_text()) == load_settings(REPO / params_file).model_dump()


@pytest.mark.parametrize("field", ["ocr_model_name", "base_llm_model_name"])
@pytest.mark.parametrize("value", ["", "   "])
@pytest.mark.parametrize("command", ["validate", "gradcheck", "train", "render"])
def test_empty_model_name_exits_2_naming_the_field(tmp_path, capsys, no_model_loading, field, value, command):
    p = repo_params(tmp_path, model={field: value})
    assert main([command, "--params", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"model.{field}" in err and "must name a model" in err and "Traceback" not in err


def test_empty_model_name_via_environment(tmp_path, capsys, monkeypatch, no_model_loading):
    monkeypatch.setenv("OCRMEM_MODEL__OCR_MODEL_NAME", "")
    assert main(["validate", "--params", str(repo_params(tmp_path))]) == 2
    assert "model.ocr_model_name = ''" in capsys.readouterr().err


def test_environment_overrides_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("OCRMEM_TRAIN__MAX_STEPS", "7")
    assert load_settings(repo_params(tmp_path)).train.max_steps == 7


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"model": {"encoder": "clip"}}, "model.encoder = 'clip': unknown encoder"),
        ({"model": {"projector": "qformer"}}, "model.projector = 'qformer': unknown projector"),
        ({"train": {"learning_rate": 0}}, "train.learning_rate = 0"),
        ({"train": {"per_device_train_batch_size": -1}}, "train.per_device_train_batch_size = -1"),
        ({"render": {"page_size": 0}}, "render.page_size = 0"),
        ({"train": {"deepspeed": "configs/nope.json"}}, "does not exist"),
        ({"train": {"objectives": {"qa": 1.0, "summarise": 1.0}}}, "unknown objective"),
        ({"train": {"max_stepz": 3}}, "train.max_stepz = 3: unknown key"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(tmp_path, capsys, sections, expected):
    assert main(["validate", "--static", "--params", str(repo_params(tmp_path, **sections))]) == 2
    assert expected in capsys.readouterr().err


def test_all_bad_fields_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_settings(repo_params(tmp_path, model={"ocr_model_name": "", "encoder": "x"}, train={"learning_rate": -1}))
    assert len(e.value.messages) == 3


def test_deepspeed_config_must_be_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("ds.json").write_text("{not json")
    assert main(["validate", "--static", "--params", str(repo_params(tmp_path, train={"deepspeed": "ds.json"}))]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_repo_deepspeed_configs_are_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    for name in ("configs/ds_zero2.json", "configs/ds_zero3.json"):
        assert load_settings(repo_params(tmp_path, train={"deepspeed": name})).train.deepspeed == name
    assert json.loads((REPO / "configs/ds_zero3.json").read_text())["zero_optimization"][
        "stage3_gather_16bit_weights_on_model_save"] is True


def test_missing_local_model_path(tmp_path, capsys, no_model_loading):
    p = repo_params(tmp_path, model={"base_llm_model_name": "./no/such/model"})
    assert main(["validate", "--params", str(p)]) == 2
    assert "local path does not exist" in capsys.readouterr().err
    assert main(["validate", "--static", "--params", str(p)]) == 0  # static: paths checked by loading stages


def test_remote_code_needs_trust_remote_code(tmp_path):
    ckpt = tmp_path / "remote"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.M"}}))
    s = load_settings(repo_params(tmp_path, model={"base_llm_model_name": str(ckpt)}))
    with pytest.raises(ConfigError, match="trust_remote_code is false"):
        check_model_paths(s)
    s.model.trust_remote_code = True
    check_model_paths(s)


def test_missing_params_file(capsys):
    assert main(["validate", "--params", "/no/such/params.yaml"]) == 2
    assert "not found" in capsys.readouterr().err


def test_gpu_params_page_costs_deepseeks_256_queries(monkeypatch):
    """The GPU config's 1024px page costs DeepSeek-OCR-2's 256 tokens, computed without loading weights."""
    from ocrmem.memory import tokens_per_page

    monkeypatch.chdir(REPO)
    s = load_settings(REPO / "configs/params.gpu.yaml")
    assert tokens_per_page(s) == 256 // s.model.token_pool ** 2
    assert tokens_per_page(s.model_copy(update={"render": s.render.model_copy(update={"page_size": 768})})) == 144 // s.model.token_pool ** 2
