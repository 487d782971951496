"""Optimisers and learning-rate schedules from the ``optimizer``/``scheduler`` sections."""

from __future__ import annotations

import math

import torch
from torch import nn

from medcls.config.schema import OptimizerConfig, SchedulerConfig
from medcls.errors import ConfigError

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "parameter_depths"]


def parameter_depths(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth group of every parameter, for layer-wise learning-rate decay.

    The groups follow the model contract: the stem (everything before the first
    feature stage) is 0, feature stage ``k`` is ``k + 1`` (modules between two stages,
    such as downsampling layers, join the next stage), and the classifier
    (``model_cfg.classifier``) and anything after the last stage (a final norm) is
    the last group ``L = len(feature_stages) + 1``.

    Returns:
        ``({parameter name: group}, L)``.

    Raises:
        ConfigError: the model declares no feature stages.
    """
    from medcls.models.restructure._common import classifier_names, model_label, under

    stages = [s.module for s in getattr(model, "feature_stages", None) or []]
    if not stages:
        raise ConfigError(
            f"optimizer.layer_decay: {model_label(model)} declares no feature stages to "
            "group its layers by; remove layer_decay"
        )
    last = len(stages) + 1
    heads = classifier_names(model)
    # positions of each stage's first and last module, in registration (forward) order
    names = [n for n, _ in model.named_modules()]
    inside = [[i for i, n in enumerate(names) if under(n, [s])] or [-1] for s in stages]
    first, ends = min(inside[0]), [max(i) for i in inside]
    position = {n: i for i, n in enumerate(names)}
    depths: dict[str, int] = {}
    for pname, _ in model.named_parameters():
        pos = position.get(pname.rpartition(".")[0], 0)
        if under(pname, heads):
            depths[pname] = last
        elif pos < first:
            depths[pname] = 0
        else:
            depths[pname] = next((k + 1 for k, end in enumerate(ends) if pos <= end), last)
    return depths, last


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD over the trainable parameters.

    Biases and normalisation weights (1-D tensors) get no weight decay. With
    ``cfg.layer_decay`` each depth group (:func:`parameter_depths`) gets its own
    learning rate ``lr * layer_decay ** (L - depth)``, recorded in the group's
    ``lr_scale`` so schedules keep the ratio.
    """
    depths, last = parameter_depths(model) if cfg.layer_decay is not None else ({}, 0)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = depths.get(name, last)
        decay = param.ndim > 1
        scale = 1.0 if cfg.layer_decay is None else cfg.layer_decay ** (last - depth)
        group = groups.setdefault(
            (depth, decay),
            {
                "params": [],
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "lr": cfg.lr * scale,
                "lr_scale": scale,
            },
        )
        group["params"].append(param)
    param_groups = [groups[k] for k in sorted(groups)]
    if not param_groups:
        raise ConfigError("the model has no trainable parameter (is everything frozen?)")
    if cfg.name == "sgd":
        return torch.optim.SGD(
            param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov
        )
    if cfg.name == "adam":
        # L2 regularisation: Adam adds weight_decay * w to the gradient
        return torch.optim.Adam(param_groups, lr=cfg.lr)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def _restart_progress(step: int, first: float, mult: float) -> float:
    """Position ``[0, 1)`` of ``step`` inside its warm-restart cycle (cycles of
    ``first``, ``first * mult``, ``first * mult**2``, ... steps)."""
    if mult == 1.0:
        return (step % first) / first
    # the cycle index n solves first * (mult**n - 1) / (mult - 1) <= step
    n = math.floor(math.log(1 + step * (mult - 1) / first, mult))
    start = first * (mult**n - 1) / (mult - 1)
    return (step - start) / (first * mult**n)


def lr_factor(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    min_ratio: float,
    name: str,
    restart_steps: float = 0.0,
    restart_mult: float = 1.0,
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``.

    ``cosine``: linear warm-up from ``1/warmup_steps`` to 1, then cosine decay to
    ``min_ratio`` at ``total_steps``. ``cosine_restarts``: after the warm-up, cosine
    cycles from 1 to ``min_ratio``, the first ``restart_steps`` long and each next one
    ``restart_mult`` times longer (SGDR). ``constant``: warm-up, then 1.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    if name == "cosine_restarts":
        progress = _restart_progress(step - warmup_steps, max(1.0, restart_steps), restart_mult)
    else:
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: SchedulerConfig,
    *,
    total_steps: int,
    steps_per_epoch: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :func:`lr_factor` (applied to every group's
    own learning rate, so layer-wise ratios are kept)."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(0, total_steps - 1))

    def factor(step: int) -> float:
        return lr_factor(
            step,
            total_steps=total_steps,
            warmup_steps=warmup,
            min_ratio=cfg.min_lr_ratio,
            name=cfg.name,
            restart_steps=cfg.restart_epochs * steps_per_epoch,
            restart_mult=cfg.restart_mult,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
