"""Directional convolution: line kernels along every axis and a dilated kernel, in parallel.

In 2D the branches are a vertical ``k x 1`` and a lateral ``1 x k`` kernel and a
dilated ``k x k`` kernel; in 3D ``k x 1 x 1``, ``1 x k x 1``, ``1 x 1 x k`` and a
dilated ``k x k x k``. Their outputs are summed, so the block sees thin structures
along each axis and a wide context at the cost of ``(n + k^n)`` taps per channel pair
(``n`` = spatial dims). With ``stride > 1`` it also shrinks the map, which is how the
directional Transformer compresses its keys and values.

Each branch is a static convolution or, with ``dynamic=True``, a :class:`DynamicConv`
whose kernel is dedicated to each sample; the branches then share one router.
"""

from __future__ import annotations

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import bn_scale_shift
from medcls.models.layers.dynamic import DynamicConv, ExpertRouter
from medcls.models.layers.factories import (
    check_spatial_dims,
    conv_type,
    make_norm,
    same_padding,
    sum_outputs,
)

__all__ = ["DirectionalConv"]


class DirectionalConv(nn.Module):
    """Parallel per-axis line kernels plus a dilated full kernel, summed and normalised.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *ceil(spatial / stride))``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        out_chans: output channels (default ``in_chans``).
        kernel_size: odd length ``k`` of the line kernels and side of the dilated one.
        dilation: dilation of the full ``k^n`` kernel; ``0`` leaves that branch out.
        stride: stride of every branch (the same for all, so the outputs align).
        groups: convolution groups; default depthwise when ``out_chans`` is a multiple
            of ``in_chans``, else 1.
        dynamic: per-sample kernels (mixture of experts, one grouped conv per branch).
        num_experts: experts per branch when ``dynamic``.
        num_chunks: chunks of output channels with their own mixture when ``dynamic``.
        router_reduction: router hidden width divisor when ``dynamic``.
        norm: normalisation after the sum (``batch`` folds into the branches in
            :meth:`reparameterize`).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int | None = None,
        kernel_size: int = 3,
        dilation: int = 2,
        stride: int = 1,
        groups: int | None = None,
        dynamic: bool = False,
        num_experts: int = 4,
        num_chunks: int = 1,
        router_reduction: int = 4,
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "DirectionalConv")
        out_chans = out_chans or in_chans
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"DirectionalConv: kernel_size={kernel_size} must be odd and >= 1")
        if dilation < 0:
            raise ModelError(f"DirectionalConv: dilation={dilation} must be >= 0 (0 = no branch)")
        if groups is None:
            groups = in_chans if out_chans % in_chans == 0 else 1
        self.in_chans, self.out_chans, self.stride = in_chans, out_chans, stride
        self.dynamic = bool(dynamic)
        shapes: dict[str, tuple[tuple[int, ...], int]] = {}
        for axis in range(spatial_dims):
            kernel = [1] * spatial_dims
            kernel[axis] = kernel_size
            shapes[f"line{axis}"] = (tuple(kernel), 1)
        if dilation:
            shapes["dilated"] = ((kernel_size,) * spatial_dims, dilation)
        self.branches = nn.ModuleDict()
        for name, (kernel, dil) in shapes.items():
            if self.dynamic:
                branch: nn.Module = DynamicConv(
                    spatial_dims,
                    in_chans,
                    out_chans,
                    kernel,
                    stride=stride,
                    dilation=dil,
                    groups=groups,
                    num_experts=num_experts,
                    num_chunks=num_chunks,
                    router=False,
                )
            else:
                branch = conv_type(spatial_dims)(
                    in_chans,
                    out_chans,
                    kernel,
                    stride=stride,
                    padding=same_padding(kernel, (dil,) * spatial_dims),
                    dilation=dil,
                    groups=groups,
                    bias=False,
                )
            self.branches[name] = branch
        self.router = (
            ExpertRouter(in_chans, num_experts, num_chunks, router_reduction)
            if self.dynamic
            else None
        )
        self.norm = make_norm(norm, spatial_dims, out_chans)
        self.register_parameter("bias", None)  # set when a batch norm is folded in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial')``."""
        if self.router is not None:
            routing = self.router(x)
            out = sum_outputs(branch(x, routing) for branch in self.branches.values())
        else:
            out = sum_outputs(branch(x) for branch in self.branches.values())
        if self.bias is not None:
            out = out + self.bias.view(1, -1, *([1] * self.spatial_dims))
        return self.norm(out)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Folds an eval-mode batch norm into the branch kernels and one bias (exact)."""
        if not isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            return
        scale, shift = bn_scale_shift(self.norm)
        for branch in self.branches.values():
            axis = 1 if isinstance(branch, DynamicConv) else 0  # output-channel axis
            shape = [1] * branch.weight.ndim
            shape[axis] = -1
            branch.weight.mul_(scale.view(shape))
        old = torch.zeros_like(shift) if self.bias is None else self.bias
        self.bias = nn.Parameter(old * scale + shift)
        self.norm = nn.Identity()
