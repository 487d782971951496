"""Classification metrics as pure functions: numpy arrays in, numbers and arrays out.

The functions here hold no state; :class:`medcls.evaluation.PredictionCollector`
accumulates predictions over batches and calls :func:`classification_metrics`.

Conventions shared by every function:

* ``task`` is one of ``"binary"``, ``"multiclass"``, ``"multilabel"``.
* ``probs`` are probabilities, not logits:

  - binary: ``(N,)`` or ``(N, 1)`` probability of the positive class (index 1),
    or ``(N, 2)`` class probabilities (column 1 is used);
  - multiclass: ``(N, K)`` softmax outputs;
  - multilabel: ``(N, K)`` sigmoid outputs.

* ``target``: binary ``(N,)`` in {0, 1}; multiclass ``(N,)`` class indices in
  ``[0, K)``; multilabel ``(N, K)`` in {0, 1}.
* A ratio whose denominator is zero (e.g. precision when nothing is predicted
  positive) is ``0.0``, like scikit-learn's ``zero_division=0``.
* An AUC that is undefined (only one class present in ``target``) is ``NaN`` and a
  :class:`MetricWarning` is emitted; it never raises, so that a small validation
  batch cannot stop a training run. :func:`to_jsonable` turns NaN into ``None``
  for strict JSON writers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medcls.errors import ConfigError, DataError

__all__ = [
    "TASKS",
    "MetricWarning",
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

TASKS = ("binary", "multiclass", "multilabel")
"""The classification tasks known to medcls."""

MACRO_KEY = "macro"
"""Key of the macro-average curve in :func:`roc_curves`."""


class MetricWarning(UserWarning):
    """A metric is undefined for the data given (e.g. AUC with a single class); its value is NaN."""


# --------------------------------------------------------------------------- validation


def check_task(task: str) -> str:
    """Return ``task`` if it is one of :data:`TASKS`.

    Raises:
        ConfigError: for any other value.
    """
    if task not in TASKS:
        raise ConfigError(f"task: expected one of {', '.join(TASKS)}; got {task!r}")
    return task


def default_class_names(num_classes: int) -> list[str]:
    """Names used when none are given: ``["0", "1", ..., str(num_classes - 1)]``."""
    return [str(i) for i in range(num_classes)]


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return default_class_names(num_classes)
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ConfigError(
            f"class_names: expected {num_classes} names (one per class); got {len(names)}: {names}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"class_names: names must be unique; got {names}")
    return names


def _as_float_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name} contains NaN or infinite values; expected finite numbers")
    return array


def _as_label_array(values: Any, name: str) -> np.ndarray:
    """Integer-valued labels as int64 (floats such as ``1.0`` are accepted)."""
    array = np.asarray(values)
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DataError(f"{name} must hold integer class labels; got non-integer values")
        return array.astype(np.int64)
    raise DataError(f"{name} must hold integer class labels; got dtype {array.dtype}")


def _check_binary_labels(labels: np.ndarray, name: str) -> None:
    bad = labels[(labels != 0) & (labels != 1)]
    if bad.size:
        raise DataError(f"{name} must be 0 or 1; got value {bad.flat[0]}")


def _check_probabilities(probs: np.ndarray, name: str) -> None:
    if probs.size and (probs.min() < -1e-6 or probs.max() > 1 + 1e-6):
        raise DataError(
            f"{name} must be probabilities in [0, 1]; got values in "
            f"[{probs.min():.4g}, {probs.max():.4g}] (logits? apply sigmoid/softmax first, "
            "or use PredictionCollector(..., from_logits=True))"
        )


def _binary_scores(probs: Any) -> np.ndarray:
    """Positive-class probability ``(N,)`` from ``(N,)``, ``(N, 1)`` or ``(N, 2)``."""
    array = _as_float_array(probs, "probs")
    if array.ndim == 2 and array.shape[1] in (1, 2):
        array = array[:, -1]
    if array.ndim != 1:
        raise DataError(
            f"probs for task 'binary' must have shape (N,), (N, 1) or (N, 2); got {array.shape}"
        )
    _check_probabilities(array, "probs")
    return array


def _binary_target(target: Any, num_samples: int) -> np.ndarray:
    labels = _as_label_array(target, "target")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (num_samples,):
        raise DataError(
            f"target for task 'binary' must have shape ({num_samples},) to match probs; "
            f"got {labels.shape}"
        )
    _check_binary_labels(labels, "target")
    return labels


def _prepare(probs: Any, target: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(probs, target)``.

    Returns:
        binary: ``(N,)`` scores and ``(N,)`` labels; multiclass: ``(N, K)`` and
        ``(N,)``; multilabel: ``(N, K)`` and ``(N, K)``.
    """
    check_task(task)
    if task == "binary":
        scores = _binary_scores(probs)
        labels = _binary_target(target, scores.shape[0])
    else:
        scores = _as_float_array(probs, "probs")
        if scores.ndim != 2 or scores.shape[1] < 2:
            raise DataError(
                f"probs for task {task!r} must have shape (N, K) with K >= 2; got {scores.shape}"
            )
        _check_probabilities(scores, "probs")
        labels = _as_label_array(target, "target")
        num_samples, num_classes = scores.shape
        if task == "multiclass":
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.shape != (num_samples,):
                raise DataError(
                    f"target for task 'multiclass' must have shape ({num_samples},) "
                    f"(class indices); got {labels.shape}"
                )
            bad = labels[(labels < 0) | (labels >= num_classes)]
            if bad.size:
                raise DataError(
                    f"target holds class index {bad[0]}; expected indices in [0, {num_classes}) "
                    f"because probs has {num_classes} columns"
                )
        else:
            if labels.shape != scores.shape:
                raise DataError(
                    f"target for task 'multilabel' must have the shape of probs {scores.shape}; "
                    f"got {labels.shape}"
                )
            _check_binary_labels(labels, "target")
    if scores.shape[0] == 0:
        raise DataError("no samples: probs and target are empty")
    return scores, labels


def _check_binary_pair(target01: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = _as_label_array(target01, "target01")
    scores = _as_float_array(score, "score")
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise DataError(
            f"target01 and score must be 1-D arrays of equal length; got shapes "
            f"{labels.shape} and {scores.shape}"
        )
    _check_binary_labels(labels, "target01")
    return labels, scores


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"threshold: expected a probability in [0, 1]; got {threshold}")
    return value


# --------------------------------------------------------------------------- counts


def confusion_matrix(target: Any, pred: Any, num_classes: int) -> np.ndarray:
    """Confusion matrix of class indices.

    Args:
        target: ``(N,)`` true class indices in ``[0, num_classes)``.
        pred: ``(N,)`` predicted class indices in ``[0, num_classes)``.
        num_classes: K, the number of classes (rows and columns of the result).

    Returns:
        ``(K, K)`` int64 counts; ``cm[i, j]`` = samples of true class ``i``
        predicted as class ``j`` (rows = true, columns = predicted).
    """
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes: expected a positive integer; got {num_classes}")
    k = int(num_classes)
    true = _as_label_array(target, "target")
    predicted = _as_label_array(pred, "pred")
    if true.ndim != 1 or true.shape != predicted.shape:
        raise DataError(
            f"target and pred must be 1-D arrays of equal length; got shapes "
            f"{true.shape} and {predicted.shape}"
        )
    for name, labels in (("target", true), ("pred", predicted)):
        bad = labels[(labels < 0) | (labels >= k)]
        if bad.size:
            raise DataError(f"{name} holds class index {bad[0]}; expected indices in [0, {k})")
    counts = np.bincount(true * k + predicted, minlength=k * k)
    return counts.reshape(k, k).astype(np.int64)


def multilabel_confusion_matrix(target: Any, pred: Any) -> np.ndarray:
    """One 2x2 confusion matrix per label.

    Args:
        target: ``(N, K)`` true labels in {0, 1}.
        pred: ``(N, K)`` predicted labels in {0, 1}.

    Returns:
        ``(K, 2, 2)`` int64; ``out[k] = [[tn, fp], [fn, tp]]`` for label ``k``
        (the layout of scikit-learn's ``multilabel_confusion_matrix``).
    """
    true = _as_label_array(target, "target")
    predicted = _as_label_array(pred, "pred")
    if true.ndim != 2 or true.shape != predicted.shape:
        raise DataError(
            f"target and pred must be (N, K) arrays of equal shape; got {true.shape} "
            f"and {predicted.shape}"
        )
    _check_binary_labels(true, "target")
    _check_binary_labels(predicted, "pred")
    tp = np.sum((true == 1) & (predicted == 1), axis=0)
    fp = np.sum((true == 0) & (predicted == 1), axis=0)
    fn = np.sum((true == 1) & (predicted == 0), axis=0)
    tn = true.shape[0] - tp - fp - fn
    return np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], 1).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0.0 where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _balanced_accuracy(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray
) -> np.ndarray:
    """Per-problem mean of recall and specificity over the classes present in the target.

    Equals scikit-learn's ``balanced_accuracy_score`` of each binary problem: if
    the target holds only negatives it is the specificity, only positives the recall.
    """
    has_pos = (tp + fn) > 0
    has_neg = (tn + fp) > 0
    total = _safe_div(tp, tp + fn) * has_pos + _safe_div(tn, tn + fp) * has_neg
    return _safe_div(total, has_pos.astype(np.int64) + has_neg)


def _rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class recall, specificity, precision, F1 and accuracy from ``(K,)`` counts."""
    return {
        "recall": _safe_div(tp, tp + fn),
        "specificity": _safe_div(tn, tn + fp),
        "precision": _safe_div(tp, tp + fp),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "accuracy": _safe_div(tp + tn, tp + fp + fn + tn),
    }


# --------------------------------------------------------------------------- ROC


def _binary_curve_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative (fps, tps) at each distinct score, from the highest score down."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    # last position of each run of equal scores: a threshold takes all tied samples at once
    last = np.flatnonzero(np.diff(sorted_scores))
    last = np.append(last, sorted_scores.size - 1)
    tps = np.cumsum(sorted_labels)[last].astype(np.float64)
    fps = (last + 1) - tps
    return fps, tps, sorted_scores[last]


def roc_curve(
    target01: Any, score: Any, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic of a binary problem.

    Tied scores are one threshold (they change both rates at once), as in
    scikit-learn's ``roc_curve``; with ``drop_intermediate`` the points that lie on
    a straight segment between their neighbours are dropped (same rule as
    scikit-learn), which changes neither the plot nor the area.

    Args:
        target01: ``(N,)`` labels in {0, 1} (1 = positive).
        score: ``(N,)`` scores, larger = more likely positive.
        drop_intermediate: drop collinear points.

    Returns:
        ``(fpr, tpr, thresholds)``, each ``(M,)``. ``fpr[i]``/``tpr[i]`` are the
        rates of the rule ``score >= thresholds[i]``; thresholds decrease and the
        first one is ``inf`` (the point (0, 0)). If ``target01`` has no negatives,
        ``fpr`` is all NaN (no positives: ``tpr`` is all NaN) and a
        :class:`MetricWarning` is emitted.
    """
    labels, scores = _check_binary_pair(target01, score)
    if labels.size == 0:
        raise DataError("no samples: target01 and score are empty")
    fps, tps, thresholds = _binary_curve_counts(labels, scores)
    if drop_intermediate and fps.size > 2:
        corner = np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0)
        keep = np.concatenate([[True], corner, [True]])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps = np.concatenate([[0.0], fps])
    tps = np.concatenate([[0.0], tps])
    thresholds = np.concatenate([[np.inf], thresholds])
    if fps[-1] == 0:
        warnings.warn(
            "roc_curve: target01 has no negative samples; the false positive rate is undefined (NaN)",
            MetricWarning,
            stacklevel=2,
        )
        fpr = np.full(fps.shape, np.nan)
    else:
        fpr = fps / fps[-1]
    if tps[-1] == 0:
        warnings.warn(
            "roc_curve: target01 has no positive samples; the true positive rate is undefined (NaN)",
            MetricWarning,
            stacklevel=2,
        )
        tpr = np.full(tps.shape, np.nan)
    else:
        tpr = tps / tps[-1]
    return fpr, tpr, thresholds


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts_group = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], values.size)  # exclusive
    # ranks start+1 .. end share their mean
    mean_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def roc_auc(target01: Any, score: Any) -> float:
    """Area under the ROC curve, from ranks (Mann-Whitney U).

    AUC = P(score of a random positive > score of a random negative), a tie
    counting 1/2. Equals the trapezoidal area under :func:`roc_curve`.

    Args:
        target01: ``(N,)`` labels in {0, 1} (1 = positive).
        score: ``(N,)`` scores, larger = more likely positive.

    Returns:
        The AUC in [0, 1]; ``NaN`` with a :class:`MetricWarning` when
        ``target01`` holds only one class (the AUC is undefined).
    """
    labels, scores = _check_binary_pair(target01, score)
    num_pos = int(labels.sum())
    num_neg = int(labels.size - num_pos)
    if num_pos == 0 or num_neg == 0:
        present = "no samples" if labels.size == 0 else f"only class {int(num_pos > 0)}"
        warnings.warn(
            f"roc_auc: target01 holds {present}; AUC is undefined and reported as NaN",
            MetricWarning,
            stacklevel=2,
        )
        return math.nan
    ranks = _average_ranks(scores)
    rank_sum = float(ranks[labels == 1].sum())
    u_statistic = rank_sum - num_pos * (num_pos + 1) / 2.0
    return u_statistic / (num_pos * num_neg)


def _quiet_auc(target01: np.ndarray, score: np.ndarray) -> float:
    """:func:`roc_auc` without its warning (callers warn once for all classes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return roc_auc(target01, score)


def _step_values(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Lowest and highest TPR of a piecewise-linear ROC curve at each ``grid`` FPR.

    A ROC curve can be vertical at an FPR (several points share it); ``low`` is
    the TPR where the curve arrives there and ``high`` where it leaves.
    """
    unique_fpr, first = np.unique(fpr, return_index=True)
    last = np.append(first[1:], fpr.size) - 1
    low_at, high_at = tpr[first], tpr[last]
    idx = np.clip(np.searchsorted(unique_fpr, grid), 0, unique_fpr.size - 1)
    exact = unique_fpr[idx] == grid
    left = np.clip(idx - 1, 0, None)
    span = unique_fpr[idx] - unique_fpr[left]
    weight = _safe_div(grid - unique_fpr[left], span)
    between = high_at[left] + weight * (low_at[idx] - high_at[left])
    low = np.where(exact, low_at[idx], between)
    high = np.where(exact, high_at[idx], between)
    return low, high


def _macro_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Vertical average of ROC curves on the union of their FPR values.

    The result is exact (every input breakpoint is a breakpoint of the result),
    so its trapezoidal area is the mean of the input areas, i.e. the macro AUC.
    """
    grid = np.unique(np.concatenate([fpr for fpr, _ in curves]))
    lows, highs = zip(*(_step_values(fpr, tpr, grid) for fpr, tpr in curves), strict=True)
    low = np.mean(lows, axis=0)
    high = np.mean(highs, axis=0)
    fpr = np.repeat(grid, 2)
    tpr = np.stack([low, high], axis=1).ravel()
    keep = np.ones(fpr.size, dtype=bool)
    keep[1::2] = high != low  # one point where the curve is not vertical
    return fpr[keep], tpr[keep]


def roc_curves(
    probs: Any,
    target: Any,
    task: str,
    *,
    class_names: Sequence[str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ROC curves to plot, keyed by the name shown in the legend.

    Args:
        probs: probabilities, shaped as described in the module docstring.
        target: labels, shaped as described in the module docstring.
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        class_names: K names (binary: 2, negative first); default ``"0"``, ``"1"``, ...

    Returns:
        ``{name: (fpr, tpr)}``. Binary: one curve keyed by the positive class
        name. Multiclass: one-vs-rest curve per class, then ``"macro"``, the
        vertical average whose area is the macro AUC of
        :func:`classification_metrics`. Multilabel: one curve per label, then
        ``"macro"``. Classes whose curve is undefined (absent from ``target``,
        or present in every sample) are left out, with a :class:`MetricWarning`.
    """
    scores, labels = _prepare(probs, target, task)
    if task == "binary":
        names = _class_names(class_names, 2)
        per_class = {names[1]: (labels, scores)}
    else:
        num_classes = scores.shape[1]
        names = _class_names(class_names, num_classes)
        if MACRO_KEY in names:
            raise ConfigError(f"class_names: {MACRO_KEY!r} is reserved for the macro-average curve")
        per_class = {}
        for k, name in enumerate(names):
            column = (labels == k) if task == "multiclass" else labels[:, k]
            per_class[name] = (column.astype(np.int64), scores[:, k])
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped = []
    for name, (column, score) in per_class.items():
        if 0 < column.sum() < column.size:
            fpr, tpr, _ = roc_curve(column, score, drop_intermediate=True)
            curves[name] = (fpr, tpr)
        else:
            skipped.append(name)
    if skipped:
        warnings.warn(
            f"roc_curves: no curve for class(es) {skipped}: target holds only one class for them",
            MetricWarning,
            stacklevel=2,
        )
    if task != "binary" and curves:
        curves[MACRO_KEY] = _macro_curve(list(curves.values()))
    return curves


# --------------------------------------------------------------------------- summary


def classification_metrics(
    probs: Any,
    target: Any,
    task: str,
    *,
    threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """All headline metrics of a classifier on one data set, as a JSON-ready dict.

    Decision rule: binary predicts positive when ``p >= threshold`` (the rule of
    :func:`roc_curve`); multiclass predicts the argmax (``threshold`` unused);
    multilabel predicts label ``k`` when ``p[:, k] >= threshold``.

    Averaging:

    * binary: recall (sensitivity), specificity, precision and F1 of the
      positive class (index 1); ``balanced_accuracy = (recall + specificity) / 2``
      (if ``target`` holds one class only: the rate of that class, as in
      scikit-learn's ``balanced_accuracy_score``).
    * multiclass: top-1 ``accuracy``; recall, specificity (one-vs-rest),
      precision and F1 are macro means over all K classes (an absent class counts
      with its zero-division value 0.0, like scikit-learn ``average="macro"``);
      ``balanced_accuracy`` is the mean recall over the classes present in
      ``target`` (scikit-learn's ``balanced_accuracy_score``); ``auc`` is the
      macro mean of the one-vs-rest AUCs over the classes whose AUC is defined.
    * multilabel: every metric is computed per label and macro-averaged;
      ``accuracy`` is the mean over labels of the per-label accuracy (Hamming
      score), ``subset_accuracy`` the fraction of samples with every label right;
      ``balanced_accuracy`` the mean of per-label ``(recall + specificity) / 2``
      (binary rule above for a label that is always or never present).

    Zero denominators give 0.0. An undefined AUC is NaN (with a
    :class:`MetricWarning`); ``auc`` is NaN only if no class has a defined AUC.

    Args:
        probs: probabilities, binary ``(N,)``/``(N, 1)``/``(N, 2)``, otherwise ``(N, K)``.
        target: labels, ``(N,)`` (binary, multiclass) or ``(N, K)`` (multilabel).
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        threshold: decision threshold on probabilities (binary, multilabel).
        class_names: K names (binary: 2, negative first); default ``"0"``, ``"1"``, ...

    Returns:
        A dict with ``task``, ``num_samples``, ``num_classes``, ``class_names``,
        ``threshold`` (binary, multilabel), ``accuracy``, ``balanced_accuracy``,
        ``auc``, ``recall``, ``specificity``, ``precision``, ``f1``,
        ``subset_accuracy`` (multilabel), ``confusion_matrix`` (``(K, K)`` as
        lists, rows = true; multilabel: K matrices ``[[tn, fp], [fn, tp]]``),
        ``support`` (class name -> number of true samples/positives) and
        ``per_class`` (class name -> ``auc``, ``recall``, ``specificity``,
        ``precision``, ``f1``, ``support``). Values are Python ints, floats,
        strings and lists.

    Raises:
        ConfigError: unknown ``task``, bad ``threshold`` or ``class_names``.
        DataError: probs/target of the wrong shape or values (e.g. logits, labels
            out of range, no samples).
    """
    check_task(task)
    threshold = _check_threshold(threshold)
    scores, labels = _prepare(probs, target, task)
    num_samples = int(scores.shape[0])
    result: dict[str, Any] = {"task": task, "num_samples": num_samples}

    if task == "binary":
        names = _class_names(class_names, 2)
        pred = (scores >= threshold).astype(np.int64)
        cm = confusion_matrix(labels, pred, 2)
        tp = np.diag(cm)
        fp = cm.sum(axis=0) - tp
        fn = cm.sum(axis=1) - tp
        tn = num_samples - tp - fp - fn
        auc = _quiet_auc(labels, scores)
        class_auc = np.array([auc, auc])  # AUC of class 0 (score 1-p) equals that of class 1
        support = cm.sum(axis=1)
        cm_out: Any = cm.tolist()
    elif task == "multiclass":
        num_classes = scores.shape[1]
        names = _class_names(class_names, num_classes)
        pred = np.argmax(scores, axis=1)
        cm = confusion_matrix(labels, pred, num_classes)
        tp = np.diag(cm)
        fp = cm.sum(axis=0) - tp
        fn = cm.sum(axis=1) - tp
        tn = num_samples - tp - fp - fn
        class_auc = np.array(
            [_quiet_auc((labels == k).astype(np.int64), scores[:, k]) for k in range(num_classes)]
        )
        support = cm.sum(axis=1)
        cm_out = cm.tolist()
    else:
        num_classes = scores.shape[1]
        names = _class_names(class_names, num_classes)
        pred = (scores >= threshold).astype(np.int64)
        mcm = multilabel_confusion_matrix(labels, pred)
        tn, fp, fn, tp = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 0], mcm[:, 1, 1]
        class_auc = np.array([_quiet_auc(labels[:, k], scores[:, k]) for k in range(num_classes)])
        support = labels.sum(axis=0)
        cm_out = mcm.tolist()

    rates = _rates(tp, fp, fn, tn)
    undefined = [name for name, value in zip(names, class_auc, strict=True) if math.isnan(value)]
    if undefined:
        which = "target" if task == "binary" else f"class(es) {undefined}"
        warnings.warn(
            f"classification_metrics: AUC undefined for {which} (only one class present in "
            "target); reported as NaN"
            + ("" if task == "binary" else " and left out of the macro AUC"),
            MetricWarning,
            stacklevel=2,
        )

    if task == "binary":
        result["num_classes"] = 2
        result["class_names"] = names
        result["threshold"] = threshold
        result["accuracy"] = float(rates["accuracy"][1])
        recall, specificity = float(rates["recall"][1]), float(rates["specificity"][1])
        result["balanced_accuracy"] = float(_balanced_accuracy(tp, fp, fn, tn)[1])
        result["auc"] = float(class_auc[1])
        result["recall"] = recall
        result["specificity"] = specificity
        result["precision"] = float(rates["precision"][1])
        result["f1"] = float(rates["f1"][1])
    else:
        result["num_classes"] = len(names)
        result["class_names"] = names
        defined = class_auc[~np.isnan(class_auc)]
        macro_auc = float(defined.mean()) if defined.size else math.nan
        if task == "multiclass":
            result["accuracy"] = float(tp.sum() / num_samples)
            present = support > 0
            result["balanced_accuracy"] = float(rates["recall"][present].mean())
        else:
            result["threshold"] = threshold
            result["accuracy"] = float(rates["accuracy"].mean())
            result["subset_accuracy"] = float(np.mean(np.all(pred == labels, axis=1)))
            result["balanced_accuracy"] = float(np.mean(_balanced_accuracy(tp, fp, fn, tn)))
        result["auc"] = macro_auc
        for key in ("recall", "specificity", "precision", "f1"):
            result[key] = float(rates[key].mean())

    result["confusion_matrix"] = cm_out
    result["support"] = {name: int(n) for name, n in zip(names, support, strict=True)}
    result["per_class"] = {
        name: {
            "auc": float(class_auc[k]),
            "recall": float(rates["recall"][k]),
            "specificity": float(rates["specificity"][k]),
            "precision": float(rates["precision"][k]),
            "f1": float(rates["f1"][k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(names)
    }
    return result


def to_jsonable(value: Any) -> Any:
    """A copy of ``value`` that strict JSON accepts.

    numpy scalars and arrays become Python numbers and lists, tuples become
    lists, and NaN/infinite floats become ``None`` (``json.dumps`` would write
    ``NaN``, which is not JSON).
    """
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
