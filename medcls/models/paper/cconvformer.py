"""3D-CConvFormer: three-branch cross-modal ConvFormer for PET/CT lung tumour recognition.

Paper: 基于三维跨模态 ConvFormer 的肺部肿瘤识别 (3D Cross-Modal ConvFormer for Lung
Cancer Recognition), 计算机辅助设计与图形学学报 (Journal of Computer-Aided Design &
Computer Graphics). Reported on a 3D PET/CT lung tumour dataset of 3,173 patients:
89.25 % accuracy, 88.74 % AUC, 11.199 M parameters.

No code was published; this is a native medcls design built from the paper's
description. Paper component -> class:

- three branches learning the PET, the CT and the fused PET/CT images ->
  :class:`CConvFormerBranch` three times (inputs: PET, CT, and PET and CT concatenated
  along channels), combined by :class:`CConvFormer3D`;
- ConvFormer block fusing global features with shallow local features, self-calibrated
  convolution enlarging the receptive field -> :class:`ConvFormerBlock`: a
  :class:`~medcls.models.layers.self_calibrated.SelfCalibratedConv` extracts the
  shallow local features, multi-head attention over them (keys/values from a strided
  map, :class:`~medcls.models.layers.SpatialReductionAttention`) the global ones, a
  ``1^n`` convolution fuses both, then an MLP;
- dual-branch, two-resolution cross-modal feature interaction block with two global
  attention mechanisms -> :class:`CrossModalInteraction`: at full resolution the fused
  branch queries the PET and CT features with spatial cross-attention
  (:class:`~medcls.models.layers.cross_modal.CrossAttention`); at half resolution it
  queries them with channel (transposed) cross-attention
  (:class:`~medcls.models.layers.cross_modal.ChannelCrossAttention`); the two results
  are fused into the fused branch and fed back into the PET and CT branches.

Input: a dict ``{"pet": (B, 1, *S), "ct": (B, 1, *S)}`` (names set by ``modalities``;
the training engine passes this dict because the model has a ``modalities``
attribute), or a tensor whose channels are the modalities concatenated in that order.

``cconvformer_s`` is the paper's size (11.2 M parameters +- 15 %); ``cconvformer_tiny``
is a small variant for tests. Both build in 3D (default) and 2D (multimodal 2D
images). Measured numbers are in ``docs/models_paper.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import (
    ClassifierHead,
    ConvMlp,
    ConvNormAct,
    SpatialReductionAttention,
    check_spatial_dims,
    make_norm,
)
from medcls.models.layers.classifier_base import NativeClassifier
from medcls.models.layers.cross_modal import (
    ChannelCrossAttention,
    CrossAttention,
    check_modalities,
    split_modalities,
)
from medcls.models.layers.resample import PoolReducer, interpolate_to, pool_down
from medcls.models.layers.self_calibrated import SelfCalibratedConv
from medcls.models.registry import register_model

__all__ = [
    "CConvFormer3D",
    "CConvFormerBranch",
    "ConvFormerBlock",
    "CrossModalInteraction",
]

PAPER = (
    "3D Cross-Modal ConvFormer for Lung Cancer Recognition, Journal of Computer-Aided Design "
    "& Computer Graphics (计算机辅助设计与图形学学报), https://kns.cnki.net/kcms2/article/"
    "abstract?v=uXGtp3S0eCAxlLnqB5w_1b0e-ChGSMQ5vIfM_QbSPRHrl0dBCMXSX_C3GHgKReOqJHnEZGm9DDsOVzFDR3OjknvIwTvI_ObzYx-0afvlFA5R3kY7QI77QrUpq1igofXboX-PiYccJVwdo0KwOA--yzMvBiA_HiNKXE28jIDf3ng=&uniplatform=NZKPT"
)


def _kv_reducer(spatial_dims: int, dim: int, stride: int) -> nn.Module | None:
    """Pooling and a depthwise convolution that shrink keys/values (None at stride 1)."""
    return PoolReducer(spatial_dims, dim, stride) if stride > 1 else None


class ConvFormerBlock(nn.Module):
    """Global attention over self-calibrated local features, fused with them.

    ``l = SCConv(x)`` (shallow local features, enlarged receptive field);
    ``g = attn(norm(l))`` (global; keys/values reduced by ``kv_stride``);
    ``x = x + fuse(cat(l, g))``; ``x = x + mlp(x)``.

    Shapes: ``(B, dim, *S)`` -> ``(B, dim, *S)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels.
        heads: attention heads.
        kv_stride: key/value reduction stride.
        mlp_ratio: MLP width / ``dim``.
        sc_pool: pooling factor of the self-calibration.
        sc_group_width: channels per group of the self-calibrated convolutions.
        act: activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        heads: int = 1,
        kv_stride: int = 1,
        mlp_ratio: float = 2.0,
        sc_pool: int = 2,
        sc_group_width: int = 16,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        n = spatial_dims
        half = dim // 2
        groups = max(1, half // sc_group_width) if sc_group_width else 1
        if half % groups:
            raise ModelError(
                f"ConvFormerBlock: sc_group_width={sc_group_width} must divide dim / 2 = {half}"
            )
        self.local = SelfCalibratedConv(n, dim, pool=sc_pool, groups=groups, act=act)
        self.norm = make_norm("batch", n, dim)
        self.attn = SpatialReductionAttention(n, dim, heads, _kv_reducer(n, dim, kv_stride))
        self.fuse = ConvNormAct(n, 2 * dim, dim, 1, act=None)
        self.mlp = ConvMlp(n, dim, max(1, round(dim * mlp_ratio)), act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *S)`` -> ``(B, dim, *S)``."""
        local = self.local(x)
        x = x + self.fuse(torch.cat([local, self.attn(self.norm(local))], dim=1))
        return x + self.mlp(x)


class CConvFormerBranch(nn.Module):
    """One branch (PET, CT or fused PET/CT): stem and stages of ConvFormer blocks.

    Stem: two ``3^n`` convolutions with stride 2 (stride 4). Stage ``i > 0`` starts with
    a depthwise ``3^n`` (stride 2) and a ``1^n`` convolution to ``dims[i]``.

    Shapes: ``stem``: ``(B, in_chans, *S)`` -> ``(B, dims[0], *S / 4)``; ``stages[i]``:
    ``(B, dims[i-1], *S_i)`` -> ``(B, dims[i], *S_i / 2)`` (no stride in stage 0).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        dims: Sequence[int],
        depths: Sequence[int],
        heads: Sequence[int],
        kv_strides: Sequence[int],
        *,
        mlp_ratio: float,
        sc_group_width: int,
        act: str,
    ) -> None:
        super().__init__()
        n, c0 = spatial_dims, dims[0]
        self.stem = nn.Sequential(
            ConvNormAct(n, in_chans, c0 // 2, 3, stride=2, act=act),
            ConvNormAct(n, c0 // 2, c0, 3, stride=2, act=act),
        )
        stages = []
        for i, dim in enumerate(dims):
            layers: list[nn.Module] = []
            if i > 0:
                prev = dims[i - 1]
                layers += [
                    ConvNormAct(n, prev, prev, 3, stride=2, groups=prev, act=None),
                    ConvNormAct(n, prev, dim, 1, act=act),
                ]
            layers += [
                ConvFormerBlock(
                    n,
                    dim,
                    heads[i],
                    kv_strides[i],
                    mlp_ratio,
                    sc_group_width=sc_group_width,
                    act=act,
                )
                for _ in range(depths[i])
            ]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)


class CrossModalInteraction(nn.Module):
    """Dual-branch, two-resolution cross-modal interaction with two global attentions.

    ``ctx = cat(pet, ct)``. Full-resolution branch: ``y_hi = CrossAttention(norm(f),
    ctx)`` (spatial attention of the fused features over the PET and CT positions, keys
    reduced by ``kv_stride``). Half-resolution branch: ``y_lo = up(ChannelCrossAttention(
    pool(norm(f)), pool(ctx)))`` (channel affinity over all positions). Then
    ``d = fuse(cat(y_hi, y_lo))``, ``f' = f + d``, ``pet' = pet + to_pet(d)``,
    ``ct' = ct + to_ct(d)``.

    Shapes: three maps ``(B, dim, *S)`` -> three maps ``(B, dim, *S)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels of every branch.
        heads: heads of both attentions.
        kv_stride: key/value reduction of the spatial cross-attention.
    """

    def __init__(self, spatial_dims: int, dim: int, heads: int = 1, kv_stride: int = 1) -> None:
        super().__init__()
        n = spatial_dims
        self.norm = make_norm("batch", n, dim)
        self.spatial_attn = CrossAttention(n, dim, 2 * dim, heads, kv_stride)
        self.channel_attn = ChannelCrossAttention(n, dim, 2 * dim, heads)
        self.fuse = ConvNormAct(n, 2 * dim, dim, 1, act=None)
        self.to_pet = ConvNormAct(n, dim, dim, 1, act=None)
        self.to_ct = ConvNormAct(n, dim, dim, 1, act=None)

    def forward(
        self, pet: torch.Tensor, ct: torch.Tensor, fused: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, dim, *S)`` x 3 -> ``(pet', ct', fused')``."""
        ctx = torch.cat([pet, ct], dim=1)
        q = self.norm(fused)
        y_hi = self.spatial_attn(q, ctx)
        y_lo = self.channel_attn(pool_down(q, 2), pool_down(ctx, 2))
        delta = self.fuse(torch.cat([y_hi, interpolate_to(y_lo, q.shape[2:])], dim=1))
        return pet + self.to_pet(delta), ct + self.to_ct(delta), fused + delta


class CConvFormer3D(NativeClassifier):
    """3D cross-modal ConvFormer (see the module docstring for the paper).

    Three :class:`CConvFormerBranch` (PET, CT, and PET/CT concatenated) run stage by
    stage; after every stage listed in ``interact`` a :class:`CrossModalInteraction`
    exchanges information between them. Features ``fusion(cat(pet, ct, fused))`` (a
    ``1^n`` :class:`ConvNormAct`) -> global average pool -> linear.

    Shapes: ``{"pet": (B, C, *S), "ct": (B, C, *S)}`` (or ``(B, 2 C, *S)``) -> logits
    ``(B, num_classes)``; ``forward_features`` returns
    ``(B, num_features, *S / 2^(len(dims) + 1))``.

    Args:
        in_chans: total input channels (split evenly between the two modalities).
        num_classes: logits (0: none).
        spatial_dims: 3 or 2.
        modalities: the two modality names, as in the data (PET first by default).
        dims: channels per stage (every branch).
        depths: ConvFormer blocks per stage.
        heads: attention heads per stage.
        kv_strides: key/value reduction per stage (ConvFormer and cross-attention).
        interact: indices of the stages followed by a cross-modal interaction block.
        mlp_ratio: MLP width / channels.
        sc_group_width: channels per group of the self-calibrated convolutions.
        num_features: channels of the fused map (the classifier's input).
        act: activation.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 2,
        num_classes: int = 2,
        spatial_dims: int = 3,
        modalities: Sequence[str] = ("pet", "ct"),
        dims: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (1, 2, 4, 2),
        heads: Sequence[int] = (1, 2, 4, 8),
        kv_strides: Sequence[int] = (4, 2, 1, 1),
        interact: Sequence[int] = (1, 2, 3),
        mlp_ratio: float = 2.0,
        sc_group_width: int = 16,
        num_features: int = 512,
        act: str = "gelu",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        where = "CConvFormer3D"
        n = check_spatial_dims(spatial_dims, where)
        self.modalities, self.modality_chans = check_modalities(modalities, in_chans, where, 2)
        if not dims or not (len(dims) == len(depths) == len(heads) == len(kv_strides)):
            raise ModelError(
                f"{where}: dims={tuple(dims)}, depths={tuple(depths)}, heads={tuple(heads)} "
                f"and kv_strides={tuple(kv_strides)} must have the same (non-zero) length"
            )
        bad = [i for i in interact if not 0 <= int(i) < len(dims)]
        if bad:
            raise ModelError(f"{where}: interact={tuple(interact)} has stage indices out of range")
        self.in_chans, self.spatial_dims = in_chans, n
        arch = (dims, depths, heads, kv_strides)
        common = {"mlp_ratio": mlp_ratio, "sc_group_width": sc_group_width, "act": act}
        mc = self.modality_chans
        self.pet = CConvFormerBranch(n, mc, *arch, **common)
        self.ct = CConvFormerBranch(n, mc, *arch, **common)
        self.fused = CConvFormerBranch(n, 2 * mc, *arch, **common)
        self.interact = nn.ModuleDict(
            {str(i): CrossModalInteraction(n, dims[i], heads[i], kv_strides[i]) for i in interact}
        )
        self.fusion = ConvNormAct(n, 3 * dims[-1], num_features, 1, act=act)
        reductions = [4 * 2**i for i in range(len(dims))]
        self.num_features = num_features
        self.num_classes = num_classes
        self.head = ClassifierHead(num_features, num_classes, drop_rate)
        self.feature_stages = [
            *(
                FeatureStage(f"fused.stages.{i}", d, r)
                for i, (d, r) in enumerate(zip(dims, reductions))
            ),
            FeatureStage("fusion", num_features, reductions[-1]),
        ]
        self.cam_layer = CamLayer("fusion", "channels_first", 0, reductions[-1])

    def forward_features(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Modalities -> ``(B, num_features, *grid)``."""
        pet_in, ct_in = split_modalities(x, self.modalities, self.modality_chans, "CConvFormer3D")
        p, c = self.pet.stem(pet_in), self.ct.stem(ct_in)
        f = self.fused.stem(torch.cat([pet_in, ct_in], dim=1))
        for i, (ps, cs, fs) in enumerate(zip(self.pet.stages, self.ct.stages, self.fused.stages)):
            p, c, f = ps(p), cs(c), fs(f)
            if str(i) in self.interact:
                p, c, f = self.interact[str(i)](p, c, f)
        return self.fusion(torch.cat([p, c, f], dim=1))


_VARIANTS: dict[str, dict] = {
    "cconvformer_s": {
        "dims": (32, 64, 128, 256),
        "depths": (1, 2, 4, 2),
        "heads": (1, 2, 4, 8),
        "kv_strides": (4, 2, 1, 1),
        "interact": (1, 2, 3),
        "num_features": 512,
    },
    "cconvformer_tiny": {
        "dims": (16, 32),
        "depths": (1, 1),
        "heads": (1, 2),
        "kv_strides": (2, 1),
        "interact": (0, 1),
        "sc_group_width": 4,
        "num_features": 32,
    },
}

_REGISTER = {
    "dims": (3, 2),
    "family": "hybrid",
    "paper": PAPER,
    "input_size": {3: (64, 64, 64), 2: (224, 224)},
}


def _create(variant: str, *, in_chans: int, num_classes: int, spatial_dims: int, **kwargs):
    arch = {**_VARIANTS[variant], **kwargs}
    return CConvFormer3D(
        in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **arch
    )


@register_model(**_REGISTER)
def cconvformer_s(
    *, in_chans: int, num_classes: int, spatial_dims: int = 3, **kwargs
) -> CConvFormer3D:
    """3D-CConvFormer at the paper's size (11.2 M parameters +- 15 %)."""
    return _create(
        "cconvformer_s",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )


@register_model(**_REGISTER)
def cconvformer_tiny(
    *, in_chans: int, num_classes: int, spatial_dims: int = 3, **kwargs
) -> CConvFormer3D:
    """A two-stage 3D-CConvFormer for tests and quick CPU runs."""
    return _create(
        "cconvformer_tiny",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )
