"""Replacing a model's classifier: number of classes, dropout, an optional hidden layer."""

from __future__ import annotations

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.layers.factories import ACTIVATIONS, make_act
from medcls.models.restructure._common import classifier_names, model_label, replace_module
from medcls.models.restructure.inflate import inflate_new_layers

__all__ = ["HeadMLP", "replace_head"]


class HeadMLP(nn.Module):
    """Pooled features to logits: dropout, [linear, activation, dropout], linear.

    Shapes: ``(B, in_features)`` -> ``(B, num_classes)``.

    Args:
        in_features: width of the pooled features.
        num_classes: logits (>= 1).
        hidden: width of the hidden layer; ``None``: none (dropout then linear).
        drop_rate: dropout before each linear layer.
        act: activation after the hidden layer (``relu``, ``gelu``, ``silu``, ...).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int | None = None,
        drop_rate: float = 0.0,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, num_classes
        self.drop = nn.Dropout(drop_rate)
        width = in_features
        if hidden is not None:
            self.hidden = nn.Linear(in_features, hidden)
            self.act = make_act(act)
            self.hidden_drop = nn.Dropout(drop_rate)
            width = hidden
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> ``(B, num_classes)``."""
        x = self.drop(x)
        if hasattr(self, "hidden"):
            x = self.hidden_drop(self.act(self.hidden(x)))
        return self.fc(x)


def replace_head(
    model: nn.Module,
    num_classes: int | None = None,
    *,
    drop_rate: float = 0.0,
    hidden: int | None = None,
    act: str = "gelu",
) -> nn.Module:
    """Gives ``model`` a new classifier, in place.

    The model's own ``reset_classifier(num_classes)`` makes a fresh linear classifier
    (pooling and the model's own dropout stay as they are). With ``drop_rate > 0`` or
    a ``hidden`` layer, each classifier named in ``model_cfg.classifier`` is then
    replaced by a :class:`HeadMLP` (new weights) under the same name, so checkpoint
    code that skips the classifier still finds it. Multi-label tasks need nothing
    else: the loss applies the sigmoid. A later ``reset_classifier`` call puts a plain
    linear layer back.

    Example::

        replace_head(model, 14, drop_rate=0.3, hidden=256)    # ChestX-ray14 labels

    Args:
        model: a model following the contract.
        num_classes: logits; ``None`` keeps ``model.num_classes``; ``0`` removes the
            classifier (``forward`` returns pooled features).
        drop_rate: dropout before each linear layer of the new head (in addition to
            any dropout the model applies before its classifier), in ``[0, 1)``.
        hidden: width of a hidden layer (``None``: none).
        act: activation of the hidden layer (one of ``make_act``'s names).

    Returns:
        ``model`` with ``model.num_classes == num_classes``.

    Raises:
        ModelError: bad arguments, a hidden layer or dropout with ``num_classes=0``,
            or a classifier that is not a linear layer.
    """
    label = model_label(model)
    num_classes = int(model.num_classes) if num_classes is None else num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ModelError(f"replace_head({label}): num_classes={num_classes!r}, expected >= 0")
    if not 0.0 <= float(drop_rate) < 1.0:
        raise ModelError(f"replace_head({label}): drop_rate={drop_rate!r}, expected [0, 1)")
    if hidden is not None and (
        isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1
    ):
        raise ModelError(f"replace_head({label}): hidden={hidden!r}, expected an integer >= 1")
    if act not in ACTIVATIONS or act == "none":
        raise ModelError(f"replace_head({label}): act={act!r}, expected one of {ACTIVATIONS[:-1]}")
    custom = hidden is not None or drop_rate > 0
    if custom and num_classes == 0:
        raise ModelError(
            f"replace_head({label}): a hidden layer or dropout needs num_classes >= 1 "
            "(num_classes=0 removes the classifier)"
        )
    known = {id(m) for m in model.modules()}
    model.reset_classifier(num_classes)
    model.num_classes = num_classes
    if getattr(model, "spatial_dims", None) == 3:
        inflate_new_layers(model, known)  # an inflated timm model gets a 2D pool back
    if not custom:
        return model
    names = classifier_names(model)
    if not names:
        raise ModelError(f"replace_head({label}): model_cfg.classifier names no module")
    for name in names:
        old = model.get_submodule(name)
        if not isinstance(old, nn.Linear):
            raise ModelError(
                f"replace_head({label}): classifier {name!r} is {type(old).__name__}, "
                "expected a Linear layer; only num_classes can be changed"
            )
        new = HeadMLP(old.in_features, num_classes, hidden, float(drop_rate), act)
        replace_module(model, name, new.to(device=old.weight.device, dtype=old.weight.dtype))
    return model
