"""Trained text baselines: the same soft-prompt budget as OCR memory, trained on text; nothing else moves."""

from __future__ import annotations

import torch

CONDS = ["no_memory", "truncated_text", "truncated_text_trained", "ocr_memory", "full_text", "full_text_trained"]


def test_text_baselines_train_only_their_soft_prompt_and_are_evaluated(pipeline, tmp_path, monkeypatch):
    from ocrmem.data.manifest import read_manifest
    from ocrmem.evaluation.conditions import load_soft_prompt, with_budgets
    from ocrmem.evaluation.evaluate import evaluate
    from ocrmem.memory.model import OcrMemModel
    from ocrmem.training.baselines import baselines, train_text_baseline
    from ocrmem.training.trainer import train

    monkeypatch.chdir(tmp_path)
    s = pipeline(model={"soft_prompt_tokens": 2}, eval={"conditions": CONDS})
    model = OcrMemModel.build(s)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = with_budgets(model, read_manifest(s, "train"))
    assert all(r["memory_tokens"] == model.memory_tokens_per_page for r in rows)  # one page each
    train_text_baseline(s, model, rows, "truncated_text_trained")
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"soft_prompt.vectors"}
    torch.testing.assert_close(load_soft_prompt(s, "truncated_text_trained"), model.soft_prompt.vectors.detach())

    figures = baselines(s)
    assert figures["conditions"] == ["truncated_text_trained", "full_text_trained"]
    train(s, metrics_path=None)
    assert "Not evaluated yet" in (s.adapter_dir / "README.md").read_text()
    metrics = evaluate(s, progress=False)
    for c in CONDS:
        assert f"{c}.exact_match" in metrics
    card = (s.adapter_dir / "README.md").read_text()  # evaluate filled the run's own adapter's card
    assert "Not evaluated yet" not in card and card.count("## Evaluation") == 1
    for c in CONDS:
        assert f"| {c} | {metrics[f'{c}.exact_match']:.2f} |" in card


def test_soft_prompt_starts_the_same_whatever_the_encoder(make_settings):
    """Every trained condition starts from the same soft prompt, so the text baselines (which build the same
    model) do not change with the encoder's settings: the projector's size must not move the starting vectors."""
    from ocrmem.memory.model import OcrMemModel

    small, big = (OcrMemModel.build(make_settings(model={"soft_prompt_tokens": 4, "pixel_patch_size": k})) for k in (32, 64))
    size = [sum(p.numel() for p in m.projector.parameters()) for m in (small, big)]
    assert size[0] != size[1]  # the projectors draw unequal amounts from the seeded stream
    torch.testing.assert_close(small.soft_prompt.vectors, big.soft_prompt.vectors, rtol=0, atol=0)
