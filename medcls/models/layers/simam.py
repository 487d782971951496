"""SimAM: parameter-free attention from a neuron energy function (Yang et al., ICML 2021).

For every channel, each position's inverse minimal energy
``e = (x - mu)^2 / (4 (var + lambda)) + 1/2`` (``mu``, ``var`` over the channel's grid)
is larger the more the position stands out from the rest of its channel; the output is
``x * sigmoid(e)``. No parameters, linear cost, and the statistics run over all spatial
axes, so the same module weights 2D pixels and 3D voxels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SimAM"]


class SimAM(nn.Module):
    """Parameter-free 3D (or 2D) attention.

    Shapes: ``(B, C, *spatial)`` -> ``(B, C, *spatial)``.

    Args:
        eps: the energy regulariser ``lambda``.
    """

    def __init__(self, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, C, *spatial)``."""
        axes = tuple(range(2, x.ndim))
        count = max(1, math.prod(x.shape[2:]) - 1)
        dev = (x - x.mean(dim=axes, keepdim=True)).square()
        var = dev.sum(dim=axes, keepdim=True) / count
        return x * torch.sigmoid(dev / (4 * (var + self.eps)) + 0.5)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
