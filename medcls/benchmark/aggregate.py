"""Summarise a benchmark folder: per-model metrics over runs, intervals, and comparisons.

What is computed, for each model (binary and multiclass tasks):

* **Per run** (one model, seed, fold): the decision threshold is chosen on the
  run's *validation* predictions (``youden``, ``sensitivity:<target>`` or a fixed
  value; multiclass: the arg-max) and applied to its *evaluation split*: the
  held-out ``test`` split when the runs have one, else the validation fold
  itself (then the runs' validation folds are the out-of-fold predictions).
  Accuracy, AUC, recall, specificity, precision, F1 and balanced accuracy are
  computed per run and reported as mean ± sample standard deviation over runs.
* **Pooled**: the predictions of all runs on the evaluation split are pooled per
  case (a case's probability is the mean over the runs that predicted it; its
  threshold the mean of those runs' thresholds). On these per-case predictions:
  95 % percentile bootstrap intervals (cases resampled within each class),
  calibration (ECE, Brier), the ROC curve and the confusion matrix.
* **Comparison** with a reference model (the one with the highest mean AUC, or
  one named), on the cases both predicted: the paired DeLong test of the AUCs and
  McNemar's test of the accuracies, each family Holm-corrected over the models.

Timing and size come from each run's ``done.json`` (written by the sweep).
"""

from __future__ import annotations

import csv
import math
import platform
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcls.benchmark.spec import ReportOptions, Slot, parse_threshold
from medcls.benchmark.sweep import Benchmark
from medcls.errors import DataError
from medcls.evaluation.functional import (
    MetricWarning,
    classification_metrics,
    roc_curve,
    roc_curves,
)
from medcls.evaluation.statistics import (
    BINARY_METRICS,
    bootstrap_binary_metrics,
    bootstrap_ci,
    brier_score,
    calibration_curve,
    delong_test,
    expected_calibration_error,
    holm_correction,
    mcnemar_test,
    select_threshold,
)

__all__ = ["METRICS", "Aggregate", "ModelResult", "software_versions", "summarize"]

METRICS = BINARY_METRICS
"""Metrics summarised per model, in table order."""

HISTORY_COLUMNS = ("val_auc", "val_accuracy", "val_loss", "train_loss")


@dataclass
class ModelResult:
    """Everything known about one model of a benchmark.

    Attributes:
        label: display name; ``name``/``slug``/``kwargs`` as in its spec.
        runs: one dict per finished run (seed, fold, threshold, metrics, timing).
        failed: one dict per failed run (seed, fold, error).
        case_ids: the pooled evaluation cases, ``(N,)``.
        target: their labels ``(N,)``.
        probs: pooled probabilities, binary ``(N,)``, multiclass ``(N, K)``.
        pred: pooled predictions ``(N,)`` (class indices).
        histories: per run, its ``history.csv`` rows.
        summary: the JSON-ready summary (see :func:`summarize`).
    """

    name: str
    label: str
    slug: str
    kwargs: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    case_ids: list[str] = field(default_factory=list)
    target: np.ndarray | None = None
    probs: np.ndarray | None = None
    pred: np.ndarray | None = None
    histories: list[list[dict[str, float]]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Aggregate:
    """The summary of a benchmark (``summary`` is what ``results/summary.json`` holds)."""

    bench: Benchmark
    options: ReportOptions
    task: str
    classes: list[str]
    eval_split: str
    models: list[ModelResult]
    reference: str | None
    summary: dict[str, Any]

    def model(self, label: str) -> ModelResult:
        return next(m for m in self.models if m.label == label)

    @property
    def finished(self) -> list[ModelResult]:
        return [m for m in self.models if m.runs]


# ---------------------------------------------------------------- reading runs


def _read_predictions(
    path: Path, task: str, classes: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(ids, target, probs)`` of a run's ``predictions_<split>.csv``.

    binary: probs ``(N,)`` of the positive (second) class; multiclass ``(N, K)``.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = [f"prob_{c}" for c in classes]
    if rows and any(c not in rows[0] for c in [*columns, "target", "id"]):
        raise DataError(
            f"expected columns id, target, {', '.join(columns)}; got {list(rows[0])}", path=path
        )
    ids = [r["id"] for r in rows]
    target = np.array([int(r["target"]) for r in rows], dtype=np.int64)
    probs = np.array([[float(r[c]) for c in columns] for r in rows], dtype=np.float64)
    if task == "binary":
        probs = probs[:, 1] if probs.size else np.zeros(0)
    return ids, target, probs.reshape(len(rows), -1) if task != "binary" else probs


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key in ("epoch", *HISTORY_COLUMNS, "epoch_seconds"):
                value = row.get(key)
                try:
                    parsed[key] = float(value) if value not in (None, "") else math.nan
                except ValueError:
                    parsed[key] = math.nan
            rows.append(parsed)
    return rows


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def _threshold_for(rule: str, value: float | None, target, score) -> tuple[float, str]:
    """The run's threshold and a note when the rule could not be applied."""
    if rule == "fixed":
        return float(value), ""
    if target.size == 0 or target.min() == target.max():
        return 0.5, "validation split has a single class; threshold 0.5 used"
    chosen = select_threshold(target, score, rule, sensitivity=value)
    return chosen["threshold"], ""


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return fn(*args, **kwargs)


# ---------------------------------------------------------------- summary


def software_versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries a result depends on."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in (
        "medcls",
        "torch",
        "torchvision",
        "timm",
        "timm_3d",
        "monai",
        "lightning",
        "numpy",
        "scikit-learn",
        "grad-cam",
    ):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    processor = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out["cpu"] = processor
    torch = sys.modules.get("torch")  # only when already loaded (training, heatmaps)
    if torch is not None and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _data_summary(bench: Benchmark) -> dict[str, Any]:
    seed = bench.spec.seeds[0]
    rows = bench.read_folds(seed)
    classes = sorted({label for r in rows for label in r["label"].split("|") if label})
    parts: dict[str, dict[str, int]] = {}
    for row in rows:
        part = "test" if row["split"] == "test" else f"fold {row['fold']}"
        counts = parts.setdefault(part, dict.fromkeys(classes, 0))
        for label in row["label"].split("|"):
            if label:
                counts[label] += 1
    order = sorted((p for p in parts if p != "test"), key=lambda p: int(p.split()[1]))
    if "test" in parts:
        order.append("test")
    config = bench.spec.config
    return {
        "source": config.get("data", {}).get("source"),
        "path": config.get("data", {}).get("path"),
        "cases": len(rows),
        "patients": len({r["patient_id"] for r in rows}),
        "classes": classes,
        "parts": {p: parts[p] for p in order},
        "spatial_size": config.get("preprocess", {}).get("spatial_size"),
        "split_file": str(bench.folds_path(seed).relative_to(bench.folder)),
    }


def _collect_runs(bench: Benchmark, slots: Sequence[Slot]) -> tuple[list, list]:
    done, failed = [], []
    for slot in slots:
        record = bench.done(slot)
        if record is not None:
            done.append((slot, record))
            continue
        failure = bench.failed(slot)
        if failure is not None:
            failed.append({"seed": slot.seed, "fold": slot.fold, "error": failure.get("error")})
    return done, failed


def _task_and_classes(done_runs) -> tuple[str, list[str]]:
    for _, record in done_runs:
        if record.get("task") and record.get("classes"):
            return str(record["task"]), list(record["classes"])
    return "binary", []


def _eval_split(options: ReportOptions, bench: Benchmark, done_runs) -> str:
    if options.eval_split != "auto":
        return options.eval_split
    has_test = all(
        (bench.run_dir(slot) / "predictions_test.csv").is_file() for slot, _ in done_runs
    )
    return "test" if done_runs and has_test else "val"


def summarize(bench: Benchmark, options: ReportOptions | None = None) -> Aggregate:
    """Read every finished run of ``bench`` and compute the benchmark's summary.

    Args:
        bench: the benchmark folder.
        options: report options (default: those stored in the folder).

    Returns:
        The :class:`Aggregate`; ``aggregate.summary`` is JSON-ready.

    Raises:
        DataError: no run has finished yet, or the runs disagree on classes/task.
    """
    options = (options or bench.spec.report).validate()
    rule, value = parse_threshold(options.threshold)
    all_done = []
    per_model: list[ModelResult] = []
    for spec in bench.spec.models:
        slots = [s for s in bench.spec.slots() if s.model.slug == spec.slug]
        done, failed = _collect_runs(bench, slots)
        result = ModelResult(spec.name, spec.label, spec.slug, dict(spec.kwargs), failed=failed)
        result.summary["runs_expected"] = len(slots)
        per_model.append(result)
        all_done += [(result, slot, record) for slot, record in done]
    if not all_done:
        raise DataError(
            "no run of this benchmark has finished yet; run `medcls benchmark` first",
            path=bench.folder,
        )
    task, classes = _task_and_classes([(s, r) for _, s, r in all_done])
    for _, slot, record in all_done:
        if record.get("classes") and list(record["classes"]) != classes:
            raise DataError(
                f"run {slot.key} has classes {record['classes']}, others {classes}",
                path=bench.run_dir(slot),
            )
    if task not in ("binary", "multiclass"):
        raise DataError(
            f"benchmark reports support binary and multiclass tasks; these runs are {task}",
            path=bench.folder,
        )
    eval_split = _eval_split(options, bench, [(s, r) for _, s, r in all_done])

    pooled: dict[str, dict[str, list]] = {m.slug: {} for m in per_model}
    for result, slot, record in all_done:
        run_dir = bench.run_dir(slot)
        _val_ids, val_target, val_probs = _read_predictions(
            run_dir / "predictions_val.csv", task, classes
        )
        path = run_dir / f"predictions_{eval_split}.csv"
        if not path.is_file():
            raise DataError(
                f"run {slot.key} has no {eval_split} predictions; use eval_split 'auto' or 'val'",
                path=path,
            )
        ids, target, probs = _read_predictions(path, task, classes)
        note = ""
        if task == "binary":
            threshold, note = _threshold_for(rule, value, val_target, val_probs)
        else:
            threshold = None
        metrics = _quiet(
            classification_metrics,
            probs,
            target,
            task,
            threshold=threshold if threshold is not None else 0.5,
            class_names=classes,
        )
        run = {
            "seed": slot.seed,
            "fold": slot.fold,
            "threshold": threshold,
            "threshold_note": note,
            "num_cases": len(ids),
            **{name: metrics[name] for name in METRICS},
            "ece": expected_calibration_error(probs, target, task),
            "brier": brier_score(probs, target, task),
            "best_epoch": record.get("best_epoch"),
            "epochs_run": record.get("epochs_run"),
            "fit_seconds": record.get("fit_seconds"),
            "seconds_per_epoch": record.get("seconds_per_epoch"),
            "params": record.get("params"),
            "family": record.get("family"),
            "macs": record.get("macs"),
            "latency_ms": record.get("latency_ms"),
            "latency_device": record.get("latency_device"),
            "host": record.get("host"),
        }
        result.runs.append(run)
        result.histories.append(_read_history(run_dir / "history.csv"))
        by_case = pooled[result.slug]
        for i, case_id in enumerate(ids):
            entry = by_case.setdefault(case_id, [int(target[i]), [], []])
            entry[1].append(probs[i])
            entry[2].append(threshold if threshold is not None else 0.5)

    for result in per_model:
        _finish_model(result, pooled[result.slug], task, classes, options)
    reference = _pick_reference(per_model, options)
    comparisons = _compare(per_model, reference, task, options)
    summary = {
        "benchmark": {
            "folder": str(bench.folder),
            "folds": bench.spec.folds,
            "seeds": bench.spec.seeds,
            "split_seed": bench.spec.split_seed,
            "resplit": bench.spec.resplit,
            "runs_expected": len(bench.spec.slots()),
            "runs_done": len(all_done),
            "runs_failed": sum(len(m.failed) for m in per_model),
        },
        "task": task,
        "classes": classes,
        "eval_split": eval_split,
        "threshold": {"rule": rule, "value": value, "text": options.threshold},
        "reference": reference,
        "options": options.to_dict(),
        "models": [m.summary for m in per_model],
        "comparisons": comparisons,
        "data": _data_summary(bench),
        "software": software_versions(),
    }
    return Aggregate(bench, options, task, classes, eval_split, per_model, reference, summary)


def _finish_model(
    result: ModelResult,
    by_case: Mapping[str, list],
    task: str,
    classes: list[str],
    options: ReportOptions,
) -> None:
    s = result.summary
    s.update(
        name=result.name,
        label=result.label,
        slug=result.slug,
        kwargs=result.kwargs,
        runs_done=len(result.runs),
        failed=result.failed,
    )
    if not result.runs:
        return
    runs = result.runs
    first = runs[0]
    s["family"] = first.get("family")
    s["params"] = first.get("params")
    s["macs"] = first.get("macs")
    latencies = [r["latency_ms"] for r in runs if r.get("latency_ms") is not None]
    # the fastest run's median: on a shared machine a run's timing only gets slower by load
    s["latency_ms"] = float(min(latencies)) if latencies else None
    s["latency_device"] = first.get("latency_device")
    s["fit_seconds"] = _mean_std([r["fit_seconds"] for r in runs if r.get("fit_seconds")])
    s["fit_seconds"]["total"] = float(sum(r["fit_seconds"] or 0.0 for r in runs))
    s["seconds_per_epoch"] = _mean_std(
        [r["seconds_per_epoch"] for r in runs if r.get("seconds_per_epoch")]
    )
    s["epochs"] = _mean_std([r["epochs_run"] for r in runs if r.get("epochs_run")])
    s["metrics"] = {name: _mean_std([r[name] for r in runs]) for name in METRICS}
    thresholds = [r["threshold"] for r in runs if r["threshold"] is not None]
    s["threshold"] = _mean_std(thresholds) if thresholds else None
    s["notes"] = sorted({r["threshold_note"] for r in runs if r["threshold_note"]})
    s["runs_table"] = [dict(r) for r in runs]

    ids = sorted(by_case)
    target = np.array([by_case[i][0] for i in ids], dtype=np.int64)
    probs = np.array([np.mean(by_case[i][1], axis=0) for i in ids], dtype=np.float64)
    cut = np.array([np.mean(by_case[i][2]) for i in ids])
    pred = (probs >= cut).astype(np.int64) if task == "binary" else np.argmax(probs, axis=1)
    result.case_ids, result.target, result.probs, result.pred = ids, target, probs, pred
    s["pooled_cases"] = len(ids)
    s["runs_per_case"] = _mean_std([len(by_case[i][1]) for i in ids])
    if task == "binary":
        pooled_point = _binary_point(target, probs, pred)
        two_classes = target.min() != target.max()
        if two_classes:
            intervals = bootstrap_binary_metrics(
                target,
                probs,
                pred,
                n_resamples=options.n_bootstrap,
                confidence=options.confidence,
                seed=options.seed,
            )
            s["ci"] = {k: v.to_dict() for k, v in intervals.items()}
        else:
            s["ci"] = {}
        s["pooled"] = pooled_point
        s["confusion_matrix"] = _confusion(target, pred, 2)
    else:

        def statistic(rows):
            m = _quiet(classification_metrics, probs[rows], target[rows], task, class_names=classes)
            return {name: m[name] for name in METRICS}

        intervals = bootstrap_ci(
            statistic,
            len(ids),
            strata=target,
            n_resamples=min(options.n_bootstrap, 500),
            confidence=options.confidence,
            seed=options.seed,
        )
        s["ci"] = {k: v.to_dict() for k, v in intervals.items()}
        pooled_metrics = _quiet(classification_metrics, probs, target, task, class_names=classes)
        s["pooled"] = {name: pooled_metrics[name] for name in METRICS}
        s["confusion_matrix"] = pooled_metrics["confusion_matrix"]
    s["ece"] = expected_calibration_error(probs, target, task)
    s["brier"] = brier_score(probs, target, task)


def _confusion(target: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (target, pred), 1)
    return cm.tolist()


def _binary_point(target: np.ndarray, probs: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from medcls.evaluation.statistics import _weighted_auc, _weighted_binary_metrics

    ones = np.ones((1, target.size))
    values = _weighted_binary_metrics(target, pred, ones)
    values["auc"] = _weighted_auc(target, probs, ones)
    return {name: float(values[name][0]) for name in METRICS}


def _pick_reference(models: Sequence[ModelResult], options: ReportOptions) -> str | None:
    finished = [m for m in models if m.runs]
    if not finished:
        return None
    if options.reference != "best":
        for m in models:
            if options.reference in (m.name, m.label, m.slug):
                if not m.runs:
                    raise DataError(
                        f"reference model {options.reference!r} has no finished run",
                    )
                return m.label
        raise DataError(
            f"reference model {options.reference!r} is not in this benchmark "
            f"({', '.join(m.label for m in models)})"
        )

    def key(m: ModelResult) -> float:
        value = m.summary["metrics"]["auc"]["mean"]
        return -math.inf if value is None else value

    return max(finished, key=key).label


def _aligned(a: ModelResult, b: ModelResult) -> tuple[np.ndarray, np.ndarray]:
    """Indices into a and b of the cases both pooled."""
    index_b = {case: i for i, case in enumerate(b.case_ids)}
    ia = [i for i, case in enumerate(a.case_ids) if case in index_b]
    ib = [index_b[a.case_ids[i]] for i in ia]
    return np.array(ia, dtype=np.int64), np.array(ib, dtype=np.int64)


def _compare(
    models: Sequence[ModelResult], reference: str | None, task: str, options: ReportOptions
) -> list[dict[str, Any]]:
    if reference is None:
        return []
    ref = next(m for m in models if m.label == reference)
    rows = []
    for m in models:
        if m is ref or not m.runs:
            continue
        ia, ir = _aligned(m, ref)
        row: dict[str, Any] = {"model": m.label, "reference": ref.label, "cases": int(ia.size)}
        target = m.target[ia]
        if task == "binary" and ia.size and 2 <= target.sum() <= target.size - 2:
            d = delong_test(target, m.probs[ia], ref.probs[ir])
            row["delong"] = {
                "auc": d["auc_a"],
                "auc_reference": d["auc_b"],
                "difference": d["difference"],
                "se": d["se"],
                "z": d["z"],
                "p_value": d["p_value"],
            }
        else:
            row["delong"] = None
        if ia.size:
            mc = mcnemar_test(target, m.pred[ia], ref.pred[ir])
            row["mcnemar"] = {k: mc[k] for k in ("b", "c", "statistic", "p_value", "exact")}
            row["mcnemar"]["accuracy"] = float(np.mean(m.pred[ia] == target))
            row["mcnemar"]["accuracy_reference"] = float(np.mean(ref.pred[ir] == target))
        else:
            row["mcnemar"] = None
        rows.append(row)
    for test in ("delong", "mcnemar"):
        raw = [r[test]["p_value"] if r[test] else math.nan for r in rows]
        adjusted = holm_correction(raw)
        for r, p in zip(rows, adjusted):
            if r[test]:
                r[test]["p_holm"] = p
                r[test]["significant"] = bool(p < options.alpha)
    for m in models:
        row = next((r for r in rows if r["model"] == m.label), None)
        m.summary["comparison"] = row
        m.summary["is_reference"] = m.label == reference
    return rows


def roc_of(result: ModelResult, task: str, classes: Sequence[str]) -> tuple[Any, Any] | None:
    """The pooled ROC curve ``(fpr, tpr)`` of a model (multiclass: the macro average)."""
    if result.target is None or result.target.size == 0:
        return None
    if task == "binary":
        if result.target.min() == result.target.max():
            return None
        fpr, tpr, _ = roc_curve(result.target, result.probs)
        return fpr, tpr
    curves = _quiet(roc_curves, result.probs, result.target, task, class_names=list(classes))
    return curves.get("macro")


def calibration_of(result: ModelResult, task: str, n_bins: int = 10) -> dict[str, Any] | None:
    """Reliability-diagram data of the pooled predictions."""
    if result.target is None or result.target.size == 0:
        return None
    return calibration_curve(result.probs, result.target, task, n_bins=n_bins)
