"""MADenseNet: multi-resolution attention dense network for pneumonia X-ray classification.

Paper: 基于多分辨率注意密集网络的肺炎分类识别方法 (Pneumonia Classification and
Recognition Method Based on Multi-resolution Attention Dense Network), 模式识别与人工智能
(Pattern Recognition and Artificial Intelligence). Reported on ChestXRay2017: 99.15 %
accuracy, 98.82 % AUC, with 1/7 of ResNet-101's parameters (45.36 vs 324.28 in the
paper's table).

No code was published; this is a native medcls design built from the paper's
description. Paper component -> class:

- dense network, shallow localisation and deep semantic information deeply fused ->
  :class:`~medcls.models.layers.dense.DenseBlock` stages joined by
  :class:`~medcls.models.layers.dense.DenseTransition`, and
  :class:`MultiResolutionFusion`, which brings the gated outputs of *every* stage
  (strides 4 to 32) onto one grid and fuses them with a ``1^n`` convolution;
- multi-resolution spatial attention gates: the deep map gates each shallow map at
  its own resolution -> one
  :class:`~medcls.models.layers.attention_gate.SpatialAttentionGate` per shallow
  stage inside :class:`MultiResolutionFusion`;
- coordinate frequency attention (direction and position complementary, with
  frequency components) -> :class:`~medcls.models.layers.frequency_attention.CoordFrequencyAttention`
  after every dense block.

``madensenet_s`` is the paper's budget (at most 1/7 of ``timm:resnet101``'s parameters
at the same ``num_classes``); ``madensenet_tiny`` is a small variant for tests. Both
build in 2D and 3D (``spatial_dims``). Measured parameters and MACs are in
``docs/models_paper.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import ClassifierHead, ConvNormAct, adaptive_avg_pool, check_spatial_dims
from medcls.models.layers.attention_gate import SpatialAttentionGate
from medcls.models.layers.classifier_base import NativeClassifier
from medcls.models.layers.dense import DenseBlock, DenseTransition
from medcls.models.layers.frequency_attention import CoordFrequencyAttention
from medcls.models.layers.resample import interpolate_to
from medcls.models.registry import register_model

__all__ = ["MADenseNet", "MADenseStage", "MultiResolutionFusion"]

PAPER = (
    "Pneumonia Classification and Recognition Method Based on Multi-resolution Attention "
    "Dense Network, Pattern Recognition and Artificial Intelligence (模式识别与人工智能), "
    "https://kns.cnki.net/kcms2/article/abstract?v=X0pQrW14MIuiv4-LuB9ehEovhUdRg3gYk8bVEu1Zy6n9lhpIMbtpojTqtfysj8Do3Rk-1BM436j5rORJLaj1hvnK05G30suN8bQLkvufzDF2GNWpmJgUQ0aKu1J9f7L4bdgEd4Rnq3WorY6rJfSm6ApTX3JDNqUVUfJHczfZqC0=&uniplatform=NZKPT"
)


class MADenseStage(nn.Module):
    """Transition (except in the first stage), dense block, coordinate frequency attention.

    Shapes: ``(B, in_chans, *S)`` -> ``(B, out_chans, *S / stride)`` (``stride`` 2 with a
    transition, else 1).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        num_layers: int,
        growth: int,
        *,
        transition_chans: int | None,
        bn_size: int,
        cfa_reduction: int,
        num_freqs: int,
        act: str,
    ) -> None:
        super().__init__()
        chans = in_chans
        self.transition: nn.Module = nn.Identity()
        if transition_chans is not None:
            self.transition = DenseTransition(spatial_dims, in_chans, transition_chans, act=act)
            chans = transition_chans
        self.block = DenseBlock(spatial_dims, chans, num_layers, growth, bn_size=bn_size, act=act)
        self.out_chans = self.block.out_chans
        self.cfa = CoordFrequencyAttention(
            spatial_dims,
            self.out_chans,
            reduction=cfa_reduction,
            num_freqs=min(num_freqs, self.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, out_chans, *S')``."""
        return self.cfa(self.block(self.transition(x)))


class MultiResolutionFusion(nn.Module):
    """Fuses shallow localisation and deep semantics through multi-resolution gates.

    Every shallow map ``s_i`` is gated by the deepest map ``d``
    (:class:`SpatialAttentionGate`, at ``s_i``'s own resolution), resampled to the
    fusion grid (the grid of stage ``fuse_index``: average pooling from finer grids,
    linear interpolation from coarser ones) and projected to ``skip_chans``; ``d`` is
    interpolated to the same grid. The concatenation is fused by a ``1^n``
    :class:`ConvNormAct` to ``out_chans``.

    Shapes: a list of stage maps ``[(B, C_i, *S_i)]`` (finest first) ->
    ``(B, out_chans, *S_fuse)``.

    Args:
        spatial_dims: 2 or 3.
        stage_chans: channels of each stage map.
        fuse_index: index of the stage whose grid the fusion uses.
        gate_chans: width of the gates' common projection.
        skip_chans: channels each gated shallow map contributes.
        out_chans: channels of the fused map.
        act: activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        stage_chans: Sequence[int],
        fuse_index: int,
        gate_chans: int,
        skip_chans: int,
        out_chans: int,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if len(stage_chans) < 2:
            raise ModelError("MultiResolutionFusion: needs at least two stages")
        if not -len(stage_chans) <= fuse_index < len(stage_chans):
            raise ModelError(
                f"MultiResolutionFusion: fuse_index={fuse_index} out of range for "
                f"{len(stage_chans)} stages"
            )
        *shallow, deep = stage_chans
        self.fuse_index = fuse_index % len(stage_chans)
        self.gates = nn.ModuleList(
            SpatialAttentionGate(spatial_dims, c, deep, gate_chans, act=act) for c in shallow
        )
        self.skips = nn.ModuleList(
            ConvNormAct(spatial_dims, c, skip_chans, 1, act=act) for c in shallow
        )
        self.fuse = ConvNormAct(
            spatial_dims, deep + skip_chans * len(shallow), out_chans, 1, act=act
        )
        self.out_chans = out_chans

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stage maps (finest first) -> ``(B, out_chans, *S_fuse)``."""
        *shallow, deep = stages
        grid = stages[self.fuse_index].shape[2:]
        parts = [interpolate_to(deep, grid)]
        for x, gate, skip in zip(shallow, self.gates, self.skips):
            gated = gate(x, deep)
            if gated.shape[2] >= grid[0]:
                gated = adaptive_avg_pool(gated, grid)
            else:
                gated = interpolate_to(gated, grid)
            parts.append(skip(gated))
        return self.fuse(torch.cat(parts, dim=1))


class MADenseNet(NativeClassifier):
    """Multi-resolution attention dense network (see the module docstring for the paper).

    Stem (two ``3^n`` convolutions, stride 4) -> :class:`MADenseStage` at strides 4, 8,
    16, 32 (dense block + coordinate frequency attention) -> :class:`MultiResolutionFusion`
    (gated shallow stages fused with the deep stage on the grid of stage ``fuse_index``)
    -> global average pool -> linear.

    Shapes: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
    ``forward_features`` returns ``(B, num_features, *spatial / 16)`` with the default
    ``fuse_index`` (the penultimate stage).

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        stem_chans: channels after the stem.
        growth: dense growth rate.
        block_layers: dense layers per stage.
        bn_size: bottleneck width of a dense layer as a multiple of ``growth``.
        compression: transition output channels as a share of its input.
        cfa_reduction: reduction of the coordinate frequency attention.
        num_freqs: DCT frequency groups of the coordinate frequency attention.
        gate_chans: width of the attention gates.
        skip_chans: channels each gated shallow stage contributes to the fusion.
        num_features: channels of the fused map (the classifier's input).
        fuse_index: stage whose grid the fusion uses (default: the penultimate).
        act: activation.
        drop_rate: dropout before the classifier.
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
        cfa_reduction: int = 16,
        num_freqs: int = 4,
        gate_chans: int = 64,
        skip_chans: int = 128,
        num_features: int = 512,
        fuse_index: int = -2,
        act: str = "relu",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "MADenseNet")
        if len(block_layers) < 2 or any(int(k) < 1 for k in block_layers):
            raise ModelError(
                f"MADenseNet: block_layers={tuple(block_layers)}, expected at least two "
                "positive layer counts"
            )
        if not 0.0 < compression <= 1.0:
            raise ModelError(f"MADenseNet: compression={compression} must be in (0, 1]")
        self.in_chans, self.spatial_dims = in_chans, n
        self.stem = nn.Sequential(
            ConvNormAct(n, in_chans, stem_chans // 2, 3, stride=2, act=act),
            ConvNormAct(n, stem_chans // 2, stem_chans, 3, stride=2, act=act),
        )
        chans, reduction = stem_chans, 4
        stages: list[MADenseStage] = []
        info: list[FeatureStage] = []
        for i, layers in enumerate(block_layers):
            trans = None if i == 0 else max(8, int(chans * compression))
            stage = MADenseStage(
                n,
                chans,
                int(layers),
                growth,
                transition_chans=trans,
                bn_size=bn_size,
                cfa_reduction=cfa_reduction,
                num_freqs=num_freqs,
                act=act,
            )
            reduction *= 1 if i == 0 else 2
            chans = stage.out_chans
            stages.append(stage)
            info.append(FeatureStage(f"stages.{i}", chans, reduction))
        self.stages = nn.ModuleList(stages)
        self.fusion = MultiResolutionFusion(
            n, [s.num_chs for s in info], fuse_index, gate_chans, skip_chans, num_features, act
        )
        fuse_reduction = info[self.fusion.fuse_index].reduction
        self.num_features = num_features
        self.num_classes = num_classes
        self.head = ClassifierHead(num_features, num_classes, drop_rate)
        self.feature_stages = [*info, FeatureStage("fusion", num_features, fuse_reduction)]
        self.cam_layer = CamLayer("fusion", "channels_first", 0, fuse_reduction)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, num_features, *grid)`` (the fused map)."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return self.fusion(outs)


_VARIANTS: dict[str, dict] = {
    "madensenet_s": {
        "stem_chans": 64,
        "growth": 32,
        "block_layers": (6, 12, 16, 12),
        "gate_chans": 64,
        "skip_chans": 128,
        "num_features": 512,
    },
    "madensenet_tiny": {
        "stem_chans": 16,
        "growth": 8,
        "block_layers": (2, 2, 2, 2),
        "bn_size": 2,
        "cfa_reduction": 4,
        "gate_chans": 8,
        "skip_chans": 8,
        "num_features": 32,
    },
}

_REGISTER = {
    "dims": (2, 3),
    "family": "cnn",
    "paper": PAPER,
    "input_size": {2: (224, 224), 3: (64, 64, 64)},
}


def _create(variant: str, *, in_chans: int, num_classes: int, spatial_dims: int, **kwargs):
    arch = {**_VARIANTS[variant], **kwargs}
    return MADenseNet(in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **arch)


@register_model(**_REGISTER)
def madensenet_s(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> MADenseNet:
    """MADenseNet at the paper's budget (<= 1/7 of ResNet-101's parameters)."""
    return _create(
        "madensenet_s",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )


@register_model(**_REGISTER)
def madensenet_tiny(
    *, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs
) -> MADenseNet:
    """A small MADenseNet for tests and quick CPU runs."""
    return _create(
        "madensenet_tiny",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )
