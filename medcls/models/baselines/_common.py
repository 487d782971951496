"""Pieces the native baselines share: variant building and the stem-stages-norm skeleton.

- :func:`build_variant`: a variant is a dict of constructor arguments; a value written
  ``{2: a, 3: b}`` is chosen by ``spatial_dims`` (e.g. a smaller kernel set in 3D), so
  one entrypoint serves both dims; the caller's arguments override the variant's.
- :func:`check_stages`: one clear error for per-stage settings of unequal lengths.
- :class:`StagedClassifier`: ``stem -> stages -> norm -> head``, the layout of most
  hierarchical backbones; the normalised output of the last stage is the CAM layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import ClassifierHead
from medcls.models.layers.classifier_base import NativeClassifier

__all__ = ["StagedClassifier", "build_variant", "check_stages", "per_dims"]


def per_dims(value: Any, spatial_dims: int) -> Any:
    """``value[spatial_dims]`` for a ``{2: ..., 3: ...}`` mapping, else ``value``.

    Raises:
        ModelError: a per-dims mapping without an entry for ``spatial_dims``.
    """
    if isinstance(value, Mapping) and value and set(value) <= {2, 3}:
        if spatial_dims not in value:
            raise ModelError(f"no setting for spatial_dims={spatial_dims} in {dict(value)}")
        return value[spatial_dims]
    return value


def build_variant(
    cls: Callable[..., Any],
    variant: Mapping[str, Any],
    in_chans: int,
    num_classes: int,
    spatial_dims: int,
    overrides: Mapping[str, Any],
) -> Any:
    """Builds ``cls`` from a variant's arguments updated with ``overrides``.

    Args:
        cls: the model class.
        variant: the variant's constructor arguments (values may be per-dims mappings).
        in_chans: input channels.
        num_classes: logits.
        spatial_dims: 2 or 3 (also selects per-dims values).
        overrides: the caller's arguments (may be per-dims mappings too).

    Returns:
        the model.
    """
    args = {k: per_dims(v, spatial_dims) for k, v in {**variant, **overrides}.items()}
    return cls(in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **args)


def check_stages(where: str, allow_zero: Sequence[str] = (), **per_stage: Sequence[int]) -> int:
    """Checks per-stage settings: one entry per stage each, entries >= 1.

    Args:
        where: the class name, for the message.
        allow_zero: names whose entries may be 0.
        **per_stage: name -> one value per stage.

    Returns:
        the number of stages.

    Raises:
        ModelError: unequal lengths, no stage, or an entry below its minimum.
    """
    shown = ", ".join(f"{k}={tuple(v)}" for k, v in per_stage.items())
    if len({len(v) for v in per_stage.values()}) != 1 or not next(iter(per_stage.values())):
        raise ModelError(f"{where}: {shown} need one entry per stage (and at least one stage)")
    for name, values in per_stage.items():
        if min(int(v) for v in values) < (0 if name in allow_zero else 1):
            raise ModelError(f"{where}: {name}={tuple(values)} has entries below the minimum")
    return len(next(iter(per_stage.values())))


class StagedClassifier(NativeClassifier):
    """``forward_features(x) = norm(stages(stem(x)))``, then the shared classifier head.

    A subclass builds its modules and calls :meth:`finish`. Every stage maps
    channel-first maps to channel-first maps, so ``feature_stages`` and the CAM read
    them directly.
    """

    def finish(
        self,
        stem: nn.Module,
        stages: Sequence[nn.Module],
        norm: nn.Module,
        info: Sequence[FeatureStage],
        num_classes: int,
        drop_rate: float,
    ) -> None:
        """Sets the modules and the contract attributes.

        Args:
            stem: input -> first stage's input.
            stages: the stages, in order.
            norm: the norm on the last stage's output (the CAM layer).
            info: one :class:`FeatureStage` per stage (module ``stages.<i>``).
            num_classes: logits (0: none).
            drop_rate: dropout before the classifier.
        """
        self.stem, self.stages, self.norm = stem, nn.Sequential(*stages), norm
        last = info[-1]
        self.num_features, self.num_classes = int(last.num_chs), num_classes
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
        self.feature_stages = list(info)
        self.cam_layer = CamLayer("norm", "channels_first", 0, last.reduction)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, num_features, *grid)`` (the normalised last stage)."""
        return self.norm(self.stages(self.stem(x)))
