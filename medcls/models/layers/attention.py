"""Attention blocks on channel-first maps, for any ``spatial_dims``.

The blocks take and return ``(B, C, *spatial)`` maps, so they stack with convolutions
without reshapes in the model code: tokens are the ``N = prod(spatial)`` positions.
Keys and values may come from a *reduced* map (``kv_reducer``, e.g. a strided
:class:`~medcls.models.layers.directional.DirectionalConv`), which cuts the cost of
attention from ``O(N^2)`` to ``O(N * M)`` with ``M`` the reduced positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import ConvNormAct
from medcls.models.layers.factories import check_spatial_dims, conv_type, make_norm

__all__ = ["ConvMlp", "SpatialReductionAttention", "TransformerBlock"]


class SpatialReductionAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a reduced map.

    ``q = W_q x``; ``k, v = W_kv reducer(x)``; ``out = W_o softmax(q k^T / sqrt(d)) v``,
    all 1x1 convolutions on channel-first maps.

    Shapes: ``(B, dim, *spatial)`` -> ``(B, dim, *spatial)``; the reducer maps
    ``(B, dim, *spatial)`` to ``(B, dim, *reduced)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels (the embedding width).
        num_heads: heads (divides ``dim``).
        kv_reducer: module applied before the key/value projection (None: identity).
        qkv_bias: biases in the query/key/value projections.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        num_heads: int = 1,
        kv_reducer: nn.Module | None = None,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "SpatialReductionAttention")
        if num_heads < 1 or dim % num_heads:
            raise ModelError(
                f"SpatialReductionAttention: num_heads={num_heads} must divide dim={dim}"
            )
        conv = conv_type(spatial_dims)
        self.dim, self.num_heads = dim, num_heads
        self.q = conv(dim, dim, 1, bias=qkv_bias)
        self.kv_reducer = kv_reducer if kv_reducer is not None else nn.Identity()
        self.kv = conv(dim, 2 * dim, 1, bias=qkv_bias)
        self.proj = conv(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *spatial)`` -> ``(B, dim, *spatial)``."""
        batch, spatial = x.shape[0], x.shape[2:]
        head_dim = self.dim // self.num_heads
        # (B, heads, N, d) queries; (B, heads, M, d) keys and values
        q = self.q(x).reshape(batch, self.num_heads, head_dim, -1).transpose(-1, -2)
        kv = self.kv(self.kv_reducer(x)).reshape(batch, 2, self.num_heads, head_dim, -1)
        k, v = kv.transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(batch, self.dim, *spatial)
        return self.proj(out)


class ConvMlp(nn.Module):
    """Position-wise feed-forward network: 1x1 conv, norm, act, 1x1 conv, norm.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        hidden_chans: hidden width.
        out_chans: output channels (default ``in_chans``).
        act: hidden activation.
        norm: normalisation after each convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        hidden_chans: int,
        out_chans: int | None = None,
        act: str = "gelu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.fc1 = ConvNormAct(spatial_dims, in_chans, hidden_chans, 1, norm=norm, act=act)
        self.fc2 = ConvNormAct(
            spatial_dims, hidden_chans, out_chans or in_chans, 1, norm=norm, act=None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``."""
        return self.fc2(self.fc1(x))


class TransformerBlock(nn.Module):
    """Pre-norm attention and a feed-forward network, both residual.

    ``x = x + attn(norm(x))``; ``x = x + mlp(x)`` (the MLP normalises inside).

    Shapes: ``(B, dim, *spatial)`` -> ``(B, dim, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of ``dim`` (0: no MLP).
        kv_reducer: reduces the key/value map (see :class:`SpatialReductionAttention`).
        act: MLP activation.
        norm: pre-attention normalisation.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        num_heads: int = 1,
        mlp_ratio: float = 2.0,
        kv_reducer: nn.Module | None = None,
        act: str = "gelu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.norm = make_norm(norm, spatial_dims, dim)
        self.attn = SpatialReductionAttention(spatial_dims, dim, num_heads, kv_reducer)
        hidden = round(dim * mlp_ratio)
        self.mlp = ConvMlp(spatial_dims, dim, hidden, act=act) if hidden > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *spatial)`` -> ``(B, dim, *spatial)``."""
        x = x + self.attn(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(x)
        return x
