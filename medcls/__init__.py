"""medcls: train, compare and explain 2D and 3D (multimodal) medical image classifiers.

Heavy dependencies (torch, timm, MONAI, Lightning) are imported lazily, so that
``import medcls`` and ``medcls --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "create_model": "medcls.models",
    "create_fusion_model": "medcls.models",
    "list_models": "medcls.models",
    "load_config": "medcls.config",
    "ExperimentConfig": "medcls.config",
    "train": "medcls.engine.api",
    "evaluate": "medcls.engine.api",
    "predict": "medcls.engine.api",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medcls' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
