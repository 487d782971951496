"""Evaluation: metrics as pure functions and a collector that accumulates predictions.

``medcls.evaluation.functional`` needs only numpy; :class:`PredictionCollector`
(which needs torch) is imported on first access, so importing this package stays
light.
"""

from __future__ import annotations

import importlib
from typing import Any

from medcls.evaluation.functional import (
    TASKS,
    MetricWarning,
    check_task,
    classification_metrics,
    confusion_matrix,
    default_class_names,
    multilabel_confusion_matrix,
    roc_auc,
    roc_curve,
    roc_curves,
    to_jsonable,
)

_LAZY = {
    "PredictionCollector": "medcls.evaluation.collector",
    "all_gather_objects": "medcls.evaluation.collector",
}

__all__ = [
    "TASKS",
    "MetricWarning",
    "PredictionCollector",
    "all_gather_objects",
    "check_task",
    "classification_metrics",
    "confusion_matrix",
    "default_class_names",
    "multilabel_confusion_matrix",
    "roc_auc",
    "roc_curve",
    "roc_curves",
    "to_jsonable",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medcls.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
