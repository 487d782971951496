"""Classifier head shared by the native models: global average pool, dropout, linear."""

from __future__ import annotations

import torch
from torch import nn

from medcls.errors import ModelError

__all__ = ["ClassifierHead"]


class ClassifierHead(nn.Module):
    """Pools a channel-first map and maps it to logits.

    Shapes: ``(B, in_features, *spatial)`` (or already pooled ``(B, in_features)``) ->
    ``(B, num_classes)``; with ``pre_logits=True`` -> ``(B, in_features)``.

    Args:
        in_features: channels of the feature map.
        num_classes: logits; ``0`` makes ``fc`` an identity (the pooled features).
        drop_rate: dropout before the linear layer.
    """

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        """Replaces the linear layer by a new one with ``num_classes`` outputs (0: none).

        Raises:
            ModelError: a negative ``num_classes``.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ModelError(f"num_classes={num_classes!r}, expected an integer >= 0")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, num_classes)`` (or ``(B, C)`` with ``pre_logits``)."""
        if x.ndim > 2:
            x = x.mean(dim=tuple(range(2, x.ndim)))
        if pre_logits:
            return x
        return self.fc(self.drop(x))
