"""Comparison statistics, checked against brute-force definitions, SciPy and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from medcls.errors import ConfigError, DataError
from medcls.evaluation.functional import classification_metrics, roc_auc
from medcls.evaluation.statistics import (
    BINARY_METRICS,
    bootstrap_binary_metrics,
    bootstrap_ci,
    brier_score,
    calibration_curve,
    delong_ci,
    delong_covariance,
    delong_placements,
    delong_test,
    expected_calibration_error,
    holm_correction,
    mcnemar_test,
    select_threshold,
)


def _correlated_scores(seed: int, n: int = 80, ties: bool = False):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, n)
    target[:2], target[2:4] = 0, 1
    shared = rng.normal(size=n)
    a = shared + 1.2 * target + 0.6 * rng.normal(size=n)
    b = shared + 0.7 * target + 0.9 * rng.normal(size=n)
    if ties:
        a, b = np.round(a), np.round(b)
    return target, a, b


def _brute_force_delong(target, scores):
    """DeLong's estimator from its definition: the O(m n) kernel psi(x, y)."""
    pos, neg = scores[:, target == 1], scores[:, target == 0]
    m, n = pos.shape[1], neg.shape[1]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10 = psi.mean(axis=2)  # (M, m): each positive against every negative
    v01 = psi.mean(axis=1)  # (M, n)
    auc = psi.mean(axis=(1, 2))
    s10 = np.array([[np.sum((v10[i] - auc[i]) * (v10[j] - auc[j])) / (m - 1) for j in range(2)]
                    for i in range(2)])  # fmt: skip
    s01 = np.array([[np.sum((v01[i] - auc[i]) * (v01[j] - auc[j])) / (n - 1) for j in range(2)]
                    for i in range(2)])  # fmt: skip
    return auc, v10, v01, s10 / m + s01 / n


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_delong_equals_brute_force_from_placements(seed, ties):
    target, a, b = _correlated_scores(seed, ties=ties)
    scores = np.stack([a, b])
    auc, v10, v01 = delong_placements(target, scores)
    bf_auc, bf_v10, bf_v01, bf_cov = _brute_force_delong(target, scores)
    np.testing.assert_allclose(auc, bf_auc, atol=1e-12)
    np.testing.assert_allclose(v10, bf_v10, atol=1e-12)
    np.testing.assert_allclose(v01, bf_v01, atol=1e-12)
    _, cov = delong_covariance(target, scores)
    np.testing.assert_allclose(cov, bf_cov, rtol=1e-10, atol=1e-15)

    result = delong_test(target, a, b)
    variance = bf_cov[0, 0] + bf_cov[1, 1] - 2 * bf_cov[0, 1]
    z = (bf_auc[0] - bf_auc[1]) / math.sqrt(variance)
    assert result["var_a"] == pytest.approx(bf_cov[0, 0], rel=1e-10)
    assert result["covariance"] == pytest.approx(bf_cov[0, 1], rel=1e-10)
    assert result["z"] == pytest.approx(z, rel=1e-10)
    assert result["p_value"] == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-9)
    assert result["auc_a"] == pytest.approx(skm.roc_auc_score(target, a), abs=1e-12)


def test_delong_identical_scores_and_swapped_order():
    target, a, b = _correlated_scores(0)
    same = delong_test(target, a, a)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    ab, ba = delong_test(target, a, b), delong_test(target, b, a)
    assert ab["z"] == pytest.approx(-ba["z"]) and ab["p_value"] == pytest.approx(ba["p_value"])
    # a monotone transform of a score leaves its AUC and placements unchanged
    assert delong_test(target, a, np.exp(a))["p_value"] == 1.0


def test_delong_ci_contains_auc_and_needs_both_classes():
    target, a, _ = _correlated_scores(1)
    ci = delong_ci(target, a)
    assert ci["low"] < ci["auc"] < ci["high"]
    assert ci["se"] == pytest.approx(math.sqrt(delong_covariance(target, a)[1][0, 0]))
    with pytest.raises(DataError, match="at least 2 positive"):
        delong_test(np.array([0, 0, 0, 1]), np.arange(4.0), np.arange(4.0))
    with pytest.raises(DataError, match="same length"):
        delong_test(target, a, a[:-1])


def test_delong_rejects_a_real_difference_more_often_than_a_null_one():
    p_real, p_null = [], []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        target = np.repeat([0, 1], 60)
        good = target * 1.5 + rng.normal(size=120)
        weak = target * 0.3 + rng.normal(size=120)
        twin = target * 1.5 + rng.normal(size=120)
        p_real.append(delong_test(target, good, weak)["p_value"])
        p_null.append(delong_test(target, good, twin)["p_value"])
    assert np.mean(np.array(p_real) < 0.05) > 0.8
    assert np.mean(np.array(p_null) < 0.05) < 0.2


def test_bootstrap_auc_interval_covers_true_auc_at_nominal_rate():
    """Binormal scores: AUC = Phi(d / sqrt(2)); 95 % intervals should cover it ~95 % of the time."""
    d = 1.0
    true_auc = sps.norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(2024)
    simulations, covered = 300, 0
    for i in range(simulations):
        target = np.repeat([0, 1], 60)
        score = rng.normal(size=120) + d * target
        pred = (score > d / 2).astype(int)
        ci = bootstrap_binary_metrics(target, score, pred, n_resamples=400, seed=i)["auc"]
        covered += ci.low <= true_auc <= ci.high
    coverage = covered / simulations
    # binomial standard error at 300 simulations is ~1.3 %; percentile intervals run a bit narrow
    assert 0.89 <= coverage <= 0.985, coverage


def test_vectorised_bootstrap_equals_generic_bootstrap_with_sklearn_tested_metrics():
    rng = np.random.default_rng(7)
    target = rng.integers(0, 2, 70)
    score = np.clip(0.5 + 0.3 * (target - 0.5) + 0.25 * rng.normal(size=70), 0, 1)
    score = np.round(score, 1)  # ties
    pred = (score >= 0.5).astype(int)

    def statistic(rows):
        m = classification_metrics(score[rows], target[rows], "binary")
        return {name: m[name] for name in BINARY_METRICS}

    fast = bootstrap_binary_metrics(target, score, pred, n_resamples=200, seed=3)
    slow = bootstrap_ci(statistic, len(target), strata=target, n_resamples=200, seed=3)
    for name in BINARY_METRICS:
        assert fast[name].estimate == pytest.approx(slow[name].estimate, abs=1e-12), name
        assert fast[name].low == pytest.approx(slow[name].low, abs=1e-12), name
        assert fast[name].high == pytest.approx(slow[name].high, abs=1e-12), name
    assert fast["auc"].estimate == pytest.approx(skm.roc_auc_score(target, score))
    assert fast["balanced_accuracy"].estimate == pytest.approx(
        skm.balanced_accuracy_score(target, pred)
    )


def test_bootstrap_resamples_clusters_not_rows():
    rng = np.random.default_rng(5)
    target = np.repeat([0, 1], 30)
    score = rng.random(60) * 0.6 + 0.4 * target
    pred = (score > 0.5).astype(int)
    single = bootstrap_binary_metrics(target, score, pred, n_resamples=300, seed=1)
    # the same cases predicted three times (three runs), grouped by case id
    ids = np.tile(np.arange(60), 3)
    pooled = bootstrap_binary_metrics(
        np.tile(target, 3), np.tile(score, 3), np.tile(pred, 3), groups=ids, n_resamples=300, seed=1
    )
    as_rows = bootstrap_binary_metrics(
        np.tile(target, 3), np.tile(score, 3), np.tile(pred, 3), n_resamples=300, seed=1
    )
    for name in ("auc", "accuracy"):
        assert pooled[name].low == pytest.approx(single[name].low)
        assert pooled[name].high == pytest.approx(single[name].high)
        # treating repeated predictions as independent cases gives a falsely narrow interval
        width = as_rows[name].high - as_rows[name].low
        assert width < 0.75 * (single[name].high - single[name].low)


def test_bootstrap_argument_errors():
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_binary_metrics([0, 1], [0.2, 0.8], [0, 1], confidence=95)
    with pytest.raises(DataError, match="groups"):
        bootstrap_binary_metrics([0, 1], [0.2, 0.8], [0, 1], groups=[1, 2, 3])


def test_mcnemar_matches_scipy_exact_and_chi_square():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, 200)
    a = np.where(rng.random(200) < 0.8, target, (target + 1) % 3)
    b = np.where(rng.random(200) < 0.65, target, (target + 2) % 3)
    res = mcnemar_test(target, a, b, exact=True)
    bb, cc = np.sum((a == target) & (b != target)), np.sum((a != target) & (b == target))
    assert (res["b"], res["c"]) == (bb, cc)
    assert res["p_value"] == pytest.approx(sps.binomtest(min(bb, cc), bb + cc, 0.5).pvalue)
    chi = mcnemar_test(target, a, b, exact=False)
    statistic = (abs(bb - cc) - 1) ** 2 / (bb + cc)
    assert chi["statistic"] == pytest.approx(statistic)
    assert chi["p_value"] == pytest.approx(sps.chi2.sf(statistic, 1))
    assert mcnemar_test(target, a, a)["p_value"] == 1.0
    assert mcnemar_test([1, 1, 1], [1, 1, 0], [0, 0, 1])["exact"] is True


def test_holm_correction():
    adjusted = holm_correction([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(holm_correction([0.5, math.nan, 0.01])[1])
    np.testing.assert_allclose(holm_correction([0.5, math.nan, 0.01])[::2], [0.5, 0.02])
    np.testing.assert_allclose(holm_correction([0.04, 0.03]), [0.06, 0.06])  # monotone
    assert holm_correction([0.9, 0.8]) == [1.0, 1.0]  # capped
    with pytest.raises(DataError):
        holm_correction([1.5])


def test_brier_and_ece_against_definitions():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 2, 300)
    p = np.clip(0.3 + 0.4 * target + 0.2 * rng.normal(size=300), 0, 1)
    assert brier_score(p, target) == pytest.approx(skm.brier_score_loss(target, p))
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        np.sum(bins == k) / 300 * abs(p[bins == k].mean() - target[bins == k].mean())
        for k in range(10)
        if np.any(bins == k)
    )
    assert expected_calibration_error(p, target) == pytest.approx(ece)
    curve = calibration_curve(p, target, n_bins=10)
    assert curve["count"].sum() == 300 and curve["edges"].shape == (11,)
    # a calibrated predictor: outcomes drawn with the predicted probability
    q = rng.random(20000)
    y = (rng.random(20000) < q).astype(int)
    assert expected_calibration_error(q, y) < 0.02

    probs = rng.dirichlet(np.ones(3), size=50)
    labels = rng.integers(0, 3, 50)
    onehot = np.eye(3)[labels]
    assert brier_score(probs, labels, "multiclass") == pytest.approx(
        np.mean(np.sum((probs - onehot) ** 2, axis=1))
    )
    top = probs.argmax(1)
    conf = probs.max(1)
    ece_mc = expected_calibration_error(probs, labels, "multiclass", n_bins=5)
    bins = np.minimum((conf * 5).astype(int), 4)
    manual = sum(
        np.sum(bins == k) / 50 * abs(conf[bins == k].mean() - (top == labels)[bins == k].mean())
        for k in range(5)
        if np.any(bins == k)
    )
    assert ece_mc == pytest.approx(manual)


def _rates(target, score, t):
    pred = score >= t
    return np.mean(pred[target == 1]), np.mean(~pred[target == 0])


@pytest.mark.parametrize("seed", range(4))
def test_select_threshold_is_optimal_among_all_cuts(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, 90)
    score = np.round(np.clip(0.5 + 0.25 * (target - 0.5) + 0.2 * rng.normal(size=90), 0, 1), 2)
    cuts = np.unique(score)
    best_j = max(sum(_rates(target, score, t)) - 1 for t in cuts)
    chosen = select_threshold(target, score, "youden")
    sens, spec = _rates(target, score, chosen["threshold"])
    assert sens + spec - 1 == pytest.approx(best_j)
    assert (chosen["sensitivity"], chosen["specificity"]) == pytest.approx((sens, spec))
    assert chosen["threshold"] not in cuts or chosen["threshold"] == cuts.min()

    fixed = select_threshold(target, score, "sensitivity", sensitivity=0.9)
    sens, spec = _rates(target, score, fixed["threshold"])
    feasible = [_rates(target, score, t)[1] for t in cuts if _rates(target, score, t)[0] >= 0.9]
    assert sens >= 0.9 and spec == pytest.approx(max(feasible))


def test_select_threshold_separable_data_and_errors():
    target = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert select_threshold(target, score)["threshold"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="sensitivity"):
        select_threshold(target, score, "sensitivity")
    with pytest.raises(ConfigError, match="rule"):
        select_threshold(target, score, "f1")
    with pytest.raises(DataError, match="both classes"):
        select_threshold([1, 1], [0.2, 0.3])
    assert roc_auc(target, score) == 1.0
