"""Next-ViT: Next Convolution Blocks and Next Transformer Blocks, 2D and 3D from one implementation.

Paper: Li et al., "Next-ViT: Next Generation Vision Transformer for Efficient
Deployment in Realistic Industrial Scenarios", 2022 (arXiv:2207.05501).

Architecture (written from the paper): a stem of four ``3^n`` convolution-BN-ReLU
layers (stride 4 in all), four stages following the Next Hybrid Strategy (stage 1: NCBs
only; stages 2 and 4: NCBs then one NTB; stage 3: groups of four NCBs and one NTB), a
final batch norm, global average pooling and a linear classifier. The first block of
stages 2-4 halves the grid (its patch embedding average-pools by 2).

- NCB (Next Convolution Block): patch embedding (average pool if strided, ``1^n``
  convolution-BN if the width changes), then ``x + MHCA(x)`` and ``x + MLP(BN(x))``.
  MHCA (multi-head convolutional attention) is a grouped ``3^n`` convolution (one
  group per 32-channel head)-BN-ReLU followed by a ``1^n`` projection; the MLP is two
  ``1^n`` convolutions around a ReLU (3x expansion).
- NTB (Next Transformer Block): patch embedding to 3/4 of the width; ``x + E-MHSA(BN(x))``
  (efficient multi-head self-attention whose keys/values come from the map
  average-pooled by ``sr`` per axis and batch-normalised); a ``1^n`` projection of that
  to the remaining 1/4 of the width, ``+ MHCA``; the two concatenated; then
  ``x + MLP(BN(x))`` (2x expansion). E-MHSA reuses
  :class:`~medcls.models.layers.SpatialReductionAttention`.

The paper pools keys/values spatially by ``sr`` per axis (``sr^2`` tokens in 2D,
``sr^3`` in 3D here); the released code pools ``sr^2`` consecutive tokens of the
flattened sequence, which has the same weights but mixes a token with its row
neighbours only. Widths are rounded to multiples of the head width (32, as in the
released code; smaller for tiny test models).

Sizes (parameters; 2D at 1,000 classes, ``in_chans=3``; 3D at 2 classes, ``in_chans=2``):

=========  ========  ==========  ======  ==========  ==========  ========
name       paper 2D  ours 2D     diff    3D table    ours 3D     diff
=========  ========  ==========  ======  ==========  ==========  ========
nextvit_s  31.7 M    31.763 M    +0.2 %  19.900 M    34.373 M    +72.7 %
=========  ========  ==========  ======  ==========  ==========  ========

MACs (:mod:`medcls.models.profile`, one sample): 5.79 G at 3x224² (paper: 5.8 G),
7.95 G at 2x64³.

2D equals timm's ``nextvit_small`` (31,763,368). The 3D table's 19.9 M is *smaller*
than the 2D model, which no 3D version of Next-ViT-S can be: the ``1^n`` convolutions
and attention projections keep their weights in 3D and every ``3^n`` kernel grows by
3x (ours: 34.373 M at 2 classes). The table's 3D-NextViT-S must have had fewer blocks or
narrower stages (it does not say which), so that difference is documented, not
tuned away.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import StagedClassifier, build_variant, check_stages
from medcls.models.contract import FeatureStage
from medcls.models.layers import (
    ConvMlp,
    ConvNormAct,
    SpatialReductionAttention,
    check_spatial_dims,
    conv_type,
    make_norm,
)
from medcls.models.layers.resample import pool_down
from medcls.models.layers.tokens import DropPath, drop_path_rates
from medcls.models.registry import register_model

__all__ = ["MHCA", "NCB", "NTB", "TINY", "NextViT", "NextViTPatchEmbed"]

PAPER = (
    "Li et al., Next-ViT: Next Generation Vision Transformer for Efficient Deployment in "
    "Realistic Industrial Scenarios, 2022, arXiv:2207.05501"
)


def make_divisible(value: float, divisor: int) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (never below 90 % of it)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


class NextViTPatchEmbed(nn.Module):
    """Average pool by 2 (if strided), then ``1^n`` convolution-BN (if the width changes).

    Shapes: ``(B, in_chans, *S)`` -> ``(B, out_chans, *ceil(S / stride))``.
    """

    def __init__(self, spatial_dims: int, in_chans: int, out_chans: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.proj: nn.Module = nn.Identity()
        if stride != 1 or in_chans != out_chans:
            self.proj = ConvNormAct(spatial_dims, in_chans, out_chans, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, out_chans, *S')``."""
        return self.proj(pool_down(x, self.stride))


class MHCA(nn.Module):
    """Multi-head convolutional attention: grouped ``3^n`` conv-BN-ReLU, ``1^n`` projection.

    Shapes: ``(B, chans, *S)`` -> ``(B, chans, *S)``.

    Raises:
        ModelError: ``head_dim`` does not divide ``chans``.
    """

    def __init__(self, spatial_dims: int, chans: int, head_dim: int) -> None:
        super().__init__()
        if chans % head_dim:
            raise ModelError(f"MHCA: head_dim={head_dim} must divide the width {chans}")
        self.group_conv = ConvNormAct(spatial_dims, chans, chans, 3, groups=chans // head_dim)
        self.projection = conv_type(spatial_dims)(chans, chans, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, chans, *S)`` -> ``(B, chans, *S)``."""
        return self.projection(self.group_conv(x))


class _PoolNorm(nn.Module):
    """E-MHSA's key/value reduction: average pool by ``sr`` per axis, then batch norm."""

    def __init__(self, spatial_dims: int, chans: int, sr_ratio: int) -> None:
        super().__init__()
        self.sr_ratio = sr_ratio
        self.norm = make_norm("batch", spatial_dims, chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, chans, *S)`` -> ``(B, chans, *ceil(S / sr))``."""
        return self.norm(pool_down(x, self.sr_ratio))


class NCB(nn.Module):
    """Next Convolution Block (see the module docstring).

    Shapes: ``(B, in_chans, *S)`` -> ``(B, out_chans, *S / stride)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        stride: int = 1,
        head_dim: int = 32,
        mlp_ratio: float = 3.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        n = spatial_dims
        self.patch_embed = NextViTPatchEmbed(n, in_chans, out_chans, stride)
        self.mhca = MHCA(n, out_chans, head_dim)
        self.norm = make_norm("batch", n, out_chans)
        hidden = make_divisible(out_chans * mlp_ratio, head_dim)
        self.mlp = ConvMlp(n, out_chans, hidden, act="relu", norm="none")
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, out_chans, *S')``."""
        x = self.patch_embed(x)
        x = x + self.drop_path(self.mhca(x))
        return x + self.drop_path(self.mlp(self.norm(x)))


class NTB(nn.Module):
    """Next Transformer Block (see the module docstring).

    Shapes: ``(B, in_chans, *S)`` -> ``(B, out_chans, *S / stride)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        stride: int = 1,
        sr_ratio: int = 1,
        head_dim: int = 32,
        mix_ratio: float = 0.75,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        n = spatial_dims
        self.mhsa_chans = make_divisible(int(out_chans * mix_ratio), head_dim)
        self.mhca_chans = out_chans - self.mhsa_chans
        if self.mhca_chans < head_dim:
            raise ModelError(
                f"NTB: out_chans={out_chans} leaves {self.mhca_chans} channels for MHCA "
                f"(needs at least head_dim={head_dim})"
            )
        self.patch_embed = NextViTPatchEmbed(n, in_chans, self.mhsa_chans, stride)
        self.norm1 = make_norm("batch", n, self.mhsa_chans)
        reducer = _PoolNorm(n, self.mhsa_chans, sr_ratio) if sr_ratio > 1 else None
        self.e_mhsa = SpatialReductionAttention(
            n, self.mhsa_chans, self.mhsa_chans // head_dim, reducer, qkv_bias=True
        )
        self.mhsa_drop_path = DropPath(drop_path * mix_ratio)
        self.projection = NextViTPatchEmbed(n, self.mhsa_chans, self.mhca_chans)
        self.mhca = MHCA(n, self.mhca_chans, head_dim)
        self.mhca_drop_path = DropPath(drop_path * (1 - mix_ratio))
        self.norm2 = make_norm("batch", n, out_chans)
        hidden = make_divisible(out_chans * mlp_ratio, head_dim)
        self.mlp = ConvMlp(n, out_chans, hidden, act="relu", norm="none")
        self.mlp_drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, out_chans, *S')``."""
        x = self.patch_embed(x)
        x = x + self.mhsa_drop_path(self.e_mhsa(self.norm1(x)))
        local = self.projection(x)
        local = local + self.mhca_drop_path(self.mhca(local))
        x = torch.cat([x, local], dim=1)
        return x + self.mlp_drop_path(self.mlp(self.norm2(x)))


class NextViT(StagedClassifier):
    """Next-ViT for any ``spatial_dims`` (see the module docstring).

    Stage ``i`` has ``depths[i]`` blocks; block ``j`` (1-based) is an NTB of width
    ``ntb_widths[i]`` when ``ntb_period[i] > 0`` and ``j % ntb_period[i] == 0``, else
    an NCB of width ``widths[i]`` (Next-ViT-S: periods 0/4/5/3 give the paper's
    hybrid strategy).

    Shapes: ``(B, in_chans, *S)`` -> logits ``(B, num_classes)``; ``forward_features``
    returns ``(B, num_features, *S / 32)`` (four stages) after the final batch norm.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        stem_chans: widths of the stem's convolutions (first, second, last two).
        depths: blocks per stage.
        widths: NCB width per stage.
        ntb_widths: NTB width per stage.
        ntb_period: NTB position rule per stage (0: no NTB).
        sr_ratios: E-MHSA key/value pooling per stage.
        head_dim: channels per attention head (and per MHCA group).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this rate.

    Raises:
        ModelError: per-stage settings of different lengths.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        stem_chans: Sequence[int] = (64, 32, 64),
        depths: Sequence[int] = (3, 4, 10, 3),
        widths: Sequence[int] = (96, 192, 384, 768),
        ntb_widths: Sequence[int] = (96, 256, 512, 1024),
        ntb_period: Sequence[int] = (0, 4, 5, 3),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        head_dim: int = 32,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "NextViT")
        check_stages(
            "NextViT",
            allow_zero=("ntb_period",),
            depths=depths,
            widths=widths,
            ntb_widths=ntb_widths,
            ntb_period=ntb_period,
            sr_ratios=sr_ratios,
        )
        if len(stem_chans) != 3:
            raise ModelError(f"NextViT: stem_chans={tuple(stem_chans)}, expected three widths")
        self.in_chans, self.spatial_dims = in_chans, n
        s0, s1, s2 = stem_chans
        stem = nn.Sequential(
            ConvNormAct(n, in_chans, s0, 3, stride=2),
            ConvNormAct(n, s0, s1, 3),
            ConvNormAct(n, s1, s2, 3),
            ConvNormAct(n, s2, s2, 3, stride=2),
        )
        rates = drop_path_rates(drop_path_rate, depths)
        chans, stride, stages, info = s2, 4, [], []
        for i, depth in enumerate(depths):
            blocks: list[nn.Module] = []
            if i > 0:
                stride *= 2
            for j in range(1, int(depth) + 1):
                step = 2 if i > 0 and j == 1 else 1
                if ntb_period[i] and j % ntb_period[i] == 0:
                    out = int(ntb_widths[i])
                    block: nn.Module = NTB(
                        n, chans, out, step, sr_ratios[i], head_dim, drop_path=rates[i][j - 1]
                    )
                else:
                    out = int(widths[i])
                    block = NCB(n, chans, out, step, head_dim, drop_path=rates[i][j - 1])
                blocks.append(block)
                chans = out
            stages.append(nn.Sequential(*blocks))
            info.append(FeatureStage(f"stages.{i}", chans, stride))
        self.finish(stem, stages, make_norm("batch", n, chans), info, num_classes, drop_rate)


_VARIANTS: dict[str, dict] = {
    "nextvit_s": {
        "stem_chans": (64, 32, 64),
        "depths": (3, 4, 10, 3),
        "widths": (96, 192, 384, 768),
        "ntb_widths": (96, 256, 512, 1024),
        "ntb_period": (0, 4, 5, 3),
        "sr_ratios": (8, 4, 2, 1),
        "drop_path_rate": 0.1,
    },
}

#: small settings for tests: an (NCB, NTB) stage, then an NCB stage, widths 16-32 (the NTB
#: sits at stride 4 so its pooled keys are more than one token at 16^3)
TINY: dict[str, dict] = {
    "nextvit_s": {
        "stem_chans": (16, 8, 16),
        "depths": (2, 1),
        "widths": (16, 32),
        "ntb_widths": (32, 32),
        "ntb_period": (2, 0),
        "sr_ratios": (2, 1),
        "head_dim": 8,
        "drop_path_rate": 0.0,
    },
}


@register_model(dims=(2, 3), family="hybrid", paper=PAPER)
def nextvit_s(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> NextViT:
    """Next-ViT-S (depths 3/4/10/3)."""
    return build_variant(
        NextViT, _VARIANTS["nextvit_s"], in_chans, num_classes, spatial_dims, kwargs
    )
