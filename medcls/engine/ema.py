"""Exponential moving average (EMA) of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma(nn.Module):
    """A frozen copy of a model whose weights follow the trained ones slowly.

    After every optimiser step, :meth:`update` moves each floating-point parameter and
    buffer (batch-norm statistics included) toward the live model's:
    ``ema = d * ema + (1 - d) * live``; integer buffers (step counters) are copied.
    With ``warmup`` the decay starts low and rises as ``min(decay, (1 + n) / (10 + n))``
    over the updates ``n``, so the average does not remember the random
    initialisation for thousands of steps.

    As a submodule of the training module, its weights and its update count are in
    every trainer checkpoint, so a resumed run continues the same average.

    Args:
        model: the live model (copied; the copy gets no gradients).
        decay: the decay ``d`` in ``(0, 1)``.
        warmup: ramp the decay up over the first updates.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        super().__init__()
        self.module = copy.deepcopy(model)  # used only in evaluation, where it is put in eval mode
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = warmup
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = int(self.num_updates)
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Moves the average one step toward ``model`` (same architecture)."""
        decay = self.current_decay()
        live = dict(model.state_dict())
        for name, value in self.module.state_dict().items():
            source = live[name].detach()
            if value.dtype.is_floating_point:
                value.lerp_(source.to(value.dtype), 1.0 - decay)
            else:
                value.copy_(source)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
