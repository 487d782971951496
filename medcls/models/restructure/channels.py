"""Changing a model's input channels while keeping its first-layer weights.

Two rules turn a first-conv kernel ``w`` of shape ``(O, C_old, *k)`` into one with
``C_new`` input channels:

- ``mean``: every new channel gets ``sum_i w[:, i] / C_new``
  (:func:`medcls.models.weights.adapt_input_conv_weight`, the rule checkpoints are
  loaded with). An input whose ``C_new`` channels are all equal (a grey image, one
  modality repeated) gets exactly the response the old model gave to it.
- ``repeat``: new channel ``j`` gets ``w[:, j mod C_old] * C_old / C_new``: the old
  channels cycle, scaled so the response to ``C_new / C_old`` stacked copies of an
  old input is unchanged (timm's rule for pretrained weights with more channels).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.restructure._common import first_conv_name, model_label
from medcls.models.weights import adapt_input_conv_weight

__all__ = ["IN_CHANS_MODES", "adapt_weight", "set_in_chans", "weights_in_chans"]

InChansMode = Literal["mean", "repeat"]
IN_CHANS_MODES: tuple[str, ...] = ("mean", "repeat")


def adapt_weight(weight: torch.Tensor, in_chans: int, mode: InChansMode = "mean") -> torch.Tensor:
    """Adapts a kernel ``(O, C_old, *k)`` to ``(O, in_chans, *k)`` by ``mode``.

    Raises:
        ModelError: an unknown mode or ``in_chans < 1``.
    """
    if mode not in IN_CHANS_MODES:
        raise ModelError(f"in_chans mode {mode!r} unknown: expected one of {IN_CHANS_MODES}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ModelError(f"in_chans={in_chans!r}, expected an integer >= 1")
    old = weight.shape[1]
    if in_chans == old:
        return weight
    if mode == "mean":
        return adapt_input_conv_weight(weight, in_chans)
    reps = math.ceil(in_chans / old)
    tiled = weight.float().repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_chans]
    return (tiled * (old / in_chans)).contiguous().to(weight.dtype)


def _fit_stats(values: tuple[float, ...], in_chans: int, mode: str) -> tuple[float, ...]:
    if len(values) == in_chans:
        return values
    if mode == "repeat":
        return tuple(values[j % len(values)] for j in range(in_chans))
    return (sum(values) / len(values),) * in_chans


@torch.no_grad()
def set_in_chans(model: nn.Module, in_chans: int, mode: InChansMode = "mean") -> nn.Module:
    """Changes the input channels of ``model`` in place, adapting the first conv's weights.

    The first convolution is ``model.model_cfg.first_conv`` (else the first conv
    module); its weight is replaced by :func:`adapt_weight` (the bias is kept).
    ``model.in_chans`` and ``model.model_cfg`` (``input_size``, ``mean``, ``std``)
    follow.

    Example::

        model = create_model("timm:resnet18", in_chans=3, num_classes=2, pretrained=True)
        set_in_chans(model, 1)                    # grey X-rays, ImageNet kernels summed

    Args:
        model: a model following the contract; input ``(B, C_old, *spatial)``.
        in_chans: new channels ``C``: afterwards the input is ``(B, C, *spatial)``.
        mode: ``mean`` or ``repeat`` (see the module docstring).

    Returns:
        ``model``.

    Raises:
        ModelError: a fusion model (one input per modality), a grouped first conv, a
            first conv whose input channels differ from ``model.in_chans``, or a bad
            ``in_chans``/``mode``.
    """
    label = model_label(model)
    if getattr(model, "modalities", None):
        raise ModelError(
            f"{label}: takes one input per modality {list(model.modalities)}; set_in_chans "
            "works on single-input models"
        )
    name = first_conv_name(model)
    conv = model.get_submodule(name)
    if conv.groups != 1:
        raise ModelError(f"{label}: first conv {name!r} is grouped (groups={conv.groups})")
    old = int(getattr(model, "in_chans", conv.in_channels))
    if conv.in_channels != old:
        raise ModelError(
            f"{label}: first conv {name!r} takes {conv.in_channels} channels but the model's "
            f"in_chans is {old}; it is not the layer that reads the input"
        )
    weight = adapt_weight(conv.weight.detach(), in_chans, mode)
    conv.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
    conv.in_channels = in_chans
    model.in_chans = in_chans
    cfg = getattr(model, "model_cfg", None)
    if cfg is not None:
        model.model_cfg = cfg.replace(
            input_size=(in_chans, *cfg.input_size[1:]),
            mean=_fit_stats(tuple(cfg.mean), in_chans, mode),
            std=_fit_stats(tuple(cfg.std), in_chans, mode),
        )
    return model


def weights_in_chans(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    spatial_dims: int | None = None,
    **kwargs: Any,
) -> int | None:
    """Input channels of the weights :func:`create_model` would load, or None (no weights).

    ``checkpoint_path``: the channels of its first conv (the model is built on the
    ``meta`` device to learn the layer's name). ``pretrained`` ``timm:``/``timm3d:``
    weights: ``pretrained_cfg.input_size[0]`` (3 for ImageNet weights).

    Raises:
        ModelError: library weights of another source (their channels are unknown
            before download), or a checkpoint without the first conv's weight.
    """
    from medcls.models.factory import create_model
    from medcls.models.registry import get_source, parse_model_name
    from medcls.models.weights import read_state_dict

    if checkpoint_path is not None:
        args = dict(in_chans=1, num_classes=1, spatial_dims=spatial_dims, **kwargs)
        try:
            with torch.device("meta"):
                probe = create_model(name, **args)
        except ModelError:  # a constructor that reads tensor values: build for real
            probe = create_model(name, **args)
        key = f"{first_conv_name(probe)}.weight"
        state = read_state_dict(checkpoint_path)
        found = next((v for k, v in state.items() if k == key or k.endswith("." + key)), None)
        if found is None or found.ndim < 3:
            raise ModelError(f"{checkpoint_path}: no first-conv weight {key!r} in the checkpoint")
        return int(found.shape[1])
    if not pretrained:
        return None
    source, arch = parse_model_name(name)
    if source not in ("timm", "timm3d"):
        raise ModelError(
            f"{name}: the input channels of its library weights are not known before they "
            "are loaded; adapt them with the library's own rule (in_chans_mode auto)"
        )
    lib = get_source(source).lib
    pcfg = lib.models.get_pretrained_cfg(arch)
    size = getattr(pcfg, "input_size", None) if pcfg is not None else None
    return int(size[0]) if size else 3
