"""Metrics of medcls.evaluation.functional, checked against scikit-learn."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from medcls.errors import ConfigError, DataError
from medcls.evaluation.functional import (
    MetricWarning,
    classification_metrics,
    confusion_matrix,
    multilabel_confusion_matrix,
    roc_auc,
    roc_curve,
    roc_curves,
    to_jsonable,
)

FAST = settings(max_examples=60, deadline=None)


def _tied_scores(rng: np.random.Generator, n: int, levels: int = 5) -> np.ndarray:
    """Scores on a coarse grid, so that many of them tie."""
    return rng.integers(0, levels, n) / (levels - 1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _multiclass_data(seed: int, n: int = 60, k: int = 4, ties: bool = True):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), target] += 1.0
    if ties:
        logits = np.round(logits)  # coarse: ties within each column
    return _softmax(logits), target


# ----------------------------------------------------------------------------- ROC


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_matches_sklearn_with_ties(seed, drop):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, 50)
    score = _tied_scores(rng, 50)
    fpr, tpr, thr = roc_curve(target, score, drop_intermediate=drop)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(target, score, drop_intermediate=drop)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, sk_thr)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_and_curve_area(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, 80)
    score = _tied_scores(rng, 80, levels=7) if seed % 2 else rng.random(80)
    auc = roc_auc(target, score)
    assert auc == pytest.approx(skm.roc_auc_score(target, score), abs=1e-12)
    fpr, tpr, _ = roc_curve(target, score)
    assert auc == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 4)), min_size=2, max_size=30).filter(
        lambda pairs: len({label for label, _ in pairs}) == 2
    )
)
def test_roc_auc_and_curve_property(pairs):
    target = np.array([label for label, _ in pairs])
    score = np.array([level for _, level in pairs]) / 4.0
    assert roc_auc(target, score) == pytest.approx(skm.roc_auc_score(target, score), abs=1e-12)
    fpr, tpr, thr = roc_curve(target, score)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(target, score)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, sk_thr)


def test_roc_auc_extremes():
    target = np.array([0, 0, 0, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert roc_auc(target, score) == 1.0
    assert roc_auc(target, 1 - score) == 0.0
    assert roc_auc(target, np.full(5, 0.4)) == 0.5  # every pair tied
    fpr, tpr, thr = roc_curve(target, score)
    np.testing.assert_array_equal(fpr, [0, 0, 0, 1])  # as sklearn: both ends of the vertical
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.8, 0.1])


def test_roc_auc_single_class_is_nan_with_warning():
    with pytest.warns(MetricWarning, match="only class 1"):
        assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    with pytest.warns(MetricWarning, match="no negative"):
        fpr, tpr, _ = roc_curve([1, 1, 1], [0.2, 0.5, 0.9])
    assert np.all(np.isnan(fpr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_tpr = skm.roc_curve([1, 1, 1], [0.2, 0.5, 0.9])[1]
    np.testing.assert_allclose(tpr, expected_tpr)


def test_roc_inputs_are_checked():
    with pytest.raises(DataError, match="target01 must be 0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(DataError, match="equal length"):
        roc_curve([0, 1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])


# ----------------------------------------------------------------------------- counts


@FAST
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_confusion_matrix_matches_sklearn(pairs):
    target = [t for t, _ in pairs]
    pred = [p for _, p in pairs]
    expected = skm.confusion_matrix(target, pred, labels=[0, 1, 2, 3])
    np.testing.assert_array_equal(confusion_matrix(target, pred, 4), expected)


def test_confusion_matrix_rejects_out_of_range():
    with pytest.raises(DataError, match=r"pred holds class index 3; expected indices in \[0, 3\)"):
        confusion_matrix([0, 1], [0, 3], 3)


def test_multilabel_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, (30, 4))
    pred = rng.integers(0, 2, (30, 4))
    np.testing.assert_array_equal(
        multilabel_confusion_matrix(target, pred), skm.multilabel_confusion_matrix(target, pred)
    )


# ----------------------------------------------------------------------------- binary


def _check_binary(result, target, p, threshold=0.5):
    pred = (p >= threshold).astype(int)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(target, pred))
    assert result["recall"] == pytest.approx(skm.recall_score(target, pred, zero_division=0))
    assert result["precision"] == pytest.approx(skm.precision_score(target, pred, zero_division=0))
    assert result["f1"] == pytest.approx(skm.f1_score(target, pred, zero_division=0))
    assert result["specificity"] == pytest.approx(
        skm.recall_score(target, pred, pos_label=0, zero_division=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns where a class is absent
        assert result["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(target, pred)
        )
    assert result["confusion_matrix"] == skm.confusion_matrix(target, pred, labels=[0, 1]).tolist()
    if len(set(target.tolist())) == 2:
        assert result["auc"] == pytest.approx(skm.roc_auc_score(target, p))


@pytest.mark.parametrize("seed", range(4))
def test_binary_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, 70)
    p = np.clip(0.35 * target + _tied_scores(rng, 70, levels=9) * 0.65, 0, 1)
    result = classification_metrics(p, target, "binary", class_names=["normal", "pneumonia"])
    _check_binary(result, target, p)
    assert result["num_samples"] == 70
    assert result["support"] == {"normal": int((target == 0).sum()), "pneumonia": int(target.sum())}
    positive = result["per_class"]["pneumonia"]
    assert positive["recall"] == result["recall"]
    assert result["per_class"]["normal"]["recall"] == result["specificity"]
    assert positive["auc"] == result["auc"]
    json.dumps(result, allow_nan=False)  # plain JSON


def test_binary_accepts_n1_and_n2_probabilities():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 2, 20)
    p = rng.random(20)
    one = classification_metrics(p, target, "binary")
    assert classification_metrics(p[:, None], target[:, None], "binary") == one
    assert classification_metrics(np.stack([1 - p, p], 1), target, "binary") == one


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 10)), min_size=1, max_size=30),
    st.sampled_from([0.3, 0.5, 0.7]),
)
def test_binary_property(pairs, threshold):
    target = np.array([t for t, _ in pairs])
    p = np.array([s for _, s in pairs]) / 10.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        result = classification_metrics(p, target, "binary", threshold=threshold)
    _check_binary(result, target, p, threshold)
    if len(set(target.tolist())) < 2:
        assert math.isnan(result["auc"])


def test_threshold_is_inclusive():
    result = classification_metrics([0.5, 0.49], [1, 0], "binary", threshold=0.5)
    assert result["confusion_matrix"] == [[1, 0], [0, 1]]


def test_binary_all_predicted_negative_gives_zero_not_nan():
    result = classification_metrics([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], "binary")
    assert result["precision"] == 0.0
    assert result["recall"] == 0.0
    assert result["f1"] == 0.0
    assert result["specificity"] == 1.0
    assert result["auc"] == pytest.approx(skm.roc_auc_score([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]))


def test_binary_perfect_separation():
    result = classification_metrics([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], "binary")
    for key in ("accuracy", "auc", "recall", "specificity", "precision", "f1", "balanced_accuracy"):
        assert result[key] == 1.0, key


def test_binary_single_class_auc_is_nan():
    with pytest.warns(MetricWarning, match="AUC undefined"):
        result = classification_metrics([0.9, 0.2], [1, 1], "binary")
    assert math.isnan(result["auc"])
    assert result["recall"] == 0.5
    assert to_jsonable(result)["auc"] is None
    json.dumps(to_jsonable(result), allow_nan=False)


# ----------------------------------------------------------------------------- multiclass


def _check_multiclass(result, target, probs):
    k = probs.shape[1]
    labels = list(range(k))
    pred = probs.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(target, pred))
    for key, fn in (
        ("recall", skm.recall_score),
        ("precision", skm.precision_score),
        ("f1", skm.f1_score),
    ):
        expected = fn(target, pred, labels=labels, average="macro", zero_division=0)
        assert result[key] == pytest.approx(expected), key
        per = fn(target, pred, labels=labels, average=None, zero_division=0)
        got = [result["per_class"][str(c)][key] for c in labels]
        np.testing.assert_allclose(got, per)
    specificity = [skm.recall_score(target != c, pred != c, zero_division=0) for c in labels]
    np.testing.assert_allclose(
        [result["per_class"][str(c)]["specificity"] for c in labels], specificity
    )
    assert result["specificity"] == pytest.approx(np.mean(specificity))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert result["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(target, pred)
        )
    assert result["confusion_matrix"] == skm.confusion_matrix(target, pred, labels=labels).tolist()


@pytest.mark.parametrize("seed", range(4))
def test_multiclass_metrics_match_sklearn(seed):
    probs, target = _multiclass_data(seed, ties=seed % 2 == 0)
    result = classification_metrics(probs, target, "multiclass")
    _check_multiclass(result, target, probs)
    expected_auc = skm.roc_auc_score(target, probs, multi_class="ovr", average="macro")
    assert result["auc"] == pytest.approx(expected_auc, abs=1e-12)
    per_auc = skm.roc_auc_score(np.eye(4)[target], probs, average=None)
    np.testing.assert_allclose([result["per_class"][str(c)]["auc"] for c in range(4)], per_auc)
    assert result["num_classes"] == 4
    assert sum(result["support"].values()) == 60


@FAST
@given(st.integers(0, 10_000), st.integers(3, 25), st.integers(2, 4))
def test_multiclass_property(seed, n, k):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, n)
    probs = _softmax(np.round(rng.normal(size=(n, k))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        result = classification_metrics(probs, target, "multiclass")
    _check_multiclass(result, target, probs)
    if len(set(target.tolist())) == k:
        if k == 2:  # sklearn's binary form: the AUC of class 1 (equal to that of class 0)
            expected = skm.roc_auc_score(target, probs[:, 1])
        else:
            expected = skm.roc_auc_score(target, probs, multi_class="ovr", average="macro")
        assert result["auc"] == pytest.approx(expected, abs=1e-12)


def test_multiclass_absent_class():
    probs, target = _multiclass_data(3, n=40, k=3)
    target[target == 2] = 0  # class 2 never occurs
    with pytest.warns(MetricWarning, match=r"class\(es\) \['2'\]"):
        result = classification_metrics(probs, target, "multiclass")
    _check_multiclass(result, target, probs)
    assert math.isnan(result["per_class"]["2"]["auc"])
    defined = [skm.roc_auc_score(target == c, probs[:, c]) for c in (0, 1)]
    assert result["auc"] == pytest.approx(np.mean(defined))
    assert result["support"]["2"] == 0


def test_multiclass_all_predicted_one_class():
    target = np.array([0, 1, 2, 0, 1, 2])
    probs = np.tile([0.2, 0.7, 0.1], (6, 1))
    result = classification_metrics(probs, target, "multiclass")
    _check_multiclass(result, target, probs)
    assert result["per_class"]["0"]["precision"] == 0.0
    assert result["auc"] == 0.5


def test_multiclass_perfect_separation():
    target = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[target] * 0.8 + 0.2 / 3
    result = classification_metrics(probs, target, "multiclass", class_names=["a", "b", "c"])
    for key in ("accuracy", "auc", "recall", "specificity", "precision", "f1", "balanced_accuracy"):
        assert result[key] == pytest.approx(1.0), key
    assert set(result["per_class"]) == {"a", "b", "c"}


# ----------------------------------------------------------------------------- multilabel


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, (50, 3))
    probs = np.clip(0.3 * target + 0.7 * _tied_scores(rng, 150, levels=6).reshape(50, 3), 0, 1)
    pred = (probs >= 0.5).astype(int)
    result = classification_metrics(probs, target, "multilabel", class_names=["a", "b", "c"])
    assert result["subset_accuracy"] == pytest.approx(skm.accuracy_score(target, pred))
    assert result["accuracy"] == pytest.approx(1 - skm.hamming_loss(target, pred))
    for key, fn in (
        ("recall", skm.recall_score),
        ("precision", skm.precision_score),
        ("f1", skm.f1_score),
    ):
        assert result[key] == pytest.approx(fn(target, pred, average="macro", zero_division=0))
        per = fn(target, pred, average=None, zero_division=0)
        np.testing.assert_allclose([result["per_class"][n][key] for n in "abc"], per)
    per_auc = skm.roc_auc_score(target, probs, average=None)
    np.testing.assert_allclose([result["per_class"][n]["auc"] for n in "abc"], per_auc)
    assert result["auc"] == pytest.approx(skm.roc_auc_score(target, probs, average="macro"))
    balanced = [skm.balanced_accuracy_score(target[:, k], pred[:, k]) for k in range(3)]
    assert result["balanced_accuracy"] == pytest.approx(np.mean(balanced))
    assert result["confusion_matrix"] == skm.multilabel_confusion_matrix(target, pred).tolist()
    assert result["support"] == {n: int(target[:, k].sum()) for k, n in enumerate("abc")}


def test_multilabel_label_never_positive():
    target = np.array([[1, 0], [0, 0], [1, 0]])
    probs = np.array([[0.9, 0.6], [0.2, 0.1], [0.7, 0.3]])
    with pytest.warns(MetricWarning):
        result = classification_metrics(probs, target, "multilabel")
    assert math.isnan(result["per_class"]["1"]["auc"])
    assert result["auc"] == 1.0  # macro over the labels with a defined AUC
    assert result["per_class"]["1"]["recall"] == 0.0  # zero division
    assert result["per_class"]["1"]["specificity"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- curves


def test_roc_curves_keys_and_macro_area():
    probs, target = _multiclass_data(7, n=80, k=3)
    curves = roc_curves(probs, target, "multiclass", class_names=["x", "y", "z"])
    assert list(curves) == ["x", "y", "z", "macro"]
    result = classification_metrics(probs, target, "multiclass")
    fpr, tpr = curves["macro"]
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(result["auc"], abs=1e-12)
    for k, name in enumerate("xyz"):
        sk_fpr, sk_tpr, _ = skm.roc_curve(target == k, probs[:, k])
        np.testing.assert_allclose(curves[name][0], sk_fpr)
        np.testing.assert_allclose(curves[name][1], sk_tpr)


def test_roc_curves_binary_and_absent_label():
    curves = roc_curves([0.2, 0.7, 0.9], [0, 1, 1], "binary", class_names=["neg", "pos"])
    assert list(curves) == ["pos"]
    target = np.array([[1, 0], [0, 0], [1, 0]])
    probs = np.array([[0.9, 0.6], [0.2, 0.1], [0.7, 0.3]])
    with pytest.warns(MetricWarning, match="no curve"):
        curves = roc_curves(probs, target, "multilabel")
    assert list(curves) == ["0", "macro"]


# ----------------------------------------------------------------------------- errors


def test_user_errors_name_the_argument():
    probs, target = _multiclass_data(0, n=10, k=3)
    with pytest.raises(ConfigError, match="task: expected one of binary, multiclass, multilabel"):
        classification_metrics(probs, target, "multi-class")
    with pytest.raises(ConfigError, match="class_names: expected 3 names"):
        classification_metrics(probs, target, "multiclass", class_names=["a", "b"])
    with pytest.raises(ConfigError, match="threshold"):
        classification_metrics(probs[:, 0], target > 0, "binary", threshold=1.5)
    with pytest.raises(DataError, match="logits"):
        classification_metrics(probs * 5 - 2, target, "multiclass")
    with pytest.raises(DataError, match=r"class index 3; expected indices in \[0, 3\)"):
        classification_metrics(probs, np.full(10, 3), "multiclass")
    with pytest.raises(DataError, match="no samples"):
        classification_metrics(np.zeros((0, 3)), np.zeros(0), "multiclass")
    with pytest.raises(DataError, match="shape of probs"):
        classification_metrics(probs, target, "multilabel")
