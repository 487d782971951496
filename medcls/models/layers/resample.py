"""Resampling helpers for channel-first maps of any ``spatial_dims``.

- :func:`pool_down`: average pooling by a factor that never fails on small grids (the
  window is clipped to the axis length, so a ``1^n`` map stays ``1^n``);
- :func:`interpolate_to`: linear resampling to a given grid (``linear``, ``bilinear`` or
  ``trilinear``, derived from ``x.ndim``);
- :class:`PoolReducer`: shrinks a map for attention keys/values (average pool, then a
  depthwise ``3^n`` convolution and a norm), on any grid, even one smaller than the
  stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import ConvNormAct

__all__ = ["PoolReducer", "interpolate_to", "pool_down"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def pool_down(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pools ``(B, C, *S)`` by ``factor`` along every axis.

    The output has ``ceil(S / factor)`` cells per axis (a partial window at the border
    averages the cells it covers); an axis shorter than ``factor`` pools to one cell.

    Raises:
        ModelError: ``factor`` below 1 or an input without 1-3 spatial axes.
    """
    if factor < 1:
        raise ModelError(f"pool_down: factor={factor} must be >= 1")
    if x.ndim - 2 not in _POOLS:
        raise ModelError(
            f"pool_down: expected (B, C, *spatial) with 1-3 axes, got {tuple(x.shape)}"
        )
    if factor == 1:
        return x
    kernel = tuple(min(factor, int(s)) for s in x.shape[2:])
    return _POOLS[x.ndim - 2](x, kernel, kernel, ceil_mode=True, count_include_pad=False)


def interpolate_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linearly resamples ``(B, C, *S)`` to ``size`` (bi/trilinear from ``x.ndim``)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=_MODES[x.ndim - 2], align_corners=False)


class PoolReducer(nn.Module):
    """Key/value reduction: ``norm(dwconv_3(pool_down(x, stride)))``.

    Unlike a strided convolution with kernel ``stride`` it accepts grids smaller than
    the stride, and costs ``dim * 3^n`` weights whatever the stride.

    Shapes: ``(B, dim, *S)`` -> ``(B, dim, *ceil(S / stride))``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels.
        stride: reduction factor per axis (>= 1).
    """

    def __init__(self, spatial_dims: int, dim: int, stride: int) -> None:
        super().__init__()
        if stride < 1:
            raise ModelError(f"PoolReducer: stride={stride} must be >= 1")
        self.stride = stride
        self.conv = ConvNormAct(spatial_dims, dim, dim, 3, groups=dim, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *S)`` -> ``(B, dim, *ceil(S / stride))``."""
        return self.conv(pool_down(x, self.stride))
