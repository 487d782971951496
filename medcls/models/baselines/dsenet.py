"""DSENet: DenseNet-121 with squeeze-and-excitation after every dense block, 2D and 3D.

Papers: Huang et al., "Densely Connected Convolutional Networks", CVPR 2017
(arXiv:1608.06993); Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018
(arXiv:1709.01507).

The comparison tables name a "DSENet" without one defining paper or parameter count;
this is the design chosen here, stated so it can be reproduced:

- DenseNet-121's layout: a ``7^n`` stride-2 stem convolution and a ``3^n`` stride-2 max
  pool, dense blocks of 6/12/24/16 bottleneck layers (growth 32, bottleneck 4 x growth)
  joined by transitions that halve the channels (compression 0.5) and the grid, and a
  final batch norm + ReLU before global average pooling
  (:class:`~medcls.models.layers.dense.DenseBlock`,
  :class:`~medcls.models.layers.dense.DenseTransition`);
- one squeeze-and-excitation block (reduction 16) on the output of every dense block,
  i.e. before each transition and before the final norm: the channel gate sees the
  full concatenation a block produced, which is where DenseNet's channel redundancy
  accumulates.

medcls's dense units are post-activation (convolution, batch norm, ReLU, so
``reparameterize()`` folds every norm) where DenseNet is pre-activation; the parameter
count differs from DenseNet-121 only by where the norms sit and by the SE blocks.

Sizes (parameters; 2D at 1,000 classes, ``in_chans=3``; 3D at 2 classes, ``in_chans=2``):

======  =====================  ==========  ==========
name    reference 2D           ours 2D     ours 3D
======  =====================  ==========  ==========
dsenet  DenseNet-121: 7.979 M  8.224 M     11.512 M
======  =====================  ==========  ==========

MACs (:mod:`medcls.models.profile`, one sample): 2.60 G at 3x224², 5.88 G at 2x64³.

The 2D difference to DenseNet-121 (+3.1 %) is the SE blocks (0.31 M) less the
smaller post-activation norms (each unit normalises its output, not its wider input);
there is no 3D table entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import StagedClassifier, build_variant
from medcls.models.contract import FeatureStage
from medcls.models.layers import ConvNormAct, check_spatial_dims, make_norm
from medcls.models.layers.dense import DenseBlock, DenseTransition
from medcls.models.registry import register_model

__all__ = ["TINY", "DSENet", "SqueezeExcite"]

PAPER = (
    "Huang et al., Densely Connected Convolutional Networks, CVPR 2017, arXiv:1608.06993; "
    "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018, arXiv:1709.01507"
)


class SqueezeExcite(nn.Module):
    """Channel gate: global average pool, bottleneck MLP, sigmoid, rescale.

    Shapes: ``(B, chans, *S)`` -> ``(B, chans, *S)`` for any number of spatial axes.

    Args:
        chans: channels.
        reduction: bottleneck width is ``chans // reduction`` (at least ``min_hidden``).
        min_hidden: smallest bottleneck width.
    """

    def __init__(self, chans: int, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ModelError(f"SqueezeExcite: reduction={reduction} must be >= 1")
        hidden = max(min_hidden, chans // reduction)
        self.fc1 = nn.Linear(chans, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, chans, *S)`` -> ``(B, chans, *S)``."""
        squeezed = x.mean(dim=tuple(range(2, x.ndim)))
        gate = torch.sigmoid(self.fc2(self.act(self.fc1(squeezed))))
        return x * gate.reshape(*gate.shape, *(1,) * (x.ndim - 2))


class DSENet(StagedClassifier):
    """DenseNet with a squeeze-and-excitation block after every dense block.

    Shapes: ``(B, in_chans, *S)`` -> logits ``(B, num_classes)``; ``forward_features``
    returns ``(B, num_features, *S / 2^(len(block_layers) + 1))``.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        stem_chans: channels after the stem.
        growth: channels each dense layer adds.
        block_layers: dense layers per block.
        bn_size: bottleneck width of a dense layer as a multiple of ``growth``.
        compression: transition output channels as a share of their input.
        se_reduction: bottleneck reduction of the SE blocks.
        drop_rate: dropout before the classifier.

    Raises:
        ModelError: fewer than one block, a block without layers, or ``compression``
            outside ``(0, 1]``.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        stem_chans: int = 64,
        growth: int = 32,
        block_layers: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
        compression: float = 0.5,
        se_reduction: int = 16,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "DSENet")
        if not block_layers or min(block_layers) < 1:
            raise ModelError(f"DSENet: block_layers={tuple(block_layers)} must be positive")
        if not 0.0 < compression <= 1.0:
            raise ModelError(f"DSENet: compression={compression} must be in (0, 1]")
        self.in_chans, self.spatial_dims = in_chans, n
        max_pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[n]
        stem = nn.Sequential(ConvNormAct(n, in_chans, stem_chans, 7, stride=2), max_pool(3, 2, 1))
        chans, stride, stages, info = stem_chans, 4, [], []
        for i, layers in enumerate(block_layers):
            parts: list[nn.Module] = []
            if i > 0:
                out = int(chans * compression)
                parts.append(DenseTransition(n, chans, out))
                chans, stride = out, stride * 2
            block = DenseBlock(n, chans, int(layers), growth, bn_size=bn_size)
            chans = block.out_chans
            parts += [block, SqueezeExcite(chans, se_reduction)]
            stages.append(nn.Sequential(*parts))
            info.append(FeatureStage(f"stages.{i}", chans, stride))
        norm = nn.Sequential(make_norm("batch", n, chans), nn.ReLU(inplace=True))
        self.finish(stem, stages, norm, info, num_classes, drop_rate)


_VARIANTS: dict[str, dict] = {
    "dsenet": {"stem_chans": 64, "growth": 32, "block_layers": (6, 12, 24, 16)},
}

#: small settings for tests: three blocks of two layers, growth 8
TINY: dict[str, dict] = {
    "dsenet": {
        "stem_chans": 16,
        "growth": 8,
        "block_layers": (2, 2, 2),
        "bn_size": 2,
        "se_reduction": 4,
    },
}


@register_model(dims=(2, 3), family="cnn", paper=PAPER)
def dsenet(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> DSENet:
    """DenseNet-121 with squeeze-and-excitation after every dense block."""
    return build_variant(DSENet, _VARIANTS["dsenet"], in_chans, num_classes, spatial_dims, kwargs)
