"""Windowed self-attention for any number of spatial axes (Swin, Video Swin).

Swin (Liu et al., ICCV 2021) and Video Swin (Liu et al., CVPR 2022) split the token
grid into non-overlapping windows and attend inside each window; every second block
shifts the grid cyclically by half a window so information crosses window borders.
Everything here works for a grid of any number of axes, with the window given per axis:

- :func:`pad_to_multiple`: zero-pads axes so a grid tiles into windows;
- :func:`window_partition` / :func:`window_reverse`: ``(B, *grid, C)`` channels-last
  tokens to ``(B, windows, N, C)`` (``N = prod(window)``) and back;
- :func:`effective_window`: Video Swin's rule, a window no larger than the grid (and no
  shift along an axis the window covers whole);
- :func:`relative_position_index`: index of each query-key offset into a bias table of
  ``prod(2 w - 1)`` entries;
- :func:`shifted_window_mask`: the additive mask that keeps the cyclic shift from mixing
  tokens that are not neighbours, and keeps padding out of every window's keys;
- :class:`WindowAttention`: multi-head attention over all windows at once with a learned
  relative position bias;
- :class:`ShiftedWindowAttention`: the token mixer of a Swin block: pad, shift, partition,
  attend, and undo all three, on channels-last tokens ``(B, *grid, C)``.

Padding differs from the Swin code on purpose: the original pads the grid with zeros
and lets real tokens attend to them (only at detection input sizes; 224² never pads).
Here padded tokens are masked out of the keys, so a padded grid computes the same
function on its real tokens as an unpadded one would with partial windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.tokens import MultiHeadAttention

__all__ = [
    "MASK_VALUE",
    "ShiftedWindowAttention",
    "WindowAttention",
    "effective_window",
    "pad_to_multiple",
    "relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]

#: additive attention bias between tokens that must not interact (Swin's value: finite,
#: so a query whose keys are all masked gets uniform weights instead of NaN)
MASK_VALUE = -100.0


def pad_to_multiple(x: torch.Tensor, multiple: Sequence[int], start: int) -> torch.Tensor:
    """Zero-pads axes ``start .. start + len(multiple) - 1`` at their end to multiples.

    Args:
        x: any tensor, e.g. ``(B, *grid, C)`` (``start=1``) or ``(B, C, *grid)`` (``start=2``).
        multiple: one multiple per padded axis.
        start: the first padded axis.

    Returns:
        ``x`` itself when every axis is already a multiple, else the padded tensor.
    """
    pads: list[int] = []
    for axis in reversed(range(start, x.ndim)):  # F.pad lists the last axis first
        offset = axis - start
        extra = (-x.shape[axis]) % multiple[offset] if offset < len(multiple) else 0
        pads += [0, extra]
    return F.pad(x, pads) if any(pads) else x


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Channels-last tokens ``(B, *grid, C)`` -> windows ``(B, nW, prod(window), C)``.

    Every grid axis must be a multiple of its window side (see :func:`pad_to_multiple`).
    Windows are numbered in row-major order of their position in the grid.
    """
    batch, *grid, chans = x.shape
    n = len(window)
    split: list[int] = []
    for size, side in zip(grid, window):
        split += [size // side, side]
    x = x.reshape(batch, *split, chans)
    order = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1]
    return x.permute(order).reshape(batch, -1, math.prod(window), chans)


def window_reverse(
    windows: torch.Tensor, window: Sequence[int], grid: Sequence[int]
) -> torch.Tensor:
    """Windows ``(B, nW, prod(window), C)`` -> channels-last tokens ``(B, *grid, C)``."""
    batch, chans, n = windows.shape[0], windows.shape[-1], len(window)
    counts = [size // side for size, side in zip(grid, window)]
    x = windows.reshape(batch, *counts, *window, chans)
    order = [0]
    for axis in range(n):
        order += [1 + axis, 1 + n + axis]
    return x.permute(*order, 2 * n + 1).reshape(batch, *grid, chans)


def effective_window(
    grid: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The window and shift used on ``grid``: an axis the window covers gets no shift.

    Along an axis no longer than its window side, the window shrinks to the axis and the
    shift is 0 (one window spans the axis, so shifting would only wrap it around).
    """
    sides = tuple(min(int(g), int(w)) for g, w in zip(grid, window))
    shifts = tuple(0 if int(g) <= int(w) else int(s) for g, w, s in zip(grid, window, shift))
    return sides, shifts


def relative_position_index(
    window: Sequence[int], table_window: Sequence[int] | None = None, device=None
) -> torch.Tensor:
    """Index of each (query, key) offset inside a window into a relative-position table.

    The table has ``prod(2 t - 1)`` entries for ``table_window = t`` (per axis); offsets
    along axis ``a`` run from ``-(t_a - 1)`` to ``t_a - 1``. A window smaller than the
    table's (an axis clamped by :func:`effective_window`) uses the central part.

    Args:
        window: the window ``(w_1, ..., w_n)`` whose tokens are indexed.
        table_window: the window the table was built for (default ``window``).
        device: device of the result.

    Returns:
        ``(N, N)`` int64 indices, ``N = prod(window)``.
    """
    table_window = tuple(window if table_window is None else table_window)
    axes = [torch.arange(int(w), device=device) for w in window]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).flatten(1)  # (n, N)
    offsets = coords[:, :, None] - coords[:, None, :]  # (n, N, N)
    index = torch.zeros_like(offsets[0])
    for axis, side in enumerate(table_window):
        index = index * (2 * side - 1) + offsets[axis] + side - 1
    return index


def shifted_window_mask(
    grid: Sequence[int],
    padded: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    device=None,
) -> torch.Tensor | None:
    """Additive mask ``(nW, N, N)`` for windows of a cyclically shifted, padded grid.

    The grid (real size ``grid``, zero-padded to ``padded``) is rolled by ``-shift``
    before partitioning. Along each shifted axis the rolled grid has three regions:
    ``[0, P - w)``, ``[P - w, P - s)`` and ``[P - s, P)`` (``P`` padded size, ``w`` window,
    ``s`` shift); tokens of different regions were not neighbours before the roll and
    must not attend to each other. Padded tokens form a region of their own, so no real
    token attends to padding.

    Returns:
        ``MASK_VALUE`` where attention is blocked, 0 elsewhere; None when the grid is
        neither shifted nor padded (nothing to mask).
    """
    n = len(grid)
    if not any(shift) and tuple(grid) == tuple(padded):
        return None
    label = torch.zeros(tuple(padded), dtype=torch.long, device=device)
    for axis in range(n):
        size, side, step = int(padded[axis]), int(window[axis]), int(shift[axis])
        region = torch.zeros(size, dtype=torch.long, device=device)
        if step:
            region[size - side : size - step] = 1
            region[size - step :] = 2
        label = label * 3 + region.reshape([size if a == axis else 1 for a in range(n)])
    real = torch.zeros(tuple(padded), dtype=torch.bool, device=device)
    real[tuple(slice(0, int(g)) for g in grid)] = True
    real = torch.roll(real, [-int(s) for s in shift], dims=tuple(range(n)))
    label = torch.where(real, label, torch.full_like(label, -1))
    windows = window_partition(label[None, ..., None], window)[0, :, :, 0]  # (nW, N)
    blocked = windows[:, :, None] != windows[:, None, :]
    return torch.zeros(blocked.shape, device=device).masked_fill(blocked, MASK_VALUE)


class WindowAttention(MultiHeadAttention):
    """Multi-head self-attention inside windows, with a relative position bias.

    The bias table holds one learned value per head and per query-key offset of a
    ``window`` (``prod(2 w - 1)`` offsets); windows smaller than ``window`` (grids smaller
    than the window) read its central part.

    Shapes: windows ``(B, nW, N, dim)`` -> ``(B, nW, N, dim)``.

    Args:
        dim: token width.
        num_heads: heads (divides ``dim``).
        window: window side per axis (its length is the number of spatial axes).
        qkv_bias: biases in the query/key/value projection.
        attn_drop: dropout on the attention weights; proj_drop: on the output.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Sequence[int],
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.window = tuple(int(w) for w in window)
        if not self.window or min(self.window) < 1:
            raise ModelError(f"WindowAttention: window={window} needs sides >= 1")
        size = math.prod(2 * w - 1 for w in self.window)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(size, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, window: Sequence[int]) -> torch.Tensor:
        """The relative position bias ``(heads, N, N)`` of a window of sides ``window``."""
        table = self.relative_position_bias_table
        index = relative_position_index(window, self.window, table.device)
        n = index.shape[0]
        return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Windows ``(B, nW, N, dim)`` -> ``(B, nW, N, dim)``.

        Args:
            x: the tokens of each window.
            bias: additive attention bias broadcastable to ``(B, nW, heads, N, N)``
                (relative position bias plus the shift/padding mask).
        """
        batch, count, n, dim = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(batch, count, n, 3, heads, dim // heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, heads, N, d)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0
        )
        out = out.transpose(2, 3).reshape(batch, count, n, dim)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"window={self.window}, num_heads={self.num_heads}"


class ShiftedWindowAttention(nn.Module):
    """Window attention on channels-last tokens, optionally on the shifted grid.

    Pads the grid to a multiple of the window, rolls it by ``-shift`` (shifted blocks),
    attends inside each window with the relative position bias and the mask of
    :func:`shifted_window_mask`, then undoes the roll and the padding. Along an axis no
    longer than the window, one window covers the axis and nothing is shifted
    (:func:`effective_window`).

    Shapes: ``(B, *G, dim)`` -> ``(B, *G, dim)``.

    Args:
        dim: token width.
        num_heads: heads (divides ``dim``).
        window: window side per axis.
        shifted: shift by half a window (``w // 2`` per axis).
        qkv_bias: biases in the query/key/value projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Sequence[int],
        shifted: bool = False,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.window = tuple(int(w) for w in window)
        self.shift = tuple(w // 2 if shifted else 0 for w in self.window)
        self.attn = WindowAttention(dim, num_heads, self.window, qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *G, dim)`` -> ``(B, *G, dim)``."""
        grid = tuple(x.shape[1:-1])
        axes = tuple(range(1, len(grid) + 1))
        window, shift = effective_window(grid, self.window, self.shift)
        x = pad_to_multiple(x, window, start=1)
        padded = tuple(x.shape[1:-1])
        if any(shift):
            x = torch.roll(x, [-s for s in shift], dims=axes)
        bias = self.attn.position_bias(window)  # (heads, N, N)
        mask = shifted_window_mask(grid, padded, window, shift, x.device)
        if mask is not None:
            bias = bias + mask[:, None]  # (nW, heads, N, N)
        x = window_reverse(self.attn(window_partition(x, window), bias), window, padded)
        if any(shift):
            x = torch.roll(x, list(shift), dims=axes)
        return x[(slice(None), *(slice(0, g) for g in grid))]

    def extra_repr(self) -> str:
        return f"window={self.window}, shift={self.shift}"
