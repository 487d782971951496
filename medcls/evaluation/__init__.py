"""Evaluation: metrics as pure functions, comparison statistics, and a prediction collector.

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
from medcls.evaluation.statistics import (
    ConfidenceInterval,
    bootstrap_binary_metrics,
    bootstrap_ci,
    brier_score,
    calibration_curve,
    delong_ci,
    delong_test,
    expected_calibration_error,
    holm_correction,
    mcnemar_test,
    select_threshold,
)

_LAZY = {
    "PredictionCollector": "medcls.evaluation.collector",
    "all_gather_objects": "medcls.evaluation.collector",
}

__all__ = [
    "TASKS",
    "ConfidenceInterval",
    "MetricWarning",
    "PredictionCollector",
    "all_gather_objects",
    "bootstrap_binary_metrics",
    "bootstrap_ci",
    "brier_score",
    "calibration_curve",
    "check_task",
    "classification_metrics",
    "confusion_matrix",
    "default_class_names",
    "delong_ci",
    "delong_test",
    "expected_calibration_error",
    "holm_correction",
    "mcnemar_test",
    "multilabel_confusion_matrix",
    "roc_auc",
    "roc_curve",
    "roc_curves",
    "select_threshold",
    "to_jsonable",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medcls.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
