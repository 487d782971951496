"""Optimisers and learning-rate schedules from the ``optimizer``/``scheduler`` sections."""

from __future__ import annotations

import math

import torch

from medcls.config.schema import OptimizerConfig, SchedulerConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; biases and normalisation weights (1-D tensors) get no weight decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(
    step: int, *, total_steps: int, warmup_steps: int, min_ratio: float, name: str
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``.

    ``cosine``: linear warm-up from ``1/warmup_steps`` to 1, then cosine decay to
    ``min_ratio`` at ``total_steps``. ``constant``: warm-up, then 1.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
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
    """A per-step ``LambdaLR`` following :func:`lr_factor`."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(0, total_steps - 1))

    def factor(step: int) -> float:
        return lr_factor(
            step,
            total_steps=total_steps,
            warmup_steps=warmup,
            min_ratio=cfg.min_lr_ratio,
            name=cfg.name,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
