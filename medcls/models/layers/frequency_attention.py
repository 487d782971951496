"""Coordinate frequency attention: direction, position and frequency in one gate.

Coordinate attention (Hou et al., CVPR 2021) pools a map along each axis separately, so
its weights keep the *position* along that axis and the *direction* of the axis;
frequency channel attention (Qin et al., FcaNet, ICCV 2021) replaces the average pool
(the lowest DCT frequency) by several DCT frequencies, one per channel group. This block
combines both: for every axis ``a`` it computes a descriptor ``(B, C, S_a)`` by
contracting the map over all *other* axes with a DCT basis whose frequency depends on
the channel's group, so each group sees another frequency component of the orthogonal
profile. A shared ``1 x 1`` transform of all descriptors, then one ``1 x 1`` transform
and a sigmoid per axis, give one gate per axis; the output is the input times the
product of the gates (broadcast over the grid).

Everything is derived from ``x.ndim``: the same module serves 2D (two descriptors,
``H`` and ``W``) and 3D (three).
"""

from __future__ import annotations

import itertools
import math
import string

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.factories import check_spatial_dims, make_act

__all__ = ["CoordFrequencyAttention", "dct_basis", "low_frequencies"]


def low_frequencies(spatial_dims: int, count: int) -> list[tuple[int, ...]]:
    """The ``count`` lowest DCT frequency tuples of an ``spatial_dims``-D grid.

    Ordered by the highest index, then the sum, then lexicographically, so 2D gives
    ``(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), ...``.

    Raises:
        ModelError: ``count`` below 1.
    """
    if count < 1:
        raise ModelError(f"low_frequencies: count={count} must be >= 1")
    side = math.ceil(count ** (1 / spatial_dims)) + 1
    grid = itertools.product(range(side), repeat=spatial_dims)
    return sorted(grid, key=lambda f: (max(f), sum(f), f))[:count]


def dct_basis(
    length: int,
    freqs: torch.Tensor,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """DCT-II basis vectors ``b_u(n) = c_u cos(pi (n + 1/2) u / L)`` for ``n < L``.

    ``c_0 = 1 / L`` (so frequency 0 is the average) and ``c_u = sqrt(2) / L`` for
    ``u > 0``. A frequency ``>= L`` is clamped to ``L - 1`` (the highest an axis of
    length ``L`` holds).

    Args:
        length: axis length ``L``.
        freqs: integer frequencies, any shape ``F``.

    Returns:
        ``(*F, L)``.
    """
    u = freqs.to(device=device).clamp(max=length - 1).to(dtype or torch.float32)
    n = torch.arange(length, device=device, dtype=u.dtype) + 0.5
    scale = torch.where(u == 0, 1.0 / length, math.sqrt(2.0) / length)
    return torch.cos(math.pi * u[..., None] * n / length) * scale[..., None]


class CoordFrequencyAttention(nn.Module):
    """Per-axis gates from DCT-pooled directional descriptors (see the module docstring).

    Shapes: ``(B, channels, *spatial)`` -> ``(B, channels, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        channels: channels ``C``.
        reduction: width of the shared transform is ``max(min_hidden, C // reduction)``.
        num_freqs: channel groups, each pooled with its own DCT frequency tuple (the
            ``num_freqs`` lowest, :func:`low_frequencies`); at most ``C``.
        min_hidden: lower bound of the shared width.
        act: activation of the shared transform.

    Raises:
        ModelError: ``num_freqs`` outside ``[1, channels]``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        reduction: int = 16,
        num_freqs: int = 4,
        min_hidden: int = 8,
        act: str = "hardswish",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "CoordFrequencyAttention")
        if not 1 <= num_freqs <= channels:
            raise ModelError(
                f"CoordFrequencyAttention: num_freqs={num_freqs} must be in [1, channels={channels}]"
            )
        freqs = torch.tensor(low_frequencies(spatial_dims, num_freqs), dtype=torch.long)
        group = torch.arange(channels) * num_freqs // channels
        # (C, spatial_dims): the frequency tuple of each channel's group
        self.register_buffer("channel_freqs", freqs[group], persistent=False)
        hidden = max(min_hidden, channels // reduction)
        self.shared = nn.Sequential(
            nn.Conv1d(channels, hidden, 1, bias=False),
            nn.BatchNorm1d(hidden),
            make_act(act),
        )
        self.gates = nn.ModuleList(nn.Conv1d(hidden, channels, 1) for _ in range(spatial_dims))
        self.channels, self.num_freqs = channels, num_freqs

    def descriptors(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Directional frequency descriptors, one ``(B, C, S_a)`` per spatial axis ``a``.

        Descriptor ``a`` is ``x`` contracted over every axis ``b != a`` with the DCT
        vector of frequency ``channel_freqs[c, b]``.
        """
        spatial = x.shape[2:]
        letters = string.ascii_lowercase[: len(spatial)]
        bases = [
            dct_basis(size, self.channel_freqs[:, b], device=x.device, dtype=x.dtype)
            for b, size in enumerate(spatial)
        ]
        out = []
        for a in range(len(spatial)):
            others = [b for b in range(len(spatial)) if b != a]
            expr = (
                f"yz{letters}," + ",".join(f"z{letters[b]}" for b in others) + f"->yz{letters[a]}"
            )
            out.append(torch.einsum(expr, x, *(bases[b] for b in others)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, C, *spatial)``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.channels:
            raise ModelError(
                f"CoordFrequencyAttention: expected (B, {self.channels}, "
                f"{self.spatial_dims} spatial axes), got {tuple(x.shape)}"
            )
        desc = self.descriptors(x)
        sizes = [d.shape[-1] for d in desc]
        hidden = self.shared(torch.cat(desc, dim=-1))
        out = x
        for a, (part, gate) in enumerate(zip(hidden.split(sizes, dim=-1), self.gates)):
            weight = torch.sigmoid(gate(part))  # (B, C, S_a)
            shape = [x.shape[0], x.shape[1]] + [1] * self.spatial_dims
            shape[2 + a] = sizes[a]
            out = out * weight.reshape(shape)
        return out
