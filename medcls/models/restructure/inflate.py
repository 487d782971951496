"""Inflating a 2D model to 3D (Carreira & Zisserman 2017, "Quo Vadis, Action
Recognition?", I3D), so 2D weights (ImageNet, a 2D medical checkpoint) start a 3D model.

Every standard torch 2D layer is replaced by its 3D version: ``Conv2d``, ``BatchNorm2d``,
``InstanceNorm2d``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvg/MaxPool2d``, ``Dropout2d``,
plus timm's ``BatchNormAct2d``. Depth gets the settings of the height axis: a ``k x k``
kernel with stride ``s`` and padding ``p`` becomes ``k x k x k`` with stride ``s`` and
padding ``p`` along depth too. Layers that do not depend on the number of spatial axes
(activations, linear layers, group norms, flatten) stay as they are.

Kernel initialisation (``mode``):

- ``centre`` (default): the 2D kernel sits on the central depth slice, the other
  slices are zero. Each output slice is then the 2D layer applied to one input slice,
  so a depth-constant volume gives exactly the 2D model's output, borders included;
  depth mixing is learnt during fine-tuning.
- ``mean`` (I3D's rule): the 2D kernel is repeated along depth and divided by the
  depth. A depth-constant volume gives the 2D output away from the depth borders; at
  the borders the zero padding lowers the response, so logits are close to, not
  equal to, the 2D ones.

Models whose code is 2D-only (a layer subclassing a 2D torch layer with its own
forward, a timm ``*2d`` layer other than ``SelectAdaptivePool2d``, a mean over dims
``(2, 3)``, a reshape to ``(H, W)``) raise a :class:`ModelError` naming the module: the
inflated model is run on a depth-constant volume and must reproduce the 2D model's
logits (with centre kernels) before the kernels are set by ``mode``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.restructure._common import (
    model_label,
    model_stride,
    replace_module,
    small_input,
)

__all__ = ["INFLATE_MODES", "inflate", "inflate_new_layers"]

InflateMode = Literal["centre", "mean"]
INFLATE_MODES: tuple[str, ...] = ("centre", "mean")
# timm wrappers whose forward does not depend on the number of spatial axes
_AGNOSTIC_2D = ("SelectAdaptivePool2d",)


class _BatchNormAct3d(nn.BatchNorm3d):
    """timm's ``BatchNormAct2d`` inflated: batch norm, then its dropout and activation.

    Keeps the ``state_dict`` keys (``weight``, ``bias``, running statistics).
    """

    def __init__(self, num_features: int, drop: nn.Module, act: nn.Module, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def _depth(value: int | tuple | str) -> int | tuple | str:
    """A 2D ``(h, w)`` setting extended to ``(h, h, w)`` (strings kept)."""
    if isinstance(value, str):
        return value
    h, w = (value, value) if isinstance(value, int) else tuple(value)
    return (h, h, w)


def _conv(m: nn.Conv2d) -> nn.Conv3d:
    new = nn.Conv3d(
        m.in_channels,
        m.out_channels,
        _depth(m.kernel_size),
        stride=_depth(m.stride),
        padding=_depth(m.padding),
        dilation=_depth(m.dilation),
        groups=m.groups,
        bias=m.bias is not None,
        padding_mode=m.padding_mode,
    )
    new = new.to(device=m.weight.device, dtype=m.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :, new.kernel_size[0] // 2] = m.weight
        if m.bias is not None:
            new.bias.copy_(m.bias)
    new.weight.requires_grad_(m.weight.requires_grad)
    if m.bias is not None:
        new.bias.requires_grad_(m.bias.requires_grad)
    return new


def _norm_args(m: nn.Module) -> dict:
    return {
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


def _with_state(new: nn.Module, old: nn.Module) -> nn.Module:
    ref = next(iter([*old.parameters(), *old.buffers()]), None)
    if ref is not None:
        new = new.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    new.load_state_dict(old.state_dict(), strict=False)
    for (_, p_new), (_, p_old) in zip(new.named_parameters(), old.named_parameters()):
        p_new.requires_grad_(p_old.requires_grad)
    return new


def _batch_norm(m: nn.BatchNorm2d) -> nn.Module:
    return _with_state(nn.BatchNorm3d(m.num_features, **_norm_args(m)), m)


def _batch_norm_act(m: nn.Module) -> nn.Module:
    new = _BatchNormAct3d(m.num_features, m.drop, m.act, **_norm_args(m))
    return _with_state(new, m)


def _instance_norm(m: nn.InstanceNorm2d) -> nn.Module:
    return _with_state(nn.InstanceNorm3d(m.num_features, **_norm_args(m)), m)


def _max_pool(m: nn.MaxPool2d) -> nn.Module:
    return nn.MaxPool3d(
        _depth(m.kernel_size),
        stride=_depth(m.stride),
        padding=_depth(m.padding),
        dilation=_depth(m.dilation),
        return_indices=m.return_indices,
        ceil_mode=m.ceil_mode,
    )


def _avg_pool(m: nn.AvgPool2d) -> nn.Module:
    return nn.AvgPool3d(
        _depth(m.kernel_size),
        stride=_depth(m.stride),
        padding=_depth(m.padding),
        ceil_mode=m.ceil_mode,
        count_include_pad=m.count_include_pad,
    )


def _adaptive(cls: type[nn.Module]) -> Callable[[nn.Module], nn.Module]:
    def make(m: nn.Module) -> nn.Module:
        size = m.output_size
        size = size if isinstance(size, int) or size is None else _depth(size)
        return cls(size) if cls is nn.AdaptiveAvgPool3d else cls(size, m.return_indices)

    return make


_CONVERT: dict[type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    nn.Conv2d: _conv,
    nn.BatchNorm2d: _batch_norm,
    nn.InstanceNorm2d: _instance_norm,
    nn.MaxPool2d: _max_pool,
    nn.AvgPool2d: _avg_pool,
    nn.AdaptiveAvgPool2d: _adaptive(nn.AdaptiveAvgPool3d),
    nn.AdaptiveMaxPool2d: _adaptive(nn.AdaptiveMaxPool3d),
    nn.Dropout2d: lambda m: nn.Dropout3d(m.p, m.inplace),
}
_TORCH_2D = (*_CONVERT, nn.ConvTranspose2d, nn.LazyConv2d, nn.UpsamplingBilinear2d)


def _converter(m: nn.Module) -> Callable[[nn.Module], nn.Module] | None:
    if isinstance(m, nn.AvgPool2d) and m.divisor_override:
        return None  # the divisor would have to count the depth too
    if type(m) in _CONVERT:
        return _CONVERT[type(m)]
    is_bn_act = type(m).__name__ == "BatchNormAct2d" and isinstance(m, nn.BatchNorm2d)
    if is_bn_act and isinstance(getattr(m, "act", None), nn.Module):
        return _batch_norm_act
    return None


def _unsupported(model: nn.Module) -> list[str]:
    """Modules that are 2D-specific and have no 3D conversion."""
    bad = []
    for name, m in model.named_modules():
        if not name or _converter(m) is not None:
            continue
        cls = type(m).__name__
        if isinstance(m, nn.AvgPool2d) and m.divisor_override:
            bad.append(f"{name!r} ({cls} with divisor_override)")
        elif isinstance(m, _TORCH_2D):
            bad.append(f"{name!r} ({cls}, a 2D torch layer with its own forward)")
        elif cls.lower().endswith("2d") and cls not in _AGNOSTIC_2D:
            bad.append(f"{name!r} ({cls})")
    return bad


def _record(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each module's first tensor output (copied, before in-place ops); root: ``""``."""
    outs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(_module: nn.Module, _inputs: object, y: object) -> None:
            if name not in outs and isinstance(y, torch.Tensor):
                outs[name] = y.detach().clone()

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return outs


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4 * max(1.0, scale)))


def _describe(model: nn.Module, name: str) -> str:
    if not name:
        return f"the model's own forward ({type(model).__name__})"
    text = f"{name!r} ({type(model.get_submodule(name)).__name__})"
    parent = name.rpartition(".")[0]
    if parent:
        text += f" inside {parent!r} ({type(model.get_submodule(parent)).__name__})"
    return text


def _check_3d(
    model: nn.Module, x3: torch.Tensor, outs2: dict[str, torch.Tensor], label: str
) -> None:
    """Runs the inflated model on a depth-constant volume and compares every module.

    Each module's output must be its 2D output repeated along depth (depth slice 0 is
    compared, shapes included), so 2D-only code is caught even where a randomly
    initialised model's logits hardly depend on it (a squeeze-excitation gate).

    Raises:
        ModelError: naming the module that failed or first differed.
    """
    stack: list[str] = []
    differs: list[str] = []
    compared: set[str] = set()

    def enter(name: str):
        def fn(_module: nn.Module, _inputs: object) -> None:
            stack.append(name)

        return fn

    def leave(name: str):
        def fn(_module: nn.Module, _inputs: object, y3: object) -> None:
            stack.pop()
            y2 = outs2.get(name)
            if differs or name in compared or y2 is None or not isinstance(y3, torch.Tensor):
                return
            compared.add(name)
            if not _close(y3[:, :, 0] if y3.ndim == y2.ndim + 1 else y3, y2):
                differs.append(name)

        return fn

    handles = []
    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(enter(name)))
        handles.append(m.register_forward_hook(leave(name)))
    try:
        model(x3)
    except Exception as exc:  # any failure of a model's own code on 5D input
        raise ModelError(
            f"inflate({label}): the 3D forward fails in {_describe(model, stack[-1])}: "
            f"{type(exc).__name__}: {exc}. Only models built from standard torch layers "
            "can be inflated; code that assumes 2D input (4D tensors) cannot"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    if differs:
        raise ModelError(
            f"inflate({label}): on a depth-constant volume the first layer whose 3D output "
            f"is not its 2D output repeated along depth is {_describe(model, differs[0])}; "
            "its input comes from 2D-only code (e.g. a mean over dims (2, 3) or a reshape "
            "to (H, W)). Only models built from standard torch layers can be inflated"
        )


@torch.no_grad()
def inflate(model: nn.Module, *, mode: InflateMode = "centre", check: bool = True) -> nn.Module:
    """Turns a 2D model into a 3D one, in place (see the module docstring).

    Afterwards ``model.spatial_dims == 3``, ``forward`` takes ``(B, C, D, H, W)`` and
    ``model.model_cfg`` has ``spatial_dims=3`` and input size ``(C, H, H, W)``;
    module names, ``feature_stages`` and ``cam_layer`` are unchanged.

    Example::

        model = create_model("timm:resnet18", in_chans=1, num_classes=2, pretrained=True)
        inflate(model)                    # a 3D ResNet-18 starting from ImageNet kernels
        model(torch.randn(2, 1, 32, 64, 64)).shape   # (2, 2)

    Args:
        model: a 2D model following the contract.
        mode: ``centre`` or ``mean`` kernel initialisation.
        check: verify on a depth-constant volume that the inflated model computes the
            2D model's function (costs one 2D and one small 3D forward pass).

    Returns:
        ``model``.

    Raises:
        ModelError: a model that is not 2D, a fusion model, a bad ``mode``, or 2D-only
            layers or code (the message names the module).
    """
    label = model_label(model)
    if mode not in INFLATE_MODES:
        raise ModelError(f"inflate({label}): mode={mode!r}, expected one of {INFLATE_MODES}")
    if int(getattr(model, "spatial_dims", 0)) != 2:
        raise ModelError(
            f"inflate({label}): spatial_dims={model.spatial_dims}, expected a 2D model"
        )
    if getattr(model, "modalities", None):
        raise ModelError(
            f"inflate({label}): fusion models (one input per modality) are not supported"
        )
    bad = _unsupported(model)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ModelError(
            f"inflate({label}): 2D-only layers without a 3D version: {shown}; only models "
            "built from standard torch layers can be inflated"
        )
    was_training = model.training
    outs2: dict[str, torch.Tensor] = {}
    if check:
        model.eval()
        x2 = small_input(model, "inflate")
        outs2 = _record(model, x2)
    replaced: list[tuple[str, nn.Module]] = []
    convs: list[nn.Conv3d] = []
    for name, m in list(model.named_modules()):
        convert = _converter(m)
        if convert is None:
            continue
        new = convert(m).train(m.training)
        replace_module(model, name, new)
        replaced.append((name, m))
        if isinstance(new, nn.Conv3d):
            convs.append(new)
    cfg = getattr(model, "model_cfg", None)
    dims_set = [m for m in model.modules() if getattr(m, "spatial_dims", None) == 2]
    for m in dims_set:  # native blocks that build layers from their spatial_dims
        m.spatial_dims = 3
    if cfg is not None:
        c, h, w = cfg.input_size
        model.model_cfg = cfg.replace(spatial_dims=3, input_size=(c, h, h, w))
    try:
        if check:
            depth = max(1, min(model_stride(model), int(x2.shape[2])))
            x3 = x2.unsqueeze(2).expand(-1, -1, depth, -1, -1).contiguous()
            _check_3d(model, x3, outs2, label)
    except ModelError:
        for name, old in reversed(replaced):  # leave the caller's 2D model as it was
            replace_module(model, name, old)
        for m in dims_set:
            m.spatial_dims = 2
        if cfg is not None:
            model.model_cfg = cfg
        raise
    finally:
        model.train(was_training)
    if mode == "mean":
        for conv in convs:
            depth = conv.weight.shape[2]
            planar = conv.weight.sum(dim=2, keepdim=True)
            conv.weight.copy_(planar.expand_as(conv.weight) / depth)
    return model


def inflate_new_layers(model: nn.Module, known: set[int]) -> list[str]:
    """Inflates 2D layers that are not in ``known`` (ids of the modules before a change).

    timm's ``reset_classifier`` builds a new 2D global pool; on an inflated model that
    pool must become 3D too (its flattened output would otherwise hold several cells
    per channel). Returns the names of the converted modules.
    """
    names = []
    for name, m in list(model.named_modules()):
        convert = _converter(m)
        if convert is not None and id(m) not in known:
            replace_module(model, name, convert(m).train(m.training))
            names.append(name)
    return names
