"""Benchmark summaries, checked against independent computations on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medcls.benchmark.aggregate import summarize
from medcls.benchmark.spec import ReportOptions
from medcls.errors import DataError
from medcls.evaluation.statistics import delong_test, holm_correction, select_threshold
from tests.benchmark.fake_bench import make_fake_benchmark, read_csv


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    bench = make_fake_benchmark(tmp_path_factory.mktemp("bench") / "b", seeds=(0, 1))
    return bench, summarize(bench)


def _run_arrays(bench, model, seed, fold, split):
    slot = next(
        s for s in bench.spec.slots() if s.model.slug == model and s.seed == seed and s.fold == fold
    )
    rows = read_csv(bench.run_dir(slot) / f"predictions_{split}.csv")
    ids = [r["id"] for r in rows]
    target = np.array([int(r["target"]) for r in rows])
    score = np.array([float(r["prob_pneumonia"]) for r in rows])
    return ids, target, score


def test_per_run_metrics_use_the_validation_threshold_on_the_test_split(binary):
    bench, agg = binary
    assert agg.eval_split == "test" and agg.task == "binary"
    medium = agg.model("medium")
    assert len(medium.runs) == 6  # 3 folds x 2 seeds
    for run in medium.runs:
        _, val_t, val_s = _run_arrays(bench, "medium", run["seed"], run["fold"], "val")
        _, t, s = _run_arrays(bench, "medium", run["seed"], run["fold"], "test")
        threshold = select_threshold(val_t, val_s, "youden")["threshold"]
        assert run["threshold"] == pytest.approx(threshold)
        pred = (s >= threshold).astype(int)
        assert run["accuracy"] == pytest.approx(skm.accuracy_score(t, pred))
        assert run["auc"] == pytest.approx(skm.roc_auc_score(t, s))
        assert run["recall"] == pytest.approx(skm.recall_score(t, pred))
        assert run["precision"] == pytest.approx(skm.precision_score(t, pred, zero_division=0))
        assert run["f1"] == pytest.approx(skm.f1_score(t, pred))
        assert run["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(t, pred))
    summary = medium.summary
    aucs = [r["auc"] for r in medium.runs]
    assert summary["metrics"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert summary["metrics"]["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    assert summary["fit_seconds"]["total"] == pytest.approx(
        sum(r["fit_seconds"] for r in medium.runs)
    )
    assert summary["params"] == 500_000 and summary["macs"] == 80_000_000


def test_pooled_predictions_average_each_case_over_runs(binary):
    bench, agg = binary
    strong = agg.model("strong")
    by_case: dict[str, list[float]] = {}
    for run in strong.runs:
        ids, _, s = _run_arrays(bench, "strong", run["seed"], run["fold"], "test")
        for case, p in zip(ids, s):
            by_case.setdefault(case, []).append(p)
    assert strong.case_ids == sorted(by_case)
    assert all(len(v) == 6 for v in by_case.values())
    np.testing.assert_allclose(strong.probs, [np.mean(by_case[c]) for c in strong.case_ids])
    ci = strong.summary["ci"]["auc"]
    assert ci["estimate"] == pytest.approx(skm.roc_auc_score(strong.target, strong.probs))
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    cm = np.array(strong.summary["confusion_matrix"])
    assert cm.sum() == 40 and cm.trace() == pytest.approx(40 * strong.summary["pooled"]["accuracy"])


def test_reference_is_best_and_tests_are_holm_corrected(binary):
    _, agg = binary
    assert agg.reference == "strong"
    rows = {r["model"]: r for r in agg.summary["comparisons"]}
    assert set(rows) == {"medium", "weak"}
    ref = agg.model("strong")
    raw = []
    for name in ("medium", "weak"):
        m = agg.model(name)
        expected = delong_test(m.target, m.probs, ref.probs)
        assert rows[name]["delong"]["p_value"] == pytest.approx(expected["p_value"])
        assert rows[name]["delong"]["difference"] == pytest.approx(expected["difference"])
        raw.append(expected["p_value"])
        assert rows[name]["mcnemar"]["accuracy_reference"] == pytest.approx(
            np.mean(ref.pred == ref.target)
        )
    adjusted = holm_correction(raw)
    assert [rows[n]["delong"]["p_holm"] for n in ("medium", "weak")] == pytest.approx(adjusted)
    assert rows["weak"]["delong"]["significant"]  # strength 0.3 vs 2.5 on 40 cases
    assert agg.model("strong").summary["is_reference"]


def test_named_reference_sensitivity_rule_and_out_of_fold_split(tmp_path):
    bench = make_fake_benchmark(tmp_path / "b", with_test=False)
    options = ReportOptions(
        threshold="sensitivity:0.9", reference="weak", n_bootstrap=200, heatmap_method="none"
    )
    agg = summarize(bench, options)
    assert agg.eval_split == "val" and agg.reference == "weak"
    weak = agg.model("weak")
    assert weak.summary["pooled_cases"] == 120  # every case once: out-of-fold
    for run in weak.runs:
        assert run["recall"] >= 0.9 - 1e-12  # chosen on the same (validation) predictions
    with pytest.raises(DataError, match="not in this benchmark"):
        summarize(bench, ReportOptions(reference="nope", n_bootstrap=200))


def test_partial_benchmark_and_multiclass(tmp_path):
    bench = make_fake_benchmark(
        tmp_path / "mc",
        classes=("normal", "bacterial", "viral"),
        missing=[("weak", 0, 2)],
    )
    agg = summarize(bench)
    assert agg.task == "multiclass"
    assert len(agg.model("weak").runs) == 2 and agg.summary["benchmark"]["runs_done"] == 8
    strong = agg.model("strong")
    assert strong.probs.shape == (40, 3)
    assert strong.summary["ci"]["accuracy"]["low"] <= strong.summary["pooled"]["accuracy"]
    row = next(r for r in agg.summary["comparisons"] if r["model"] == "weak")
    assert row["delong"] is None and row["mcnemar"]["p_value"] <= 1.0


def test_nothing_finished_is_an_error(tmp_path):
    bench = make_fake_benchmark(
        tmp_path / "e", models={"a": 1.0}, folds=2, missing=[("a", 0, 0), ("a", 0, 1)]
    )
    with pytest.raises(DataError, match="no run of this benchmark has finished"):
        summarize(bench)
