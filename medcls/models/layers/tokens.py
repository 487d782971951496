"""Token-sequence building blocks shared by the native Transformers and hybrids.

Transformer code works on token sequences ``(B, N, C)``; the rest of medcls works
on channel-first maps ``(B, C, *grid)``. :func:`grid_to_tokens` and
:func:`tokens_to_grid` convert between the two for any number of spatial dims, so
one block serves 2D and 3D. :class:`DropPath` (stochastic depth), :class:`Mlp`,
:class:`LayerScale` and :class:`MultiHeadAttention` are the usual residual-branch
pieces.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError

__all__ = [
    "DropPath",
    "LayerScale",
    "Mlp",
    "MultiHeadAttention",
    "drop_path_rates",
    "grid_to_tokens",
    "tokens_to_grid",
]


def grid_to_tokens(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(B, C, *grid)`` -> ``(B, N, C)`` tokens and the grid shape (``N = prod(grid)``)."""
    grid = tuple(x.shape[2:])
    return x.flatten(2).transpose(1, 2), grid


def tokens_to_grid(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """``(B, N, C)`` tokens -> ``(B, C, *grid)``.

    Raises:
        ModelError: ``N`` is not the number of cells of ``grid``.
    """
    grid = tuple(int(g) for g in grid)
    cells = 1
    for g in grid:
        cells *= g
    if x.shape[1] != cells:
        raise ModelError(f"tokens_to_grid: {x.shape[1]} tokens do not fill a grid {grid}")
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)


def drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic-depth rate of each block, rising linearly to ``drop_path_rate``.

    Returns one list per stage (``depths[i]`` rates each), as in the Swin/ConvNeXt recipes.
    """
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample with probability ``p``.

    In training, each sample's branch output is zeroed with probability ``p`` and
    scaled by ``1 / (1 - p)`` otherwise; in evaluation it is the identity.
    Works on any shape whose first axis is the batch.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ModelError(f"DropPath: p={p} must lie in [0, 1)")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Learnable per-channel scale of a residual branch (CaiT), on the last axis."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Token feed-forward network: linear, activation, dropout, linear, dropout.

    Shapes: ``(..., in_features)`` -> ``(..., out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention on tokens ``(B, N, dim)`` -> ``(B, N, dim)``.

    An optional additive ``bias`` (broadcastable to ``(B, heads, N, M)``) enters the
    softmax, for relative-position terms.

    Args:
        dim: token width.
        num_heads: heads (divides ``dim``).
        qkv_bias: biases in the query/key/value projection.
        attn_drop: dropout on attention weights; proj_drop: on the output.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ModelError(f"MultiHeadAttention: num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        batch, n, dim = x.shape
        qkv = self.qkv(x).reshape(batch, n, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, n, dim)))
