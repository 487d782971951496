"""Spatial attention gate between a shallow (fine) map and a deep (coarse) map.

An additive attention gate in the manner of Attention U-Net (Oktay et al., 2018), for
any ``spatial_dims`` and any pair of resolutions: the deep map decides *where* the
shallow map is relevant. The shallow map is pooled to the deep grid, both are projected
to a common width, added, passed through an activation and a ``1^n`` projection to one
channel, and the sigmoid of that map, upsampled to the shallow grid, scales the shallow
map. One gate per shallow level gives the multi-resolution gates of MADenseNet.
"""

from __future__ import annotations

import torch
from torch import nn

from medcls.models.layers.factories import (
    adaptive_avg_pool,
    check_spatial_dims,
    conv_type,
    make_act,
    make_norm,
)
from medcls.models.layers.resample import interpolate_to

__all__ = ["SpatialAttentionGate"]


class SpatialAttentionGate(nn.Module):
    """Gates a shallow map with a spatial attention map computed from a deep map.

    ``alpha = sigmoid(psi(act(theta(pool(x)) + phi(g))))`` on the deep grid, upsampled to
    the shallow grid; the output is ``x * alpha``.

    Shapes: ``x`` ``(B, in_chans, *S)`` and ``g`` ``(B, gate_chans, *S_g)`` (any
    ``S_g``, usually coarser) -> ``(B, in_chans, *S)``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: channels of the shallow map ``x``.
        gate_chans: channels of the deep (gating) map ``g``.
        inter_chans: width of the common projection.
        act: activation after the sum.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        gate_chans: int,
        inter_chans: int,
        act: str = "relu",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "SpatialAttentionGate")
        conv = conv_type(spatial_dims)
        self.theta = conv(in_chans, inter_chans, 1, bias=False)
        self.phi = conv(gate_chans, inter_chans, 1, bias=False)
        self.norm = make_norm("batch", spatial_dims, inter_chans)
        self.act = make_act(act)
        self.psi = conv(inter_chans, 1, 1)

    def attention(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The gate ``alpha`` ``(B, 1, *S)`` in ``(0, 1)`` on the shallow grid."""
        grid = g.shape[2:]
        theta = self.theta(adaptive_avg_pool(x, grid))
        logits = self.psi(self.act(self.norm(theta + self.phi(g))))
        return interpolate_to(torch.sigmoid(logits), x.shape[2:])

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, in_chans, *S)``, ``g`` ``(B, gate_chans, *S_g)`` -> ``(B, in_chans, *S)``."""
        return x * self.attention(x, g)
