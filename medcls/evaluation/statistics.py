"""Statistics for comparing classifiers: DeLong, bootstrap, McNemar, Holm, calibration, thresholds.

Pure NumPy functions (no state, no torch), in the conventions of
:mod:`medcls.evaluation.functional`: ``target01`` is ``(N,)`` in {0, 1}, scores
are ``(N,)`` probabilities of the positive class (larger = more likely positive).

* :func:`delong_test` - paired test of two correlated AUCs on the same cases
  (DeLong, DeLong & Clarke-Pearson 1988), computed from the placement values with
  the mid-rank algorithm of Sun & Xu (2014); :func:`delong_placements`,
  :func:`delong_covariance` and :func:`delong_ci` expose the pieces.
* :func:`bootstrap_binary_metrics` - percentile bootstrap intervals of the
  headline binary metrics, resampling cases (or clusters of rows, e.g. the
  predictions of several runs on one case), stratified by class;
  :func:`bootstrap_ci` does the same for any statistic.
* :func:`mcnemar_test` - paired test of two classifiers' accuracies.
* :func:`holm_correction` - Holm's step-down adjustment for several comparisons.
* :func:`brier_score`, :func:`expected_calibration_error`,
  :func:`calibration_curve` - calibration.
* :func:`select_threshold` - a decision threshold from validation data (Youden's J,
  or the most specific threshold reaching a fixed sensitivity).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcls.errors import ConfigError, DataError
from medcls.evaluation.functional import (
    _average_ranks,
    _check_binary_pair,
    _prepare,
    _safe_div,
    check_task,
    roc_curve,
)

__all__ = [
    "BINARY_METRICS",
    "ConfidenceInterval",
    "bootstrap_binary_metrics",
    "bootstrap_ci",
    "brier_score",
    "calibration_curve",
    "delong_ci",
    "delong_covariance",
    "delong_placements",
    "delong_test",
    "expected_calibration_error",
    "holm_correction",
    "mcnemar_test",
    "normal_two_sided_p",
    "select_threshold",
]

BINARY_METRICS = (
    "accuracy",
    "auc",
    "recall",
    "specificity",
    "precision",
    "f1",
    "balanced_accuracy",
)
"""Metrics :func:`bootstrap_binary_metrics` gives intervals for."""


def normal_two_sided_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic, ``P(|Z| >= |z|)``."""
    if math.isnan(z):
        return math.nan
    return math.erfc(abs(z) / math.sqrt(2.0))


def _normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF (bisection on ``erfc``; 1e-12 accurate)."""
    if not 0.0 < p < 1.0:
        raise ConfigError(f"confidence: expected a value in (0, 1); got {p}")
    low, high = -40.0, 40.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def _check_confidence(confidence: float) -> float:
    value = float(confidence)
    if not 0.0 < value < 1.0:
        raise ConfigError(f"confidence: expected a level in (0, 1) such as 0.95; got {confidence}")
    return value


# --------------------------------------------------------------------------- DeLong


def _scores_matrix(scores: Any, num_samples: int) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != num_samples:
        raise DataError(
            f"scores must have shape (N,) or (M, N) with N = {num_samples} samples (the length "
            f"of target01); got {matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)):
        raise DataError("scores contain NaN or infinite values; expected finite numbers")
    return matrix


def _positives_negatives(target01: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(target01)
    labels, _ = _check_binary_pair(labels, np.zeros(np.shape(labels)))
    matrix = _scores_matrix(scores, labels.size)
    pos, neg = matrix[:, labels == 1], matrix[:, labels == 0]
    if pos.shape[1] < 2 or neg.shape[1] < 2:
        raise DataError(
            f"DeLong needs at least 2 positive and 2 negative cases; got {pos.shape[1]} "
            f"positive and {neg.shape[1]} negative"
        )
    return pos, neg


def delong_placements(target01: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong placement values of one or several scores on the same cases.

    The placement of a positive case is the fraction of negatives it outranks
    (ties count 1/2), ``V10``; that of a negative case the fraction of positives
    that outrank it, ``V01``. Their means are the AUC. Computed from mid-ranks in
    ``O(N log N)`` per score (Sun & Xu, 2014).

    Args:
        target01: ``(N,)`` labels in {0, 1}.
        scores: ``(N,)`` or ``(M, N)``: M scores of the same N cases.

    Returns:
        ``(auc, v10, v01)``: ``(M,)`` AUCs, ``(M, m)`` placements of the m
        positive cases and ``(M, n)`` placements of the n negative cases.

    Raises:
        DataError: shapes that do not match, non-finite scores, or fewer than two
            cases of a class.
    """
    pos, neg = _positives_negatives(target01, scores)
    m, n = pos.shape[1], neg.shape[1]
    v10 = np.empty_like(pos)
    v01 = np.empty_like(neg)
    for k in range(pos.shape[0]):
        ranks_all = _average_ranks(np.concatenate([pos[k], neg[k]]))
        ranks_pos = _average_ranks(pos[k])
        ranks_neg = _average_ranks(neg[k])
        v10[k] = (ranks_all[:m] - ranks_pos) / n
        v01[k] = 1.0 - (ranks_all[m:] - ranks_neg) / m
    auc = v10.mean(axis=1)
    return auc, v10, v01


def delong_covariance(target01: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix.

    ``S = S10 / m + S01 / n``, where ``S10`` and ``S01`` are the sample
    covariances (divisor ``m - 1`` and ``n - 1``) of the placement values of the
    m positive and n negative cases.

    Args:
        target01: ``(N,)`` labels in {0, 1}.
        scores: ``(N,)`` or ``(M, N)``.

    Returns:
        ``(auc, cov)``: ``(M,)`` AUCs and the ``(M, M)`` covariance of their estimates.
    """
    auc, v10, v01 = delong_placements(target01, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return auc, s10 / m + s01 / n


def delong_ci(target01: Any, score: Any, confidence: float = 0.95) -> dict[str, float]:
    """AUC with its DeLong standard error and a normal confidence interval.

    Returns:
        ``{"auc", "se", "low", "high"}``; the interval is clipped to [0, 1].
    """
    confidence = _check_confidence(confidence)
    auc, cov = delong_covariance(target01, score)
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    z = _normal_quantile(0.5 + confidence / 2.0)
    value = float(auc[0])
    return {
        "auc": value,
        "se": se,
        "low": max(0.0, value - z * se),
        "high": min(1.0, value + z * se),
    }


def delong_test(target01: Any, score_a: Any, score_b: Any) -> dict[str, float]:
    """Paired DeLong test of ``H0: AUC(a) == AUC(b)`` on the same cases.

    Args:
        target01: ``(N,)`` labels in {0, 1}.
        score_a: ``(N,)`` scores of model a.
        score_b: ``(N,)`` scores of model b, for the same cases in the same order.

    Returns:
        ``{"auc_a", "auc_b", "difference" (a - b), "var_a", "var_b", "covariance",
        "se" (of the difference), "z", "p_value"}`` (two-sided). When the two scores
        rank the cases identically the difference has zero variance: ``z`` is 0
        and ``p_value`` 1.
    """
    a = np.asarray(score_a, dtype=np.float64)
    b = np.asarray(score_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(
            f"score_a and score_b must be 1-D arrays of the same length; got {a.shape} and {b.shape}"
        )
    auc, cov = delong_covariance(target01, np.stack([a, b]))
    difference = float(auc[0] - auc[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if variance <= 1e-15:
        z, p = 0.0, 1.0
        if abs(difference) > 1e-12:  # different AUCs with no spread: cannot happen, but be safe
            z, p = math.copysign(math.inf, difference), 0.0
    else:
        z = difference / math.sqrt(variance)
        p = normal_two_sided_p(z)
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "difference": difference,
        "var_a": float(cov[0, 0]),
        "var_b": float(cov[1, 1]),
        "covariance": float(cov[0, 1]),
        "se": math.sqrt(max(variance, 0.0)),
        "z": z,
        "p_value": p,
    }


# --------------------------------------------------------------------------- McNemar / Holm


def _binomial_cdf_half(k: int, n: int) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, 1/2)``, exact."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_test(
    target: Any, pred_a: Any, pred_b: Any, *, exact: bool | None = None
) -> dict[str, float]:
    """McNemar's test of equal accuracy of two classifiers on the same cases.

    Only the discordant cases count: ``b`` = a right and b wrong, ``c`` = a wrong
    and b right.

    Args:
        target: ``(N,)`` true class indices.
        pred_a: ``(N,)`` class indices predicted by model a.
        pred_b: ``(N,)`` class indices predicted by model b.
        exact: ``True`` = exact binomial test; ``False`` = chi-square with
            continuity correction, ``(|b - c| - 1)^2 / (b + c)``; ``None`` = exact
            when ``b + c < 25``.

    Returns:
        ``{"b", "c", "statistic", "p_value", "exact"}``; ``statistic`` is
        ``min(b, c)`` for the exact test. No discordant case: ``p_value`` = 1.
    """
    true = np.asarray(target)
    a = np.asarray(pred_a)
    b_pred = np.asarray(pred_b)
    if true.ndim != 1 or true.shape != a.shape or true.shape != b_pred.shape:
        raise DataError(
            f"target, pred_a and pred_b must be 1-D arrays of equal length; got shapes "
            f"{true.shape}, {a.shape} and {b_pred.shape}"
        )
    right_a, right_b = a == true, b_pred == true
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    n = b + c
    use_exact = n < 25 if exact is None else bool(exact)
    if n == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "exact": use_exact}
    if use_exact:
        p = min(1.0, 2.0 * _binomial_cdf_half(min(b, c), n))
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": p, "exact": True}
    statistic = (abs(b - c) - 1.0) ** 2 / n if abs(b - c) >= 1 else 0.0
    p = math.erfc(math.sqrt(statistic / 2.0))  # chi-square, 1 degree of freedom
    return {"b": b, "c": c, "statistic": statistic, "p_value": p, "exact": False}


def holm_correction(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control).

    The i-th smallest of m p-values is multiplied by ``m - i + 1``; adjusted
    values are made non-decreasing in that order and capped at 1. Reject a
    hypothesis when its adjusted p-value is below alpha. NaN entries are left out
    of m and stay NaN.

    Args:
        p_values: raw p-values, in any order.

    Returns:
        adjusted p-values in the input order.
    """
    values = [float(p) for p in p_values]
    for p in values:
        if not math.isnan(p) and not 0.0 <= p <= 1.0:
            raise DataError(f"p_values: expected values in [0, 1]; got {p}")
    valid = [i for i, p in enumerate(values) if not math.isnan(p)]
    order = sorted(valid, key=lambda i: values[i])
    m = len(order)
    adjusted = [math.nan] * len(values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a percentile bootstrap interval.

    Attributes:
        estimate: the statistic on the data as given.
        low: lower bound.
        high: upper bound.
        confidence: the interval's nominal coverage (0.95).
        resamples: resamples on which the statistic was defined (an AUC is not
            defined on a resample with one class).
    """

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int

    def to_dict(self) -> dict[str, float]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "resamples": self.resamples,
        }


def _cluster_ids(groups: Any, num_rows: int) -> tuple[np.ndarray, int]:
    """Row -> cluster index ``(N,)`` and the number of clusters."""
    if groups is None:
        return np.arange(num_rows), num_rows
    ids = np.asarray(groups)
    if ids.shape != (num_rows,):
        raise DataError(f"groups must have shape ({num_rows},) (one id per row); got {ids.shape}")
    _, index = np.unique(ids, return_inverse=True)
    return index.reshape(-1), int(index.max()) + 1 if num_rows else 0


def _resample_weights(
    cluster_of_row: np.ndarray,
    num_clusters: int,
    strata_of_cluster: np.ndarray | None,
    n_resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(B, N)`` row weights: how often each row's cluster was drawn in each resample.

    Clusters are drawn with replacement, within each stratum (so every resample
    keeps the number of clusters of each stratum).
    """
    counts = np.zeros((n_resamples, num_clusters), dtype=np.float64)
    strata = (
        np.zeros(num_clusters, dtype=np.int64) if strata_of_cluster is None else strata_of_cluster
    )
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        size = members.size
        counts[:, members] = rng.multinomial(size, np.full(size, 1.0 / size), size=n_resamples)
    return counts[:, cluster_of_row]


def _strata_of_clusters(
    strata: Any, cluster_of_row: np.ndarray, num_clusters: int
) -> np.ndarray | None:
    if strata is None:
        return None
    values = np.asarray(strata)
    if values.shape != cluster_of_row.shape:
        raise DataError(
            f"strata must have one value per row ({cluster_of_row.size}); got shape {values.shape}"
        )
    _, codes = np.unique(values, return_inverse=True)
    out = np.full(num_clusters, -1, dtype=np.int64)
    out[cluster_of_row] = codes.reshape(-1)  # a cluster takes the stratum of its (last) row
    return out


def _percentile_interval(
    estimate: float, values: np.ndarray, confidence: float
) -> ConfidenceInterval:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ConfidenceInterval(estimate, math.nan, math.nan, confidence, 0)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return ConfidenceInterval(
        float(estimate), float(low), float(high), confidence, int(finite.size)
    )


def _weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row of ``weights`` ``(B, N)`` (ties count 1/2), ``(B,)``.

    A row weight is the number of times that sample is in the resample; the AUC
    is then the probability that a drawn positive outranks a drawn negative.
    """
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    pos = (labels[order] == 1).astype(np.float64)
    w = weights[:, order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]]))
    neg_in = np.add.reduceat(w * (1.0 - pos), starts, axis=1)  # (B, G) negatives per tie group
    pos_in = np.add.reduceat(w * pos, starts, axis=1)
    neg_below = np.cumsum(neg_in, axis=1) - neg_in
    wins = np.sum(pos_in * (neg_below + 0.5 * neg_in), axis=1)
    total = pos_in.sum(axis=1) * neg_in.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / np.where(total > 0, total, 1.0), np.nan)


def _weighted_binary_metrics(
    labels: np.ndarray, pred: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Threshold metrics of each weight row ``(B, N)``, each ``(B,)``."""
    y = labels.astype(np.float64)
    p = pred.astype(np.float64)
    tp = weights @ (y * p)
    fn = weights @ (y * (1 - p))
    fp = weights @ ((1 - y) * p)
    tn = weights @ ((1 - y) * (1 - p))
    recall = _safe_div(tp, tp + fn)
    specificity = _safe_div(tn, tn + fp)
    has_pos, has_neg = (tp + fn) > 0, (tn + fp) > 0
    balanced = _safe_div(recall * has_pos + specificity * has_neg, has_pos * 1.0 + has_neg)
    return {
        "accuracy": _safe_div(tp + tn, tp + tn + fp + fn),
        "recall": recall,
        "specificity": specificity,
        "precision": _safe_div(tp, tp + fp),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": balanced,
    }


def bootstrap_binary_metrics(
    target01: Any,
    score: Any,
    pred: Any,
    *,
    groups: Any = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    stratified: bool = True,
    seed: int = 0,
) -> dict[str, ConfidenceInterval]:
    """Percentile bootstrap intervals of accuracy, AUC, recall, specificity, precision,
    F1 and balanced accuracy of a binary classifier.

    Rows may be pooled predictions of several runs (e.g. the out-of-fold
    predictions of every fold and seed): give ``groups`` (the case id of each row)
    and whole cases are resampled, so that repeated predictions of one case are
    not counted as independent evidence. All resamples are computed at once from
    multinomial weights (no Python loop over resamples).

    Args:
        target01: ``(N,)`` labels in {0, 1}.
        score: ``(N,)`` positive-class probabilities (for the AUC).
        pred: ``(N,)`` predicted labels in {0, 1} (each row at its own threshold).
        groups: ``(N,)`` cluster id of each row; ``None`` = every row is a case.
        n_resamples: number of bootstrap resamples.
        confidence: nominal coverage of the intervals.
        stratified: resample within each class, so every resample keeps the
            class counts (and the AUC is always defined); a cluster's class is
            that of its rows.
        seed: seed of the resampling.

    Returns:
        metric name (:data:`BINARY_METRICS`) -> :class:`ConfidenceInterval`.
    """
    confidence = _check_confidence(confidence)
    if int(n_resamples) < 1:
        raise ConfigError(f"n_resamples: expected a positive integer; got {n_resamples}")
    labels, scores = _check_binary_pair(target01, score)
    predicted, _ = _check_binary_pair(pred, scores)
    if labels.size == 0:
        raise DataError("no samples: target01 is empty")
    cluster, num_clusters = _cluster_ids(groups, labels.size)
    strata = _strata_of_clusters(labels if stratified else None, cluster, num_clusters)
    rng = np.random.default_rng(seed)
    ones = np.ones((1, labels.size))
    estimate = _weighted_binary_metrics(labels, predicted, ones)
    estimate["auc"] = _weighted_auc(labels, scores, ones)
    out: dict[str, ConfidenceInterval] = {}
    samples: dict[str, list[np.ndarray]] = {name: [] for name in BINARY_METRICS}
    chunk = max(1, min(int(n_resamples), 4_000_000 // max(labels.size, 1)))
    done = 0
    while done < n_resamples:
        size = min(chunk, int(n_resamples) - done)
        weights = _resample_weights(cluster, num_clusters, strata, size, rng)
        values = _weighted_binary_metrics(labels, predicted, weights)
        values["auc"] = _weighted_auc(labels, scores, weights)
        for name in BINARY_METRICS:
            samples[name].append(values[name])
        done += size
    for name in BINARY_METRICS:
        out[name] = _percentile_interval(
            float(estimate[name][0]), np.concatenate(samples[name]), confidence
        )
    return out


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float | Mapping[str, float]],
    num_rows: int,
    *,
    groups: Any = None,
    strata: Any = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval | dict[str, ConfidenceInterval]:
    """Percentile bootstrap interval of any statistic of rows.

    Args:
        statistic: maps an index array of rows (with repeats) to a number or a
            dict of numbers (NaN = undefined on that resample, left out).
        num_rows: N, the number of rows.
        groups: ``(N,)`` cluster id per row (whole clusters are resampled).
        strata: ``(N,)`` stratum per row (clusters are resampled within strata).
        n_resamples: number of resamples.
        confidence: nominal coverage.
        seed: seed of the resampling.

    Returns:
        a :class:`ConfidenceInterval`, or a dict of them when ``statistic``
        returns a dict.
    """
    confidence = _check_confidence(confidence)
    if int(n_resamples) < 1:
        raise ConfigError(f"n_resamples: expected a positive integer; got {n_resamples}")
    cluster, num_clusters = _cluster_ids(groups, int(num_rows))
    strata_c = _strata_of_clusters(strata, cluster, num_clusters)
    rng = np.random.default_rng(seed)
    rows = np.arange(int(num_rows))
    estimate = statistic(rows)
    weights = _resample_weights(cluster, num_clusters, strata_c, int(n_resamples), rng)
    draws = [statistic(np.repeat(rows, w.astype(np.int64))) for w in weights]
    if isinstance(estimate, Mapping):
        return {
            key: _percentile_interval(
                float(estimate[key]), np.array([float(d[key]) for d in draws]), confidence
            )
            for key in estimate
        }
    return _percentile_interval(float(estimate), np.array(draws, dtype=np.float64), confidence)


# --------------------------------------------------------------------------- calibration


def brier_score(probs: Any, target: Any, task: str = "binary") -> float:
    """Mean squared error of the predicted probabilities (lower is better).

    Binary: ``mean((p - y)^2)`` of the positive-class probability (scikit-learn's
    ``brier_score_loss``), in [0, 1]. Multiclass: Brier's original score,
    ``mean(sum_k (p_k - [y == k])^2)``, in [0, 2]. Multilabel: the mean over
    labels of the binary score.
    """
    check_task(task)
    scores, labels = _prepare(probs, target, task)
    if task == "binary":
        return float(np.mean((scores - labels) ** 2))
    if task == "multiclass":
        onehot = np.eye(scores.shape[1])[labels]
        return float(np.mean(np.sum((scores - onehot) ** 2, axis=1)))
    return float(np.mean((scores - labels) ** 2))


def _calibration_pairs(probs: Any, target: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(predicted probability, observed outcome) pairs that calibration is judged on."""
    check_task(task)
    scores, labels = _prepare(probs, target, task)
    if task == "binary":
        return scores, labels.astype(np.float64)
    if task == "multiclass":
        top = np.argmax(scores, axis=1)
        return scores[np.arange(scores.shape[0]), top], (top == labels).astype(np.float64)
    return scores.ravel(), labels.ravel().astype(np.float64)


def calibration_curve(
    probs: Any, target: Any, task: str = "binary", *, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Reliability diagram data on ``n_bins`` equal-width bins of [0, 1].

    Binary: the positive-class probability against the observed fraction of
    positives. Multiclass: the top-class confidence against the accuracy of the
    top class. Multilabel: every (case, label) probability against its label.

    Returns:
        ``{"mean_predicted", "observed", "count", "edges"}``; the first three
        ``(n_bins,)`` (NaN for empty bins), ``edges`` ``(n_bins + 1,)``.
    """
    if int(n_bins) < 1:
        raise ConfigError(f"n_bins: expected a positive integer; got {n_bins}")
    predicted, observed = _calibration_pairs(probs, target, task)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    index = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, int(n_bins) - 1)
    count = np.bincount(index, minlength=int(n_bins)).astype(np.float64)
    sum_pred = np.bincount(index, weights=predicted, minlength=int(n_bins))
    sum_obs = np.bincount(index, weights=observed, minlength=int(n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(count > 0, sum_pred / np.maximum(count, 1), np.nan)
        frac = np.where(count > 0, sum_obs / np.maximum(count, 1), np.nan)
    return {"mean_predicted": mean_predicted, "observed": frac, "count": count, "edges": edges}


def expected_calibration_error(
    probs: Any, target: Any, task: str = "binary", *, n_bins: int = 10
) -> float:
    """Expected calibration error: the count-weighted mean gap of :func:`calibration_curve`.

    ``ECE = sum_b (n_b / N) |mean predicted_b - observed_b|`` over equal-width
    bins (what is predicted and observed per task: see :func:`calibration_curve`).
    0 = perfectly calibrated.
    """
    curve = calibration_curve(probs, target, task, n_bins=n_bins)
    used = curve["count"] > 0
    gaps = np.abs(curve["mean_predicted"][used] - curve["observed"][used])
    return float(np.sum(curve["count"][used] * gaps) / np.sum(curve["count"][used]))


# --------------------------------------------------------------------------- thresholds


def select_threshold(
    target01: Any, score: Any, rule: str = "youden", *, sensitivity: float | None = None
) -> dict[str, float]:
    """A decision threshold for ``score >= threshold``, chosen on (validation) data.

    Rules:

    * ``youden``: maximise Youden's J = sensitivity + specificity - 1 (among
      equal J, the highest threshold);
    * ``sensitivity``: the highest threshold whose sensitivity reaches
      ``sensitivity`` (the most specific rule with that sensitivity).

    The threshold returned lies halfway between the chosen score and the next
    lower distinct score, so it classifies the given data exactly as the chosen
    cut does while not sitting on a training value.

    Args:
        target01: ``(N,)`` labels in {0, 1}, both classes present.
        score: ``(N,)`` positive-class probabilities.
        rule: ``youden`` or ``sensitivity``.
        sensitivity: the required sensitivity in (0, 1] (rule ``sensitivity``).

    Returns:
        ``{"threshold", "sensitivity", "specificity", "youden_j"}`` on the given data.

    Raises:
        ConfigError: an unknown rule or a missing/invalid ``sensitivity``.
        DataError: a single class in ``target01``.
    """
    if rule not in ("youden", "sensitivity"):
        raise ConfigError(f"threshold rule: expected 'youden' or 'sensitivity'; got {rule!r}")
    if rule == "sensitivity" and (sensitivity is None or not 0.0 < float(sensitivity) <= 1.0):
        raise ConfigError(
            f"sensitivity: the 'sensitivity' rule needs a target in (0, 1]; got {sensitivity!r}"
        )
    labels, scores = _check_binary_pair(target01, score)
    if labels.size == 0 or labels.min() == labels.max():
        raise DataError("select_threshold: target01 must contain both classes")
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # drop the (0, 0) point at +inf
    if rule == "youden":
        j = tpr - fpr
        index = int(np.flatnonzero(j >= j.max() - 1e-12)[0])
    else:
        index = int(np.flatnonzero(tpr >= float(sensitivity) - 1e-12)[0])
    chosen = float(thresholds[index])
    lower = thresholds[index + 1] if index + 1 < thresholds.size else None
    threshold = chosen if lower is None else (chosen + float(lower)) / 2.0
    return {
        "threshold": float(min(max(threshold, 0.0), 1.0)),
        "sensitivity": float(tpr[index]),
        "specificity": float(1.0 - fpr[index]),
        "youden_j": float(tpr[index] - fpr[index]),
    }
