"""Cross-modal Light-3Dformer: lightweight PET/CT lung tumour classification.

Paper: 面向肺部肿瘤分类的跨模态Light-3Dformer模型 (Cross-modal Light-3Dformer Model for
Lung tumor classification), 电子学报 (Acta Electronica Sinica). Reported on a 3D PET/CT
lung tumour dataset: 90.19 % accuracy, 89.81 % AUC, 417.09 K parameters and 170.55 M
MACs, 117x fewer parameters and 400x fewer MACs than 3D-SwinTransformer-S.

No code was published; this is a native medcls design built from the paper's
description. Paper component -> class:

- main and auxiliary networks for multimodal feature enhancement and interactive
  learning -> :class:`Light3DformerBranch` twice: the *main* network reads the first
  modality (PET by default), the shallower *auxiliary* network the second (CT); after
  every stage the two exchange information through LCCAM, and the final features fuse
  both (:class:`CrossModalLight3Dformer`);
- Light-3Dformer block made light by linear element-wise multiplication and a cascade
  structure -> :class:`Light3DformerBlock` whose token mixer
  :class:`CascadedModulation` splits the channels into groups; in each group a
  depthwise ``3^n`` convolution (the "attention" map) multiplies a ``1^n`` value
  projection element-wise (cost linear in the number of voxels, no ``N x N``
  attention), and each group's input adds the previous group's output (the cascade,
  which widens the receptive field group by group: 3, 5, 7, ... voxels);
- parameter-free 3D attention -> :class:`~medcls.models.layers.simam.SimAM` (energy-
  based voxel weights, no parameters) on every token mixer's output;
- lightweight cross-modal collaborative attention module (LCCAM) ->
  :class:`~medcls.models.layers.cross_modal.LCCAM` (channel weights of each stream from
  both streams' descriptors, spatial weights from both streams' maps; 232 parameters
  per stage in 3D with kernel 3).

Input: a dict ``{"pet": (B, 1, *S), "ct": (B, 1, *S)}`` (names set by ``modalities``;
the training engine passes this dict because the model has a ``modalities``
attribute), or a tensor whose channels are the modalities concatenated in that order.

``light3dformer_s`` is the paper's budget (<= 4.2e5 parameters, and <= 1/117 of the
parameters and 1/400 of the MACs of MONAI's Swin-S backbone at the same input);
``light3dformer_tiny`` is a small variant for tests. Both build in 3D (default) and 2D
(multimodal 2D images). Measured numbers are in ``docs/models_paper.md``.
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
    check_spatial_dims,
    make_norm,
)
from medcls.models.layers.classifier_base import NativeClassifier
from medcls.models.layers.cross_modal import LCCAM, check_modalities, split_modalities
from medcls.models.layers.simam import SimAM
from medcls.models.registry import register_model

__all__ = [
    "CascadedModulation",
    "CrossModalLight3Dformer",
    "Light3DformerBlock",
    "Light3DformerBranch",
]

PAPER = (
    "Cross-modal Light-3Dformer Model for Lung tumor classification, Acta Electronica Sinica "
    "(电子学报), https://kns.cnki.net/kcms2/article/abstract?v=X0pQrW14MIvltC-dZmTVC8htxD9To8c0sXLmWMpKarHkucOfBIuleG9FTdHkp-iwk3BbP6hn5Fob5S5M_QLnPdg1HZHh-m3d9m7W9Gri9jup7ExBDJZlSmNY4NGNLZJFb9qexQ2U-9dUFXkrfXnBI6kkQeEcCOFofI8JhXLv2NM=&uniplatform=NZKPT"
)


class CascadedModulation(nn.Module):
    """Token mixer: cascaded groups of element-wise modulation, linear in the voxels.

    Channels are split into ``groups`` chunks ``x_1 .. x_g``. For group ``i``:
    ``h_i = x_i + o_{i-1}`` (``o_0 = 0``: the cascade), ``a_i = dw_i(h_i)`` (depthwise
    ``k^n`` convolution + norm), ``v_i = W_i h_i`` (``1^n``), ``o_i = sigmoid(a_i) * v_i``
    (element-wise). The output is ``proj(cat(o_1 .. o_g))``.

    The modulator passes through a sigmoid: with a raw product the cascade multiplies
    ``g`` unbounded factors, and in evaluation mode (running batch-norm statistics
    instead of the batch's) the outputs grew by orders of magnitude per stage until
    they overflowed to NaN on the demo data. Gated, ``|o_i| <= |v_i|`` and the
    cascade grows at most additively.

    Shapes: ``(B, dim, *S)`` -> ``(B, dim, *S)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels.
        groups: cascade groups (divides ``dim``).
        kernel_size: side of the depthwise kernels.
    """

    def __init__(self, spatial_dims: int, dim: int, groups: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        if groups < 1 or dim % groups:
            raise ModelError(f"CascadedModulation: groups={groups} must divide dim={dim}")
        n, width = spatial_dims, dim // groups
        self.width = width
        self.spatial = nn.ModuleList(
            ConvNormAct(n, width, width, kernel_size, groups=width, act=None) for _ in range(groups)
        )
        self.value = nn.ModuleList(
            ConvNormAct(n, width, width, 1, norm=None, act=None, bias=True) for _ in range(groups)
        )
        self.proj = ConvNormAct(n, dim, dim, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *S)`` -> ``(B, dim, *S)``."""
        outs: list[torch.Tensor] = []
        for chunk, spatial, value in zip(x.split(self.width, dim=1), self.spatial, self.value):
            h = chunk if not outs else chunk + outs[-1]
            outs.append(torch.sigmoid(spatial(h)) * value(h))
        return self.proj(torch.cat(outs, dim=1))


class Light3DformerBlock(nn.Module):
    """``x = x + SimAM(mixer(norm(x)))``; ``x = x + mlp(x)``.

    Shapes: ``(B, dim, *S)`` -> ``(B, dim, *S)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels.
        groups: cascade groups of the token mixer.
        kernel_size: depthwise kernel of the token mixer.
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        act: MLP activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        groups: int = 4,
        kernel_size: int = 3,
        mlp_ratio: float = 2.0,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm = make_norm("batch", spatial_dims, dim)
        self.mixer = CascadedModulation(spatial_dims, dim, groups, kernel_size)
        self.attn = SimAM()
        self.mlp = ConvMlp(spatial_dims, dim, max(1, round(dim * mlp_ratio)), act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *S)`` -> ``(B, dim, *S)``."""
        x = x + self.attn(self.mixer(self.norm(x)))
        return x + self.mlp(x)


class Light3DformerBranch(nn.Module):
    """One modality's network: a stem and stages of Light-3Dformer blocks.

    Stem: ``3^n`` conv (stride 2) to ``dims[0] // 2``, a depthwise ``3^n`` conv (stride
    2) when ``stem_stride`` is 4, and a ``1^n`` conv to ``dims[0]``. Stage ``i > 0``
    starts with a depthwise ``3^n`` (stride 2) and a ``1^n`` convolution to ``dims[i]``.

    Shapes: ``stem``: ``(B, in_chans, *S)`` -> ``(B, dims[0], *S / stem_stride)``;
    ``stages[i]``: ``(B, dims[i-1], *S_i)`` -> ``(B, dims[i], *S_i / 2)`` (no stride in
    stage 0).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        dims: Sequence[int],
        depths: Sequence[int],
        *,
        stem_stride: int,
        groups: int,
        kernel_size: int,
        mlp_ratio: float,
        act: str,
    ) -> None:
        super().__init__()
        if stem_stride not in (2, 4):
            raise ModelError(f"Light3DformerBranch: stem_stride={stem_stride}, expected 2 or 4")
        n, c0 = spatial_dims, dims[0]
        half = max(1, c0 // 2)
        stem = [ConvNormAct(n, in_chans, half, 3, stride=2, act=act)]
        if stem_stride == 4:
            stem.append(ConvNormAct(n, half, half, 3, stride=2, groups=half, act=act))
        stem.append(ConvNormAct(n, half, c0, 1, act=act))
        self.stem = nn.Sequential(*stem)
        stages = []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            layers: list[nn.Module] = []
            if i > 0:
                prev = dims[i - 1]
                layers += [
                    ConvNormAct(n, prev, prev, 3, stride=2, groups=prev, act=None),
                    ConvNormAct(n, prev, dim, 1, act=act),
                ]
            layers += [
                Light3DformerBlock(n, dim, groups, kernel_size, mlp_ratio, act)
                for _ in range(depth)
            ]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)


class CrossModalLight3Dformer(NativeClassifier):
    """Cross-modal Light-3Dformer (see the module docstring for the paper).

    ``m = main.stem(x[modalities[0]])``, ``a = aux.stem(x[modalities[1]])``; per stage
    ``m, a = LCCAM_i(main.stages[i](m), aux.stages[i](a))``; features
    ``fusion(cat(m, a))`` (a ``1^n`` :class:`ConvNormAct`) -> global average pool ->
    linear.

    Shapes: ``{"pet": (B, C, *S), "ct": (B, C, *S)}`` (or ``(B, 2 C, *S)``) -> logits
    ``(B, num_classes)``; ``forward_features`` returns
    ``(B, num_features, *S / (stem_stride * 2^(len(dims) - 1)))``.

    Args:
        in_chans: total input channels (split evenly between the two modalities).
        num_classes: logits (0: none).
        spatial_dims: 3 or 2.
        modalities: ``(main, auxiliary)`` modality names, as in the data.
        dims: channels per stage (both networks).
        depths: Light-3Dformer blocks per stage in the main network.
        aux_depths: blocks per stage in the auxiliary network.
        stem_stride: stride of the stems, 2 or 4 (the first stage's grid).
        groups: cascade groups of the token mixers.
        kernel_size: depthwise kernel of the token mixers.
        mlp_ratio: MLP width / channels.
        lccam_kernel: kernel of LCCAM's channel and spatial convolutions.
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
        dims: Sequence[int] = (8, 24, 64, 128),
        depths: Sequence[int] = (1, 2, 3, 1),
        aux_depths: Sequence[int] = (1, 1, 1, 1),
        stem_stride: int = 2,
        groups: int = 4,
        kernel_size: int = 3,
        mlp_ratio: float = 2.0,
        lccam_kernel: int = 3,
        num_features: int = 256,
        act: str = "gelu",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "CrossModalLight3Dformer")
        where = "CrossModalLight3Dformer"
        self.modalities, self.modality_chans = check_modalities(modalities, in_chans, where, 2)
        if not (len(dims) == len(depths) == len(aux_depths)) or not dims:
            raise ModelError(
                f"{where}: dims={tuple(dims)}, depths={tuple(depths)} and "
                f"aux_depths={tuple(aux_depths)} must have the same (non-zero) length"
            )
        self.in_chans, self.spatial_dims = in_chans, n
        common = {
            "stem_stride": stem_stride,
            "groups": groups,
            "kernel_size": kernel_size,
            "mlp_ratio": mlp_ratio,
            "act": act,
        }
        self.main = Light3DformerBranch(n, self.modality_chans, dims, depths, **common)
        self.aux = Light3DformerBranch(n, self.modality_chans, dims, aux_depths, **common)
        self.lccam = nn.ModuleList(LCCAM(n, d, lccam_kernel) for d in dims)
        self.fusion = ConvNormAct(n, 2 * dims[-1], num_features, 1, act=act)
        reductions = [stem_stride * 2**i for i in range(len(dims))]
        self.num_features = num_features
        self.num_classes = num_classes
        self.head = ClassifierHead(num_features, num_classes, drop_rate)
        self.feature_stages = [
            *(
                FeatureStage(f"main.stages.{i}", d, r)
                for i, (d, r) in enumerate(zip(dims, reductions))
            ),
            FeatureStage("fusion", num_features, reductions[-1]),
        ]
        self.cam_layer = CamLayer("fusion", "channels_first", 0, reductions[-1])

    def forward_features(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Modalities -> ``(B, num_features, *grid)``."""
        main_in, aux_in = split_modalities(
            x, self.modalities, self.modality_chans, "CrossModalLight3Dformer"
        )
        m, a = self.main.stem(main_in), self.aux.stem(aux_in)
        for main_stage, aux_stage, lccam in zip(self.main.stages, self.aux.stages, self.lccam):
            m, a = lccam(main_stage(m), aux_stage(a))
        return self.fusion(torch.cat([m, a], dim=1))


_VARIANTS: dict[str, dict] = {
    "light3dformer_s": {
        "dims": (8, 24, 64, 128),
        "depths": (1, 2, 3, 1),
        "aux_depths": (1, 1, 1, 1),
        "num_features": 256,
    },
    "light3dformer_tiny": {
        "dims": (8, 16),
        "depths": (1, 1),
        "aux_depths": (1, 1),
        "stem_stride": 4,
        "groups": 2,
        "num_features": 16,
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
    return CrossModalLight3Dformer(
        in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **arch
    )


@register_model(**_REGISTER)
def light3dformer_s(
    *, in_chans: int, num_classes: int, spatial_dims: int = 3, **kwargs
) -> CrossModalLight3Dformer:
    """Cross-modal Light-3Dformer at the paper's budget (<= 4.2e5 parameters)."""
    return _create(
        "light3dformer_s",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )


@register_model(**_REGISTER)
def light3dformer_tiny(
    *, in_chans: int, num_classes: int, spatial_dims: int = 3, **kwargs
) -> CrossModalLight3Dformer:
    """A two-stage cross-modal Light-3Dformer for tests and quick CPU runs."""
    return _create(
        "light3dformer_tiny",
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kwargs,
    )
