"""Projector kinds side by side (ocrmem/memory/projector.py): each maps a line's k-frame groups to one memory
token each, trains end to end, and the mean-pool control is the only one blind to the frames' order."""

import pytest
import torch

from ocrmem.memory.projector import build_projector
from ocrmem.memory.registry import PROJECTORS

K, D, OUT = 4, 120, 64


@pytest.mark.parametrize("kind", sorted(PROJECTORS))
def test_each_kind_makes_one_token_per_group_and_learns(kind):
    torch.manual_seed(0)
    proj = build_projector(kind, D, OUT, token_pool=K, grid="line")
    x = torch.randn(3, 8 * K, D)
    y = proj(x)
    assert y.shape == (3, 8, OUT)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in proj.parameters())
    assert any(p.grad.abs().sum() > 0 for p in proj.parameters() if p.ndim > 1)


@pytest.mark.parametrize("kind, blind", [("mean_pool", True), ("frame_mean", False), ("resampler", False),
                                         ("mlp2x_gelu", False), ("linear", False)])
def test_only_the_mean_pool_control_ignores_the_order_of_a_groups_frames(kind, blind):
    torch.manual_seed(0)
    proj = build_projector(kind, D, OUT, token_pool=K, grid="line")
    for p in proj.parameters():  # learned positions start at zero: give them a value, as training does
        torch.nn.init.normal_(p, std=0.1) if p.ndim == 2 and p.shape == (K, D) else None
    x = torch.randn(2, 2 * K, D)
    swapped = x.clone()
    swapped[:, [0, 1]] = x[:, [1, 0]]  # two frames of the first group change places
    same = torch.allclose(proj(x), proj(swapped), atol=1e-6)
    assert same == blind


def test_per_frame_kinds_are_smaller_than_the_concatenating_mlp():
    """At SmolLM2's width (576), the recognizer's 120-wide frames, 4 frames a token."""
    size = {k: sum(p.numel() for p in build_projector(k, D, 576, token_pool=K, grid="line").parameters())
            for k in PROJECTORS}
    assert size["frame_mean"] < size["mlp2x_gelu"] and size["mean_pool"] < size["mlp2x_gelu"]
    assert size["resampler"] < size["mlp2x_gelu"]


def test_square_grids_keep_working_with_every_kind():
    for kind in PROJECTORS:
        proj = build_projector(kind, 32, 16, token_pool=2, grid="square")
        assert proj(torch.randn(2, 16, 32)).shape == (2, 4, 16)
