"""Training losses, chosen by name from the ``loss`` section."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.config.schema import LossConfig
from medcls.errors import ConfigError

__all__ = ["balanced_class_weights", "build_loss"]


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """Inverse-frequency weights ``N / (K * n_k)`` (1.0 for an average class).

    Raises:
        ConfigError: a class has no training case.
    """
    total, k = sum(counts), len(counts)
    if any(n == 0 for n in counts):
        raise ConfigError(
            f"loss.class_weights=balanced: a class has no training case (counts {list(counts)})"
        )
    return [total / (k * n) for n in counts]


def build_loss(
    cfg: LossConfig, task: str, class_weights: Sequence[float] | None = None
) -> nn.Module:
    """The loss module for ``task`` (``binary``, ``multiclass`` or ``multilabel``).

    Args:
        cfg: the ``loss`` section.
        task: the task; ``auto`` picks cross-entropy, or BCE for multi-label.
        class_weights: one weight per class (already resolved from ``balanced``).

    Returns:
        A module ``(logits (B, K), target) -> scalar``; targets are class
        indices (B,) for cross-entropy and multi-hot (B, K) floats for BCE.
    """
    name = cfg.name
    if name == "auto":
        name = "bce" if task == "multilabel" else "cross_entropy"
    weight = (
        None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
    )
    if name == "cross_entropy":
        if task == "multilabel":
            raise ConfigError(
                "loss.name: cross_entropy needs one label per case; use 'bce' for multi-label"
            )
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    if task != "multilabel":
        raise ConfigError(
            f"loss.name: 'bce' is for multi-label tasks; this task is {task!r} (use cross_entropy)"
        )
    return nn.BCEWithLogitsLoss(pos_weight=weight)
