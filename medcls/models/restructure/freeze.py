"""Freezing and unfreezing parts of a model for transfer learning.

A part is named by a *spec*:

- ``"all"``: every parameter;
- ``"all-but-head"``: every parameter outside the classifier(s) named in
  ``model.model_cfg.classifier`` (a linear probe / head-only fine-tuning);
- an integer ``n``: the stem and the first ``n`` contract stages
  (``model.feature_stages``): every module registered up to the end of stage ``n``;
- module names (one string or a list), e.g. ``["conv1", "layer1"]`` or feature-stage
  names: those modules with everything inside them.

Frozen parameters get ``requires_grad = False``, so they receive no gradient and
:func:`medcls.engine.optim.build_optimizer` leaves them out. With ``norm_stats=True``
(the default) batch norms inside the frozen part also keep their running statistics:
a forward pre-hook puts them in eval mode at every call, so ``model.train()`` does
not make them normalise with (and update from) batch statistics. Their layer types and
``state_dict`` keys do not change.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from medcls.errors import ModelError
from medcls.models.restructure._common import (
    classifier_names,
    model_label,
    module_or_error,
    under,
)

__all__ = ["FREEZE_WORDS", "freeze", "frozen_parameters", "unfreeze"]

FREEZE_WORDS: tuple[str, ...] = ("all", "all-but-head")
FreezeSpec = str | int | Sequence[str]


def _hold_eval(module: nn.Module, _args: object) -> None:
    """Forward pre-hook: the norm normalises with its running statistics."""
    module.training = False


def _select(model: nn.Module, spec: FreezeSpec) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs a spec names (their own parameters are affected)."""
    label = model_label(model)
    modules = list(model.named_modules())
    heads = classifier_names(model)
    if isinstance(spec, bool):
        raise ModelError(f"freeze({label}): spec {spec!r} is a boolean; use 'all' or a count")
    if isinstance(spec, int):
        stages = list(getattr(model, "feature_stages", None) or [])
        if not 0 <= spec <= len(stages):
            raise ModelError(
                f"freeze({label}): {spec} leading stages asked, the model has "
                f"{len(stages)} ({[s.module for s in stages]})"
            )
        if spec == 0:
            return []
        last = stages[spec - 1].module
        inside = [i for i, (n, _) in enumerate(modules) if under(n, [last])]
        if not inside:
            raise ModelError(f"freeze({label}): feature stage {last!r} is not a module")
        end = max(inside)
        return [(n, m) for n, m in modules[: end + 1] if not under(n, heads)]
    if spec == "all":
        return modules
    if spec == "all-but-head":
        if not heads:
            raise ModelError(f"freeze({label}): 'all-but-head' needs model_cfg.classifier")
        return [(n, m) for n, m in modules if not under(n, heads)]
    names = [spec] if isinstance(spec, str) else list(spec)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ModelError(
            f"freeze({label}): spec {spec!r}: expected {FREEZE_WORDS}, a stage count or "
            "module names"
        )
    for name in names:
        module_or_error(model, name, "freeze: module")
    return [(n, m) for n, m in modules if under(n, names)]


def _norms(selected: list[tuple[str, nn.Module]]) -> list[nn.Module]:
    return [m for _, m in selected if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _remove_hold(module: nn.Module) -> bool:
    """Removes the :func:`_hold_eval` hook; True if there was one."""
    keys = [k for k, hook in module._forward_pre_hooks.items() if hook is _hold_eval]
    for key in keys:
        del module._forward_pre_hooks[key]
    return bool(keys)


def freeze(
    model: nn.Module, spec: FreezeSpec = "all-but-head", *, norm_stats: bool = True
) -> list[str]:
    """Freezes the parameters a spec names (see the module docstring), in place.

    Example::

        freeze(model, "all-but-head")   # train the classifier only
        freeze(model, 2)                # stem and first two stages fixed

    Args:
        model: a model following the contract.
        spec: ``"all"``, ``"all-but-head"``, a count of leading stages, or module names.
        norm_stats: batch norms of the frozen part keep their running statistics in
            training (eval-mode normalisation).

    Returns:
        the names of the parameters frozen by this call.

    Raises:
        ModelError: an unknown module name (with the nearest ones) or a count beyond
            the model's stages.
    """
    selected = _select(model, spec)
    frozen: list[str] = []
    for name, module in selected:
        for pname, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                param.requires_grad_(False)
                frozen.append(f"{name}.{pname}" if name else pname)
    if norm_stats:
        for norm in _norms(selected):
            _remove_hold(norm)
            norm.register_forward_pre_hook(_hold_eval)
    return frozen


def unfreeze(model: nn.Module, spec: FreezeSpec | None = None) -> list[str]:
    """Makes parameters trainable again and releases their norms' statistics.

    Args:
        model: the model.
        spec: as in :func:`freeze`; ``None`` unfreezes everything.

    Returns:
        the names of the parameters unfrozen by this call.
    """
    selected = list(model.named_modules()) if spec is None else _select(model, spec)
    names: list[str] = []
    for name, module in selected:
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                param.requires_grad_(True)
                names.append(f"{name}.{pname}" if name else pname)
        if _remove_hold(module):
            module.training = model.training  # the mode the hook held it out of
    return names


def frozen_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that do not require a gradient."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]
