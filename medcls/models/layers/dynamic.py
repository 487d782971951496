"""Per-sample dynamic convolution computed as one grouped convolution over the batch.

Every sample ``b`` gets its own kernel ``W_b = sum_e a[b, r, e] * W_e``: a mixture of
``num_experts`` static kernels whose weights ``a`` a small router computes from the
sample's pooled features, separately for each of ``num_chunks`` chunks of output
channels (each chunk learns its own mixture). The whole batch is then convolved in
one call: the batch is folded into the channel axis, ``(1, B * C_in, *spatial)``, and
the per-sample kernels are stacked along the output axis with ``groups = B * groups``,
so sample ``b`` only meets its own kernel. There is no Python loop over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.conv import bn_scale_shift
from medcls.models.layers.factories import (
    check_spatial_dims,
    conv_fn,
    same_padding,
    to_tuple,
)

__all__ = ["DynamicConv", "ExpertRouter"]


class ExpertRouter(nn.Module):
    """Per-sample, per-chunk mixture weights over the experts.

    ``(B, C, *spatial)`` -> global average pool -> ``Linear(C, hidden)`` -> ReLU ->
    ``Linear(hidden, num_chunks * num_experts)`` -> softmax over experts (divided by
    ``temperature``) -> ``(B, num_chunks, num_experts)``.

    Args:
        in_chans: channels ``C`` of the input.
        num_experts: number of expert kernels ``E``.
        num_chunks: number of channel chunks ``R`` that each get their own mixture.
        reduction: ``hidden = max(C // reduction, 8)``.
        temperature: softmax temperature (larger = closer to a uniform mixture).
    """

    def __init__(
        self,
        in_chans: int,
        num_experts: int,
        num_chunks: int = 1,
        reduction: int = 4,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if num_experts < 1 or num_chunks < 1:
            raise ModelError(
                f"ExpertRouter: num_experts={num_experts} and num_chunks={num_chunks} must be >= 1"
            )
        hidden = max(in_chans // reduction, 8)
        self.num_experts = num_experts
        self.num_chunks = num_chunks
        self.temperature = float(temperature)
        self.fc1 = nn.Linear(in_chans, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_chunks * num_experts)
        nn.init.normal_(self.fc2.weight, std=0.01)  # start near a uniform mixture
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> mixture weights ``(B, num_chunks, num_experts)`` (rows sum to 1)."""
        pooled = x.mean(dim=tuple(range(2, x.ndim)))
        logits = self.fc2(self.act(self.fc1(pooled)))
        logits = logits.view(x.shape[0], self.num_chunks, self.num_experts)
        return torch.softmax(logits / self.temperature, dim=-1)


class DynamicConv(nn.Module):
    """A convolution whose kernel is dedicated to each sample (mixture of experts).

    Shapes: ``(B, in_chans, *spatial)`` -> ``(B, out_chans, *spatial / stride)``.

    The experts are ``weight`` ``(E, out_chans, in_chans / groups, *kernel)``; the
    per-sample kernels (:meth:`sample_kernels`) are ``(B, out_chans, in_chans / groups,
    *kernel)``. ``groups`` splits the channels into chunks that do not mix (use a channel
    mixer after it); ``num_chunks`` chunks of output channels get separate mixture
    weights. A router can be shared by several convolutions of one block: build them
    with ``router=False`` and pass ``routing`` to :meth:`forward`.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        out_chans: output channels.
        kernel_size: int or per axis (e.g. ``(1, 5)`` for a lateral line kernel).
        stride: int or per axis.
        dilation: int or per axis.
        groups: convolution groups per sample (``in_chans`` = depthwise).
        num_experts: experts ``E`` mixed per sample.
        num_chunks: chunks of output channels with their own mixture (divides
            ``out_chans``).
        router: build an own :class:`ExpertRouter` (False: routing is passed in).
        router_reduction: the router's hidden width divisor.
        bias: add a learnt bias per output channel.
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
        num_experts: int = 4,
        num_chunks: int = 1,
        router: bool = True,
        router_reduction: int = 4,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, "DynamicConv")
        if in_chans % groups or out_chans % groups:
            raise ModelError(
                f"DynamicConv: in_chans={in_chans} and out_chans={out_chans} "
                f"must be divisible by groups={groups}"
            )
        if num_chunks < 1 or out_chans % num_chunks:
            raise ModelError(
                f"DynamicConv: num_chunks={num_chunks} must divide out_chans={out_chans}"
            )
        self.in_chans, self.out_chans, self.groups = in_chans, out_chans, groups
        self.num_experts, self.num_chunks = num_experts, num_chunks
        self.kernel_size = to_tuple(kernel_size, spatial_dims, "kernel_size")
        self.stride = to_tuple(stride, spatial_dims, "stride")
        self.dilation = to_tuple(dilation, spatial_dims, "dilation")
        self.padding = same_padding(self.kernel_size, self.dilation)
        self.weight = nn.Parameter(
            torch.empty(num_experts, out_chans, in_chans // groups, *self.kernel_size)
        )
        for expert in self.weight.data:  # each expert initialised like a plain conv
            nn.init.kaiming_uniform_(expert, a=5**0.5)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_chans))
        else:
            self.register_parameter("bias", None)
        self.router = (
            ExpertRouter(in_chans, num_experts, num_chunks, router_reduction) if router else None
        )

    def sample_kernels(self, routing: torch.Tensor) -> torch.Tensor:
        """Per-sample kernels from mixture weights.

        Args:
            routing: ``(B, num_chunks, num_experts)``.

        Returns:
            ``(B, out_chans, in_chans / groups, *kernel)``.
        """
        batch = routing.shape[0]
        experts = self.weight.view(self.num_experts, self.num_chunks, -1)
        kernels = torch.einsum("bre,erk->brk", routing, experts)
        return kernels.reshape(
            batch, self.out_chans, self.in_chans // self.groups, *self.kernel_size
        )

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Mixture weights ``(B, num_chunks, num_experts)`` from the own router."""
        if self.router is None:
            raise ModelError("DynamicConv was built with router=False: pass routing to forward()")
        return self.router(x)

    def forward(self, x: torch.Tensor, routing: torch.Tensor | None = None) -> torch.Tensor:
        """Convolves every sample with its own kernel, the whole batch in one call.

        Args:
            x: ``(B, in_chans, *spatial)``.
            routing: ``(B, num_chunks, num_experts)``; computed by the own router if None.

        Returns:
            ``(B, out_chans, *spatial')``.
        """
        if routing is None:
            routing = self.route(x)
        batch = x.shape[0]
        kernels = self.sample_kernels(routing).reshape(
            batch * self.out_chans, self.in_chans // self.groups, *self.kernel_size
        )
        bias = None if self.bias is None else self.bias.repeat(batch)
        out = conv_fn(self.spatial_dims)(
            x.reshape(1, batch * self.in_chans, *x.shape[2:]),
            kernels,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=batch * self.groups,
        )
        return out.view(batch, self.out_chans, *out.shape[2:])

    @torch.no_grad()
    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Folds a per-channel ``y = scale * conv(x) + shift`` into the experts and bias.

        Exact because every per-sample kernel is linear in the experts.

        Args:
            scale: ``(out_chans,)``.
            shift: ``(out_chans,)``.
        """
        self.weight.mul_(scale.reshape(1, -1, *([1] * (self.weight.ndim - 2))))
        new_bias = shift if self.bias is None else self.bias * scale + shift
        self.bias = nn.Parameter(new_bias.clone())

    def fold_batch_norm(self, bn: nn.Module) -> None:
        """Folds an eval-mode batch norm that follows this convolution (see ``fold_affine``)."""
        self.fold_affine(*bn_scale_shift(bn))

    def extra_repr(self) -> str:
        return (
            f"{self.in_chans}, {self.out_chans}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, dilation={self.dilation}, groups={self.groups}, "
            f"num_experts={self.num_experts}, num_chunks={self.num_chunks}"
        )
