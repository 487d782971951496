"""Cross-modal blocks for models that take several named modalities (PET, CT, ...).

- :func:`split_modalities`: the one place that turns a model's input into one tensor
  per modality: a dict ``{name: (B, C_m, *spatial)}`` (what the training engine passes
  to models with a ``modalities`` attribute), or a tensor ``(B, sum C_m, *spatial)``
  whose channels are the modalities concatenated in the model's order (what tracing,
  profiling and ``check_contract`` pass). A missing or unexpected modality is a
  :class:`~medcls.errors.ModelError` that names it.
- :class:`CrossAttention`: spatial attention whose queries come from one map and whose
  keys/values come from another (optionally strided) map.
- :class:`ChannelCrossAttention`: "transposed" attention between the channels of two
  maps on the same grid; global over every position at a cost linear in their number.
- :class:`LCCAM`: lightweight cross-modal collaborative attention between two
  modality streams (channel weights from both streams' descriptors, spatial weights
  from both streams' maps), a few hundred parameters.
- :class:`TokenCrossAttention`: multi-head attention from one modality's tokens
  ``(B, N, C)`` to another's, with a residual connection and a layer norm (the block
  of :class:`~medcls.models.fusion.CrossAttentionFusion`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.factories import check_spatial_dims, conv_type, make_norm
from medcls.models.layers.resample import PoolReducer

__all__ = [
    "LCCAM",
    "ChannelCrossAttention",
    "CrossAttention",
    "TokenCrossAttention",
    "check_modalities",
    "split_modalities",
]


def check_modalities(
    modalities: Sequence[str], in_chans: int, where: str, count: int | None = None
) -> tuple[tuple[str, ...], int]:
    """Validates a model's modality names against its ``in_chans``.

    Args:
        modalities: modality names, in channel order.
        in_chans: total input channels; split evenly between the modalities.
        where: the model's name for messages.
        count: the exact number of modalities the model needs, if fixed.

    Returns:
        ``(names, channels_per_modality)``.

    Raises:
        ModelError: a non-string/duplicate name, a wrong count, or ``in_chans`` that the
            modalities do not split evenly.
    """
    if isinstance(modalities, str) or not all(isinstance(m, str) and m for m in modalities):
        raise ModelError(f"{where}: modalities={modalities!r}, expected a list of names")
    names = tuple(modalities)
    if len(set(names)) != len(names):
        raise ModelError(f"{where}: modalities={list(names)} repeats a name")
    if count is not None and len(names) != count:
        raise ModelError(
            f"{where}: modalities={list(names)}, expected exactly {count} names "
            f"(e.g. ['pet', 'ct'])"
        )
    if not names or in_chans % len(names):
        raise ModelError(
            f"{where}: in_chans={in_chans} must split evenly between the "
            f"{len(names)} modalities {list(names)}"
        )
    return names, in_chans // len(names)


def split_modalities(
    x: torch.Tensor | Mapping[str, torch.Tensor],
    modalities: Sequence[str],
    chans: int,
    where: str,
) -> list[torch.Tensor]:
    """One tensor per modality, in the order of ``modalities``.

    Args:
        x: a dict ``{name: (B, chans, *spatial)}`` with exactly the names in
            ``modalities``, or a tensor ``(B, len(modalities) * chans, *spatial)``.
        modalities: the model's modality names.
        chans: channels of each modality.
        where: the model's name for messages.

    Returns:
        ``[(B, chans, *spatial), ...]``.

    Raises:
        ModelError: a missing or unexpected modality, a wrong channel count, or
            modalities on different grids.
    """
    if isinstance(x, Mapping):
        missing = [m for m in modalities if m not in x]
        if missing:
            raise ModelError(
                f"{where}: input modality {missing[0]!r} is missing; the model takes "
                f"{list(modalities)} and got {sorted(x)} (set model.kwargs.modalities to "
                "the data's modality names)"
            )
        extra = [k for k in x if k not in modalities]
        if extra:
            raise ModelError(
                f"{where}: unexpected input modality {extra[0]!r}; the model takes "
                f"{list(modalities)}"
            )
        parts = [x[m] for m in modalities]
        for name, part in zip(modalities, parts):
            if not isinstance(part, torch.Tensor) or part.ndim < 3 or part.shape[1] != chans:
                shape = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part)
                raise ModelError(
                    f"{where}: modality {name!r} has shape {shape}, expected (B, {chans}, *spatial)"
                )
        grids = {tuple(p.shape[2:]) for p in parts}
        if len(grids) != 1 or len({p.shape[0] for p in parts}) != 1:
            raise ModelError(
                f"{where}: modalities must share batch size and grid, got "
                + ", ".join(f"{m}: {tuple(p.shape)}" for m, p in zip(modalities, parts))
            )
        return parts
    if not isinstance(x, torch.Tensor):
        raise ModelError(
            f"{where}: expected a dict {{modality: tensor}} or a tensor, got {type(x).__name__}"
        )
    if x.ndim < 3 or x.shape[1] != chans * len(modalities):
        raise ModelError(
            f"{where}: a tensor input must be (B, {chans * len(modalities)}, *spatial): "
            f"the modalities {list(modalities)} concatenated along channels; got "
            f"{tuple(x.shape)}"
        )
    return list(x.split(chans, dim=1))


class CrossAttention(nn.Module):
    """Multi-head attention: queries from ``x``, keys/values from ``context``.

    ``q = W_q x``; ``k, v = W_kv reduce(context)`` where ``reduce`` is a batch norm, or
    for ``kv_stride > 1`` a :class:`~medcls.models.layers.resample.PoolReducer` (pool,
    depthwise conv, norm) that cuts the keys by ``kv_stride^n``;
    ``out = W_o softmax(q k^T / sqrt(d)) v``. All projections are ``1^n`` convolutions.

    Shapes: ``x`` ``(B, dim, *S)``, ``context`` ``(B, context_dim, *S_c)`` ->
    ``(B, dim, *S)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels of ``x`` and of the attention.
        context_dim: channels of ``context`` (default ``dim``).
        num_heads: heads (divides ``dim``).
        kv_stride: stride of the key/value reduction.
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        context_dim: int | None = None,
        num_heads: int = 1,
        kv_stride: int = 1,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "CrossAttention")
        if num_heads < 1 or dim % num_heads:
            raise ModelError(f"CrossAttention: num_heads={num_heads} must divide dim={dim}")
        context_dim = context_dim or dim
        conv = conv_type(spatial_dims)
        self.dim, self.num_heads = dim, num_heads
        self.reduce = (
            PoolReducer(spatial_dims, context_dim, kv_stride)
            if kv_stride > 1
            else make_norm("batch", spatial_dims, context_dim)
        )
        self.q = conv(dim, dim, 1, bias=False)
        self.kv = conv(context_dim, 2 * dim, 1, bias=False)
        self.proj = conv(dim, dim, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *S)``, ``(B, context_dim, *S_c)`` -> ``(B, dim, *S)``."""
        batch, spatial = x.shape[0], x.shape[2:]
        head_dim = self.dim // self.num_heads
        q = self.q(x).reshape(batch, self.num_heads, head_dim, -1).transpose(-1, -2)
        kv = self.kv(self.reduce(context)).reshape(batch, 2, self.num_heads, head_dim, -1)
        k, v = kv.transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(-1, -2).reshape(batch, self.dim, *spatial))


class ChannelCrossAttention(nn.Module):
    """Transposed (channel) attention: queries from ``x``, keys/values from ``context``.

    Per head, queries and keys are L2-normalised over the positions and the
    ``d x d`` channel affinity ``softmax(t * q k^T)`` (``t`` a learnt temperature)
    mixes the value channels; every position contributes to every weight, so the
    mechanism is global, at ``O(N d^2)`` cost instead of ``O(N^2 d)``.

    Shapes: ``x`` ``(B, dim, *S)``, ``context`` ``(B, context_dim, *S)`` (same grid)
    -> ``(B, dim, *S)``.

    Args:
        spatial_dims: 2 or 3.
        dim: channels of ``x`` and of the attention.
        context_dim: channels of ``context`` (default ``dim``).
        num_heads: heads (divides ``dim``).
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        context_dim: int | None = None,
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "ChannelCrossAttention")
        if num_heads < 1 or dim % num_heads:
            raise ModelError(f"ChannelCrossAttention: num_heads={num_heads} must divide dim={dim}")
        conv = conv_type(spatial_dims)
        self.dim, self.num_heads = dim, num_heads
        self.q = conv(dim, dim, 1, bias=False)
        self.kv = conv(context_dim or dim, 2 * dim, 1, bias=False)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.proj = conv(dim, dim, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *S)``, ``(B, context_dim, *S)`` -> ``(B, dim, *S)``."""
        if x.shape[2:] != context.shape[2:]:
            raise ModelError(
                f"ChannelCrossAttention: x {tuple(x.shape)} and context "
                f"{tuple(context.shape)} must share the grid"
            )
        batch, spatial = x.shape[0], x.shape[2:]
        head_dim = self.dim // self.num_heads
        q = F.normalize(self.q(x).reshape(batch, self.num_heads, head_dim, -1), dim=-1)
        k, v = self.kv(context).reshape(batch, 2, self.num_heads, head_dim, -1).unbind(1)
        attn = torch.softmax((q @ F.normalize(k, dim=-1).transpose(-1, -2)) * self.temperature, -1)
        return self.proj((attn @ v).reshape(batch, self.dim, *spatial))


class LCCAM(nn.Module):
    """Lightweight cross-modal collaborative attention between two streams.

    Channel weights: the two streams' pooled descriptors ``(B, 2, C)`` pass through one
    1D convolution over the channel axis (kernel ``kernel_size``, 2 -> 2 maps, ECA-style:
    local cross-channel and cross-modal interaction without a dense layer); sigmoid ->
    one weight per channel and stream, each computed from *both* streams. Spatial
    weights: the mean and max over channels of both streams ``(B, 4, *S)``, one ``k^n``
    convolution -> 2 maps, sigmoid. Each stream is enhanced residually:
    ``a' = a + a * w_a * s_a`` and ``b' = b + b * w_b * s_b``.

    Shapes: ``a``, ``b`` ``(B, C, *S)`` -> ``(a', b')`` of the same shapes.

    Args:
        spatial_dims: 2 or 3.
        channels: channels ``C`` of both streams.
        kernel_size: odd kernel of the channel (1D) and spatial (``k^n``) convolutions.
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "LCCAM")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"LCCAM: kernel_size={kernel_size} must be odd")
        self.channels = channels
        self.channel_mix = nn.Conv1d(2, 2, kernel_size, padding=kernel_size // 2)
        self.spatial_mix = conv_type(spatial_dims)(4, 2, kernel_size, padding=kernel_size // 2)

    def weights(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel weights ``(B, 2, C)`` and spatial weights ``(B, 2, *S)`` in ``(0, 1)``."""
        axes = tuple(range(2, a.ndim))
        desc = torch.stack([a.mean(dim=axes), b.mean(dim=axes)], dim=1)  # (B, 2, C)
        channel = torch.sigmoid(self.channel_mix(desc))
        maps = torch.cat(
            [
                a.mean(dim=1, keepdim=True),
                a.amax(dim=1, keepdim=True),
                b.mean(dim=1, keepdim=True),
                b.amax(dim=1, keepdim=True),
            ],
            dim=1,
        )
        return channel, torch.sigmoid(self.spatial_mix(maps))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, *S)``, ``(B, C, *S)`` -> the two enhanced streams."""
        if a.shape != b.shape or a.shape[1] != self.channels:
            raise ModelError(
                f"LCCAM: both streams must be (B, {self.channels}, *S), got "
                f"{tuple(a.shape)} and {tuple(b.shape)}"
            )
        channel, spatial = self.weights(a, b)
        view = (a.shape[0], self.channels) + (1,) * (a.ndim - 2)
        wa, wb = channel[:, 0].reshape(view), channel[:, 1].reshape(view)
        return a + a * wa * spatial[:, :1], b + b * wb * spatial[:, 1:]


class TokenCrossAttention(nn.Module):
    """Multi-head attention from query tokens to context tokens, residual + layer norm.

    ``out = LayerNorm(x + drop(W_o softmax(q k^T / sqrt(d)) v))`` with ``q = W_q x`` and
    ``k, v = W_kv context``. Tokens are any sequence: the patch tokens of a
    Transformer, or the cells of a flattened feature map.

    Shapes: ``x`` ``(B, N, dim)``, ``context`` ``(B, M, context_dim)`` -> ``(B, N, dim)``.

    Args:
        dim: channels of ``x`` and of the attention.
        context_dim: channels of ``context`` (default ``dim``).
        num_heads: heads (divides ``dim``).
        drop_rate: dropout on the attention output before the residual sum.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int | None = None,
        num_heads: int = 1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ModelError(f"TokenCrossAttention: num_heads={num_heads} must divide dim={dim}")
        self.dim, self.num_heads = dim, num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop_rate)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)``, ``(B, M, context_dim)`` -> ``(B, N, dim)``."""
        batch, n = x.shape[:2]
        head_dim = self.dim // self.num_heads
        q = self.q(x).reshape(batch, n, self.num_heads, head_dim).transpose(1, 2)
        kv = self.kv(context).reshape(batch, context.shape[1], 2, self.num_heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, n, self.dim)
        return self.norm(x + self.drop(self.proj(out)))
