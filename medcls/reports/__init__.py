"""Reports: result figures (ROC curves, confusion matrices, training curves).

matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from medcls.reports.figures import (
    PALETTE,
    TRAINING_COLUMNS,
    FigureFiles,
    plot_confusion_matrix,
    plot_roc,
    plot_training_curves,
)

__all__ = [
    "PALETTE",
    "TRAINING_COLUMNS",
    "FigureFiles",
    "plot_confusion_matrix",
    "plot_roc",
    "plot_training_curves",
]
