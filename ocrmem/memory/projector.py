"""The projector: the only trained part. Encoder features -> LLM embedding space.

`token_pool=k` is the compression knob. On a square token grid (vision towers, pixel patches) it
averages k x k neighbouring tokens, so a page costs k^2 fewer LLM tokens (256 -> 64 with k=2). Along
text lines (the ppocr_rec recognizer's frames) it concatenates k consecutive frames, keeping their
order (which character comes first), so a line costs k times fewer tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ocrmem.common.errors import UserError
from ocrmem.memory.registry import PROJECTORS, lookup


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


class FramePool(nn.Module):
    """Concatenate k consecutive tokens of a line: [P, n, d] -> [P, n/k, k*d] (n is a multiple of k)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, n, d = x.shape
        if n % self.k:
            raise ValueError(f"model.token_pool={self.k} must divide the {n} frames of a page's lines")
        return x.reshape(p, n // self.k, self.k * d)


POOLS = {"square": TokenPool, "line": FramePool}


def pooled_tokens(n: int, k: int, grid: str = "square") -> int:
    """Memory tokens of a page whose encoder gives `n` tokens on `grid`, after pooling by k."""
    if grid == "line":
        return n // k
    side = math.isqrt(n)
    return n // (k * k) if side * side == n and side % k == 0 else math.ceil(n / (k * k))


# The projector kinds (registered in ocrmem/memory/registry.py): (in_dim, out_dim, group) -> module, where a
# memory token's input is `group` frames of a line concatenated (group = token_pool on a line grid, else 1).
def linear(in_dim: int, out_dim: int, group: int = 1) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


def mlp2x_gelu(in_dim: int, out_dim: int, group: int = 1) -> nn.Module:
    """LLaVA-1.5's projector, on the concatenated frames: it sees which character comes first."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class MeanPool(nn.Module):
    """The critics' control (arXiv 2512.03643): the mean of the group's frames through the same MLP.
    Order within the group is lost, so it shows what the frames' order is worth."""

    def __init__(self, in_dim: int, out_dim: int, group: int = 1):
        super().__init__()
        self.group, self.net = group, mlp2x_gelu(in_dim // group, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unflatten(-1, (self.group, -1)).mean(-2))


class FrameMean(nn.Module):
    """Each frame through the MLP, then the mean over the group, with a learned embedding of the frame's
    place in it (so order survives the pooling); k times fewer weights than mlp2x_gelu's first layer."""

    def __init__(self, in_dim: int, out_dim: int, group: int = 1):
        super().__init__()
        self.group, self.net = group, mlp2x_gelu(in_dim // group, out_dim)
        self.place = nn.Parameter(torch.zeros(group, in_dim // group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unflatten(-1, (self.group, -1)) + self.place).mean(-2)


class Resampler(nn.Module):
    """A small attention resampler (Perceiver / Q-Former style): a learned query attends over the group's
    frames (each with a learned position), and the MLP maps what it read into the LLM's space."""

    def __init__(self, in_dim: int, out_dim: int, group: int = 1, heads: int = 4):
        super().__init__()
        d = in_dim // group
        self.group = group
        self.place = nn.Parameter(torch.zeros(group, d))
        self.query = nn.Parameter(torch.randn(1, 1, d) * d ** -0.5)
        self.attn = nn.MultiheadAttention(d, math.gcd(heads, d), batch_first=True)
        self.net = mlp2x_gelu(d, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        frames = x.reshape(-1, self.group, x.shape[-1] // self.group) + self.place
        read, _ = self.attn(self.query.expand(len(frames), -1, -1), frames, frames, need_weights=False)
        return self.net(read[:, 0]).reshape(*lead, -1)


class Projector(nn.Module):
    def __init__(self, kind: str, in_dim: int, out_dim: int, token_pool: int = 1, out_scale: float = 1.0,
                 grid: str = "square"):
        super().__init__()
        net = lookup(PROJECTORS, kind, "projector")
        self.pool = POOLS[grid](token_pool)
        group = token_pool if grid == "line" else 1
        in_dim *= group  # concatenated frames
        self.in_dim, self.out_dim = in_dim, out_dim  # plain ints: ZeRO-3 empties the weights' shapes
        # LayerNorm puts pixel ink, SAM and SigLIP features on one scale: one learning rate fits all.
        self.norm = nn.LayerNorm(in_dim)
        self.net = net(in_dim, out_dim, group)
        # Start at the LLM's embedding scale so memory tokens are not louder than text tokens.
        self.register_buffer("out_scale", torch.tensor(float(out_scale)), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.project(self.pool(features.to(self.norm.weight.dtype)))

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features [..., in_dim] -> memory embeddings [..., out_dim] (the trained map)."""
        return self.net(self.norm(pooled)) * self.out_scale


def build_projector(kind: str, in_dim: int, out_dim: int, token_pool: int = 1, out_scale: float = 1.0,
                    grid: str = "square") -> Projector:
    return Projector(kind, in_dim, out_dim, token_pool, out_scale, grid)
