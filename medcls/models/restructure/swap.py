"""Swapping activation or normalisation layers across a model, 2D or 3D.

Only layers that are modules can be swapped: an activation called as a function in a
``forward`` (``F.relu(x)``) is out of reach, and a model without any matching module
raises a :class:`ModelError` rather than silently staying unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.factories import ACTIVATIONS
from medcls.models.restructure._common import model_label, replace_module

__all__ = ["ACT_SOURCES", "NORM_SOURCES", "NORM_TARGETS", "NormAct", "swap_act", "swap_norm"]

# activation kind -> torch classes, and class names of other libraries' versions
_ACT_CLASSES: dict[str, tuple[tuple[type[nn.Module], ...], tuple[str, ...]]] = {
    "relu": ((nn.ReLU,), ("relu",)),
    "relu6": ((nn.ReLU6,), ("relu6",)),
    "leaky_relu": ((nn.LeakyReLU,), ("leakyrelu",)),
    "elu": ((nn.ELU,), ("elu",)),
    "gelu": ((nn.GELU,), ("gelu", "gelutanh", "quickgelu")),
    "silu": ((nn.SiLU,), ("silu", "swish")),
    "hardswish": ((nn.Hardswish,), ("hardswish",)),
    "mish": ((nn.Mish,), ("mish",)),
}
# hidden-layer activations; gates (sigmoid, tanh, softmax) are never swapped
ACT_SOURCES: tuple[str, ...] = tuple(_ACT_CLASSES)
NORM_SOURCES: tuple[str, ...] = ("batch", "instance", "group")
NORM_TARGETS: tuple[str, ...] = ("batch", "instance", "group")


def _act_kind(module: nn.Module) -> str | None:
    name = type(module).__name__.lower()
    for kind, (classes, names) in _ACT_CLASSES.items():
        if isinstance(module, classes) or name in names:
            return kind
    return None


def _new_act(name: str) -> nn.Module:
    """A fresh, never in-place activation (safe wherever the old one was)."""
    return {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "hardswish": nn.Hardswish,
    }[name]()


def swap_act(model: nn.Module, act: str, *, source: Sequence[str] = ACT_SOURCES) -> list[str]:
    """Replaces activation modules of the ``source`` kinds by ``act``, in place.

    The new activations are not in-place (an in-place one could overwrite a tensor a
    residual connection still needs). Gating functions (sigmoid, tanh, softmax) are
    not activations here and stay.

    Example::

        swap_act(model, "gelu", source=["relu"])     # ReLU -> GELU

    Args:
        model: any module.
        act: ``relu``, ``relu6``, ``gelu``, ``silu`` or ``hardswish``.
        source: kinds to replace, from :data:`ACT_SOURCES` (default: all of them).

    Returns:
        the names of the replaced modules.

    Raises:
        ModelError: unknown names, or no module of the ``source`` kinds.
    """
    label = model_label(model)
    targets = tuple(a for a in ACTIVATIONS if a != "none")
    if act not in targets:
        raise ModelError(f"swap_act({label}): act={act!r}, expected one of {targets}")
    unknown = [s for s in source if s not in ACT_SOURCES]
    if unknown or not source:
        raise ModelError(
            f"swap_act({label}): source {list(source)} must name kinds of {ACT_SOURCES}"
        )
    names = [n for n, m in model.named_modules() if n and _act_kind(m) in source]
    if not names:
        raise ModelError(
            f"swap_act({label}): no activation module of kinds {list(source)} "
            "(activations called as functions cannot be swapped)"
        )
    for name in names:
        replace_module(model, name, _new_act(act).train(model.training))
    return names


class NormAct(nn.Module):
    """A norm followed by the dropout and activation a fused norm+act layer applied.

    Replaces a layer such as timm's ``BatchNormAct2d`` when its norm is swapped.
    """

    def __init__(self, norm: nn.Module, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.norm, self.drop, self.act = norm, drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(x)))


def _norm_kind(module: nn.Module) -> tuple[str, int | None] | None:
    """``(kind, spatial_dims)`` of a channel-first norm over spatial maps, else None."""
    if isinstance(module, nn.SyncBatchNorm):
        return "batch", None
    for kind, classes in (
        ("batch", (nn.BatchNorm2d, nn.BatchNorm3d)),
        ("instance", (nn.InstanceNorm2d, nn.InstanceNorm3d)),
    ):
        for dims, cls in zip((2, 3), classes):
            if isinstance(module, cls):
                return kind, dims
    if isinstance(module, nn.GroupNorm):
        return "group", None
    return None


def _channels(module: nn.Module) -> int:
    return int(getattr(module, "num_features", None) or module.num_channels)


def _groups_for(channels: int, groups: int | None) -> int:
    if groups is None:
        return next(g for g in (8, 4, 2, 1) if channels % g == 0)
    if channels % groups:
        raise ModelError(f"GroupNorm: {channels} channels are not divisible by groups={groups}")
    return groups


def _new_norm(kind: str, dims: int, channels: int, groups: int | None) -> nn.Module:
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    if kind == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels, affine=True)
    return nn.GroupNorm(_groups_for(channels, groups), channels)


@torch.no_grad()
def swap_norm(
    model: nn.Module,
    norm: str,
    *,
    source: Sequence[str] = ("batch",),
    groups: int | None = None,
) -> list[str]:
    """Replaces channel-first normalisation layers by ``norm``, in place.

    Affine parameters (``weight``, ``bias``, shape ``(C,)``) are copied when both
    layers have them; running statistics start afresh. A timm-style norm+activation
    layer (a batch norm subclass with ``drop`` and ``act`` children) becomes a
    :class:`NormAct` that keeps its dropout and activation. Norms over vectors or
    sequences (``BatchNorm1d``) and layer norms over tokens are left alone.

    Example::

        swap_norm(model, "group")                       # BatchNorm -> GroupNorm(8)
        swap_norm(model, "instance", source=["batch"])

    Args:
        model: a model following the contract (``model.spatial_dims`` gives the
            dims of group norms turned into batch or instance norms).
        norm: ``batch``, ``instance`` (affine) or ``group``.
        source: kinds to replace among :data:`NORM_SOURCES`.
        groups: groups of new group norms; ``None``: 8 or fewer, dividing the channels.

    Returns:
        the names of the replaced modules.

    Raises:
        ModelError: unknown names, a ``groups`` that does not divide a layer's
            channels, or no layer of the ``source`` kinds.
    """
    label = model_label(model)
    if norm not in NORM_TARGETS:
        raise ModelError(f"swap_norm({label}): norm={norm!r}, expected one of {NORM_TARGETS}")
    unknown = [s for s in source if s not in NORM_SOURCES]
    if unknown or not source:
        raise ModelError(
            f"swap_norm({label}): source {list(source)} must name kinds of {NORM_SOURCES}"
        )
    found = [
        (n, m, kind)
        for n, m in model.named_modules()
        if n and (kind := _norm_kind(m)) is not None and kind[0] in source
    ]
    if not found:
        raise ModelError(
            f"swap_norm({label}): no normalisation layer of kinds {list(source)} over spatial maps"
        )
    model_dims = int(getattr(model, "spatial_dims", 2))
    names = []
    for name, old, (_, dims) in found:
        new = _new_norm(norm, dims or model_dims, _channels(old), groups)
        w, b = getattr(old, "weight", None), getattr(old, "bias", None)
        if w is not None and new.weight is not None and w.shape == new.weight.shape:
            new.weight.copy_(w)
            new.bias.copy_(b)
        if w is not None:
            new = new.to(device=w.device, dtype=w.dtype)
            new.weight.requires_grad_(w.requires_grad)
            new.bias.requires_grad_(w.requires_grad)
        if isinstance(getattr(old, "act", None), nn.Module):
            new = NormAct(new, getattr(old, "drop", nn.Identity()), old.act)
        replace_module(model, name, new.train(old.training))
        names.append(name)
    return names
