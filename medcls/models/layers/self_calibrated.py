"""Self-calibrated convolution (Liu et al., "Improving Convolutional Networks with
Self-Calibrated Convolutions", CVPR 2020), for any ``spatial_dims``.

The channels are split in two halves. One half goes through a plain ``k^n``
convolution. The other is *calibrated*: a ``k^n`` convolution of a copy average-pooled
by ``pool`` (a wide view), upsampled back, is added to the input and passed through a
sigmoid; that gate scales a ``k^n`` convolution of the full-resolution half, and a last
``k^n`` convolution follows. Each output position of the calibrated half thus depends
on a ``pool`` times wider neighbourhood, which enlarges the receptive field at the cost
of convolutions on a ``pool^n`` times smaller grid.
"""

from __future__ import annotations

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import ConvNormAct
from medcls.models.layers.factories import check_spatial_dims
from medcls.models.layers.resample import interpolate_to, pool_down

__all__ = ["SelfCalibratedConv"]


class SelfCalibratedConv(nn.Module):
    """Self-calibrated ``k^n`` convolution (see the module docstring).

    Shapes: ``(B, channels, *spatial)`` -> ``(B, out_chans, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        channels: input channels (even).
        out_chans: output channels (even; default ``channels``).
        kernel_size: side of every convolution.
        pool: pooling factor of the calibration view.
        groups: groups of the ``k^n`` convolutions (must divide both halves).
        act: activation of the plain and calibrated outputs.

    Raises:
        ModelError: odd channel counts or groups that do not divide the halves.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        out_chans: int | None = None,
        kernel_size: int = 3,
        pool: int = 4,
        groups: int = 1,
        act: str = "relu",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "SelfCalibratedConv")
        out_chans = out_chans or channels
        if channels % 2 or out_chans % 2:
            raise ModelError(
                f"SelfCalibratedConv: channels={channels} and out_chans={out_chans} must be even"
            )
        half, out_half = channels // 2, out_chans // 2
        if half % groups or out_half % groups:
            raise ModelError(
                f"SelfCalibratedConv: groups={groups} must divide the halves {half} and {out_half}"
            )
        n, k = spatial_dims, kernel_size
        self.pool = pool
        self.plain = ConvNormAct(n, half, out_half, k, groups=groups, act=act)  # K1
        self.wide = ConvNormAct(n, half, half, k, groups=groups, act=None)  # K2 (pooled)
        self.local = ConvNormAct(n, half, half, k, groups=groups, act=None)  # K3
        self.out = ConvNormAct(n, half, out_half, k, groups=groups, act=act)  # K4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, channels, *spatial)`` -> ``(B, out_chans, *spatial)``."""
        x1, x2 = x.chunk(2, dim=1)
        wide = interpolate_to(self.wide(pool_down(x1, self.pool)), x1.shape[2:])
        calibrated = self.out(self.local(x1) * torch.sigmoid(x1 + wide))
        return torch.cat([calibrated, self.plain(x2)], dim=1)
