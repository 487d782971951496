"""Pieces of convolution-token hybrids (CvT, CoaT, CMT, T2T-ViT, Conformer), any ``spatial_dims``.

Hybrid vision transformers move between channel-first maps ``(B, C, *grid)`` (where
convolutions run) and token sequences ``(B, P + N, C)`` (``P`` prefix tokens such as a
class token, then ``N = prod(grid)`` patch tokens, where attention runs). The pieces
here are written once for 2D and 3D:

- :class:`ChannelLayerNorm`: layer norm over the channels of a channel-first map;
- :class:`ConvTokenEmbed`: convolutional patch/token embedding (``conv`` + layer norm),
  padding the input so every cell is covered (patchify) or with explicit padding
  (overlapping embeddings as in CvT);
- :class:`ConvPosEncoding`: ``x + depthwise_conv(x)`` on the patch tokens, prefix
  tokens untouched (CoaT's convolutional position encoding, CMT's local perception
  unit);
- :class:`TokenBlock`: the pre-norm residual block ``x + drop_path(mixer(norm(x)))``,
  ``x + drop_path(ffn(norm(x)))`` with pluggable token mixer and feed-forward network;
- :class:`PrefixTokens`: learnable class tokens prepended to a sequence;
- :func:`split_prefix` / :func:`patches_to_grid`: separate prefix tokens from the grid;
- :func:`check_heads`, :func:`split_heads`, :func:`map_heads`, :func:`merge_heads`:
  multi-head layouts for attention written with ``scaled_dot_product_attention``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.factories import check_spatial_dims, conv_type, to_tuple
from medcls.models.layers.tokens import DropPath, grid_to_tokens, tokens_to_grid

__all__ = [
    "ChannelLayerNorm",
    "ConvPosEncoding",
    "ConvTokenEmbed",
    "PrefixTokens",
    "TokenBlock",
    "check_heads",
    "map_heads",
    "merge_heads",
    "pad_to_multiple",
    "patches_to_grid",
    "split_heads",
    "split_prefix",
]


def check_heads(dim: int, num_heads: int, where: str) -> int:
    """Returns ``dim // num_heads``.

    Raises:
        ModelError: ``num_heads`` below 1 or not dividing ``dim``.
    """
    if num_heads < 1 or dim % num_heads:
        raise ModelError(f"{where}: num_heads={num_heads} must divide the width {dim}")
    return dim // num_heads


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Tokens ``(B, L, C)`` -> ``(B, heads, L, C / heads)`` (channels head-major)."""
    batch, length, chans = x.shape
    return x.reshape(batch, length, num_heads, chans // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, heads, L, d)`` -> tokens ``(B, L, heads * d)`` (inverse of :func:`split_heads`)."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def map_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Channel-first map ``(B, C, *S)`` -> ``(B, heads, N, C / heads)`` (channels head-major)."""
    batch, chans = x.shape[:2]
    return x.reshape(batch, num_heads, chans // num_heads, -1).transpose(-1, -2)


def split_prefix(x: torch.Tensor, num_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, P + N, C)`` -> prefix tokens ``(B, P, C)`` and patch tokens ``(B, N, C)``."""
    return x[:, :num_prefix], x[:, num_prefix:]


def patches_to_grid(x: torch.Tensor, grid: Sequence[int], num_prefix: int = 0) -> torch.Tensor:
    """Patch tokens of ``(B, P + N, C)`` (prefix dropped) -> ``(B, C, *grid)``."""
    return tokens_to_grid(x[:, num_prefix:], grid)


def pad_to_multiple(x: torch.Tensor, multiple: Sequence[int]) -> torch.Tensor:
    """Zero-pads ``(B, C, *S)`` at the end of each axis to a multiple of ``multiple``.

    An axis of ``S`` cells becomes ``ceil(S / m) * m`` cells, so a kernel of size and
    stride ``m`` covers every cell (and a grid smaller than ``m`` still gives one cell).
    """
    pads: list[int] = []
    for size, m in zip(reversed(x.shape[2:]), reversed(tuple(multiple))):
        pads += [0, (-int(size)) % int(m)]
    return F.pad(x, pads) if any(pads) else x


class ChannelLayerNorm(nn.LayerNorm):
    """Layer norm over the channels of a channel-first map ``(B, C, *spatial)``.

    The same as an ``nn.LayerNorm(C)`` on each token of the grid.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, C, *spatial)``."""
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ConvTokenEmbed(nn.Module):
    """Convolutional token embedding: ``conv`` then an optional layer norm over channels.

    Shapes: ``(B, in_chans, *S)`` -> ``(B, dim, *S')`` with ``S' = ceil(S / stride)`` for
    a patchify embedding (``padding=None``, kernel = stride: the input is zero-padded
    at the end to a multiple of the stride) or the usual convolution arithmetic with
    explicit ``padding``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        dim: embedding width.
        kernel_size: int or per axis.
        stride: int or per axis.
        padding: int or per axis; None (patchify, kernel = stride) pads the input to a
            multiple of the stride instead.
        norm: add a layer norm over channels.
        eps: the layer norm's epsilon.
        bias: convolution bias.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        dim: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        norm: bool = True,
        eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "ConvTokenEmbed")
        self.stride = to_tuple(stride, n, "stride")
        kernel = to_tuple(kernel_size, n, "kernel_size")
        self.patchify = padding is None
        if self.patchify and kernel != self.stride:
            raise ModelError(
                f"ConvTokenEmbed: padding=None (patchify) needs kernel_size == stride, got "
                f"kernel_size={kernel}, stride={self.stride}; give an explicit padding"
            )
        pad = (0,) * n if padding is None else to_tuple(padding, n, "padding")
        self.proj = conv_type(n)(in_chans, dim, kernel, stride=self.stride, padding=pad, bias=bias)
        self.norm: nn.Module = ChannelLayerNorm(dim, eps=eps) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, dim, *S')``."""
        if self.patchify:
            x = pad_to_multiple(x, self.stride)
        return self.norm(self.proj(x))


class ConvPosEncoding(nn.Module):
    """Convolutional position encoding: ``x + depthwise_conv(x)`` on the patch tokens.

    CoaT's ``ConvPosEnc`` and CMT's local perception unit. The ``num_prefix`` leading
    tokens (class tokens) pass unchanged.

    Shapes: ``(B, P + N, dim)`` tokens and their ``grid`` -> ``(B, P + N, dim)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels.
        kernel_size: depthwise kernel (odd).
        num_prefix: prefix tokens before the patch tokens.
    """

    def __init__(
        self, spatial_dims: int, dim: int, kernel_size: int = 3, num_prefix: int = 0
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "ConvPosEncoding")
        if kernel_size % 2 == 0:
            raise ModelError(f"ConvPosEncoding: kernel_size={kernel_size} must be odd")
        self.num_prefix = num_prefix
        self.proj = conv_type(n)(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, P + N, dim)`` -> ``(B, P + N, dim)``."""
        prefix, patches = split_prefix(x, self.num_prefix)
        feat = tokens_to_grid(patches, grid)
        out, _ = grid_to_tokens(self.proj(feat) + feat)
        return torch.cat([prefix, out], dim=1) if self.num_prefix else out


class TokenBlock(nn.Module):
    """Pre-norm residual block: ``x += drop_path(mixer(norm1(x)))``, then the same with ``ffn``.

    An optional ``pos`` module (e.g. :class:`ConvPosEncoding`, possibly shared by the
    blocks of a stage) runs first: ``x = pos(x, grid)``. Mixers and feed-forward networks
    that need the token grid receive it as second argument (``mixer_grid`` /
    ``ffn_grid``).

    Shapes: ``(B, L, dim)`` (and the patch ``grid``) -> ``(B, L, dim)``.

    Args:
        dim: token width.
        mixer: token mixer ``(B, L, dim)`` -> ``(B, L, dim)`` (attention).
        ffn: feed-forward network ``(B, L, dim)`` -> ``(B, L, dim)``.
        drop_path: stochastic-depth rate of both branches.
        eps: layer-norm epsilon.
        pos: position encoding run before the block (None: none).
        mixer_grid: call ``mixer(x, grid)``.
        ffn_grid: call ``ffn(x, grid)``.
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        ffn: nn.Module,
        drop_path: float = 0.0,
        eps: float = 1e-6,
        pos: nn.Module | None = None,
        mixer_grid: bool = False,
        ffn_grid: bool = False,
    ) -> None:
        super().__init__()
        self.pos = pos
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = mixer
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = ffn
        self.drop_path = DropPath(drop_path)
        self.mixer_grid, self.ffn_grid = mixer_grid, ffn_grid

    def forward(self, x: torch.Tensor, grid: Sequence[int] | None = None) -> torch.Tensor:
        """``(B, L, dim)`` -> ``(B, L, dim)``."""
        if self.pos is not None:
            x = self.pos(x, grid)
        h = self.norm1(x)
        x = x + self.drop_path(self.attn(h, grid) if self.mixer_grid else self.attn(h))
        h = self.norm2(x)
        return x + self.drop_path(self.mlp(h, grid) if self.ffn_grid else self.mlp(h))


class PrefixTokens(nn.Module):
    """Learnable prefix (class) tokens prepended to a token sequence.

    Shapes: ``(B, N, dim)`` -> ``(B, count + N, dim)``.

    Args:
        dim: token width.
        count: number of prefix tokens.
        init_std: standard deviation of the (truncated normal) initial values; 0 gives zeros.
    """

    def __init__(self, dim: int, count: int = 1, init_std: float = 0.02) -> None:
        super().__init__()
        self.count = count
        self.tokens = nn.Parameter(torch.zeros(1, count, dim))
        if init_std > 0:
            nn.init.trunc_normal_(self.tokens, std=init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` -> ``(B, count + N, dim)``."""
        return torch.cat([self.tokens.expand(x.shape[0], -1, -1), x], dim=1)
