"""LDTransformer: lightweight directional Transformer for pneumonia X-ray classification.

Paper: 基于轻量化方向 Transformer 模型的肺炎 X 光片辅助诊断 (Lightweight Directional
Transformer for X-Ray-Aided Pneumonia Diagnosis), 光学学报 (Acta Optica Sinica; the
seed README files it under "Acta Photonica Sinica"). Reported: 2.53e5 parameters,
3.98e7 MACs, 98.87 % accuracy on a pneumonia X-ray dataset.

No code was published; this is a native medcls design built from the paper's
description. Paper component -> class:

- densely connected CNN + Transformer, local and global extraction cross-stacked
  (dense connections combine local and global information of shallow and deep
  layers) -> :class:`LDDenseStage` (every block reads the concatenation of the stage
  input and all earlier block outputs; local and global blocks alternate) and
  :class:`LDTransition` (carries the whole concatenation to the next scale);
- directional convolution: lateral ``1 x k``, vertical ``k x 1`` and dilated
  convolutions in parallel -> :class:`~medcls.models.layers.DirectionalConv`
  (in 3D: ``1x1xk``, ``1xkx1``, ``kx1x1`` and a dilated ``k^3``);
- directional Transformer: the directional convolution with a stride compresses the
  keys and values, so attention learns global and directional features cheaply ->
  :class:`LDGlobalBlock` (a :class:`~medcls.models.layers.TransformerBlock` whose
  ``kv_reducer`` is a strided ``DirectionalConv``);
- lightweight convolution: a dedicated kernel for each sample, features learnt in
  chunks and fused by a channel mixer -> :class:`LDLocalBlock` (a
  ``DirectionalConv(dynamic=True)``: per-sample mixtures of expert kernels, one per
  chunk of channels, the batch computed as one grouped convolution; then a 1x1
  channel mixer);
- balanced focal loss -> ``loss: balanced_focal`` in the config
  (:class:`medcls.engine.losses.BalancedFocalLoss`).

``ldtransformer_s`` is the paper's budget (<= 2.6e5 parameters and 4.1e7 MACs at
3x224x224 with 2 classes); ``ldtransformer_tiny`` is a small variant for tests. Both
build in 2D and 3D. ``model.reparameterize()`` folds the batch norms for inference.
Measured at 3x224x224 with 2 classes (``python benchmarks/paper_models.py``; MACs =
FLOPs / 2 from ``FlopCounterMode``): 241,622 parameters and 40.3 M MACs.
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
    ConvNormAct,
    DirectionalConv,
    TransformerBlock,
    avg_pool,
    check_spatial_dims,
    make_act,
    make_norm,
    reparameterize_model,
)
from medcls.models.registry import register_model

__all__ = [
    "LDDenseStage",
    "LDGlobalBlock",
    "LDLocalBlock",
    "LDStageCfg",
    "LDTransformer",
    "LDTransition",
]

PAPER = (
    "Lightweight Directional Transformer for X-Ray-Aided Pneumonia Diagnosis, "
    "Acta Optica Sinica (光学学报), https://kns.cnki.net/kcms2/article/abstract?"
    "v=uXGtp3S0eCBwJKFvuEmxJyCd0_TyBYqZv0O1e70-kN3spTL2sxnDm7O0oM1WwC3ektnmV_RgzyISNNTSsLDz894j9HIXz5OJ83Nnp2tAv8l3zWlES-a89deV6n8oDrGj8YrjIRABHyNPYo0jIf4Fv9B1oS6CqrmBsMIeEjVvD7w=&uniplatform=NZKPT"
)


@dataclass(frozen=True)
class LDStageCfg:
    """One dense stage of LDTransformer.

    Attributes:
        depth: local/global block pairs.
        growth: channels each block adds to the concatenation.
        width: channels of the local block's per-sample directional convolution.
        dim: attention width of the global block (0: the stage has no global blocks).
        heads: attention heads.
        kv_reduction: stride of the directional convolution that compresses keys/values.
    """

    depth: int
    growth: int
    width: int
    dim: int
    heads: int = 1
    kv_reduction: int = 1


class LDLocalBlock(nn.Module):
    """Local (CNN) block: the lightweight per-sample directional convolution.

    1x1 compression of the concatenated input, a depthwise :class:`DirectionalConv`
    whose kernels are dedicated to each sample (``num_chunks`` chunks with their own
    expert mixture), and a 1x1 channel mixer that fuses the chunks. ``dynamic=False``
    uses static kernels instead (the ablation without per-sample kernels).

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        width: int,
        out_chans: int,
        kernel_size: int = 3,
        dilation: int = 2,
        num_experts: int = 4,
        num_chunks: int = 4,
        act: str = "relu",
        dynamic: bool = True,
    ) -> None:
        super().__init__()
        self.compress = ConvNormAct(spatial_dims, in_chans, width, 1, act=act)
        self.directional = DirectionalConv(
            spatial_dims,
            width,
            width,
            kernel_size=kernel_size,
            dilation=dilation,
            groups=width,
            dynamic=dynamic,
            num_experts=num_experts,
            num_chunks=num_chunks,
        )
        self.act = make_act(act)
        self.mixer = ConvNormAct(spatial_dims, width, out_chans, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``."""
        return self.mixer(self.act(self.directional(self.compress(x))))


class LDGlobalBlock(nn.Module):
    """Global (Transformer) block: attention with directionally compressed keys/values.

    1x1 embedding of the concatenated input to ``dim``, a
    :class:`~medcls.models.layers.TransformerBlock` whose keys and values come from a
    ``DirectionalConv`` with stride ``kv_reduction`` (kernel ``kv_reduction + 1`` rounded
    down to an odd size, 3 at stride 1), and a 1x1 projection to ``out_chans``.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        dim: int,
        out_chans: int,
        heads: int = 1,
        kv_reduction: int = 1,
        mlp_ratio: float = 2.0,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if kv_reduction < 1:
            raise ModelError(f"LDGlobalBlock: kv_reduction={kv_reduction} must be >= 1")
        kernel = 3 if kv_reduction == 1 else kv_reduction + 1 - kv_reduction % 2
        self.embed = ConvNormAct(spatial_dims, in_chans, dim, 1, act=None)
        reducer = DirectionalConv(
            spatial_dims, dim, dim, kernel_size=kernel, dilation=2, stride=kv_reduction
        )
        self.transformer = TransformerBlock(
            spatial_dims, dim, heads, mlp_ratio=mlp_ratio, kv_reducer=reducer
        )
        self.proj = ConvNormAct(spatial_dims, dim, out_chans, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``."""
        return self.proj(self.transformer(self.embed(x)))


class LDDenseStage(nn.Module):
    """Cross-stacked local and global blocks with dense connections.

    Block ``i`` reads ``cat(x, y_1, ..., y_{i-1})`` and adds ``growth`` channels; the
    stage returns the full concatenation ``(B, in_chans + 2 * depth * growth, *spatial)``
    (``in_chans + depth * growth`` when ``cfg.dim == 0``: local blocks only).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        cfg: LDStageCfg,
        *,
        kernel_size: int,
        dilation: int,
        num_experts: int,
        num_chunks: int,
        mlp_ratio: float,
        act: str,
        dynamic: bool = True,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        chans = in_chans
        for _ in range(cfg.depth):
            blocks.append(
                LDLocalBlock(
                    spatial_dims,
                    chans,
                    cfg.width,
                    cfg.growth,
                    kernel_size=kernel_size,
                    dilation=dilation,
                    num_experts=num_experts,
                    num_chunks=num_chunks,
                    act=act,
                    dynamic=dynamic,
                )
            )
            chans += cfg.growth
            if cfg.dim > 0:
                blocks.append(
                    LDGlobalBlock(
                        spatial_dims,
                        chans,
                        cfg.dim,
                        cfg.growth,
                        heads=cfg.heads,
                        kv_reduction=cfg.kv_reduction,
                        mlp_ratio=mlp_ratio,
                        act=act,
                    )
                )
                chans += cfg.growth
        self.blocks = nn.ModuleList(blocks)
        self.out_chans = chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``."""
        features = [x]
        for block in self.blocks:
            features.append(block(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class LDTransition(nn.Module):
    """Halves every spatial axis (average pool) and compresses the channels (1x1).

    Pooling first is exact for a linear 1x1 map and 2^n times cheaper.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *ceil(spatial / 2))``.
    """

    def __init__(self, spatial_dims: int, in_chans: int, out_chans: int, act: str) -> None:
        super().__init__()
        self.conv = ConvNormAct(spatial_dims, in_chans, out_chans, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(avg_pool(x, 2))


class LDTransformer(nn.Module):
    """Lightweight directional Transformer (see the module docstring for the paper).

    Stem (stride 4) -> dense stages at strides 4, 8, 16, 32 joined by transitions ->
    batch norm + activation -> global average pool -> linear.

    Shapes: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
    ``forward_features`` returns ``(B, num_features, *spatial / 32)``.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        stem_chans: channels after the first (stride 2) and second (stride 4) stem layer.
        stages: one :class:`LDStageCfg` (or a mapping of its fields) per scale.
        compression: transition output channels as a share of its input.
        kernel_size: directional kernel length ``k``.
        dilation: dilation of the full directional kernel.
        num_experts: expert kernels mixed per sample in the local blocks.
        num_chunks: channel chunks with their own mixture in the local blocks.
        mlp_ratio: Transformer MLP width / attention width.
        act: convolution activation.
        dynamic: per-sample kernels in the local blocks (False: static kernels, the
            ablation of the lightweight convolution).
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        stem_chans: Sequence[int] = (16, 24),
        stages: Sequence[LDStageCfg] = (),
        compression: float = 0.5,
        kernel_size: int = 3,
        dilation: int = 2,
        num_experts: int = 4,
        num_chunks: int = 4,
        mlp_ratio: float = 2.0,
        act: str = "relu",
        dynamic: bool = True,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims, "LDTransformer")
        stages = _stage_cfgs(stages, LDStageCfg, "LDTransformer")
        if len(stem_chans) != 2:
            raise ModelError(f"LDTransformer: stem_chans={tuple(stem_chans)}, expected two widths")
        self.in_chans, self.spatial_dims = in_chans, spatial_dims
        n, (c1, c2) = spatial_dims, stem_chans
        self.stem = nn.Sequential(
            ConvNormAct(n, in_chans, c1, 3, stride=2, act=act),
            ConvNormAct(n, c1, c1, 3, stride=2, groups=c1, act=act),
            ConvNormAct(n, c1, c2, 1, act=act),
        )
        chans, reduction = c2, 4
        stage_info: list[FeatureStage] = []
        layers: list[nn.Module] = []
        for i, cfg in enumerate(stages):
            if i > 0:
                out = max(8, round(chans * compression / 4) * 4)
                layers.append(LDTransition(n, chans, out, act))
                chans, reduction = out, reduction * 2
            stage = LDDenseStage(
                n,
                chans,
                cfg,
                kernel_size=kernel_size,
                dilation=dilation,
                num_experts=num_experts,
                num_chunks=num_chunks,
                mlp_ratio=mlp_ratio,
                act=act,
                dynamic=dynamic,
            )
            layers.append(stage)
            chans = stage.out_chans
            stage_info.append(FeatureStage(f"stages.{len(layers) - 1}", chans, reduction))
        self.stages = nn.Sequential(*layers)
        self.norm = make_norm("batch", n, chans)
        self.act = make_act(act)
        if hasattr(self.act, "inplace"):
            self.act.inplace = False  # the CAM layer: keep its output intact
        self.num_features = chans
        self.head = ClassifierHead(chans, num_classes, drop_rate)
        self.num_classes = num_classes
        self.classifier_names = ("head.fc",)
        stage_info[-1] = FeatureStage("act", chans, reduction)
        self.feature_stages = stage_info
        self.cam_layer = CamLayer("act", "channels_first", 0, reduction)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, num_features, *spatial / 32)``."""
        return self.act(self.norm(self.stages(self.stem(x))))

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

    def reparameterize(self) -> LDTransformer:
        """Folds every batch norm that follows a convolution (eval-mode equivalent).

        Puts the model in eval mode; returns it for chaining.
        """
        return reparameterize_model(self)


def _stage_cfgs(stages: Sequence, cfg_type: type, model: str) -> list:
    """Stage configs from ``LDStageCfg`` objects or mappings (as written in a YAML config)."""
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
    variant: str,
    *,
    in_chans: int,
    num_classes: int,
    spatial_dims: int,
    **kwargs,
) -> LDTransformer:
    arch = dict(_VARIANTS[variant])
    arch.update(kwargs)
    return LDTransformer(
        in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **arch
    )


_VARIANTS: dict[str, dict] = {
    "ldtransformer_s": {
        "stem_chans": (16, 24),
        "stages": (
            LDStageCfg(depth=1, growth=12, width=24, dim=0),  # local only at stride 4
            LDStageCfg(depth=1, growth=16, width=32, dim=32, heads=2, kv_reduction=4),
            LDStageCfg(depth=2, growth=24, width=48, dim=48, heads=2, kv_reduction=2),
            LDStageCfg(depth=1, growth=64, width=112, dim=112, heads=4, kv_reduction=1),
        ),
    },
    "ldtransformer_tiny": {
        "stem_chans": (8, 12),
        "stages": (
            LDStageCfg(depth=1, growth=8, width=8, dim=8, heads=1, kv_reduction=2),
            LDStageCfg(depth=1, growth=8, width=16, dim=16, heads=2, kv_reduction=1),
        ),
        "num_experts": 2,
        "num_chunks": 2,
    },
}

_REGISTER = {
    "dims": (2, 3),
    "family": "hybrid",
    "paper": PAPER,
    "input_size": {2: (224, 224), 3: (64, 64, 64)},
}


@register_model(**_REGISTER)
def ldtransformer_s(
    *, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs
) -> LDTransformer:
    """LDTransformer at the paper's budget (<= 2.6e5 parameters, 4.1e7 MACs at 3x224^2)."""
    return _create(
        "ldtransformer_s",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )


@register_model(**_REGISTER)
def ldtransformer_tiny(
    *, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs
) -> LDTransformer:
    """A two-stage LDTransformer for tests and quick CPU runs."""
    return _create(
        "ldtransformer_tiny",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )
