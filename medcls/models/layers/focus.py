"""Focus block: a crop centred by attention, zoomed back to full size by interpolation.

The block computes a spatial attention distribution ``p`` over the grid (a ``1^n``
projection and a softmax over positions). Its mean position is the crop centre and its
spread sets the crop's half-extent along every axis, so the crop follows the region the
attention selects and shrinks around a peaked attention, filtering the background. The
crop is resampled to the full grid with (bi/tri)linear interpolation of the
neighbouring cells (a zoom), which enlarges the lesion's detail. Centre and extent are
smooth functions of ``p`` and the sampling is linear in the grid coordinates, so the
whole block is differentiable, attention included.

Coordinates are normalised to ``[-1, 1]`` per axis (``align_corners=False``), as in
:func:`torch.nn.functional.affine_grid`, which does the resampling for 2D and 3D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import ConvNormAct
from medcls.models.layers.factories import check_spatial_dims, conv_type

__all__ = ["FocusBlock", "focus_box", "zoom_crop"]


def _axis_coords(size: int, like: torch.Tensor) -> torch.Tensor:
    """Normalised centres of ``size`` cells: ``(2 i + 1) / size - 1``."""
    return (torch.arange(size, device=like.device, dtype=like.dtype) * 2 + 1) / size - 1


def focus_box(
    weights: torch.Tensor, spread: float = 2.0, min_half: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop centre and half-extent from a spatial distribution.

    Per axis, with ``mu`` and ``sigma`` the mean and standard deviation of the
    distribution's marginal (normalised coordinates), the half-extent is
    ``h = min_half + (1 - min_half) (1 - exp(-spread sigma))`` (``min_half`` for a point
    mass, towards 1 for a spread-out attention) and the centre ``c = mu (1 - h)``, which
    keeps the box ``[c - h, c + h]`` inside ``[-1, 1]`` and always contains ``mu``. Both
    are smooth in the weights (no clipping), so the attention always gets a gradient.

    Args:
        weights: ``(B, 1, *S)`` non-negative, summing to 1 over the grid per sample.
        spread: how fast the box grows with the attention's standard deviation.
        min_half: the smallest half-extent (1 = the whole axis), i.e. the zoom is at
            most ``1 / min_half``.

    Returns:
        ``(centre, half)``, each ``(B, n)`` in normalised coordinates, axis order as in
        ``S``.
    """
    spatial = weights.shape[2:]
    centres, halves = [], []
    for a, size in enumerate(spatial):
        other = tuple(2 + b for b in range(len(spatial)) if b != a)
        marginal = weights.sum(dim=other).flatten(1) if other else weights.flatten(1)
        coords = _axis_coords(size, weights)
        mean = (marginal * coords).sum(dim=1)
        var = (marginal * (coords - mean[:, None]) ** 2).sum(dim=1)
        grow = 1 - torch.exp(-spread * torch.sqrt(var + 1e-8))
        half = min_half + (1 - min_half) * grow
        centres.append(mean * (1 - half))
        halves.append(half)
    return torch.stack(centres, dim=1), torch.stack(halves, dim=1)


def zoom_crop(
    x: torch.Tensor, centre: torch.Tensor, half: torch.Tensor, mode: str = "bilinear"
) -> torch.Tensor:
    """Resamples the box ``centre +- half`` of ``x`` onto the full grid of ``x``.

    Args:
        x: ``(B, C, *S)`` (2 or 3 spatial axes).
        centre: ``(B, n)`` normalised centre per axis (axis order of ``S``).
        half: ``(B, n)`` normalised half-extent per axis (1 = the whole axis).
        mode: ``bilinear`` (linear in every axis, also for 3D) or ``nearest``
            (no gradient to ``centre``/``half``).

    Returns:
        ``(B, C, *S)``; ``centre = 0, half = 1`` returns ``x`` (up to rounding).
    """
    # (B, n, n + 1) = [diag(half) | centre]; affine_grid orders coordinates (x, y, z),
    # i.e. the last spatial axis first
    scale = torch.diag_embed(half.flip(1).to(x.dtype))
    theta = torch.cat([scale, centre.flip(1).to(x.dtype)[..., None]], dim=-1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


class FocusBlock(nn.Module):
    """Centre-attention crop and neighbourhood-interpolation zoom, fused with the input.

    ``p = softmax(attn(x))`` over positions; ``(centre, half) = focus_box(p)``;
    ``z = zoom_crop(x, centre, half)``; output ``act(norm(a_c x_c + b_c z_c))``, a learnt
    per-channel blend (a grouped ``1^n`` :class:`ConvNormAct`), so the network keeps the
    full view beside the zoomed one.

    Shapes: ``(B, channels, *spatial)`` -> ``(B, channels, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        channels: channels.
        spread: growth of the crop with the attention's spread (see :func:`focus_box`).
        min_half: smallest half-extent (largest zoom ``1 / min_half``).
        mode: interpolation of the zoom, ``bilinear`` or ``nearest``.
        act: activation of the fusion.

    Raises:
        ModelError: ``min_half`` outside ``(0, 1]`` or an unknown ``mode``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        spread: float = 2.0,
        min_half: float = 0.5,
        mode: str = "bilinear",
        act: str = "relu",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "FocusBlock")
        if not 0.0 < min_half <= 1.0:
            raise ModelError(f"FocusBlock: min_half={min_half} must be in (0, 1]")
        if mode not in ("bilinear", "nearest"):
            raise ModelError(f"FocusBlock: mode={mode!r}, expected 'bilinear' or 'nearest'")
        self.spread, self.min_half, self.mode = float(spread), float(min_half), mode
        self.attn = conv_type(spatial_dims)(channels, 1, 1)
        # per-channel blend of the full and the zoomed view: channel c of the output
        # reads channels (x_c, z_c) of the interleaved pair (groups = channels)
        self.fuse = ConvNormAct(spatial_dims, 2 * channels, channels, 1, groups=channels, act=act)

    def box(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The crop ``(centre, half)`` (each ``(B, n)``) that the attention selects for ``x``."""
        logits = self.attn(x)
        weights = torch.softmax(logits.flatten(2), dim=-1).view_as(logits)
        return focus_box(weights, self.spread, self.min_half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, channels, *spatial)`` -> ``(B, channels, *spatial)``."""
        centre, half = self.box(x)
        zoomed = zoom_crop(x, centre, half, self.mode)
        return self.fuse(torch.stack([x, zoomed], dim=2).flatten(1, 2))
