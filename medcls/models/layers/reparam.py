"""Re-parameterisable ``k^n`` convolution: several branches to train, one kernel to infer.

During training the block sums parallel branches, each a convolution followed by its
own batch norm: the full ``k^n`` kernel, a ``1^n`` kernel, optional line kernels along
every axis (``1 x k``, ``k x 1``, ...) and, when the shape allows, an identity branch (a
batch norm alone). All of them are linear in the input and share the stride and the
centre, so after training :meth:`RepConv.reparameterize` folds each batch norm into its
kernel, pads the small kernels to ``k^n`` around the centre and adds everything into
one convolution with a bias. The inference form computes the same function (up to
floating-point rounding) at the cost of a single convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import fuse_conv_bn
from medcls.models.layers.factories import (
    check_spatial_dims,
    conv_type,
    make_act,
    make_norm,
    sum_outputs,
)

__all__ = ["RepConv"]


class _ConvBN(nn.Module):
    """A bias-free convolution and its batch norm (one training-time branch)."""

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        kernel: tuple[int, ...],
        stride: int,
        groups: int,
    ) -> None:
        super().__init__()
        self.conv = conv_type(spatial_dims)(
            in_chans,
            out_chans,
            kernel,
            stride=stride,
            padding=tuple(k // 2 for k in kernel),
            groups=groups,
            bias=False,
        )
        self.norm = make_norm("batch", spatial_dims, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class RepConv(nn.Module):
    """A ``k^n`` convolution trained as parallel branches and fused for inference.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *ceil(spatial / stride))``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        out_chans: output channels.
        kernel_size: odd side ``k`` of the main kernel.
        stride: stride (the same for all branches).
        groups: convolution groups (``in_chans == out_chans == groups``: depthwise).
        use_1x1: add the ``1^n`` branch.
        use_axial: add one line-kernel branch per axis (``k`` along it, 1 elsewhere).
        use_identity: add the identity (batch norm only) branch; default when
            ``in_chans == out_chans`` and ``stride == 1``.
        act: activation after the sum (``none`` for a linear block).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        use_1x1: bool = True,
        use_axial: bool = False,
        use_identity: bool | None = None,
        act: str | None = "relu",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "RepConv")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"RepConv: kernel_size={kernel_size} must be odd and >= 1")
        if in_chans % groups or out_chans % groups:
            raise ModelError(
                f"RepConv: in_chans={in_chans} and out_chans={out_chans} "
                f"must be divisible by groups={groups}"
            )
        identity_ok = in_chans == out_chans and stride == 1
        if use_identity and not identity_ok:
            raise ModelError(
                f"RepConv: an identity branch needs in_chans == out_chans and stride 1 "
                f"(got {in_chans} -> {out_chans}, stride {stride})"
            )
        self.in_chans, self.out_chans = in_chans, out_chans
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        n, k = spatial_dims, kernel_size
        self.branches = nn.ModuleDict(
            {"full": _ConvBN(n, in_chans, out_chans, (k,) * n, stride, groups)}
        )
        if use_1x1 and k > 1:
            self.branches["point"] = _ConvBN(n, in_chans, out_chans, (1,) * n, stride, groups)
        if use_axial and k > 1:
            for axis in range(n):
                kernel = tuple(k if a == axis else 1 for a in range(n))
                self.branches[f"line{axis}"] = _ConvBN(
                    n, in_chans, out_chans, kernel, stride, groups
                )
        self.identity = (
            make_norm("batch", n, out_chans)
            if (identity_ok if use_identity is None else use_identity)
            else None
        )
        self.fused: nn.Module | None = None
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial')``."""
        if self.fused is not None:
            return self.act(self.fused(x))
        out = sum_outputs(branch(x) for branch in self.branches.values())
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(out)

    def _pad_to_full(self, weight: torch.Tensor) -> torch.Tensor:
        """Zero-pads a kernel ``(O, I, *kernel)`` to ``k^n`` around the centre."""
        pads: list[int] = []
        for size in reversed(weight.shape[2:]):  # F.pad lists the last axis first
            side = (self.kernel_size - size) // 2
            pads += [side, side]
        return F.pad(weight, pads)

    def _identity_kernel(self, like: torch.Tensor) -> torch.Tensor:
        """The ``k^n`` kernel of the identity map (one 1 per output channel)."""
        per_group = self.in_chans // self.groups
        kernel = torch.zeros(
            self.out_chans,
            per_group,
            *(self.kernel_size,) * self.spatial_dims,
            dtype=like.dtype,
            device=like.device,
        )
        centre = (self.kernel_size // 2,) * self.spatial_dims
        channels = torch.arange(self.out_chans, device=like.device)
        kernel[(channels, channels % per_group, *centre)] = 1.0
        return kernel

    @torch.no_grad()
    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single kernel ``(O, I / groups, *k^n)`` and bias ``(O,)`` of all branches.

        Uses the batch norms' running statistics (the eval-mode function).
        """
        weight = bias = None
        for branch in self.branches.values():
            w, b = fuse_conv_bn(branch.conv.weight, None, branch.norm)
            w = self._pad_to_full(w)
            weight = w if weight is None else weight + w
            bias = b if bias is None else bias + b
        if self.identity is not None:
            w, b = fuse_conv_bn(self._identity_kernel(weight), None, self.identity)
            weight, bias = weight + w, bias + b
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replaces the branches by one convolution with bias (eval-mode equivalent)."""
        if self.fused is not None:
            return
        weight, bias = self.fused_kernel()
        conv = conv_type(self.spatial_dims)(
            self.in_chans,
            self.out_chans,
            self.kernel_size,
            stride=self.stride,
            padding=self.kernel_size // 2,
            groups=self.groups,
            bias=True,
        ).to(device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.fused = conv
        self.branches = nn.ModuleDict()
        self.identity = None

    def extra_repr(self) -> str:
        state = "fused" if self.fused is not None else f"branches={list(self.branches)}"
        return (
            f"{self.in_chans}, {self.out_chans}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, groups={self.groups}, {state}"
        )
