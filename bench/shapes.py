"""Model shapes for benchmarks: random weights, real architectures (nothing is downloaded).

- vision "real": DeepSeek-OCR-2's vision tower (SAM ViT-B + a Qwen2-0.5B-shaped encoder, 896 wide,
  256 queries per 1024px page), ~450M parameters; "tiny": same layout, tiny widths.
- LLM "0.5b" / "7b": Qwen2-0.5B / Qwen2-7B shapes; "small": a 4-layer Llama for CPU runs.
"""

from __future__ import annotations

import torch


def vision_config(kind: str):
    from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import DeepseekOcr2VisionConfig

    if kind == "real":
        return DeepseekOcr2VisionConfig(
            sam_config={},  # SAM ViT-B defaults: 768 wide, 12 layers, 1024px, neck 256 -> [512, 896]
            encoder_config={"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 8,
                            "max_position_embeddings": 4096},
        )
    return DeepseekOcr2VisionConfig(
        sam_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1],
                    "window_size": 4, "output_channels": 16, "downsample_channels": [32, 64], "mlp_dim": 64},
        encoder_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 8},
    )


def llm(kind: str, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if kind == "small":
        cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16384)
        return LlamaForCausalLM(cfg).to(dtype)
    dims = {
        "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
        "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                   num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    }[kind]
    cfg = Qwen2Config(max_position_embeddings=32768, **dims)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: a 7B model never exists in fp32
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            return Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)


def tokenizer():
    from ocrmem.memory.standins import tiny_tokenizer

    return tiny_tokenizer()
