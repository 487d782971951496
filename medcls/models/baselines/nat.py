"""Neighborhood Attention Transformer (NAT): 2D and 3D from one implementation.

Paper: Hassani et al., "Neighborhood Attention Transformer", CVPR 2023
(arXiv:2204.07143).

Architecture (written from the paper): a convolutional tokenizer (two overlapping
``3^n`` stride-2 convolutions, then layer norm), four levels of NAT blocks with a
convolutional downsampler between levels (``3^n`` stride-2 convolution to twice the
width, then layer norm), a final layer norm, global average pooling and a linear
classifier. A NAT block is pre-norm neighbourhood attention and an MLP, each residual
with layer scale and stochastic depth.

Neighbourhood attention (:class:`NeighborhoodAttention`): every query attends to the
``k^n`` keys nearest to it. Following the paper's definition the neighbourhood is the
``k``-wide window centred on the query along each axis, moved inward at the borders so
it always holds ``k`` positions (a corner query sees the same ``k^n`` keys as its inner
neighbours, not a truncated window). A learned relative position bias (one value per
head and offset, ``(2k - 1)^n`` offsets) is added to the logits. Written in plain
PyTorch for any number of axes: the neighbour indices along each axis are computed once
per grid and the keys/values gathered with them (``B x heads x N x k^n x head_dim``
entries: the cost in MACs is NA's, but the activations are large, about 4.4 GiB per
2x64³ sample when training against 0.2 GiB for ``swin_s``; the paper's NATTEN kernels
avoid that memory, this is the reference computation). The kernel may differ per axis;
an axis shorter than ``k`` uses the whole axis as the neighbourhood (the limit of the
border rule) instead of padding the grid.

Sizes (parameters; 2D at 1,000 classes, ``in_chans=3``; 3D at 2 classes, ``in_chans=2``):

=====  ========  ==========  ======  ========  ==========
name   paper 2D  ours 2D     diff    3D table  ours 3D
=====  ========  ==========  ======  ========  ==========
nat_s  51 M      50.743 M    -0.5 %  --        57.776 M
=====  ========  ==========  ======  ========  ==========

MACs (:mod:`medcls.models.profile`, one sample): 7.77 G at 3x224² (paper: 7.8 G),
5.23 G at 2x64³.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import StagedClassifier, build_variant, check_stages
from medcls.models.contract import FeatureStage
from medcls.models.layers import check_spatial_dims, conv_type, to_tuple
from medcls.models.layers.token_blocks import ChannelLayerNorm, ConvTokenEmbed, TokenBlock
from medcls.models.layers.tokens import LayerScale, Mlp, MultiHeadAttention, drop_path_rates
from medcls.models.registry import register_model

__all__ = ["NAT", "TINY", "NATBlock", "NATStage", "NeighborhoodAttention", "neighborhood"]

PAPER = "Hassani et al., Neighborhood Attention Transformer, CVPR 2023, arXiv:2204.07143"


def neighborhood(size: int, kernel: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour indices along one axis of length ``size`` for a ``kernel``-wide window.

    Query ``i`` sees positions ``start(i) .. start(i) + k' - 1`` with
    ``k' = min(kernel, size)`` and ``start(i) = clamp(i - kernel // 2, 0, size - k')``.

    Returns:
        ``(index, offset)``, each ``(size, k')``: the key positions, and their offsets
        from the query shifted to ``[0, 2 kernel - 2]`` (rows of the bias table).
    """
    width = min(kernel, size)
    query = torch.arange(size, device=device)
    start = (query - kernel // 2).clamp(0, size - width)
    index = start[:, None] + torch.arange(width, device=device)
    return index, index - query[:, None] + kernel - 1


class NeighborhoodAttention(MultiHeadAttention):
    """Multi-head neighbourhood attention on channels-last tokens, any number of axes.

    Shapes: ``(B, *G, dim)`` -> ``(B, *G, dim)``.

    Args:
        dim: token width.
        num_heads: heads (divides ``dim``).
        kernel_size: neighbourhood side ``k`` (odd): an int or one per axis.
        spatial_dims: number of grid axes.
        qkv_bias: biases in the query/key/value projection.
        attn_drop: dropout on the attention weights; proj_drop: on the output.

    Raises:
        ModelError: an even or non-positive kernel size.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int | Sequence[int],
        spatial_dims: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.kernel_size = to_tuple(kernel_size, spatial_dims, "kernel_size")
        if min(self.kernel_size) < 1 or any(k % 2 == 0 for k in self.kernel_size):
            raise ModelError(f"NeighborhoodAttention: kernel_size={kernel_size} must be odd")
        self.scale = (dim // num_heads) ** -0.5
        self.rpb = nn.Parameter(torch.zeros(num_heads, *(2 * k - 1 for k in self.kernel_size)))
        nn.init.trunc_normal_(self.rpb, std=0.02)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, *G, dim)`` -> ``(B, *G, dim)`` (``bias`` is not used: the bias is relative)."""
        batch, *grid, dim = x.shape
        n, heads = len(grid), self.num_heads
        qkv = self.qkv(x).reshape(batch, -1, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
        keys, offsets = [], []
        for axis, size in enumerate(grid):
            index, offset = neighborhood(size, self.kernel_size[axis], x.device)
            shape = [1] * (2 * n)
            shape[axis], shape[n + axis] = index.shape
            keys.append(index.reshape(shape))
            offsets.append(offset.reshape(shape))
        pick = (slice(None), slice(None), *keys)  # gathers (B, heads, *G, *K, d)
        k = k.reshape(batch, heads, *grid, -1)[pick].flatten(2, 1 + n).flatten(3, 2 + n)
        v = v.reshape(batch, heads, *grid, -1)[pick].flatten(2, 1 + n).flatten(3, 2 + n)
        rel = self.rpb[(slice(None), *offsets)].flatten(1, n).flatten(2)  # (heads, N, K)
        logits = torch.einsum("bhnd,bhnkd->bhnk", q * self.scale, k) + rel
        attn = logits.softmax(dim=-1)
        if self.training and self.attn_drop:
            attn = nn.functional.dropout(attn, self.attn_drop)
        out = torch.einsum("bhnk,bhnkd->bhnd", attn, v)
        out = out.transpose(1, 2).reshape(batch, *grid, dim)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, num_heads={self.num_heads}"


class NATBlock(TokenBlock):
    """Pre-norm neighbourhood attention and MLP, each layer-scaled and residual.

    Shapes: channels-last ``(B, *G, dim)`` -> ``(B, *G, dim)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        num_heads: int,
        kernel_size: int | Sequence[int] = 7,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
    ) -> None:
        mixer: nn.Module = NeighborhoodAttention(dim, num_heads, kernel_size, spatial_dims)
        ffn: nn.Module = Mlp(dim, round(dim * mlp_ratio))
        if layer_scale:
            mixer = nn.Sequential(mixer, LayerScale(dim, layer_scale))
            ffn = nn.Sequential(ffn, LayerScale(dim, layer_scale))
        super().__init__(dim, mixer, ffn, drop_path, eps=1e-5)


class NATStage(nn.Module):
    """Optional convolutional downsampler, then NAT blocks.

    Channel-first at its borders (feature stages and CAM read it directly), channels-last
    inside. Shapes: ``(B, in_dim, *G)`` -> ``(B, dim, *G')`` (``G' = ceil(G / 2)`` when
    downsampling: a ``3^n`` stride-2 convolution, then layer norm).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_dim: int,
        dim: int,
        blocks: Sequence[nn.Module],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.downsample: nn.Module = nn.Identity()
        if downsample:
            self.downsample = ConvTokenEmbed(spatial_dims, in_dim, dim, 3, 2, 1, bias=False)
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim, *G)`` -> ``(B, dim, *G')``."""
        return self.blocks(self.downsample(x).movedim(1, -1)).movedim(-1, 1)


class NAT(StagedClassifier):
    """Neighborhood Attention Transformer for any ``spatial_dims`` (see the module docstring).

    Shapes: ``(B, in_chans, *S)`` -> logits ``(B, num_classes)``; ``forward_features``
    returns ``(B, num_features, *S / 32)`` (four levels) after the final layer norm.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        embed_dim: width of the first level (doubling at every downsampler).
        depths: blocks per level.
        num_heads: heads per level.
        kernel_size: neighbourhood side (an int or one per axis, odd).
        mlp_ratio: MLP hidden width as a multiple of the level width.
        layer_scale: initial layer-scale value (None: no layer scale).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this rate.

    Raises:
        ModelError: ``depths`` and ``num_heads`` of different lengths.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        embed_dim: int = 96,
        depths: Sequence[int] = (3, 4, 18, 5),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        kernel_size: int | Sequence[int] = 7,
        mlp_ratio: float = 2.0,
        layer_scale: float | None = 1e-5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "NAT")
        check_stages("NAT", depths=depths, num_heads=num_heads)
        conv = conv_type(n)
        self.in_chans, self.spatial_dims = in_chans, n
        tokenizer = nn.Sequential(
            conv(in_chans, embed_dim // 2, 3, stride=2, padding=1),
            conv(embed_dim // 2, embed_dim, 3, stride=2, padding=1),
            ChannelLayerNorm(embed_dim),
        )
        rates = drop_path_rates(drop_path_rate, depths)
        dim, stride, stages, info = embed_dim, 4, [], []
        for i, heads in enumerate(num_heads):
            out_dim = embed_dim * 2**i
            blocks = [
                NATBlock(n, out_dim, int(heads), kernel_size, mlp_ratio, rate, layer_scale)
                for rate in rates[i]
            ]
            stages.append(NATStage(n, dim, out_dim, blocks, downsample=i > 0))
            stride *= 2 if i > 0 else 1
            info.append(FeatureStage(f"stages.{i}", out_dim, stride))
            dim = out_dim
        self.finish(tokenizer, stages, ChannelLayerNorm(dim), info, num_classes, drop_rate)


_VARIANTS: dict[str, dict] = {
    "nat_s": {
        "embed_dim": 96,
        "depths": (3, 4, 18, 5),
        "num_heads": (3, 6, 12, 24),
        "kernel_size": 7,
        "mlp_ratio": 2.0,
        "layer_scale": 1e-5,
        "drop_path_rate": 0.3,
    },
}

#: small settings for tests: two levels of two blocks, widths 16-32, kernel 3 (clamped
#: windows at the 8^2 grid's borders; the whole axis on the 2^3 grid of level 2 in 3D)
TINY: dict[str, dict] = {
    "nat_s": {
        "embed_dim": 16,
        "depths": (2, 2),
        "num_heads": (2, 4),
        "kernel_size": 3,
        "drop_path_rate": 0.0,
    },
}


@register_model(dims=(2, 3), family="hybrid", paper=PAPER)
def nat_s(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> NAT:
    """NAT-S (depths 3/4/18/5, width 96, kernel 7)."""
    return build_variant(NAT, _VARIANTS["nat_s"], in_chans, num_classes, spatial_dims, kwargs)
