"""CoaT: co-scale conv-attentional image transformer, one implementation for 2D and 3D.

Paper: W. Xu, Y. Xu, T. Chang, Z. Tu, "Co-Scale Conv-Attentional Image Transformers",
ICCV 2021, https://arxiv.org/abs/2104.06399.

Written from the paper and its public description; paper component -> class:

- patch embedding per stage (``p^n`` convolution of stride ``p``, layer norm) with a
  class token per stage -> :class:`CoaTStage`;
- convolutional position encoding ``x + dwconv_3(x)`` shared by the blocks of a stage
  -> :class:`~medcls.models.layers.token_blocks.ConvPosEncoding`;
- conv-attention: factorized attention ``q (softmax(k)^T v)`` plus the convolutional
  relative position encoding ``q * dwconv(v)`` (window sizes 3/5/7 on 2/3/3 heads),
  shared by the blocks of a stage -> :class:`FactorizedConvAttention`,
  :class:`ConvRelPosEncoding`;
- serial blocks (one scale each) -> :class:`CoaTStage`; parallel blocks (the three
  coarser scales attend separately and exchange their attention outputs by
  up/down-sampling, then share one MLP) -> :class:`ParallelBlock`.

Parameters (measured with this module; paper and 3D-CConvFormer table):

======  ========  ========  ======  =================  ========  ======
model   paper 2D  ours 2D   diff    3D table (2 cls)   ours 3D   diff
======  ========  ========  ======  =================  ========  ======
coat_s  21.7 M    21.694 M  -0.0 %  24.385 M           22.589 M  -7.4 %
======  ========  ========  ======  =================  ========  ======

(2D at 1,000 classes and 3 input channels; ``timm.create_model("coat_small")`` has the
same 21,693,908 parameters. 3D at 2 classes and 2 input channels (22.579 M with 1). The
3D table does not say how its 3D CoaT was built: 3D kernels of the same sizes
(``4^3``/``2^3`` patch embeddings, ``3^3``/``5^3``/``7^3`` crpe windows) give 22.589 M.)

MACs (``medcls.models.profile.count_macs``): 12.55 G at 224² (paper 12.6 G), 9.12 G at 64³.

Design choice where the contract asks for more than the paper says: the paper's head
aggregates the class tokens of the three parallel scales with a learned weighting (a
``1 x 1`` convolution over the scales) and classifies the result. The medcls contract
returns a channel-first feature map, so :class:`ScaleAggregate` applies the same
learned weighting to the normalised patch-token grids of the three scales (brought
onto the finest of them by nearest-neighbour upsampling) and the head averages that
map. The class tokens are kept in every stage and take part in every attention, so the
parameters are the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import build_variant
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import ClassifierHead, check_spatial_dims, conv_type
from medcls.models.layers.classifier_base import NativeClassifier
from medcls.models.layers.resample import interpolate_to
from medcls.models.layers.token_blocks import (
    ConvPosEncoding,
    ConvTokenEmbed,
    PrefixTokens,
    TokenBlock,
    check_heads,
    merge_heads,
    patches_to_grid,
    split_prefix,
)
from medcls.models.layers.tokens import DropPath, Mlp, grid_to_tokens
from medcls.models.registry import register_model

__all__ = [
    "TINY",
    "CoaT",
    "CoaTStage",
    "ConvRelPosEncoding",
    "FactorizedConvAttention",
    "ParallelBlock",
    "ScaleAggregate",
]

PAPER = (
    "Xu et al., Co-Scale Conv-Attentional Image Transformers, ICCV 2021, "
    "https://arxiv.org/abs/2104.06399"
)

DEFAULT_WINDOWS = {3: 2, 5: 3, 7: 3}


def resample_tokens(x: torch.Tensor, grid: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """``(B, 1 + N, C)`` tokens on ``grid`` -> tokens on ``size``; the class token passes."""
    prefix, patches = split_prefix(x, 1)
    feat = interpolate_to(patches_to_grid(patches, grid), size)
    return torch.cat([prefix, grid_to_tokens(feat)[0]], dim=1)


class ConvRelPosEncoding(nn.Module):
    """Convolutional relative position encoding ``q * dwconv(v)`` (zero for the class token).

    The heads are split into groups, each with its own depthwise window size.

    Shapes: ``q, v`` ``(B, heads, 1 + N, head_dim)`` on ``grid`` -> ``(B, heads, 1 + N, head_dim)``.

    Args:
        spatial_dims: 2 or 3.
        head_dim: channels per head.
        num_heads: heads.
        windows: window size -> number of heads using it (the counts sum to ``num_heads``).
    """

    def __init__(
        self, spatial_dims: int, head_dim: int, num_heads: int, windows: Mapping[int, int]
    ) -> None:
        super().__init__()
        if sum(windows.values()) != num_heads or any(w % 2 == 0 for w in windows):
            raise ModelError(
                f"ConvRelPosEncoding: windows {dict(windows)} must be odd sizes whose head "
                f"counts sum to num_heads={num_heads}"
            )
        conv = conv_type(spatial_dims)
        self.splits = [heads * head_dim for heads in windows.values()]
        self.convs = nn.ModuleList(
            conv(c, c, w, padding=w // 2, groups=c) for w, c in zip(windows, self.splits)
        )

    def forward(self, q: torch.Tensor, v: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, h, 1 + N, d)`` -> ``(B, h, 1 + N, d)``."""
        batch, heads, _, head_dim = q.shape
        v_img = v[:, :, 1:].transpose(2, 3).reshape(batch, heads * head_dim, *grid)
        parts = torch.split(v_img, self.splits, dim=1)
        conv_v = torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)
        conv_v = conv_v.reshape(batch, heads, head_dim, -1).transpose(2, 3)
        return F.pad(q[:, :, 1:] * conv_v, (0, 0, 1, 0))


class FactorizedConvAttention(nn.Module):
    """CoaT's conv-attention: ``scale * q (softmax_N(k)^T v) + crpe(q, v)``.

    Shapes: ``(B, 1 + N, dim)`` tokens (class token first) on ``grid`` -> ``(B, 1 + N, dim)``.

    Args:
        dim: token width.
        num_heads: heads (divides ``dim``).
        crpe: the stage's shared :class:`ConvRelPosEncoding`.
        qkv_bias: biases of the q/k/v projection.
    """

    def __init__(
        self, dim: int, num_heads: int, crpe: ConvRelPosEncoding, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = check_heads(dim, num_heads, "FactorizedConvAttention") ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.crpe = crpe

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, 1 + N, dim)`` -> ``(B, 1 + N, dim)``."""
        batch, n, dim = x.shape
        qkv = self.qkv(x).reshape(batch, n, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        context = k.softmax(dim=2).transpose(-1, -2) @ v  # (B, h, d, d)
        return self.proj(merge_heads(self.scale * (q @ context) + self.crpe(q, v, grid)))


class CoaTStage(nn.Module):
    """Patch embedding, class token, serial blocks sharing a position encoding and a crpe.

    Shapes: ``(B, in_chans, *S)`` -> tokens ``(B, 1 + N, dim)``, ``N = prod(grid)`` with
    ``grid = ceil(S / patch_size)`` (:meth:`out_grid`).

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        dim: token width.
        depth: serial blocks.
        num_heads: attention heads.
        patch_size: patch embedding size and stride.
        windows: crpe window size -> heads.
        mlp_ratio: MLP width as a multiple of ``dim``.
        drop_path: stochastic-depth rate of every block.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        windows: Mapping[int, int],
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed = ConvTokenEmbed(spatial_dims, in_chans, dim, patch_size, patch_size)
        self.cls_token = PrefixTokens(dim)
        self.cpe = ConvPosEncoding(spatial_dims, dim, 3, num_prefix=1)
        self.crpe = ConvRelPosEncoding(spatial_dims, dim // num_heads, num_heads, windows)
        self.blocks = nn.ModuleList(
            TokenBlock(
                dim,
                FactorizedConvAttention(dim, num_heads, self.crpe),
                Mlp(dim, round(dim * mlp_ratio)),
                drop_path=drop_path,
                pos=self.cpe,
                mixer_grid=True,
            )
            for _ in range(depth)
        )

    def out_grid(self, size: Sequence[int]) -> tuple[int, ...]:
        """The token grid of an input of spatial size ``size``: ``ceil(size / patch_size)``."""
        return tuple(-(-int(s) // self.patch_size) for s in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, 1 + N, dim)`` on the grid :meth:`out_grid`."""
        x, grid = grid_to_tokens(self.embed(x))
        x = self.cls_token(x)
        for block in self.blocks:
            x = block(x, grid)
        return x


class ParallelBlock(nn.Module):
    """CoaT parallel block over several scales of equal width.

    Each scale runs its own conv-attention (with its stage's crpe); the attention output
    of every other scale, resampled (linear interpolation) to this scale's grid, is
    added before the residual; then one MLP, shared by all scales.

    Shapes: a list of tokens ``(B, 1 + N_i, dim)`` on ``grids[i]`` -> the same list.

    Args:
        dim: token width (all scales).
        num_heads: attention heads.
        crpes: the shared crpe of each scale's stage.
        mlp_ratio: MLP width as a multiple of ``dim``.
        drop_path: stochastic-depth rate.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        crpes: Sequence[ConvRelPosEncoding],
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in crpes)
        self.attn = nn.ModuleList(FactorizedConvAttention(dim, num_heads, c) for c in crpes)
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in crpes)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(
        self, xs: Sequence[torch.Tensor], grids: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """Tokens per scale -> tokens per scale."""
        cur = [attn(norm(x), g) for x, g, norm, attn in zip(xs, grids, self.norm1, self.attn)]
        out = []
        for i, (x, grid) in enumerate(zip(xs, grids)):
            mixed = cur[i]
            for j, other in enumerate(cur):
                if j != i:
                    mixed = mixed + resample_tokens(other, grids[j], grid)
            x = x + self.drop_path(mixed)
            out.append(x + self.drop_path(self.mlp(self.norm2[i](x))))
        return out


class ScaleAggregate(nn.Module):
    """Normalises each scale's patch tokens and blends the scales with learned weights.

    ``out = sum_i w_i up(norm_i(x_i)) + b`` on the finest grid (nearest-neighbour
    upsampling of the coarser grids), the channel-first counterpart of CoaT's
    class-token aggregation (a ``1 x 1`` convolution over the scales).

    Shapes: a list of tokens ``(B, 1 + N_i, dim)`` on ``grids[i]`` -> ``(B, dim, *grids[0])``.
    """

    def __init__(self, dim: int, num_scales: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(num_scales))
        self.weights = nn.Linear(num_scales, 1)

    def forward(self, xs: Sequence[torch.Tensor], grids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Tokens per scale -> ``(B, dim, *grids[0])``."""
        size = tuple(grids[0])
        maps = [
            F.interpolate(patches_to_grid(norm(x), g, 1), size=size, mode="nearest")
            for x, g, norm in zip(xs, grids, self.norms)
        ]
        return self.weights(torch.stack(maps, dim=-1)).squeeze(-1)


class CoaT(NativeClassifier):
    """CoaT (see the module docstring for the paper).

    Serial :class:`CoaTStage` at strides 4, 8, 16, 32 -> :class:`ParallelBlock` over the
    three coarser scales -> :class:`ScaleAggregate` -> global average pool -> linear.

    Shapes: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
    ``forward_features`` returns ``(B, dims[-1], *spatial / 8)`` (the stride of the
    second stage).

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        dims: width of each stage (all but the first equal, for the parallel blocks).
        serial_depths: serial blocks per stage.
        parallel_depth: parallel blocks (0: none; the head then reads the last stage).
        num_heads: attention heads (every stage).
        mlp_ratio: MLP width as a multiple of the stage width.
        crpe_windows: window size -> heads of the convolutional relative position encoding.
        patch_sizes: patch size of each stage's embedding.
        drop_path_rate: stochastic depth of every block (constant, as in the authors' code).
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        dims: Sequence[int] = (152, 320, 320, 320),
        serial_depths: Sequence[int] = (2, 2, 2, 2),
        parallel_depth: int = 6,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        crpe_windows: Mapping[int, int] | None = None,
        patch_sizes: Sequence[int] = (4, 2, 2, 2),
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "CoaT")
        if len(serial_depths) != len(dims) or len(patch_sizes) != len(dims) or len(dims) < 2:
            raise ModelError(
                f"CoaT: dims, serial_depths and patch_sizes need one entry per stage "
                f"(at least 2), got {len(dims)}, {len(serial_depths)}, {len(patch_sizes)}"
            )
        if parallel_depth and len(set(dims[1:])) != 1:
            raise ModelError(
                f"CoaT: parallel blocks need equal widths after the first stage, got {tuple(dims)}"
            )
        windows = dict(crpe_windows or DEFAULT_WINDOWS)
        self.in_chans, self.spatial_dims = in_chans, n
        stages, info, chans, reduction = [], [], in_chans, 1
        for i, dim in enumerate(dims):
            stages.append(
                CoaTStage(
                    n,
                    chans,
                    dim,
                    serial_depths[i],
                    num_heads,
                    patch_sizes[i],
                    windows,
                    mlp_ratio,
                    drop_path_rate,
                )
            )
            chans, reduction = dim, reduction * patch_sizes[i]
            info.append(FeatureStage(f"stages.{i}", dim, reduction))
        self.stages = nn.ModuleList(stages)
        self.num_prefix_tokens = 1  # the stage outputs (feature stages) carry a class token
        crpes = [s.crpe for s in stages[1:]]
        self.parallel = nn.ModuleList(
            ParallelBlock(dims[-1], num_heads, crpes, mlp_ratio, drop_path_rate)
            for _ in range(parallel_depth)
        )
        scales = len(crpes) if parallel_depth else 1
        self.aggregate = ScaleAggregate(dims[-1], scales)
        out_reduction = info[-scales].reduction
        self.num_features, self.num_classes = dims[-1], num_classes
        self.head = ClassifierHead(dims[-1], num_classes, drop_rate)
        self.feature_stages = [*info, FeatureStage("aggregate", dims[-1], out_reduction)]
        self.cam_layer = CamLayer("aggregate", "channels_first", 0, out_reduction)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, num_features, *grid)`` (the aggregated scales)."""
        outs, grids = [], []
        for i, stage in enumerate(self.stages):
            if i:
                x = patches_to_grid(outs[-1], grids[-1], 1)
            grids.append(stage.out_grid(x.shape[2:]))
            outs.append(stage(x))
        if not self.parallel:
            return self.aggregate(outs[-1:], grids[-1:])
        xs, sizes = outs[1:], grids[1:]
        for block in self.parallel:
            xs = [stage.cpe(t, g) for stage, t, g in zip(self.stages[1:], xs, sizes)]
            xs = block(xs, sizes)
        return self.aggregate(xs, sizes)


_VARIANTS: dict[str, dict] = {"coat_s": {}}

#: tiny constructor arguments per entrypoint (2-4 blocks, widths 16-32) for tests
TINY: dict[str, dict] = {
    "coat_s": {
        "dims": (16, 24, 24),
        "serial_depths": (1, 1, 1),
        "parallel_depth": 1,
        "num_heads": 2,
        "crpe_windows": {3: 1, 5: 1},
        "patch_sizes": (4, 2, 2),
    },
}


@register_model(dims=(2, 3), family="hybrid", paper=PAPER)
def coat_s(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> CoaT:
    """CoaT Small: widths 152/320/320/320, 2 serial blocks per stage, 6 parallel (21.7 M in 2D)."""
    return build_variant(CoaT, _VARIANTS["coat_s"], in_chans, num_classes, spatial_dims, kwargs)
