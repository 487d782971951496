"""Helpers shared by the restructuring operations (module lookup and replacement)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
from torch import nn

from medcls.errors import ModelError

__all__ = [
    "classifier_names",
    "first_conv_name",
    "model_label",
    "module_or_error",
    "replace_module",
    "small_input",
    "under",
]


def model_label(model: nn.Module) -> str:
    """The registry name of ``model`` (``model_cfg.name``), else its class name."""
    return str(getattr(getattr(model, "model_cfg", None), "name", None) or type(model).__name__)


def under(name: str, prefixes: Iterable[str]) -> bool:
    """True if module/parameter ``name`` is one of ``prefixes`` or lies below one."""
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def module_or_error(model: nn.Module, name: str, what: str) -> nn.Module:
    """``model.get_submodule(name)``, or a :class:`ModelError` naming the nearest names."""
    names = [n for n, _ in model.named_modules() if n]
    if name not in names:
        near = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        top = ", ".join(n for n, _ in model.named_children())
        raise ModelError(
            f"{model_label(model)}: {what} {name!r} is not a module of the model{hint} "
            f"(top-level modules: {top})"
        )
    return model.get_submodule(name)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Puts ``new`` where the sub-module ``name`` is (``"a.b.3"`` style names)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def first_conv_name(model: nn.Module) -> str:
    """The first convolution: ``model_cfg.first_conv``, else the first conv module.

    Raises:
        ModelError: the model has no convolution.
    """
    name = getattr(getattr(model, "model_cfg", None), "first_conv", None)
    modules = dict(model.named_modules())
    if name and isinstance(modules.get(name), nn.modules.conv._ConvNd):
        return name
    found = next((n for n, m in modules.items() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if found is None:
        raise ModelError(f"{model_label(model)}: no convolution found to take the input channels")
    return found


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Module names of the classifier(s) (``model_cfg.classifier``), existing ones only."""
    names = tuple(getattr(getattr(model, "model_cfg", None), "classifier", ()) or ())
    modules = dict(model.named_modules())
    return tuple(n for n in names if n in modules)


def model_stride(model: nn.Module) -> int:
    """The model's total stride: its last contract stage's reduction (32 if unknown)."""
    stages = getattr(model, "feature_stages", None) or []
    return max([int(s.reduction) for s in stages] or [32])


def small_input(model: nn.Module, what: str) -> torch.Tensor:
    """A seeded random input ``(1, C, *spatial)`` for a check or trace forward pass.

    The spatial size is ``model_cfg.input_size`` with every side capped at
    ``max(32, stride)`` (unless the size is fixed): small, yet it reaches the last stage.

    Raises:
        ModelError: a model without ``model_cfg`` or one taking a dict of modalities.
    """
    cfg = getattr(model, "model_cfg", None)
    if cfg is None or getattr(model, "modalities", None):
        raise ModelError(f"{what}({model_label(model)}): cannot make an input; pass example=")
    sides = [int(s) for s in cfg.input_size[1:]]
    if not cfg.fixed_input_size:
        cap = max(32, model_stride(model))
        sides = [min(s, cap) for s in sides]
    param = next(iter(model.parameters()), None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, int(cfg.input_size[0]), *sides, generator=gen)
    return x if param is None else x.to(device=param.device, dtype=param.dtype)
