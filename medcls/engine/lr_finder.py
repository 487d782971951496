"""Learning-rate range test (Smith 2017, "Cyclical learning rates", section 3.3).

The model trains for a few hundred steps while the learning rate grows
exponentially from ``min_lr`` to ``max_lr``; the loss falls slowly where the rate
is too small, fast where it is right, and blows up where it is too large. The
suggestion is the rate where the (smoothed) loss falls fastest per decade of
learning rate, searched before the loss minimum, i.e. well below the rate where
training diverges.

The test trains a copy of the model: the caller's model and its initial weights
are left as they were.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcls.errors import ConfigError

__all__ = ["LRFinderResult", "lr_range_test", "suggest_lr"]


@dataclass
class LRFinderResult:
    """The rates tried, the losses seen and the suggestion."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    min_loss_lr: float
    stopped_early: bool = False
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggestion": self.suggestion,
            "min_loss_lr": self.min_loss_lr,
            "stopped_early": self.stopped_early,
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
        }


def suggest_lr(lrs: list[float], smoothed: list[float], skip_start: int = 5) -> tuple[float, float]:
    """The rate of steepest descent of ``smoothed`` against ``log10(lr)`` before its
    minimum (the first ``skip_start`` noisy points ignored), capped at a tenth of the
    rate at the minimum.

    Returns:
        ``(suggestion, lr_at_min_loss)``.
    """
    if len(lrs) < skip_start + 3:
        raise ConfigError(
            f"learning-rate range test: {len(lrs)} steps recorded, too few to suggest a rate "
            "(raise the number of steps or lower the divergence threshold)"
        )
    loss = np.asarray(smoothed, dtype=float)
    end = int(np.nanargmin(loss[skip_start:])) + skip_start
    end = max(end, skip_start + 2)
    x = np.log10(np.asarray(lrs[skip_start : end + 1]))
    slope = np.gradient(loss[skip_start : end + 1], x)
    steepest = float(lrs[skip_start + int(np.argmin(slope))])
    return min(steepest, float(lrs[end]) / 10.0), float(lrs[end])


def _cycle(loader: Iterable, set_epoch: Callable[[int], None] | None) -> Iterator:
    epoch = 0
    while True:
        if set_epoch is not None:
            set_epoch(epoch)
        yield from loader
        epoch += 1


def lr_range_test(
    model: nn.Module,
    loader: Iterable,
    step_loss: Callable[[nn.Module, Any], torch.Tensor],
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.05,
    diverge: float = 4.0,
    set_epoch: Callable[[int], None] | None = None,
    progress: Callable[[int, float, float], None] | None = None,
) -> LRFinderResult:
    """Runs the range test on a copy of ``model``.

    Args:
        model: the network (not modified).
        loader: training batches (cycled when shorter than ``steps``).
        step_loss: ``step_loss(model, batch) -> loss`` of one training batch.
        make_optimizer: builds the optimiser for the copy; each parameter group's
            ``lr_scale`` (layer-wise decay) is kept relative to the tested rate.
        min_lr, max_lr: the range, swept exponentially.
        steps: optimiser steps.
        smoothing: weight of the newest loss in the exponential smoothing.
        diverge: stop once the smoothed loss exceeds ``diverge`` times its minimum.
        set_epoch: called with 0, 1, ... each time the loader starts over.
        progress: called as ``progress(step, lr, smoothed_loss)``.

    Raises:
        ConfigError: an invalid range or step count.
    """
    if not 0 < min_lr < max_lr:
        raise ConfigError(f"--lr-min {min_lr} / --lr-max {max_lr}: expected 0 < min < max")
    if steps < 10:
        raise ConfigError(f"--lr-steps {steps}: expected at least 10 steps")
    trial = copy.deepcopy(model)
    trial.train()
    optimizer = make_optimizer(trial)
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    ratio = math.log(max_lr / min_lr)
    lrs, losses, smoothed = [], [], []
    avg, best, stopped = 0.0, math.inf, False
    batches = _cycle(loader, set_epoch)
    for step in range(steps):
        lr = min_lr * math.exp(ratio * step / (steps - 1))
        for group, scale in zip(optimizer.param_groups, scales):
            group["lr"] = lr * scale
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(trial, next(batches))
        value = float(loss.detach())
        if not math.isfinite(value):
            stopped = True
            break
        loss.backward()
        optimizer.step()
        avg = smoothing * value + (1 - smoothing) * avg if step else value
        lrs.append(lr)
        losses.append(value)
        smoothed.append(avg)
        best = min(best, avg)
        if progress is not None:
            progress(step, lr, avg)
        if step > 5 and avg > diverge * best:
            stopped = True
            break
    suggestion, at_min = suggest_lr(lrs, smoothed)
    return LRFinderResult(lrs, losses, smoothed, suggestion, at_min, stopped)
