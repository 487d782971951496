"""One entry point for every method: :func:`create_explainer` and :func:`explain`.

Example::

    from medcls.explain import explain
    result = explain(model, x, "gradcam")          # x: (B, C, H, W) or (B, C, D, H, W)
    result.maps["image"].shape                       # (B, H, W) / (B, D, H, W), in [0, 1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medcls.errors import ConfigError
from medcls.explain.base import Explainer, Explanation
from medcls.explain.cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from medcls.explain.gradients import (
    GuidedBackprop,
    IntegratedGradients,
    Occlusion,
    SmoothGrad,
    VanillaGradients,
)
from medcls.explain.names import CAM_METHODS, canonical_method

__all__ = ["EXPLAINERS", "create_explainer", "explain"]

#: canonical method name -> explainer class
EXPLAINERS: dict[str, type[Explainer]] = {
    cls.method: cls
    for cls in (
        GradCAM,
        GradCAMPlusPlus,
        XGradCAM,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        EigenCAM,
        AblationCAM,
        VanillaGradients,
        SmoothGrad,
        GuidedBackprop,
        IntegratedGradients,
        Occlusion,
    )
}


def create_explainer(
    method: str,
    model: nn.Module,
    *,
    layer: str | Sequence[str] | None = None,
    modalities: Sequence[str] | Mapping[str, int] | None = None,
    batch_size: int = 16,
    **options: Any,
) -> Explainer:
    """Builds the explainer of ``method`` for ``model``.

    Args:
        method: a name of :data:`~medcls.explain.names.METHODS` (aliases accepted).
        model: the classifier (a medcls model, so the CAM layer comes from its contract).
        layer: CAM methods only: module name(s) to explain instead of the default.
        modalities: names of the modalities concatenated along the channels (or a
            mapping modality -> channels), for one map per modality.
        batch_size: samples per pass.
        **options: method options (``max_channels`` for Score-/Ablation-CAM,
            ``samples``/``noise`` for SmoothGrad, ``steps`` for integrated gradients,
            ``window``/``stride`` for occlusion, ``min_cells`` and ``upsample`` for
            CAM methods).

    Raises:
        ConfigError: an unknown method, or an option the method does not take.
    """
    name = canonical_method(method)
    cls = EXPLAINERS[name]
    kwargs: dict[str, Any] = {"modalities": modalities, "batch_size": batch_size, **options}
    if name in CAM_METHODS:
        kwargs["layer"] = layer
    elif layer is not None:
        raise ConfigError(f"layer: {name} works on the input, not on a layer; drop --layer")
    try:
        return cls(model, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{name}: unsupported option(s) {sorted(options)} ({exc})") from None


def explain(
    model: nn.Module,
    x: torch.Tensor | Mapping[str, torch.Tensor],
    method: str = "gradcam",
    *,
    target: int | Sequence[int] | torch.Tensor | None = None,
    layer: str | Sequence[str] | None = None,
    modalities: Sequence[str] | Mapping[str, int] | None = None,
    batch_size: int = 16,
    **options: Any,
) -> Explanation:
    """Explains ``model``'s output for ``x`` with ``method``.

    Args:
        model: the classifier; runs on its own device (move it to a GPU first to use one).
        x: ``(B, C, *spatial)`` (2D or 3D), or a dict of modality tensors.
        method: see :func:`create_explainer`.
        target: class to explain (None: the predicted class; one index; one per sample).
        layer: CAM layer(s) instead of the contract's default.
        modalities: see :func:`create_explainer`.
        batch_size: samples per pass.
        **options: method options, see :func:`create_explainer`.

    Returns:
        an :class:`~medcls.explain.base.Explanation`: one map per modality with the
        input's spatial shape, scaled to ``[0, 1]``.
    """
    explainer = create_explainer(
        method, model, layer=layer, modalities=modalities, batch_size=batch_size, **options
    )
    return explainer(x, target=target)
