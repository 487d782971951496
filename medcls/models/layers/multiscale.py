"""Residual multi-scale block: parallel dilated convolutions with a residual shortcut.

Branch ``i`` is a ``3^n`` convolution with dilation ``d_i`` (receptive fields 3, 5, 7,
... per axis for dilations 1, 2, 3), so one block responds to structures of several
sizes; a ``1^n`` convolution fuses the concatenated branches and a shortcut (identity,
or average pool + ``1^n`` conv when the shape changes) adds the input back, which keeps
gradients flowing through deep stacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import ConvNormAct
from medcls.models.layers.factories import check_spatial_dims, make_act
from medcls.models.layers.resample import pool_down

__all__ = ["ResidualMultiScaleBlock"]


class ResidualMultiScaleBlock(nn.Module):
    """``act(fuse(cat_i branch_i(reduce(x))) + shortcut(x))``.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *ceil(spatial / stride))``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        out_chans: output channels.
        stride: stride of every branch (and of the shortcut's pooling).
        dilations: one ``3^n`` branch per dilation.
        width: channels of each branch (default ``out_chans // 2``).
        group_width: channels per group in the branch convolutions (0: dense convs).
        act: activation.

    Raises:
        ModelError: no dilations, or a width that the group width does not divide.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        stride: int = 1,
        dilations: Sequence[int] = (1, 2, 3),
        width: int | None = None,
        group_width: int = 0,
        act: str = "relu",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "ResidualMultiScaleBlock")
        if not dilations:
            raise ModelError("ResidualMultiScaleBlock: dilations must list at least one value")
        width = width or max(1, out_chans // 2)
        if group_width and width % group_width:
            raise ModelError(
                f"ResidualMultiScaleBlock: group_width={group_width} must divide width={width}"
            )
        groups = width // group_width if group_width else 1
        n = spatial_dims
        self.reduce = ConvNormAct(n, in_chans, width, 1, act=act)
        self.branches = nn.ModuleList(
            ConvNormAct(n, width, width, 3, stride=stride, dilation=d, groups=groups, act=act)
            for d in dilations
        )
        self.fuse = ConvNormAct(n, width * len(dilations), out_chans, 1, act=None)
        self.stride = stride
        self.shortcut = (
            nn.Identity()
            if in_chans == out_chans and stride == 1
            else ConvNormAct(n, in_chans, out_chans, 1, act=None)
        )
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *ceil(spatial / stride))``."""
        y = self.reduce(x)
        y = self.fuse(torch.cat([branch(y) for branch in self.branches], dim=1))
        skip = pool_down(x, self.stride)
        return self.act(y + self.shortcut(skip))
