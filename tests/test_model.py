"""The model: frozen parts stay frozen, memory and text are laid out and masked as intended,
adapters hold only trained tensors, and the real DeepSeek-OCR-2 loading path reads the right weights."""

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from ocrmem.memory import OcrMemModel, build_encoder, build_projector, tokens_per_page
from ocrmem.memory.encoder import PixelEncoder


def _page(seed: int, size: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(size, size, generator=g) * 255).to(torch.uint8).numpy(), mode="L")


@pytest.fixture
def model(make_settings):
    return OcrMemModel.build(make_settings())


def _batch(model, page_counts, texts=("What is alpha?", "hi")):
    tok = model.tokenizer
    enc = tok(list(texts), padding=True, return_tensors="pt")
    labels = enc.input_ids.clone()
    labels[enc.attention_mask == 0] = -100
    labels[:, :2] = -100  # a 2-token "prompt"
    n = sum(page_counts)
    pv = model.encoder.preprocess([_page(i, 256) for i in range(n)]) if n else None
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": labels,
            "page_counts": torch.tensor(page_counts), "pixel_values": pv}


def test_only_projector_trains_and_frozen_parts_stay_eval(model):
    names = [n for n, _ in model.trainable_parameters()]
    assert names and all(n.startswith("projector.") for n in names)
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert model.projector.training and not model.llm.training and not model.encoder.encoder.training
    counts = model.parameter_counts()
    assert counts["trainable"] == sum(p.numel() for p in model.projector.parameters())


def test_layout_masks_memory_and_padding(model):
    b = _batch(model, [2, 0])
    memory = model.embed_memory(pixel_values=b["pixel_values"])
    t = model.memory_tokens_per_page
    assert memory.shape[:2] == (2, t)
    embeds, mask, pos, labels, mem = model.build_inputs(b["input_ids"], b["attention_mask"], b["labels"],
                                                        b["page_counts"], memory)
    lens = b["attention_mask"].sum(1)
    assert mem.tolist() == [2 * t, 0]
    assert mask.sum(1).tolist() == [2 * t + lens[0].item(), lens[1].item()]
    seq = embeds.shape[1]
    # sample 0: no padding, memory first (labels -100), then its text with its own labels
    assert torch.equal(embeds[0, : 2 * t], memory.reshape(-1, memory.shape[-1]))
    assert (labels[0, : 2 * t] == -100).all()
    assert torch.equal(labels[0, 2 * t:], b["labels"][0, : lens[0]])
    # sample 1: no memory, left padding masked out and unlabeled, positions start at 0 on real tokens
    pad = seq - lens[1].item()
    assert (mask[1, :pad] == 0).all() and (labels[1, :pad] == -100).all()
    assert pos[1, pad].item() == 0 and pos[0, 0].item() == 0
    assert torch.equal(embeds[1, pad:], model.llm.get_input_embeddings()(b["input_ids"][1, : lens[1]]))


def test_sample_without_pages_keeps_gradient(model):
    b = _batch(model, [0, 1], texts=("no pages here", "one page and some target text"))
    out = model(**b)
    assert out.loss.grad_fn is not None
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in model.trainable_parameters())


def test_padding_does_not_change_a_sample(model):
    """Left padding + explicit positions: a sample's loss is the same alone or next to a longer one."""
    alone = model(**_batch(model, [1], texts=("hi there",)))
    b = _batch(model, [1, 1], texts=("hi there", "a much longer second prompt with many tokens"))
    b["pixel_values"] = torch.cat([_batch(model, [1], texts=("x",))["pixel_values"], b["pixel_values"][1:]])
    both = model(**b)
    torch.testing.assert_close(both.per_example_loss[0], alone.per_example_loss[0], rtol=1e-4, atol=1e-5)


def test_frozen_encoder_no_grad_equals_autograd(make_settings, tiny_models):
    s = make_settings(model={"encoder": "deepseek_ocr2", "ocr_model_name": str(tiny_models["deepseek_ocr2"])},
                      render={"page_size": 1024})
    enc = build_encoder(s.model, s.render)
    pv = enc.preprocess([_page(0, 1024), _page(1, 1024)])
    frozen = enc(pv)
    assert frozen.grad_fn is None
    with torch.enable_grad():
        enc.encoder.requires_grad_(True)
        live = enc.encoder(pv)
    assert live.grad_fn is not None
    assert torch.equal(frozen, live.detach())


def test_deepseek_ocr2_tower_loads_the_checkpoint_weights(make_settings, tiny_models):
    """Our decoder-free load must give the same tower as transformers' full model load."""
    from transformers import DeepseekOcr2ForConditionalGeneration

    s = make_settings(model={"encoder": "deepseek_ocr2", "ocr_model_name": str(tiny_models["deepseek_ocr2"])},
                      render={"page_size": 1024})
    enc = build_encoder(s.model, s.render)
    assert enc.tokens_per_page == 256 and tokens_per_page(s) == 256
    assert not any("language_model" in n for n, _ in enc.named_parameters())
    full = DeepseekOcr2ForConditionalGeneration.from_pretrained(str(tiny_models["deepseek_ocr2"])).eval()
    ref = full.model.vision_tower.state_dict()
    ours = enc.encoder.tower.state_dict()
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
    pv = enc.preprocess([_page(3, 1024)])
    feats = enc(pv)
    assert feats.shape == (1, 256, 48)
    x = (pv.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        torch.testing.assert_close(feats, full.model.vision_tower(pixel_values=x).last_hidden_state)


def test_token_pool_is_the_compression_knob():
    proj = build_projector("mlp2x_gelu", 8, 16, token_pool=2)
    assert proj(torch.randn(3, 256, 8)).shape == (3, 64, 16)
    with pytest.raises(ValueError, match="square token grid"):
        proj(torch.randn(1, 10, 8))
    with pytest.raises(ValueError, match="unknown"):
        build_projector("qformer", 8, 16)


def test_pixel_encoder_shapes():
    enc = PixelEncoder(patch_size=64, page_size=512, downsample=2)
    assert enc.tokens_per_page == 16 and enc.out_dim == 4096
    white = enc(enc.preprocess([Image.new("L", (512, 512), 255)]))
    assert white.shape == (1, 16, 4096) and white.abs().sum() == 0  # no ink, no signal
    with pytest.raises(ValueError, match="does not divide"):
        PixelEncoder(patch_size=60, page_size=512)


def test_adapter_holds_only_trained_tensors_and_round_trips(model, tmp_path):
    with torch.no_grad():
        for _, p in model.trainable_parameters():
            p.add_(torch.randn_like(p))
    out_dir = model.save_adapter(tmp_path / "adapter")
    with safe_open(str(out_dir / "adapter.safetensors"), "pt") as f:
        assert set(f.keys()) == {n for n, _ in model.trainable_parameters()}
    cfg = json.loads((out_dir / "adapter_config.json").read_text())
    assert cfg["model"]["base_llm_model_name"] == model.settings.model.base_llm_model_name
    assert [p.name for p in out_dir.iterdir()] and not list(out_dir.glob("*.bin"))
    restored = OcrMemModel.from_pretrained(out_dir)
    b = _batch(model, [1, 1])
    model.eval(), restored.eval()
    torch.testing.assert_close(restored(**b).loss, model(**b).loss)


def test_generate_greedy_matches_teacher_forcing(model):
    """The KV-cache loop returns the argmax continuation a full forward pass would pick."""
    b = _batch(model, [1, 1])
    b.pop("labels")
    new = model.generate(**b, max_new_tokens=3, eos_token_id=[])
    assert new.shape == (2, 3)
    ids = torch.cat([b["input_ids"], new], 1)
    mask = torch.cat([b["attention_mask"], torch.ones_like(new)], 1)
    # append the generated tokens after each sample's real text (right-padded input)
    for i in range(2):
        n = int(b["attention_mask"][i].sum())
        ids[i] = torch.cat([b["input_ids"][i, :n], new[i], b["input_ids"][i, n:]])
        mask[i] = torch.cat([torch.ones(n + 3, dtype=torch.long), torch.zeros(ids.shape[1] - n - 3, dtype=torch.long)])
    out = model(input_ids=ids, attention_mask=mask, page_counts=b["page_counts"], pixel_values=b["pixel_values"])
    mem = out.memory_tokens
    for i in range(2):
        n = int(b["attention_mask"][i].sum())
        seq = out.logits.shape[1]
        pad = seq - (mem[i].item() + n + 3)
        start = pad + mem[i].item() + n - 1
        assert out.logits[i, start:start + 3].argmax(-1).tolist() == new[i].tolist()


def test_hf_vision_encoder_from_a_local_siglip(make_settings, tmp_path):
    """Any transformers vision tower: a tiny SigLIP saved locally, loaded through from_pretrained."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             image_size=64, patch_size=16)
    SiglipVisionModel(cfg).save_pretrained(tmp_path / "siglip")
    SiglipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "siglip")
    s = make_settings(model={"encoder": "hf_vision", "ocr_model_name": str(tmp_path / "siglip")})
    model = OcrMemModel.build(s)
    assert model.encoder.tokens_per_page == 16 and model.encoder.out_dim == 32
    assert not any(p.requires_grad for p in model.encoder.parameters())
    b = _batch(model, [1, 1])
    assert b["pixel_values"].shape[1:] == (3, 64, 64)
    out = model(**b)
    out.loss.backward()
    assert all(p.grad is not None for _, p in model.trainable_parameters())


def test_memory_goes_into_its_slot(model):
    """Memory is inserted at memory_pos (inside the user turn), text before and after it intact."""
    from ocrmem.memory.prompt import memory_prompt

    tok = model.tokenizer
    ids, pos = memory_prompt(tok, "What is alpha?")
    assert 0 < pos < len(ids) and "Memory:" in tok.decode(ids[:pos])
    b = _batch(model, [1], texts=("x",))
    input_ids = torch.tensor([ids + [7, 8]])
    labels = torch.tensor([[-100] * len(ids) + [7, 8]])
    memory = model.embed_memory(pixel_values=b["pixel_values"])
    embeds, mask, _, lab, _ = model.build_inputs(input_ids, torch.ones_like(input_ids), labels, torch.tensor([1]),
                                                 memory, torch.tensor([pos]))
    t = model.memory_tokens_per_page
    text = model.llm.get_input_embeddings()(input_ids[0])
    assert torch.equal(embeds[0, :pos], text[:pos])
    assert torch.equal(embeds[0, pos:pos + t], memory[0])
    assert torch.equal(embeds[0, pos + t:], text[pos:])
    assert lab[0, -2:].tolist() == [7, 8] and (lab[0, :-2] == -100).all()


def test_pixel_lines_encoder_one_token_per_rendered_line():
    from ocrmem.memory.encoder import PixelLineEncoder
    from ocrmem.memory.render import lines_per_page, render_pages
    from ocrmem.settings import RenderSettings

    rs = RenderSettings()  # the CPU default: 512px, 24px font, 30px lines
    enc = PixelLineEncoder(rs, downsample=2)
    assert enc.tokens_per_page == lines_per_page(rs) == 16 and enc.out_dim == 15 * 240
    page = render_pages("\n\nalpha: bee\n\n\n\nbravo: cow", rs).pages[0]  # text on lines 2 and 6
    feats = enc(enc.preprocess([page]))[0]
    ink = feats.sum(1)
    inked = [i for i in range(16) if ink[i] > 0.05 * ink.max()]  # a descender may graze the next strip
    assert inked == [2, 6]
    with pytest.raises(ValueError, match="pixel_downsample=7"):
        PixelLineEncoder(rs, downsample=7)


def test_pixel_lines_refuses_token_pool():
    from pydantic import ValidationError

    from ocrmem.common.errors import ConfigError  # noqa: F401
    from ocrmem.settings import (
        ModelSettings,
        load_settings,  # noqa: F401
    )

    with pytest.raises(ValidationError, match="token_pool must be 1"):
        ModelSettings(encoder="pixel_lines", token_pool=2)
