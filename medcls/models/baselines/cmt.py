"""CMT: convolutional neural networks meet vision transformers, one implementation for 2D and 3D.

Paper: J. Guo, K. Han, H. Wu, Y. Tang, X. Chen, Y. Wang, C. Xu, "CMT: Convolutional
Neural Networks Meet Vision Transformers", CVPR 2022, https://arxiv.org/abs/2107.06263.

Written from the paper and its public description; paper component -> class:

- CMT stem (a stride-2 ``3^n`` convolution and two more ``3^n`` convolutions, each
  followed by GELU and batch norm) -> ``CMT.stem``;
- patch aggregation between stages (``2^n`` convolution, stride 2, layer norm) ->
  :class:`~medcls.models.layers.token_blocks.ConvTokenEmbed`;
- local perception unit ``x + dwconv(x)`` ->
  :class:`~medcls.models.layers.token_blocks.ConvPosEncoding`;
- lightweight multi-head self-attention: keys and values from a ``k^n`` depthwise
  convolution of stride ``k`` (+ batch norm), plus a learned relative position bias per
  stage -> :class:`LightweightAttention`, :class:`ResampledPositionBias`;
- inverted residual feed-forward network (``1^n`` expansion, depthwise ``3^n`` with a
  shortcut, ``1^n`` projection) -> :class:`InvertedResidualFFN`;
- a ``1^n`` convolution to 1280 channels (batch norm, Swish) before pooling.

Parameters (measured with this module; paper and 3D-CConvFormer table):

======  ========  ========  ======  =================  ========  ======
model   paper 2D  ours 2D   diff    3D table (2 cls)   ours 3D   diff
======  ========  ========  ======  =================  ========  ======
cmt_s   25.1 M    26.256 M  +4.6 %  27.278 M           26.147 M  -4.1 %
======  ========  ========  ======  =================  ========  ======

(2D at 1,000 classes, 3 input channels, 224²; 3D at 2 classes, 2 input channels, 64³.)
MACs (``medcls.models.profile.count_macs``): 4.03 G at 224² (paper 4.0 G), 3.71 G at 64³.

Why 2D is 4.6 % above the paper: our count is the authors' released CMT-S configuration
(stem 32, widths 64/128/256/512, depths 3/3/16/3, heads 1/2/4/8, IRFFN ratio 4,
key/value strides 8/4/2/1, a 1280-channel ``1^n`` convolution before the classifier,
one relative position table per stage) counted layer by layer: 26.256 M, and MindCV's
independent reproduction reports 26.09 M. No setting of that configuration gives
25.1 M (leaving out the position tables, 0.288 M, and every batch norm still leaves
25.84 M), so the paper's figure counts something differently; we keep the released
architecture.

The relative position bias is a table of ``heads x N_q x N_kv`` entries per stage, so
its size follows the reference input size (``pos_size``): 288,120 entries at 224² (as
in the released code), 43,520 at 64³. With a 128³ reference the 3D model has 28.888 M
(+5.9 % against the table); the table does not state its input size, and we keep the
registry's 3D input size (64³) as reference. At any other input size the table is
resampled (linear interpolation over the query and the key grids), so the model is not
tied to one input size.

Design choices: grids that are not a multiple of a stride are zero-padded at the end
(patch aggregation, key/value reduction), so any input size works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import build_variant
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import (
    ClassifierHead,
    ConvNormAct,
    check_spatial_dims,
    conv_type,
    make_norm,
)
from medcls.models.layers.classifier_base import NativeClassifier
from medcls.models.layers.resample import interpolate_to
from medcls.models.layers.token_blocks import (
    ConvPosEncoding,
    ConvTokenEmbed,
    TokenBlock,
    check_heads,
    merge_heads,
    pad_to_multiple,
    split_heads,
)
from medcls.models.layers.tokens import drop_path_rates, grid_to_tokens, tokens_to_grid
from medcls.models.registry import register_model

__all__ = [
    "CMT",
    "TINY",
    "CMTStage",
    "InvertedResidualFFN",
    "LightweightAttention",
    "ResampledPositionBias",
]

PAPER = (
    "Guo et al., CMT: Convolutional Neural Networks Meet Vision Transformers, CVPR 2022, "
    "https://arxiv.org/abs/2107.06263"
)


def conv_gelu_bn(
    spatial_dims: int, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1
) -> nn.Sequential:
    """Convolution (with bias), GELU, batch norm: CMT's order (activation before norm)."""
    return nn.Sequential(
        conv_type(spatial_dims)(in_chans, out_chans, kernel_size, stride, kernel_size // 2),
        nn.GELU(),
        make_norm("batch", spatial_dims, out_chans),
    )


class ResampledPositionBias(nn.Module):
    """A learned attention bias ``(heads, N_q, N_kv)`` for reference grids, resampled to others.

    The table holds one entry per head, query cell and key cell of the reference grids
    (CMT's relative position bias). For other grids it is resampled linearly, first
    over the key grid, then over the query grid.

    Args:
        num_heads: heads.
        q_grid: reference query grid.
        kv_grid: reference key/value grid.
    """

    def __init__(self, num_heads: int, q_grid: Sequence[int], kv_grid: Sequence[int]) -> None:
        super().__init__()
        self.q_grid, self.kv_grid = tuple(q_grid), tuple(kv_grid)
        self.table = nn.Parameter(
            torch.randn(num_heads, math.prod(self.q_grid), math.prod(self.kv_grid))
        )

    def forward(self, q_grid: Sequence[int], kv_grid: Sequence[int]) -> torch.Tensor:
        """Bias ``(heads, prod(q_grid), prod(kv_grid))`` for the given grids."""
        q_grid, kv_grid = tuple(q_grid), tuple(kv_grid)
        table, heads = self.table, self.table.shape[0]
        if kv_grid != self.kv_grid:
            table = interpolate_to(table.reshape(-1, 1, *self.kv_grid), kv_grid)
            table = table.reshape(heads, -1, math.prod(kv_grid))
        if q_grid != self.q_grid:
            table = table.transpose(1, 2).reshape(-1, 1, *self.q_grid)
            table = interpolate_to(table, q_grid).reshape(heads, -1, math.prod(q_grid))
            table = table.transpose(1, 2)
        return table


class LightweightAttention(nn.Module):
    """Lightweight MHSA: keys/values from a strided depthwise convolution, plus a position bias.

    ``k, v = W_{k,v} BN(dwconv_{k^n, stride k}(x))``; ``softmax(q k^T / sqrt(d) + B) v``.

    Shapes: ``(B, N, dim)`` tokens of ``grid`` -> ``(B, N, dim)``.

    Args:
        spatial_dims: 2 or 3.
        dim: token width.
        num_heads: heads (divides ``dim``).
        reduction: key/value stride ``k`` (1: no reduction).
        position_bias: the stage's shared :class:`ResampledPositionBias` (None: none).
        qkv_bias: biases of the q/k/v projections.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        num_heads: int,
        reduction: int = 1,
        position_bias: ResampledPositionBias | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        check_heads(dim, num_heads, "LightweightAttention")
        self.num_heads, self.reduction = num_heads, reduction
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr: nn.Module | None = None
        if reduction > 1:
            self.sr = ConvNormAct(
                spatial_dims,
                dim,
                dim,
                reduction,
                reduction,
                groups=dim,
                act=None,
                bias=True,
                padding=0,
            )
        self.position_bias = position_bias

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, N, dim)`` -> ``(B, N, dim)``."""
        kv, kv_grid = x, tuple(grid)
        if self.sr is not None:
            feat = pad_to_multiple(tokens_to_grid(x, grid), (self.reduction,) * len(grid))
            kv, kv_grid = grid_to_tokens(self.sr(feat))
        bias = None
        if self.position_bias is not None:
            bias = self.position_bias(grid, kv_grid).to(x.dtype).unsqueeze(0)
        h = self.num_heads
        q, k, v = split_heads(self.q(x), h), split_heads(self.k(kv), h), split_heads(self.v(kv), h)
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=bias)))


class InvertedResidualFFN(nn.Module):
    """CMT's inverted residual feed-forward network on the token grid.

    ``h = BN(GELU(conv1(x)))``; ``h = BN(GELU(h + dwconv(h)))``; ``out = BN(conv2(h))``.

    Shapes: ``(B, N, dim)`` tokens of ``grid`` -> ``(B, N, dim)``.
    """

    def __init__(self, spatial_dims: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = conv_gelu_bn(spatial_dims, dim, hidden)
        self.dwconv = conv_type(spatial_dims)(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.norm = make_norm("batch", spatial_dims, hidden)
        self.conv2 = ConvNormAct(spatial_dims, hidden, dim, 1, act=None, bias=True)

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, N, dim)`` -> ``(B, N, dim)``."""
        h = self.conv1(tokens_to_grid(x, grid))
        h = self.norm(self.act(self.dwconv(h) + h))
        return grid_to_tokens(self.conv2(h))[0]


class CMTStage(nn.Module):
    """Patch aggregation, then CMT blocks (LPU, lightweight MHSA, IRFFN) sharing a position bias.

    Shapes: ``(B, in_chans, *S)`` -> ``(B, dim, *ceil(S / 2))``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        dim: token width.
        depth: blocks.
        num_heads: attention heads.
        reduction: key/value stride of the attention.
        pos_grid: reference grid of the stage (the position bias's size).
        mlp_ratio: IRFFN hidden width as a multiple of ``dim``.
        drop_path: per-block stochastic-depth rates.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        dim: int,
        depth: int,
        num_heads: int,
        reduction: int,
        pos_grid: Sequence[int],
        mlp_ratio: float = 4.0,
        drop_path: Sequence[float] = (),
    ) -> None:
        super().__init__()
        self.embed = ConvTokenEmbed(spatial_dims, in_chans, dim, 2, 2)
        kv_grid = [math.ceil(g / reduction) for g in pos_grid]
        self.position_bias = ResampledPositionBias(num_heads, pos_grid, kv_grid)
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            TokenBlock(
                dim,
                LightweightAttention(spatial_dims, dim, num_heads, reduction, self.position_bias),
                InvertedResidualFFN(spatial_dims, dim, round(dim * mlp_ratio)),
                drop_path=rates[i],
                pos=ConvPosEncoding(spatial_dims, dim, 3),
                mixer_grid=True,
                ffn_grid=True,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, dim, *S')``."""
        x, grid = grid_to_tokens(self.embed(x))
        for block in self.blocks:
            x = block(x, grid)
        return tokens_to_grid(x, grid)


class CMT(NativeClassifier):
    """CMT (see the module docstring for the paper).

    Stem (stride 2) -> four :class:`CMTStage` (strides 4, 8, 16, 32) -> ``1^n``
    convolution to ``fc_dim`` channels (batch norm, Swish) -> global average pool ->
    dropout -> linear.

    Shapes: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
    ``forward_features`` returns ``(B, fc_dim, *spatial / 32)``.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        stem_chans: stem width.
        dims: width of each stage.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        reductions: key/value stride per stage.
        mlp_ratio: IRFFN width as a multiple of the stage width.
        fc_dim: channels of the last ``1^n`` convolution (the classifier's input).
        pos_size: reference input size of the relative position biases (default 224
            in 2D, 64 in 3D); other sizes resample them.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        stem_chans: int = 32,
        dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 3, 16, 3),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        reductions: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        fc_dim: int = 1280,
        pos_size: int | Sequence[int] | None = None,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.1,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "CMT")
        if any(len(v) != len(dims) for v in (depths, num_heads, reductions)):
            raise ModelError(
                f"CMT: dims, depths, num_heads and reductions need one entry per stage ({len(dims)})"
            )
        size = pos_size if pos_size is not None else {2: 224, 3: 64}[n]
        size = (size,) * n if isinstance(size, int) else tuple(size)
        if len(size) != n:
            raise ModelError(f"CMT: pos_size={size} needs {n} entries")
        self.in_chans, self.spatial_dims = in_chans, n
        self.stem = nn.Sequential(
            conv_gelu_bn(n, in_chans, stem_chans, 3, stride=2),
            conv_gelu_bn(n, stem_chans, stem_chans, 3),
            conv_gelu_bn(n, stem_chans, stem_chans, 3),
        )
        rates = drop_path_rates(drop_path_rate, depths)
        stages, info = [], [FeatureStage("stem", stem_chans, 2)]
        chans, reduction = stem_chans, 2
        for i, dim in enumerate(dims):
            reduction *= 2
            stages.append(
                CMTStage(
                    n,
                    chans,
                    dim,
                    depths[i],
                    num_heads[i],
                    reductions[i],
                    [math.ceil(s / reduction) for s in size],
                    mlp_ratio,
                    rates[i],
                )
            )
            chans = dim
            info.append(FeatureStage(f"stages.{i}", dim, reduction))
        self.stages = nn.ModuleList(stages)
        self.head_conv = ConvNormAct(n, chans, fc_dim, 1, act="silu", bias=True)
        self.num_features, self.num_classes = fc_dim, num_classes
        self.head = ClassifierHead(fc_dim, num_classes, drop_rate)
        self.feature_stages = [*info, FeatureStage("head_conv", fc_dim, reduction)]
        self.cam_layer = CamLayer("head_conv", "channels_first", 0, reduction)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, fc_dim, *spatial / 32)``."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head_conv(x)


_VARIANTS: dict[str, dict] = {"cmt_s": {}}

#: tiny constructor arguments per entrypoint (2-4 blocks, widths 16-32) for tests
TINY: dict[str, dict] = {
    # two stages: at 32² / 16³ a stride-16 grid has one cell, whose attention is trivial
    "cmt_s": {
        "stem_chans": 8,
        "dims": (16, 32),
        "depths": (2, 2),
        "num_heads": (1, 2),
        "reductions": (2, 1),
        "fc_dim": 32,
        "pos_size": 16,
    },
}


@register_model(dims=(2, 3), family="hybrid", paper=PAPER)
def cmt_s(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> CMT:
    """CMT-S: stem 32, widths 64/128/256/512, depths 3/3/16/3 (25.1 M parameters in 2D)."""
    return build_variant(CMT, _VARIANTS["cmt_s"], in_chans, num_classes, spatial_dims, kwargs)
