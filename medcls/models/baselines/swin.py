"""Swin Transformer and BEVT's Video Swin backbone: 2D and 3D from one implementation.

Papers: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV 2021 (arXiv:2103.14030); Liu et al., "Video Swin Transformer", CVPR 2022
(arXiv:2106.13230); Wang et al., "BEVT: BERT Pretraining of Video Transformers",
CVPR 2022 (arXiv:2112.01529), whose backbone is Video Swin-B.

Architecture (written from the papers): a patch embedding (strided convolution + layer
norm), four stages of Swin blocks (pre-norm window attention with a relative position
bias, then an MLP, both residual with stochastic depth; every second block shifts the
windows by half a window), a patch merging layer (concatenate each ``merge`` block of
tokens, layer norm, linear to twice the width) at the start of stages 2-4, a final layer
norm, global average pooling and a linear classifier. Windows, shifts, padding and the
relative position bias work for any number of axes (:mod:`medcls.models.layers.windows`).
Video Swin is Swin with a 3D window, a ``2 x 4 x 4`` patch and merging over the two
spatial axes only; ``bevt_b`` is the same class with those settings.

Sizes (parameters; 2D at 1,000 classes and ``in_chans=3``; 3D at 2 classes and
``in_chans=2``, PET + CT, the setting of the 3D-CConvFormer paper's table):

========  =========  ==========  ======  ==========  ==========  ======
name      paper 2D   ours 2D     diff    3D table    ours 3D     diff
========  =========  ==========  ======  ==========  ==========  ======
swin_s    50 M       49.606 M    -0.8 %  48.751 M    51.304 M    +5.2 %
bevt_b    88 M       87.768 M    -0.3 %  86.628 M    87.953 M    +1.5 %
========  =========  ==========  ======  ==========  ==========  ======

MACs (:mod:`medcls.models.profile`, one sample): ``swin_s`` 8.74 G at 3x224² and
4.76 G at 2x64³; ``bevt_b`` 15.43 G at 3x224² and 43.97 G at 2x64³ (its 2 x 4 x 4 patch
keeps 32 slices through all stages).

``swin_s`` 2D equals timm's ``swin_small_patch4_window7_224`` (49,606,258) and
``bevt_b`` 2D equals ``swin_base_patch4_window7_224`` (87,768,224): in 2D Video Swin-B
is Swin-B. In 3D the counts are above the table because a 3D window holds more
relative offsets (``prod(2 w - 1)`` bias entries per head) and ``swin_s`` merges
``2 x 2 x 2`` tokens (a linear layer from ``8 C`` instead of ``4 C``).

Settings chosen for volumes (the papers give 2D images at 224² and videos):

- ``swin_s`` 3D: isotropic patch ``4^3``, merging ``2^3``, window ``8^3``. The paper's
  window 7 tiles the 2D stage grids 56/28/14/7 at 224²; at the default 64³ volume the
  stage grids are 16/8/4/2, which window 8 tiles without padding (window 7 would pad
  stage 2 from 8³ to 14³ tokens).
- ``bevt_b`` 3D: Video Swin-B's anisotropic setting with the first volume axis in the
  role of time: patch ``2 x 4 x 4``, merging ``1 x 2 x 2``; window ``8^3`` instead of
  ``8 x 7 x 7`` for the same tiling reason (the 64³ grid is 32 x 16 x 16 after the patch).

Both settings are arguments (``patch_size``, ``window_size``, ``merge_size``: an int or
one value per axis). Grids that are not a multiple of the window are padded, and padded
tokens are masked out of the attention; an axis no longer than the window gets one
window and no shift (Video Swin's rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import StagedClassifier, build_variant, check_stages
from medcls.models.contract import FeatureStage
from medcls.models.layers import check_spatial_dims, to_tuple
from medcls.models.layers.token_blocks import ChannelLayerNorm, ConvTokenEmbed, TokenBlock
from medcls.models.layers.tokens import Mlp, drop_path_rates
from medcls.models.layers.windows import (
    ShiftedWindowAttention,
    pad_to_multiple,
    window_partition,
)
from medcls.models.registry import register_model

__all__ = ["TINY", "PatchMerging", "SwinBlock", "SwinStage", "SwinTransformer"]

SWIN_PAPER = (
    "Liu et al., Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, "
    "ICCV 2021, arXiv:2103.14030"
)
BEVT_PAPER = (
    "Wang et al., BEVT: BERT Pretraining of Video Transformers, CVPR 2022, "
    "arXiv:2112.01529 (backbone: Liu et al., Video Swin Transformer, CVPR 2022, "
    "arXiv:2106.13230)"
)


class PatchMerging(nn.Module):
    """Merges each ``merge`` block of tokens into one: concatenate, layer norm, linear.

    Shapes: channels-last ``(B, *G, dim)`` -> ``(B, *ceil(G / merge), 2 dim)`` (odd grids
    are zero-padded).
    """

    def __init__(self, dim: int, merge: Sequence[int]) -> None:
        super().__init__()
        self.merge = tuple(merge)
        width = math.prod(self.merge) * dim
        self.norm = nn.LayerNorm(width)
        self.reduction = nn.Linear(width, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *G, dim)`` -> ``(B, *G / merge, 2 dim)``."""
        x = pad_to_multiple(x, self.merge, start=1)
        grid = [g // m for g, m in zip(x.shape[1:-1], self.merge)]
        x = window_partition(x, self.merge).reshape(x.shape[0], *grid, -1)
        return self.reduction(self.norm(x))


class SwinBlock(TokenBlock):
    """(Shifted) window attention and an MLP, each pre-norm and residual.

    Shapes: channels-last ``(B, *G, dim)`` -> ``(B, *G, dim)``.

    Args:
        dim: token width.
        num_heads: attention heads.
        window: window side per axis.
        shifted: shift the grid by half a window before partitioning.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        qkv_bias: biases in the query/key/value projection.
        drop_path: stochastic-depth rate of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Sequence[int],
        shifted: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        mixer = ShiftedWindowAttention(dim, num_heads, window, shifted, qkv_bias)
        super().__init__(dim, mixer, Mlp(dim, round(dim * mlp_ratio)), drop_path, eps=1e-5)


class SwinStage(nn.Module):
    """Optional patch merging, then Swin blocks (alternating plain and shifted windows).

    Works on channel-first maps at its borders (so feature stages and CAM read them
    directly) and on channels-last tokens inside.

    Shapes: ``(B, in_dim, *G)`` -> ``(B, dim, *G / merge)`` (``G`` without merging).

    Args:
        in_dim: input width (the merge doubles it).
        blocks: the stage's blocks.
        merge: merging factor per axis; None for no merging.
    """

    def __init__(
        self, in_dim: int, blocks: Sequence[nn.Module], merge: Sequence[int] | None
    ) -> None:
        super().__init__()
        self.downsample = PatchMerging(in_dim, merge) if merge is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim, *G)`` -> ``(B, dim, *G')``."""
        return self.blocks(self.downsample(x.movedim(1, -1))).movedim(-1, 1)


class SwinTransformer(StagedClassifier):
    """Swin Transformer / Video Swin for any ``spatial_dims`` (see the module docstring).

    Shapes: ``(B, in_chans, *S)`` -> logits ``(B, num_classes)``; ``forward_features``
    returns ``(B, num_features, *S / (patch * merge^3))`` after the final layer norm.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        embed_dim: width of the first stage (doubling at every merge).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        patch_size: patch side (int or per axis).
        window_size: window side (int or per axis).
        merge_size: merging factor between stages (int or per axis).
        mlp_ratio: MLP hidden width as a multiple of the stage width.
        qkv_bias: biases in the query/key/value projections.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this rate.

    Raises:
        ModelError: ``depths`` and ``num_heads`` of different lengths, a width a head
            count does not divide, or sizes below 1.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        patch_size: int | Sequence[int] = 4,
        window_size: int | Sequence[int] = 7,
        merge_size: int | Sequence[int] = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "SwinTransformer")
        check_stages("SwinTransformer", depths=depths, num_heads=num_heads)
        patch = to_tuple(patch_size, n, "patch_size")
        window = to_tuple(window_size, n, "window_size")
        merge = to_tuple(merge_size, n, "merge_size")
        if min(patch + window + merge) < 1:
            raise ModelError(
                f"SwinTransformer: patch_size={patch}, window_size={window} and "
                f"merge_size={merge} must be >= 1"
            )
        self.in_chans, self.spatial_dims = in_chans, n
        rates = drop_path_rates(drop_path_rate, depths)
        # reductions are reported along the most-reduced axis (anisotropic patches)
        stride, dim, stages, info = max(patch), embed_dim, [], []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            out_dim, step = embed_dim * 2**i, merge if i > 0 else None
            blocks = [
                SwinBlock(out_dim, int(heads), window, j % 2 == 1, mlp_ratio, qkv_bias, rate)
                for j, rate in zip(range(int(depth)), rates[i])
            ]
            stages.append(SwinStage(dim, blocks, step))
            stride *= max(merge) if i > 0 else 1
            info.append(FeatureStage(f"stages.{i}", out_dim, stride))
            dim = out_dim
        stem = ConvTokenEmbed(n, in_chans, embed_dim, patch, patch)
        self.finish(stem, stages, ChannelLayerNorm(dim), info, num_classes, drop_rate)
        self.apply(_init_weights)


def _init_weights(module: nn.Module) -> None:
    """Swin's initialisation: truncated normal (std 0.02) linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


_VARIANTS: dict[str, dict] = {
    "swin_s": {
        "embed_dim": 96,
        "depths": (2, 2, 18, 2),
        "num_heads": (3, 6, 12, 24),
        "patch_size": 4,
        "window_size": {2: 7, 3: 8},
        "merge_size": 2,
        "drop_path_rate": 0.3,
    },
    "bevt_b": {
        "embed_dim": 128,
        "depths": (2, 2, 18, 2),
        "num_heads": (4, 8, 16, 32),
        "patch_size": {2: 4, 3: (2, 4, 4)},
        "window_size": {2: 7, 3: 8},
        "merge_size": {2: 2, 3: (1, 2, 2)},
        "drop_path_rate": 0.3,
    },
}

#: small settings for tests: 2 stages of 2 blocks, width 16; window 3 pads the 8^2 grid
_TINY_SWIN = {"embed_dim": 16, "depths": (2, 2), "num_heads": (2, 4), "window_size": 3}
TINY: dict[str, dict] = {
    "swin_s": {**_TINY_SWIN, "drop_path_rate": 0.0},
    "bevt_b": {**_TINY_SWIN, "drop_path_rate": 0.0},
}


@register_model(dims=(2, 3), family="transformer", paper=SWIN_PAPER)
def swin_s(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> SwinTransformer:
    """Swin-S (3D: patch 4³, window 8³, merging 2³)."""
    return build_variant(
        SwinTransformer, _VARIANTS["swin_s"], in_chans, num_classes, spatial_dims, kwargs
    )


@register_model(dims=(2, 3), family="transformer", paper=BEVT_PAPER)
def bevt_b(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> SwinTransformer:
    """BEVT's Video Swin-B backbone (2D: Swin-B; 3D: patch 2x4x4, merging 1x2x2, window 8³)."""
    return build_variant(
        SwinTransformer, _VARIANTS["bevt_b"], in_chans, num_classes, spatial_dims, kwargs
    )
