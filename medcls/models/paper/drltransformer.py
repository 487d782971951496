"""DRLTransformer: dense re-parameterised lightweight Transformer for COVID-19 CT.

Paper: 面向CT图像新冠肺炎识别的密集重参轻量化Transformer模型 (Dense Heavy Parameter
Lightweight Transformer Model for CT Image Recognition of COVID-19), 电子与信息学报
(Journal of Electronics & Information Technology). Reported: 1.47 M parameters and
81.232 M MACs, 29x fewer parameters and 23x fewer MACs than DenseNet-121.

No code was published; this is a native medcls design built from the paper's
description. Paper component -> class:

- re-parameterised dense block (重参密集块) with the 3x3 re-parameterised convolution
  (training-time branches fused into one convolution for inference) ->
  :class:`RepDenseBlock` of :class:`RepDenseLayer`, each a 1x1 bottleneck and a
  :class:`~medcls.models.layers.RepConv` (3x3, 1x1 and, optionally, per-axis line
  branches; :meth:`DRLTransformer.reparameterize` fuses them into one convolution);
- hierarchical Transformer (层次化Transformer): global features extracted in groups,
  fused between groups for multi-level information, then an information fusion for
  intra- and inter-group interaction -> :class:`HierarchicalTransformer` (the channels
  are split into groups, each with its own attention; every group also receives the
  previous group's output, so later groups see several levels; a 1x1 fusion then mixes
  all groups, followed by an MLP);
- aggregation of the global features of all depths (deep and shallow fusion) ->
  :class:`GlobalAggregator` (every stage's Transformer output is pooled to the last
  grid, projected and added to the deepest features);
- DenseNet-style transitions between scales -> :class:`DRLTransition`.

``drltransformer_s`` keeps the paper's ratios to DenseNet-121 (at most 1/29 of its
parameters and 1/23 of its MACs at the same input); ``drltransformer_tiny`` is a
small variant for tests. Both build in 2D and 3D. Measured at 3x224x224 with 2 classes
(``python benchmarks/paper_models.py``; MACs = FLOPs / 2 from ``FlopCounterMode``):
``drltransformer_s`` has 198,466 parameters and 71.6 M MACs in its training form
(193,354 and 69.6 M after ``reparameterize()``), timm's DenseNet-121 6,955,906 and
2,833 M: 35x fewer parameters and 39x fewer MACs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import (
    ClassifierHead,
    ConvMlp,
    ConvNormAct,
    RepConv,
    SpatialReductionAttention,
    adaptive_avg_pool,
    avg_pool,
    check_spatial_dims,
    make_act,
    make_norm,
    reparameterize_model,
)
from medcls.models.registry import register_model

__all__ = [
    "DRLStageCfg",
    "DRLTransformer",
    "DRLTransition",
    "GlobalAggregator",
    "HierarchicalTransformer",
    "RepDenseBlock",
    "RepDenseLayer",
]

PAPER = (
    "Dense Heavy Parameter Lightweight Transformer Model for CT Image Recognition of "
    "COVID-19, Journal of Electronics & Information Technology (电子与信息学报), "
    "https://kns.cnki.net/kcms2/article/abstract?v=X0pQrW14MIvv2GL4frWiAufAyuCF9PzCXNBohb82rk9mtk3FbOLkXtHvNFv2SAxHnwtTg0CjnZMeYiK6R0kqZq9dQ7iDFuamoV7bIBLHImhf_3npSg79s7Gz5pW2mY4oFrCqu0dUz7GSJK8XlBlnFD41HM6xYkXsYxunks2nL5Y=&uniplatform=NZKPT"
)


@dataclass(frozen=True)
class DRLStageCfg:
    """One scale of DRLTransformer.

    Attributes:
        layers: re-parameterised dense layers in the block.
        growth: channels each dense layer adds.
        bottleneck: width of a dense layer's 1x1 bottleneck (multiple of ``rep_groups``).
        rep_groups: groups of the 3x3 re-parameterised convolution.
        transformer_groups: groups of the hierarchical Transformer (0: no Transformer).
        heads: attention heads per group.
        kv_reduction: stride that shrinks the keys/values of every group's attention.
    """

    layers: int
    growth: int
    bottleneck: int
    rep_groups: int = 1
    transformer_groups: int = 0
    heads: int = 1
    kv_reduction: int = 1


class RepDenseLayer(nn.Module):
    """1x1 bottleneck, then a 3x3 :class:`RepConv` producing ``growth`` new channels.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, growth, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        growth: int,
        bottleneck: int,
        rep_groups: int = 1,
        act: str = "relu",
        rep_axial: bool = False,
    ) -> None:
        super().__init__()
        self.bottleneck = ConvNormAct(spatial_dims, in_chans, bottleneck, 1, act=act)
        self.rep = RepConv(
            spatial_dims, bottleneck, growth, 3, groups=rep_groups, use_axial=rep_axial, act=act
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, growth, *spatial)``."""
        return self.rep(self.bottleneck(x))


class RepDenseBlock(nn.Module):
    """Dense block of :class:`RepDenseLayer`: each reads all earlier feature maps.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, in_chans + layers * growth, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        cfg: DRLStageCfg,
        act: str = "relu",
        rep_axial: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            RepDenseLayer(
                spatial_dims,
                in_chans + i * cfg.growth,
                cfg.growth,
                cfg.bottleneck,
                cfg.rep_groups,
                act,
                rep_axial,
            )
            for i in range(cfg.layers)
        )
        self.out_chans = in_chans + cfg.layers * cfg.growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``."""
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class HierarchicalTransformer(nn.Module):
    """Group-wise global attention, cascaded across groups, then fused.

    The normalised input is split into ``num_groups`` channel groups. Group ``g`` runs its
    own attention on ``chunk_g + out_{g-1}`` (the previous group's output), so deeper
    groups combine several levels of global features. The group outputs are concatenated
    and mixed by a 1x1 fusion (inter-group interaction), added to the input, and a
    residual MLP follows.

    Shapes: ``(B, dim, *spatial)`` -> ``(B, dim, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels (divisible by ``num_groups``).
        num_groups: channel groups, each with its own attention.
        heads: heads per group.
        kv_reduction: stride of the depthwise convolution that shrinks keys/values.
        mlp_ratio: MLP hidden width / ``dim``.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        num_groups: int = 2,
        heads: int = 1,
        kv_reduction: int = 1,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if num_groups < 1 or dim % num_groups:
            raise ModelError(
                f"HierarchicalTransformer: num_groups={num_groups} must divide dim={dim}"
            )
        if kv_reduction < 1:
            raise ModelError(f"HierarchicalTransformer: kv_reduction={kv_reduction} must be >= 1")
        group_dim = dim // num_groups
        self.num_groups = num_groups
        self.norm = make_norm("batch", spatial_dims, dim)
        kernel = kv_reduction + 1 - kv_reduction % 2  # odd, covers the stride
        self.groups = nn.ModuleList(
            SpatialReductionAttention(
                spatial_dims,
                group_dim,
                heads,
                kv_reducer=(
                    ConvNormAct(
                        spatial_dims,
                        group_dim,
                        group_dim,
                        kernel,
                        stride=kv_reduction,
                        groups=group_dim,
                        act=None,
                    )
                    if kv_reduction > 1
                    else None
                ),
            )
            for _ in range(num_groups)
        )
        self.fuse = ConvNormAct(spatial_dims, dim, dim, 1, act=None)
        hidden = round(dim * mlp_ratio)
        self.mlp = ConvMlp(spatial_dims, dim, hidden) if hidden > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *spatial)`` -> ``(B, dim, *spatial)``."""
        outs: list[torch.Tensor] = []
        for chunk, attn in zip(self.norm(x).chunk(self.num_groups, dim=1), self.groups):
            outs.append(attn(chunk if not outs else chunk + outs[-1]))
        x = x + self.fuse(torch.cat(outs, dim=1))
        if self.mlp is not None:
            x = x + self.mlp(x)
        return x


class DRLTransition(nn.Module):
    """Average pool by 2 on every axis, then a 1x1 compression.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *ceil(spatial / 2))``.
    """

    def __init__(self, spatial_dims: int, in_chans: int, out_chans: int, act: str) -> None:
        super().__init__()
        self.conv = ConvNormAct(spatial_dims, in_chans, out_chans, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(avg_pool(x, 2))


class GlobalAggregator(nn.Module):
    """Adds the global features of every depth to the deepest ones.

    Each shallower map is average-pooled to the deepest map's grid (read from the
    input, not fixed) and projected by a 1x1 convolution to its channels; the sum is
    normalised and activated.

    Shapes: maps ``(B, C_i, *spatial_i)`` -> ``(B, C_last, *spatial_last)``.
    """

    def __init__(self, spatial_dims: int, in_chans: Sequence[int], act: str = "relu") -> None:
        super().__init__()
        out = in_chans[-1]
        self.proj = nn.ModuleList(
            ConvNormAct(spatial_dims, c, out, 1, act=None) for c in in_chans[:-1]
        )
        self.norm = make_norm("batch", spatial_dims, out)
        self.act = make_act(act)
        if hasattr(self.act, "inplace"):
            self.act.inplace = False  # the CAM layer: keep its output intact

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Maps of every depth, shallow to deep -> ``(B, C_last, *spatial_last)``."""
        deepest = maps[-1]
        out = deepest
        for proj, shallow in zip(self.proj, maps[:-1]):
            out = out + proj(adaptive_avg_pool(shallow, deepest.shape[2:]))
        return self.act(self.norm(out))


class DRLTransformer(nn.Module):
    """Dense re-parameterised lightweight Transformer (see the module docstring).

    Stem (stride 4) -> per scale: re-parameterised dense block, hierarchical
    Transformer (where configured), transition -> aggregation of the Transformer
    outputs of all depths -> global average pool -> linear.

    Shapes: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
    ``forward_features`` returns ``(B, num_features, *spatial / 2^(1 + len(stages)))``.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        stem_chans: channels after the first (stride 2) and second (stride 4) stem layer.
        stages: one :class:`DRLStageCfg` (or a mapping of its fields) per scale.
        compression: transition output channels as a share of its input.
        mlp_ratio: Transformer MLP width / channels.
        act: activation.
        rep_axial: add per-axis line branches (``1 x 3``, ``3 x 1``, ...) to every
            re-parameterised 3x3 convolution of the dense blocks (slower training, the
            same inference cost).
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        stem_chans: Sequence[int] = (16, 32),
        stages: Sequence[DRLStageCfg] = (),
        compression: float = 0.5,
        mlp_ratio: float = 2.0,
        act: str = "relu",
        rep_axial: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "DRLTransformer")
        stages = _stage_cfgs(stages, DRLStageCfg, "DRLTransformer")
        if len(stem_chans) != 2:
            raise ModelError(f"DRLTransformer: stem_chans={tuple(stem_chans)}, expected two widths")
        self.in_chans, self.spatial_dims = in_chans, n
        c1, c2 = stem_chans
        self.stem = nn.Sequential(
            ConvNormAct(n, in_chans, c1, 3, stride=2, act=act),
            RepConv(n, c1, c2, 3, stride=2, groups=_groups(c1, c2, 8), act=act),
        )
        chans, reduction = c2, 4
        self.blocks = nn.ModuleList()
        self.transformers = nn.ModuleDict()
        self.transitions = nn.ModuleList()
        global_chans: list[int] = []
        stage_info: list[FeatureStage] = []
        for i, cfg in enumerate(stages):
            block = RepDenseBlock(n, chans, cfg, act, rep_axial)
            self.blocks.append(block)
            chans = block.out_chans
            if cfg.transformer_groups:
                self.transformers[str(i)] = HierarchicalTransformer(
                    n, chans, cfg.transformer_groups, cfg.heads, cfg.kv_reduction, mlp_ratio
                )
                global_chans.append(chans)
                stage_info.append(FeatureStage(f"transformers.{i}", chans, reduction))
            else:
                stage_info.append(FeatureStage(f"blocks.{i}", chans, reduction))
            if i < len(stages) - 1:
                out = max(8, round(chans * compression / 8) * 8)
                self.transitions.append(DRLTransition(n, chans, out, act))
                chans, reduction = out, reduction * 2
        last = str(len(stages) - 1)
        if last not in self.transformers:
            global_chans.append(chans)  # the deepest dense features close the aggregation
        self.aggregate = GlobalAggregator(n, global_chans, act)
        self.num_features = chans
        self.head = ClassifierHead(chans, num_classes, drop_rate)
        self.num_classes = num_classes
        self.classifier_names = ("head.fc",)
        stage_info[-1] = FeatureStage("aggregate", chans, reduction)
        self.feature_stages = stage_info
        self.cam_layer = CamLayer("aggregate", "channels_first", 0, reduction)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, num_features, *grid)``."""
        x = self.stem(x)
        global_maps: list[torch.Tensor] = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.transformers:
                x = self.transformers[str(i)](x)
                global_maps.append(x)
            elif i == last:
                global_maps.append(x)
            if i < last:
                x = self.transitions[i](x)
        return self.aggregate(global_maps)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features ``(B, num_features, *grid)`` -> ``(B, num_classes)`` (pooled with ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with one of ``num_classes`` outputs (0: none)."""
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def reparameterize(self) -> DRLTransformer:
        """Fuses every :class:`RepConv` into one convolution and folds batch norms.

        Puts the model in eval mode; returns it for chaining.
        """
        return reparameterize_model(self)


def _groups(in_chans: int, out_chans: int, per_group: int) -> int:
    """Largest group count with at least ``per_group`` input channels per group."""
    groups = max(1, in_chans // per_group)
    while in_chans % groups or out_chans % groups:
        groups -= 1
    return groups


def _stage_cfgs(stages: Sequence, cfg_type: type, model: str) -> list:
    """Stage configs from ``DRLStageCfg`` objects or mappings (as written in a YAML config)."""
    out = []
    for i, stage in enumerate(stages):
        if isinstance(stage, Mapping):
            try:
                stage = cfg_type(**stage)
            except TypeError as exc:
                raise ModelError(f"{model}: stages[{i}] = {dict(stage)}: {exc}") from exc
        if not isinstance(stage, cfg_type):
            raise ModelError(
                f"{model}: stages[{i}] is {type(stage).__name__}, expected {cfg_type.__name__}"
            )
        out.append(stage)
    if not out:
        raise ModelError(f"{model}: stages must list at least one {cfg_type.__name__}")
    return out


def _create(
    variant: str, *, in_chans: int, num_classes: int, spatial_dims: int, **kwargs
) -> DRLTransformer:
    arch = dict(_VARIANTS[variant])
    arch.update(kwargs)
    return DRLTransformer(
        in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **arch
    )


_VARIANTS: dict[str, dict] = {
    "drltransformer_s": {
        "stem_chans": (16, 32),
        "mlp_ratio": 1.0,
        "stages": (
            DRLStageCfg(layers=2, growth=16, bottleneck=32, rep_groups=4),
            DRLStageCfg(
                layers=2,
                growth=16,
                bottleneck=32,
                rep_groups=4,
                transformer_groups=2,
                heads=1,
                kv_reduction=4,
            ),
            DRLStageCfg(
                layers=3,
                growth=24,
                bottleneck=48,
                rep_groups=4,
                transformer_groups=4,
                heads=1,
                kv_reduction=2,
            ),
            DRLStageCfg(
                layers=2,
                growth=32,
                bottleneck=64,
                rep_groups=4,
                transformer_groups=4,
                heads=2,
                kv_reduction=1,
            ),
        ),
    },
    "drltransformer_tiny": {
        "stem_chans": (8, 16),
        "stages": (
            DRLStageCfg(
                layers=1,
                growth=8,
                bottleneck=16,
                rep_groups=2,
                transformer_groups=2,
                kv_reduction=2,
            ),
            DRLStageCfg(layers=1, growth=8, bottleneck=16, rep_groups=2, transformer_groups=2),
        ),
    },
}

_REGISTER = {
    "dims": (2, 3),
    "family": "hybrid",
    "paper": PAPER,
    "input_size": {2: (224, 224), 3: (64, 64, 64)},
}


@register_model(**_REGISTER)
def drltransformer_s(
    *, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs
) -> DRLTransformer:
    """DRLTransformer within the paper's ratios to DenseNet-121 (1/29 params, 1/23 MACs)."""
    return _create(
        "drltransformer_s",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )


@register_model(**_REGISTER)
def drltransformer_tiny(
    *, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs
) -> DRLTransformer:
    """A two-scale DRLTransformer for tests and quick CPU runs."""
    return _create(
        "drltransformer_tiny",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )
