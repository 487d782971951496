"""RepLKNet: very large depthwise kernels, re-parameterised, 2D and 3D from one implementation.

Paper: Ding et al., "Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design
in CNNs", CVPR 2022 (arXiv:2203.06717).

Architecture (written from the paper): a stem of four convolution-BN-ReLU layers
(``3^n`` stride 2, depthwise ``3^n``, ``1^n``, depthwise ``3^n`` stride 2), four
stages, each a sequence of (RepLK block, ConvFFN block) pairs, a transition between
stages (``1^n`` convolution to the next width, depthwise ``3^n`` stride 2), a final
batch norm, global average pooling and a linear classifier.

- RepLK block: ``x + drop_path(pw2(relu(LK(pw1(bn(x))))))`` with ``pw1`` a ``1^n``
  convolution-BN-ReLU, ``LK`` the depthwise large-kernel convolution-BN plus a parallel
  depthwise small-kernel convolution-BN (:class:`LargeKernelConv`), ``pw2`` a ``1^n``
  convolution-BN;
- ConvFFN block: ``x + drop_path(pw2(gelu(pw1(bn(x)))))`` (``1^n`` convolution-BNs, 4x
  expansion).

Re-parameterisation (``model.reparameterize()``, eval mode): every convolution-BN pair
folds into one convolution with a bias, the small kernel is zero-padded to the large
one and added into it (one depthwise convolution per RepLK block), and the batch norm
in front of each block is folded into the block's first ``1^n`` convolution. The
inference form computes the same function as the training form (tested to 1e-5).

Kernel sizes per stage are set per spatial dims. 2D: the paper's 31/29/27/13 with a
small kernel 5. 3D: 9/9/7/3 with a small kernel 3. A 31³ depthwise kernel holds 29,791
weights per channel (stage 3 alone would hold 181 M parameters), and at the default
64³ volume the stage grids are 16/8/4/2 cells, so larger kernels would only see
padding. The 3D set keeps the paper's kernel-to-grid ratio at 224² (31/56, 29/28, 27/14
and 13/7 of the stage grid side, rounded to odd sizes; stages 3-4 then cover the whole
grid from every position, as in 2D). The small kernel is 3 in 3D because the paper's 5
exceeds the last stage's large kernel. Both are arguments (``kernel_sizes``,
``small_kernel``).

Sizes (parameters; 2D at 1,000 classes, ``in_chans=3``; 3D at 2 classes, ``in_chans=2``):

============  ========  ==========  ======  ========  ==========
name          paper 2D  ours 2D     diff    3D table  ours 3D
============  ========  ==========  ======  ========  ==========
replknet_31b  79 M      79.864 M    +1.1 %  --        74.941 M
============  ========  ==========  ======  ========  ==========

MACs (:mod:`medcls.models.profile`, one sample): 15.43 G at 3x224² (paper: 15.3 G),
7.54 G at 2x64³.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import StagedClassifier, build_variant, check_stages
from medcls.models.contract import FeatureStage
from medcls.models.layers import (
    ConvMlp,
    ConvNormAct,
    bn_scale_shift,
    check_spatial_dims,
    make_norm,
)
from medcls.models.layers.tokens import DropPath, drop_path_rates
from medcls.models.registry import register_model

__all__ = ["TINY", "ConvFFN", "LargeKernelConv", "RepLKBlock", "RepLKNet"]

PAPER = (
    "Ding et al., Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs, "
    "CVPR 2022, arXiv:2203.06717"
)


@torch.no_grad()
def fold_norm_into_next(norm: nn.Module, block: ConvNormAct) -> None:
    """Folds an eval-mode batch norm *in front of* a ``1^n`` convolution into it.

    ``conv(bn(x)) = W (s x + t) + b = (W s) x + (W t + b)``; exact because a ``1^n``
    convolution without padding never sees the norm's output at a padded position.
    ``block``'s own norm must already be folded (its ``norm`` is an identity).

    Raises:
        ModelError: ``block`` is not an ungrouped ``1^n`` convolution with a folded norm.
    """
    conv = block.conv
    if conv.groups != 1 or any(k != 1 for k in conv.kernel_size) or conv.bias is None:
        raise ModelError("fold_norm_into_next: expects a folded, ungrouped 1^n convolution")
    scale, shift = bn_scale_shift(norm)
    conv.bias.add_(conv.weight.flatten(1) @ shift)
    conv.weight.mul_(scale.reshape(1, -1, *(1,) * (conv.weight.ndim - 2)))


class LargeKernelConv(nn.Module):
    """Depthwise large-kernel convolution-BN with a parallel small-kernel convolution-BN.

    Shapes: ``(B, chans, *S)`` -> ``(B, chans, *S)``.

    Args:
        spatial_dims: 2 or 3.
        chans: channels (depthwise: one kernel per channel).
        kernel_size: odd large kernel side.
        small_kernel: odd small kernel side (``<= kernel_size``); 0 for none.
    """

    def __init__(self, spatial_dims: int, chans: int, kernel_size: int, small_kernel: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0 or (small_kernel and small_kernel % 2 == 0):
            raise ModelError(
                f"LargeKernelConv: kernel_size={kernel_size} and small_kernel={small_kernel} "
                "must be odd"
            )
        if small_kernel > kernel_size:
            raise ModelError(
                f"LargeKernelConv: small_kernel={small_kernel} exceeds kernel_size={kernel_size}"
            )
        n = spatial_dims
        self.lkb_origin = ConvNormAct(n, chans, chans, kernel_size, groups=chans, act=None)
        self.small_conv = (
            ConvNormAct(n, chans, chans, small_kernel, groups=chans, act=None)
            if small_kernel
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, chans, *S)`` -> ``(B, chans, *S)``."""
        out = self.lkb_origin(x)
        return out if self.small_conv is None else out + self.small_conv(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Folds both norms and adds the padded small kernel into the large one."""
        self.lkb_origin.reparameterize()
        if self.small_conv is None:
            return
        self.small_conv.reparameterize()
        large, small = self.lkb_origin.conv, self.small_conv.conv
        pads: list[int] = []
        for big, little in zip(reversed(large.kernel_size), reversed(small.kernel_size)):
            pads += [(big - little) // 2] * 2
        large.weight.add_(F.pad(small.weight, pads))
        large.bias.add_(small.bias)
        self.small_conv = None


class RepLKBlock(nn.Module):
    """``x + drop_path(pw2(relu(LK(pw1(bn(x))))))`` (see the module docstring).

    Shapes: ``(B, chans, *S)`` -> ``(B, chans, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        chans: int,
        kernel_size: int,
        small_kernel: int,
        dw_ratio: float = 1.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        n, width = spatial_dims, int(chans * dw_ratio)
        self.prelkb_bn = make_norm("batch", n, chans)
        self.pw1 = ConvNormAct(n, chans, width, 1, act="relu")
        self.large_kernel = LargeKernelConv(n, width, kernel_size, small_kernel)
        self.lk_nonlinear = nn.ReLU()
        self.pw2 = ConvNormAct(n, width, chans, 1, act=None)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, chans, *S)`` -> ``(B, chans, *S)``."""
        out = self.lk_nonlinear(self.large_kernel(self.pw1(self.prelkb_bn(x))))
        return x + self.drop_path(self.pw2(out))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Folds the pre-block norm into ``pw1`` (children are folded first)."""
        if isinstance(self.prelkb_bn, nn.Identity):
            return
        self.pw1.reparameterize()
        fold_norm_into_next(self.prelkb_bn, self.pw1)
        self.prelkb_bn = nn.Identity()


class ConvFFN(nn.Module):
    """``x + drop_path(pw2(gelu(pw1(bn(x)))))`` with ``1^n`` convolution-BNs.

    Shapes: ``(B, chans, *S)`` -> ``(B, chans, *S)``.
    """

    def __init__(
        self, spatial_dims: int, chans: int, ffn_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.preffn_bn = make_norm("batch", spatial_dims, chans)
        self.mlp = ConvMlp(spatial_dims, chans, int(chans * ffn_ratio), act="gelu", norm="batch")
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, chans, *S)`` -> ``(B, chans, *S)``."""
        return x + self.drop_path(self.mlp(self.preffn_bn(x)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Folds the pre-block norm into the first ``1^n`` convolution."""
        if isinstance(self.preffn_bn, nn.Identity):
            return
        self.mlp.fc1.reparameterize()
        fold_norm_into_next(self.preffn_bn, self.mlp.fc1)
        self.preffn_bn = nn.Identity()


class RepLKNet(StagedClassifier):
    """RepLKNet for any ``spatial_dims`` (see the module docstring).

    Shapes: ``(B, in_chans, *S)`` -> logits ``(B, num_classes)``; ``forward_features``
    returns ``(B, num_features, *S / 32)`` (four stages) after the final batch norm.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        kernel_sizes: large kernel side per stage.
        depths: (RepLK block, ConvFFN) pairs per stage.
        channels: width per stage.
        small_kernel: side of the parallel small kernel (0: none).
        dw_ratio: width of the large-kernel convolution as a multiple of the stage width.
        ffn_ratio: ConvFFN expansion.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this rate.

    Raises:
        ModelError: per-stage settings of different lengths, or invalid kernels.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        kernel_sizes: Sequence[int] = (31, 29, 27, 13),
        depths: Sequence[int] = (2, 2, 18, 2),
        channels: Sequence[int] = (128, 256, 512, 1024),
        small_kernel: int = 5,
        dw_ratio: float = 1.0,
        ffn_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "RepLKNet")
        check_stages("RepLKNet", kernel_sizes=kernel_sizes, depths=depths, channels=channels)
        self.in_chans, self.spatial_dims = in_chans, n
        width = channels[0]
        stem = nn.Sequential(
            ConvNormAct(n, in_chans, width, 3, stride=2),
            ConvNormAct(n, width, width, 3, groups=width),
            ConvNormAct(n, width, width, 1),
            ConvNormAct(n, width, width, 3, stride=2, groups=width),
        )
        rates = drop_path_rates(drop_path_rate, depths)
        stages, info, stride = [], [], 4
        for i, (kernel, chans) in enumerate(zip(kernel_sizes, channels)):
            layers: list[nn.Module] = []
            if i > 0:
                layers += [
                    ConvNormAct(n, channels[i - 1], chans, 1),
                    ConvNormAct(n, chans, chans, 3, stride=2, groups=chans),
                ]
                stride *= 2
            for rate in rates[i]:
                layers += [
                    RepLKBlock(n, chans, int(kernel), small_kernel, dw_ratio, rate),
                    ConvFFN(n, chans, ffn_ratio, rate),
                ]
            stages.append(nn.Sequential(*layers))
            info.append(FeatureStage(f"stages.{i}", int(chans), stride))
        norm = make_norm("batch", n, channels[-1])
        self.finish(stem, stages, norm, info, num_classes, drop_rate)


_VARIANTS: dict[str, dict] = {
    "replknet_31b": {
        "kernel_sizes": {2: (31, 29, 27, 13), 3: (9, 9, 7, 3)},
        "small_kernel": {2: 5, 3: 3},
        "depths": (2, 2, 18, 2),
        "channels": (128, 256, 512, 1024),
        "drop_path_rate": 0.3,
    },
}

#: small settings for tests: two stages of one block pair, widths 16-32
TINY: dict[str, dict] = {
    "replknet_31b": {
        "kernel_sizes": (7, 5),
        "small_kernel": 3,
        "depths": (1, 1),
        "channels": (16, 32),
        "drop_path_rate": 0.0,
    },
}


@register_model(dims=(2, 3), family="cnn", paper=PAPER)
def replknet_31b(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> RepLKNet:
    """RepLKNet-31B (2D kernels 31/29/27/13 + 5; 3D kernels 9/9/7/3 + 3)."""
    return build_variant(
        RepLKNet, _VARIANTS["replknet_31b"], in_chans, num_classes, spatial_dims, kwargs
    )
