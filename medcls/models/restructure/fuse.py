"""Inference-time fusion: re-parameterisable blocks and convolution + batch-norm folding.

Re-parameterisable blocks train as several parallel branches and collapse into one
convolution for inference (RepVGG, MobileOne, FastViT in timm; :class:`RepConv` and
:class:`ConvNormAct` in medcls). By convention such a block has a ``reparameterize()``
method that changes it in place, or (timm) a ``fuse()`` method that returns the
replacement module. :func:`reparameterize` applies them all, and every model that
:func:`medcls.models.create_model` returns has ``model.reparameterize()``.

:func:`fold_batchnorm` additionally folds every eval-mode batch norm whose input is a
convolution's output used nowhere else (found by following the autograd graph of one
forward pass, so residual connections and pre-activation blocks are handled safely).

Both compute the same function as before in eval mode, up to floating-point rounding,
and are meant for inference: call them after training (they put the model in eval
mode).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from medcls.models.layers.conv import fuse_conv_bn
from medcls.models.restructure._common import replace_module, small_input

__all__ = ["ensure_reparameterize", "fold_batchnorm", "fuse_blocks", "reparameterize"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _no_arg_method(module: nn.Module, name: str) -> Any:
    """``module.<name>`` if it is a method callable without arguments, else None."""
    method = getattr(type(module), name, None)
    if not callable(method):
        return None
    try:
        params = list(inspect.signature(method).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return None if required else getattr(module, name)


def fuse_blocks(model: nn.Module) -> list[str]:
    """Switches every re-parameterisable sub-module to its inference form, in place.

    Visits sub-modules parent first: a module with ``fuse()`` is replaced by what it
    returns; one with ``reparameterize()`` (or ``switch_to_deploy()``) is changed in
    place. Either way the block handles its own parts, and the visit then goes on
    inside its new form. The root module's own methods are not called.

    Returns:
        the names of the fused modules.
    """
    fused: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for child_name, child in list(parent.named_children()):
            name = f"{prefix}{child_name}"
            fuse = _no_arg_method(child, "fuse")
            if fuse is not None:
                new = fuse()
                if isinstance(new, nn.Module):
                    replace_module(parent, child_name, new)
                    child = new
                    fused.append(name)
            else:
                for method in ("reparameterize", "switch_to_deploy"):
                    call = _no_arg_method(child, method)
                    if call is not None:
                        call()
                        fused.append(name)
                        break
            visit(child, name + ".")

    visit(model, "")
    return fused


def _is_bn(module: nn.Module) -> bool:
    """A plain batch norm, or timm's BatchNormAct (a batch norm then drop and act)."""
    plain = type(module) in _NORMS
    bn_act = isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module).__name__ in (
        "BatchNormAct2d",
        "BatchNormAct3d",
        "_BatchNormAct3d",
    )
    return (plain or bn_act) and module.running_var is not None


def _consumers(root: Any) -> dict[Any, int]:
    """How many graph nodes take each autograd node's output as input."""
    count: dict[Any, int] = {}
    seen, stack = {root}, [root]
    while stack:
        node = stack.pop()
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            count[nxt] = count.get(nxt, 0) + 1
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return count


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.Module) -> None:
    weight, bias = fuse_conv_bn(conv.weight, conv.bias, bn)
    conv.weight.copy_(weight)
    if conv.bias is None:
        conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(bias)


@torch.no_grad()
def _neutralise(bn: nn.Module) -> None:
    """Makes an eval-mode batch norm the identity (its drop/act children stay)."""
    if bn.weight is not None:
        bn.weight.fill_(1.0)
        bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


def fold_batchnorm(model: nn.Module, example: Any = None) -> list[tuple[str, str]]:
    """Folds eval-mode batch norms into the convolutions that feed them, in place.

    A pair is folded when a plain ``Conv1d/2d/3d`` (run once) produces a tensor whose
    only consumer is a batch norm (run once); this is read from the autograd graph of
    one forward pass, so a conv output that also feeds a shortcut is left alone. The
    batch norm becomes ``nn.Identity`` (a timm norm+act layer keeps its activation
    with identity statistics). The model is put in eval mode.

    Args:
        model: the model.
        example: an input for the forward pass; default: a random tensor of
            ``model.model_cfg.input_size`` with sides capped at ``max(32, stride)``
            (unless the size is fixed).

    Returns:
        the ``(conv, norm)`` name pairs folded.
    """
    model.eval()
    x = small_input(model, "fold_batchnorm") if example is None else example
    if isinstance(x, torch.Tensor):
        x = x.detach().clone().requires_grad_(x.is_floating_point())
    names = {id(m): n for n, m in model.named_modules()}
    conv_out: dict[Any, list[str]] = {}
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str, Any]] = []

    def on_conv(module: nn.Module, _inputs: Any, out: Any) -> None:
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            conv_out.setdefault(out.grad_fn, []).append(name)

    def on_norm(module: nn.Module, inputs: Any, _out: Any) -> None:
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        src = inputs[0].grad_fn if inputs and isinstance(inputs[0], torch.Tensor) else None
        if src is not None and len(conv_out.get(src, ())) == 1:
            pairs.append((conv_out[src][0], name, src))

    handles = []
    for m in model.modules():
        if type(m) in _CONVS:
            handles.append(m.register_forward_hook(on_conv))
        elif _is_bn(m):
            handles.append(m.register_forward_hook(on_norm))
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    roots = [t.grad_fn for t in (out if isinstance(out, (list, tuple)) else [out])]
    count: dict[Any, int] = {}
    for root in (r for r in roots if r is not None):
        for node, n in _consumers(root).items():
            count[node] = count.get(node, 0) + n
    folded = []
    for conv_name, bn_name, node in pairs:
        if calls.get(conv_name) != 1 or calls.get(bn_name) != 1 or count.get(node) != 1:
            continue
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        _fold(conv, bn)
        if type(bn) in _NORMS:
            replace_module(model, bn_name, nn.Identity())
        else:
            _neutralise(bn)
        folded.append((conv_name, bn_name))
    return folded


def reparameterize(model: nn.Module, *, fold_bn: bool = False, example: Any = None) -> nn.Module:
    """Switches ``model`` to its inference form, in place (eval mode).

    Calls the model's own ``reparameterize()`` when its class defines one (medcls
    native models), else :func:`fuse_blocks`; with ``fold_bn`` then
    :func:`fold_batchnorm`.

    Example::

        model = create_model("timm:mobileone_s0", in_chans=1, num_classes=2)
        ...  # train
        reparameterize(model, fold_bn=True)      # or model.reparameterize(fold_bn=True)

    Returns:
        ``model``.
    """
    model.eval()
    own = getattr(type(model), "reparameterize", None)
    if callable(own):
        own(model)
    else:
        fuse_blocks(model)
    if fold_bn:
        fold_batchnorm(model, example)
    return model.eval()


class _Reparameterize:
    """``model.reparameterize(fold_bn=False)`` for models whose class lacks the method.

    An object (not a bound method) so the model still pickles and deep-copies.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, *, fold_bn: bool = False, example: Any = None) -> nn.Module:
        return reparameterize(self.model, fold_bn=fold_bn, example=example)

    def __repr__(self) -> str:
        return "<reparameterize: medcls.models.restructure.reparameterize>"


def ensure_reparameterize(model: nn.Module) -> nn.Module:
    """Gives ``model`` a ``reparameterize()`` method if its class has none (in place)."""
    if not callable(getattr(type(model), "reparameterize", None)):
        model.reparameterize = _Reparameterize(model)
    return model
