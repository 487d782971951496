"""Dense connectivity for any ``spatial_dims``: layers, blocks and transitions.

A dense block feeds every unit the concatenation of the block input and all earlier
unit outputs, and returns the full concatenation (Huang et al., DenseNet). The unit is
pluggable (``make_unit``), so the same block carries DenseNet's bottleneck layer
(:class:`DenseLayer`), MADenseNet's dense layers or DDSF-Net's dual-stream units.

Example::

    block = DenseBlock(3, in_chans=32, num_layers=4, growth=16)   # 3D, 32 -> 96 channels
    trans = DenseTransition(3, block.out_chans, 48)                # halves every axis
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import ConvNormAct
from medcls.models.layers.factories import check_spatial_dims
from medcls.models.layers.resample import pool_down

__all__ = ["DenseBlock", "DenseLayer", "DenseTransition"]


class DenseLayer(nn.Module):
    """DenseNet's bottleneck unit: ``1^n`` conv to ``bn_size * growth``, then ``k^n`` conv.

    Both convolutions are :class:`ConvNormAct` (conv, batch norm, activation), so
    ``reparameterize_model`` folds their norms for inference.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, growth, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels (the concatenation so far).
        growth: output channels.
        bn_size: bottleneck width as a multiple of ``growth``.
        kernel_size: side of the second convolution.
        act: activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        growth: int,
        bn_size: int = 4,
        kernel_size: int = 3,
        act: str = "relu",
    ) -> None:
        super().__init__()
        width = bn_size * growth
        self.reduce = ConvNormAct(spatial_dims, in_chans, width, 1, act=act)
        self.conv = ConvNormAct(spatial_dims, width, growth, kernel_size, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, growth, *spatial)``."""
        return self.conv(self.reduce(x))


class DenseBlock(nn.Module):
    """``num_layers`` units, each reading the concatenation of everything before it.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, in_chans + num_layers * growth, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        num_layers: number of units.
        growth: channels each unit adds.
        make_unit: ``make_unit(index, in_chans) -> module`` mapping
            ``(B, in_chans, *spatial)`` to ``(B, growth, *spatial)``; default
            :class:`DenseLayer` with ``bn_size`` and ``act``.
        bn_size: bottleneck multiple of the default unit.
        act: activation of the default unit.

    Raises:
        ModelError: ``num_layers`` or ``growth`` below 1.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        num_layers: int,
        growth: int,
        make_unit: Callable[[int, int], nn.Module] | None = None,
        bn_size: int = 4,
        act: str = "relu",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "DenseBlock")
        if num_layers < 1 or growth < 1:
            raise ModelError(
                f"DenseBlock: num_layers={num_layers} and growth={growth} must be >= 1"
            )
        if make_unit is None:

            def make_unit(_index: int, chans: int) -> nn.Module:
                return DenseLayer(spatial_dims, chans, growth, bn_size, act=act)

        self.layers = nn.ModuleList(make_unit(i, in_chans + i * growth) for i in range(num_layers))
        self.in_chans, self.growth = in_chans, growth
        self.out_chans = in_chans + num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial)``."""
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class DenseTransition(nn.Module):
    """Between dense blocks: average pool by ``stride``, then a ``1^n`` conv.

    Pooling before the (linear) ``1^n`` convolution computes the same map as after it,
    at ``stride^n`` times fewer MACs.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *ceil(spatial / stride))``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        out_chans: output channels.
        stride: pooling factor per axis (1: no pooling).
        act: activation after the convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        stride: int = 2,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if stride < 1:
            raise ModelError(f"DenseTransition: stride={stride} must be >= 1")
        self.stride = stride
        self.conv = ConvNormAct(spatial_dims, in_chans, out_chans, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *ceil(spatial / stride))``."""
        return self.conv(pool_down(x, self.stride))
