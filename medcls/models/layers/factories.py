"""Layer factories keyed by ``spatial_dims``: one call site for 2D and 3D blocks.

In the spirit of MONAI's ``Conv[Conv.CONV, spatial_dims]``, but small and without
importing MONAI: a block asks for ``conv_type(spatial_dims)`` or
``make_norm("batch", spatial_dims, channels)`` and never names ``Conv2d`` or ``Conv3d``.

Example::

    conv = conv_type(3)(8, 16, kernel_size=3, padding=1)   # nn.Conv3d
    norm = make_norm("batch", 3, 16)                       # nn.BatchNorm3d(16)
    act = make_act("gelu")
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "adaptive_avg_pool",
    "avg_pool",
    "check_spatial_dims",
    "conv_fn",
    "conv_type",
    "make_act",
    "make_norm",
    "same_padding",
    "sum_outputs",
    "to_tuple",
]

NORMS = ("batch", "instance", "group", "none")
ACTIVATIONS = ("relu", "relu6", "gelu", "silu", "hardswish", "none")


def check_spatial_dims(spatial_dims: int, where: str = "layer") -> int:
    """Returns ``spatial_dims`` if it is 2 or 3.

    Raises:
        ModelError: any other value.
    """
    if spatial_dims not in (2, 3):
        raise ModelError(f"{where}: spatial_dims={spatial_dims!r}, expected 2 or 3")
    return int(spatial_dims)


def to_tuple(value: int | Sequence[int], spatial_dims: int, name: str = "value") -> tuple[int, ...]:
    """Expands an int to ``spatial_dims`` copies; checks a sequence's length.

    Raises:
        ModelError: a sequence whose length is not ``spatial_dims``.
    """
    if isinstance(value, int):
        return (int(value),) * spatial_dims
    out = tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ModelError(f"{name}={tuple(value)} has {len(out)} entries, expected {spatial_dims}")
    return out


def same_padding(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Padding that keeps the size at stride 1 for odd kernels: ``d * (k - 1) // 2``."""
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel_size, dilation))


def conv_type(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[check_spatial_dims(spatial_dims, "conv_type")]


def conv_fn(spatial_dims: int):
    """``F.conv2d`` or ``F.conv3d`` (functional form, for kernels computed at run time)."""
    return {2: F.conv2d, 3: F.conv3d}[check_spatial_dims(spatial_dims, "conv_fn")]


def make_norm(name: str | None, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer over ``(B, channels, *spatial)``.

    Args:
        name: ``batch``, ``instance`` (affine), ``group`` (8 groups or fewer, dividing
            ``channels``), or ``none``/``None`` (identity).
        spatial_dims: 2 or 3.
        channels: number of channels.

    Raises:
        ModelError: an unknown name.
    """
    spatial_dims = check_spatial_dims(spatial_dims, "make_norm")
    key = "none" if name is None else str(name).lower()
    if key == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if key == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, affine=True)
    if key == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if key == "none":
        return nn.Identity()
    raise ModelError(f"norm {name!r} unknown: expected one of {NORMS}")


def make_act(name: str | None) -> nn.Module:
    """An activation module: ``relu``, ``relu6``, ``gelu``, ``silu``, ``hardswish`` or ``none``.

    Raises:
        ModelError: an unknown name.
    """
    key = "none" if name is None else str(name).lower()
    table = {
        "relu": lambda: nn.ReLU(inplace=True),
        "relu6": lambda: nn.ReLU6(inplace=True),
        "gelu": nn.GELU,
        "silu": lambda: nn.SiLU(inplace=True),
        "hardswish": lambda: nn.Hardswish(inplace=True),
        "none": nn.Identity,
    }
    if key not in table:
        raise ModelError(f"activation {name!r} unknown: expected one of {ACTIVATIONS}")
    return table[key]()


def avg_pool(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Average pooling with stride = kernel over every spatial axis of ``(B, C, *spatial)``.

    Odd sizes are padded (``ceil_mode``) so no border row is dropped.
    """
    pool = {4: F.avg_pool2d, 5: F.avg_pool3d}[x.ndim]
    return pool(x, kernel_size, kernel_size, ceil_mode=True, count_include_pad=False)


def adaptive_avg_pool(x: torch.Tensor, output_size: int | Sequence[int]) -> torch.Tensor:
    """Adaptive average pooling of ``(B, C, *spatial)`` to ``output_size`` (2D or 3D)."""
    pool = {4: F.adaptive_avg_pool2d, 5: F.adaptive_avg_pool3d}[x.ndim]
    return pool(x, output_size)


def sum_outputs(outputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum of branch outputs, starting from the first one.

    Python's ``sum`` starts from ``0`` and so adds a scalar first: one more kernel
    launch and one more pass over memory for every multi-branch block.
    """
    it = iter(outputs)
    try:
        out = next(it)
    except StopIteration:
        raise ValueError("sum_outputs: no outputs to sum") from None
    for other in it:
        out = out + other
    return out
