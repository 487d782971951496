"""Base class for native classifiers: the contract methods written once.

A subclass builds its layers, sets ``self.head`` (a :class:`ClassifierHead`),
``num_features``, ``num_classes``, ``feature_stages`` and ``cam_layer``, and implements
``forward_features``; this class supplies ``forward``, ``forward_head``,
``reset_classifier`` and ``reparameterize`` (see :mod:`medcls.models.contract`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medcls.models.layers.conv import reparameterize_model
from medcls.models.layers.head import ClassifierHead

__all__ = ["NativeClassifier"]


class NativeClassifier(nn.Module):
    """Contract methods around ``forward_features`` and a :class:`ClassifierHead`.

    Attributes set by subclasses: ``head``, ``num_features``, ``num_classes``,
    ``in_chans``, ``spatial_dims``, ``feature_stages``, ``cam_layer`` and
    ``classifier_names`` (``("head.fc",)``).
    """

    head: ClassifierHead
    classifier_names: tuple[str, ...] = ("head.fc",)

    def forward_features(self, x: Any) -> torch.Tensor:  # pragma: no cover - abstract
        """Input -> unpooled features ``(B, num_features, *grid)``."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features ``(B, num_features, *grid)`` -> ``(B, num_classes)`` (pooled with ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Any) -> torch.Tensor:
        """Input -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with one of ``num_classes`` outputs (0: none)."""
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def reparameterize(self) -> NativeClassifier:
        """Folds every batch norm that follows a convolution (eval-mode equivalent).

        Puts the model in eval mode; returns it for chaining.
        """
        return reparameterize_model(self)
