"""The projector: the only trained part. Encoder features -> LLM embedding space.

`token_pool=k` averages k x k neighbouring page tokens first (the encoders' tokens lie on a square
grid), so a page costs k^2 fewer LLM tokens: the compression knob (256 -> 64 with k=2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ocrmem.errors import UserError

from ocrmem.model.registry import PROJECTORS, lookup


class TokenPool(nn.Module):
    """Average k x k neighbouring tokens of a square token grid: [P, n, d] -> [P, n/k^2, d]."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return x
        p, n, d = x.shape
        side = math.isqrt(n)
        if side * side != n or side % self.k:
            raise UserError(f"model.token_pool={self.k} needs a square token grid divisible by it; got {n} tokens")
        grid = x.transpose(1, 2).reshape(p, d, side, side)
        return nn.functional.avg_pool2d(grid, self.k).flatten(2).transpose(1, 2)


# The projector kinds (registered in ocrmem/model/registry.py): (in_dim, out_dim) -> module.
def linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


def mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class Projector(nn.Module):
    def __init__(self, kind: str, in_dim: int, out_dim: int, token_pool: int = 1, out_scale: float = 1.0):
        super().__init__()
        net = lookup(PROJECTORS, kind, "projector")
        self.in_dim, self.out_dim = in_dim, out_dim  # plain ints: ZeRO-3 empties the weights' shapes
        self.pool = TokenPool(token_pool)
        # LayerNorm puts pixel ink, SAM and SigLIP features on one scale: one learning rate fits all.
        self.norm = nn.LayerNorm(in_dim)
        self.net = net(in_dim, out_dim)
        # Start at the LLM's embedding scale so memory tokens are not louder than text tokens.
        self.register_buffer("out_scale", torch.tensor(float(out_scale)), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.pool(features.to(self.norm.weight.dtype))
        return self.net(self.norm(x)) * self.out_scale


def build_projector(kind: str, in_dim: int, out_dim: int, token_pool: int = 1, out_scale: float = 1.0) -> Projector:
    return Projector(kind, in_dim, out_dim, token_pool, out_scale)
