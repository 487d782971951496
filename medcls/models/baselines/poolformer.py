"""PoolFormer (MetaFormer with a pooling token mixer): 2D and 3D from one implementation.

Paper: Yu et al., "MetaFormer Is Actually What You Need for Vision", CVPR 2022
(arXiv:2111.11418).

Architecture (written from the paper): a ``7^n`` stride-4 convolutional stem, four
stages of PoolFormer blocks with a ``3^n`` stride-2 convolution between stages, a final
group norm (one group: normalisation over channels and positions), global average
pooling and a linear classifier. A block is
``x = x + s1 * (pool(norm1(x)) - norm1(x))``; ``x = x + s2 * mlp(norm2(x))`` with
``pool`` a ``3^n`` stride-1 average pool that ignores padding, the MLP two ``1^n``
convolutions around a GELU, ``s1``/``s2`` learnable per-channel layer scales (init
1e-5) and stochastic depth on both branches. The same code builds 2D and 3D
(``spatial_dims``); every kernel becomes cubic in 3D.

Sizes (parameters; 2D at 1,000 classes, ``in_chans=3``; 3D at 2 classes, ``in_chans=2``):

==============  ========  ==========  ======  ==========  ==========  =======
name            paper 2D  ours 2D     diff    3D table    ours 3D     diff
==============  ========  ==========  ======  ==========  ==========  =======
poolformer_s24  21 M      21.389 M    +1.9 %  31.687 M    24.745 M    -21.9 %
==============  ========  ==========  ======  ==========  ==========  =======

MACs (:mod:`medcls.models.profile`, one sample): 3.39 G at 3x224², 1.90 G at 2x64³.

2D equals timm's ``poolformer_s24`` (21,388,968). The 3D table's 31.687 M cannot come
from PoolFormer-S24 made 3D the way the table's other models were: inflating every
kernel to ``k^3`` (the rule that reproduces the table's 3D-ConvNeXt-S, 54.954 M: that
inflation of ConvNeXt-S has 54.99 M) gives 24.745 M here, because PoolFormer's only spatial kernels are the
stem and the three downsampling convolutions (3³ instead of 3²: +3.8 M); its blocks
(18.9 M) hold only ``1^n`` convolutions and do not grow. The table does not state
its PoolFormer setting; 31.7 M matches no PoolFormer size made 3D this way (S12:
15.3 M, S24: 24.7 M, S36: 34.2 M), so the difference is documented, not tuned away.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import StagedClassifier, build_variant, check_stages
from medcls.models.contract import FeatureStage
from medcls.models.layers import ConvMlp, check_spatial_dims, conv_type
from medcls.models.layers.tokens import DropPath, drop_path_rates
from medcls.models.registry import register_model

__all__ = ["TINY", "PoolFormer", "PoolFormerBlock", "PoolMixer"]

PAPER = "Yu et al., MetaFormer Is Actually What You Need for Vision, CVPR 2022, arXiv:2111.11418"


class PoolMixer(nn.Module):
    """PoolFormer's token mixer: ``avg_pool(x) - x`` (stride 1, padding not counted).

    The average over the window cells inside the map is computed as a zero-padded
    average divided by the share of real cells, because ``avg_pool3d`` rejects maps
    smaller than its kernel even with padding (2D accepts them).

    Shapes: ``(B, C, *S)`` -> ``(B, C, *S)``.
    """

    def __init__(self, spatial_dims: int, pool_size: int = 3) -> None:
        super().__init__()
        if pool_size < 1 or pool_size % 2 == 0:
            raise ModelError(f"PoolMixer: pool_size={pool_size} must be odd and >= 1")
        pool = {2: nn.AvgPool2d, 3: nn.AvgPool3d}[check_spatial_dims(spatial_dims, "PoolMixer")]
        self.pool = pool(pool_size, 1, 0)
        self.pads = [pool_size // 2] * (2 * spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` -> ``(B, C, *S)``."""
        total = self.pool(F.pad(x, self.pads))
        share = self.pool(F.pad(torch.ones_like(x[:1, :1]), self.pads))
        return total / share - x


class PoolFormerBlock(nn.Module):
    """Pooling mixer and ``1^n`` MLP, each after a one-group norm, layer-scaled, residual.

    Shapes: ``(B, dim, *S)`` -> ``(B, dim, *S)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels.
        pool_size: side of the pooling window.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        drop_path: stochastic-depth rate.
        layer_scale_init: initial value of the per-channel branch scales.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        pool_size: int = 3,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.token_mixer = PoolMixer(spatial_dims, pool_size)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = ConvMlp(spatial_dims, dim, round(dim * mlp_ratio), act="gelu", norm="none")
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path = DropPath(drop_path)
        self._axes = (1,) * spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *S)`` -> ``(B, dim, *S)``."""
        scale_1 = self.layer_scale_1.reshape(-1, *self._axes)
        scale_2 = self.layer_scale_2.reshape(-1, *self._axes)
        x = x + self.drop_path(scale_1 * self.token_mixer(self.norm1(x)))
        return x + self.drop_path(scale_2 * self.mlp(self.norm2(x)))


class PoolFormer(StagedClassifier):
    """PoolFormer for any ``spatial_dims`` (see the module docstring).

    Shapes: ``(B, in_chans, *S)`` -> logits ``(B, num_classes)``; ``forward_features``
    returns ``(B, num_features, *S / 32)`` after the final norm.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        depths: blocks per stage.
        dims: channels per stage.
        pool_size: side of the pooling window.
        mlp_ratio: MLP hidden width as a multiple of the stage width.
        layer_scale_init: initial layer-scale value.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this rate.

    Raises:
        ModelError: ``depths`` and ``dims`` of different lengths or non-positive sizes.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        depths: Sequence[int] = (4, 4, 12, 4),
        dims: Sequence[int] = (64, 128, 320, 512),
        pool_size: int = 3,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "PoolFormer")
        check_stages("PoolFormer", depths=depths, dims=dims)
        conv = conv_type(n)
        self.in_chans, self.spatial_dims = in_chans, n
        rates = drop_path_rates(drop_path_rate, depths)
        stages, info, stride = [], [], 4
        for i, dim in enumerate(dims):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(conv(dims[i - 1], dim, 3, stride=2, padding=1))
                stride *= 2
            layers += [
                PoolFormerBlock(n, dim, pool_size, mlp_ratio, rate, layer_scale_init)
                for rate in rates[i]
            ]
            stages.append(nn.Sequential(*layers))
            info.append(FeatureStage(f"stages.{i}", int(dim), stride))
        stem = conv(in_chans, dims[0], 7, stride=4, padding=2)
        self.finish(stem, stages, nn.GroupNorm(1, dims[-1]), info, num_classes, drop_rate)


_VARIANTS: dict[str, dict] = {
    "poolformer_s24": {
        "depths": (4, 4, 12, 4),
        "dims": (64, 128, 320, 512),
        "drop_path_rate": 0.1,
    },
}

#: small settings for tests: 3 stages (1, 1, 2 blocks), widths 16-32
TINY: dict[str, dict] = {
    "poolformer_s24": {"depths": (1, 1, 2), "dims": (16, 24, 32), "drop_path_rate": 0.0},
}


@register_model(dims=(2, 3), family="cnn", paper=PAPER)
def poolformer_s24(
    *, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs
) -> PoolFormer:
    """PoolFormer-S24 (layers 4/4/12/4, widths 64/128/320/512)."""
    return build_variant(
        PoolFormer, _VARIANTS["poolformer_s24"], in_chans, num_classes, spatial_dims, kwargs
    )
