"""Convolution + normalisation + activation, batch-norm folding, and model-wide fusion.

:class:`ConvNormAct` is the basic block of the native models. Its
:meth:`~ConvNormAct.reparameterize` folds an eval-mode batch norm into the convolution;
:func:`reparameterize_model` calls every block's ``reparameterize()`` so a whole model
switches to its inference form with one call (``model.reparameterize()``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.factories import (
    check_spatial_dims,
    conv_type,
    make_act,
    make_norm,
    same_padding,
    to_tuple,
)

__all__ = ["ConvNormAct", "bn_scale_shift", "fuse_conv_bn", "reparameterize_model"]


def bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine map ``y = scale * x + shift`` an eval-mode batch norm applies per channel.

    Args:
        bn: a ``BatchNorm{1,2,3}d`` with running statistics.

    Returns:
        ``(scale, shift)``, each ``(C,)``.

    Raises:
        ModelError: ``bn`` is not a batch norm with running statistics.
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_var is None:
        raise ModelError(
            f"cannot fold {type(bn).__name__}: only batch norms with running statistics fold"
        )
    std = torch.sqrt(bn.running_var + bn.eps)
    weight = bn.weight if bn.weight is not None else torch.ones_like(std)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean * scale


def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Folds ``bn(conv(x))`` into one convolution's kernel and bias.

    Args:
        weight: conv kernel ``(C_out, C_in / groups, *kernel)``.
        bias: conv bias ``(C_out,)`` or None.
        bn: the batch norm that follows (``C_out`` channels).

    Returns:
        ``(weight, bias)`` of the equivalent convolution.
    """
    scale, shift = bn_scale_shift(bn)
    fused_w = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    fused_b = shift if bias is None else shift + bias * scale
    return fused_w, fused_b


class ConvNormAct(nn.Module):
    """Convolution, normalisation, activation, for any ``spatial_dims``.

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial / stride)``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        out_chans: output channels.
        kernel_size: int or one size per spatial axis.
        stride: int or per axis.
        dilation: int or per axis.
        groups: convolution groups (``in_chans`` for depthwise).
        norm: ``batch``, ``instance``, ``group`` or ``none`` (see ``make_norm``).
        act: ``relu``, ``gelu``, ``silu``, ``hardswish``, ``relu6`` or ``none``.
        bias: conv bias; default: only when there is no normalisation.
        padding: default keeps the size at stride 1 (``dilation * (k - 1) // 2``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        bias: bool | None = None,
        padding: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "ConvNormAct")
        if in_chans % groups or out_chans % groups:
            raise ModelError(
                f"ConvNormAct: in_chans={in_chans} and out_chans={out_chans} "
                f"must be divisible by groups={groups}"
            )
        k = to_tuple(kernel_size, spatial_dims, "kernel_size")
        d = to_tuple(dilation, spatial_dims, "dilation")
        pad = same_padding(k, d) if padding is None else to_tuple(padding, spatial_dims, "padding")
        has_norm = norm is not None and str(norm).lower() != "none"
        self.conv = conv_type(spatial_dims)(
            in_chans,
            out_chans,
            k,
            stride=to_tuple(stride, spatial_dims, "stride"),
            padding=pad,
            dilation=d,
            groups=groups,
            bias=(not has_norm) if bias is None else bias,
        )
        self.norm = make_norm(norm, spatial_dims, out_chans)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial')``."""
        return self.act(self.norm(self.conv(x)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Folds an eval-mode batch norm into the convolution (other norms are kept)."""
        if not isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            return
        w, b = fuse_conv_bn(self.conv.weight, self.conv.bias, self.norm)
        conv = self.conv
        fused = type(conv)(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
        ).to(device=w.device, dtype=w.dtype)
        fused.weight.copy_(w)
        fused.bias.copy_(b)
        self.conv = fused
        self.norm = nn.Identity()


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Switches every sub-module that has ``reparameterize()`` to its inference form.

    Children are fused before their parents (post-order), so a block may rely on its
    parts being fused already. The model is put in eval mode first: folding uses the
    batch norms' running statistics.

    Args:
        model: any module.

    Returns:
        ``model`` (changed in place).
    """
    model.eval()
    blocks = [
        m
        for m in model.modules()
        if m is not model and callable(getattr(m, "reparameterize", None))
    ]
    for block in reversed(blocks):  # modules() is pre-order; reversed visits children first
        block.reparameterize()
    return model
