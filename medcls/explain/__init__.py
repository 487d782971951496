"""Visual explanations: class activation maps, gradient and occlusion maps, their checks.

Lazy public API (torch is imported on first use, so the CLI starts fast)::

    from medcls.explain import explain
    result = explain(model, x, "gradcam")      # maps with x's spatial shape, per modality
"""

from __future__ import annotations

import importlib
from typing import Any

from medcls.explain.names import CAM_METHODS, GRADIENT_METHODS, METHODS, PERTURBATION_METHODS

# public name -> module that defines it (imported on first access)
_LAZY = {
    "EXPLAINERS": "medcls.explain.api",
    "create_explainer": "medcls.explain.api",
    "explain": "medcls.explain.api",
    "Explainer": "medcls.explain.base",
    "Explanation": "medcls.explain.base",
    "normalize_maps": "medcls.explain.base",
    "resize_maps": "medcls.explain.base",
    "BaseCAM": "medcls.explain.cam",
    "CellCentres": "medcls.explain.centres",
    "CentreTracker": "medcls.explain.centres",
    "resize_to_input": "medcls.explain.centres",
    "LayerSpec": "medcls.explain.layers",
    "default_layers": "medcls.explain.layers",
    "read_layer_output": "medcls.explain.layers",
    "resolve_layers": "medcls.explain.layers",
    "deletion_insertion": "medcls.explain.checks",
    "energy_in_mask": "medcls.explain.checks",
    "pointing_game": "medcls.explain.checks",
    "randomization_check": "medcls.explain.checks",
    "classwise_maps": "medcls.explain.figures",
    "grid_figure": "medcls.explain.figures",
    "models_grid": "medcls.explain.figures",
    "evaluate_run_maps": "medcls.explain.evaluate",
    "explain_files": "medcls.explain.pipeline",
    "load_explain_model": "medcls.explain.pipeline",
}

__all__ = [
    "CAM_METHODS",
    "GRADIENT_METHODS",
    "METHODS",
    "PERTURBATION_METHODS",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medcls.explain' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
