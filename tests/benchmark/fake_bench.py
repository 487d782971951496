"""A benchmark folder with the files a real sweep writes, filled with simulated predictions.

The run folders hold what :func:`medcls.benchmark.sweep.train_slot` and
:func:`medcls.engine.api.train` write (``done.json``, ``predictions_{val,test}.csv``,
``history.csv``, ``splits.csv``), so aggregation, tables and the report can be
tested in milliseconds, against independent computations on the same numbers.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medcls.benchmark.slots import atomic_write_json
from medcls.benchmark.spec import BenchmarkSpec, ModelSpec, ReportOptions
from medcls.benchmark.sweep import Benchmark
from medcls.config import config_to_dict, load_config

DEFAULT_MODELS = {"strong": 2.5, "medium": 1.2, "weak": 0.3}


def make_fake_benchmark(
    folder: Path,
    *,
    models: Mapping[str, float] = DEFAULT_MODELS,
    folds: int = 3,
    seeds: Sequence[int] = (0,),
    num_cases: int = 120,
    num_test: int = 40,
    classes: Sequence[str] = ("normal", "pneumonia"),
    with_test: bool = True,
    missing: Sequence[tuple[str, int, int]] = (),
    seed: int = 0,
    report: ReportOptions | None = None,
) -> Benchmark:
    """Write a finished benchmark of ``models`` (name -> separation strength).

    Args:
        missing: ``(model, seed, fold)`` runs left unfinished (no ``done.json``).
    """
    rng = np.random.default_rng(seed)
    k = len(classes)
    task = "binary" if k == 2 else "multiclass"
    ids = [f"case{i:03d}" for i in range(num_cases)]
    labels = np.arange(num_cases) % k
    rng.shuffle(labels)
    difficulty = rng.normal(size=(num_cases, k))  # shared by all models: correlated errors
    test = set(ids[:num_test]) if with_test else set()
    pool = [i for i in ids if i not in test]
    fold_of = {case: n % folds for n, case in enumerate(pool)}
    cfg = config_to_dict(load_config(None, ["data.source=demo-xray2d"]))
    specs = [ModelSpec(name=name, label=name, slug=name) for name in models]
    spec = BenchmarkSpec(
        config=cfg,
        models=specs,
        folds=folds,
        seeds=list(seeds),
        report=report or ReportOptions(n_bootstrap=300, heatmap_method="none"),
    )
    bench = Benchmark(folder, spec)
    folder.mkdir(parents=True, exist_ok=True)
    bench.save_spec()
    (folder / "config.yaml").write_text("data:\n  source: demo-xray2d\n")
    splits = folder / "splits" / f"folds-seed{spec.split_seed}.csv"
    splits.parent.mkdir(parents=True, exist_ok=True)
    with splits.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "patient_id", "label", "split", "fold"])
        for i, case in enumerate(ids):
            part = "test" if case in test else "cv"
            fold = "" if case in test else fold_of[case]
            writer.writerow([case, f"p{case}", classes[labels[i]], part, fold])
    index = {case: i for i, case in enumerate(ids)}
    for m, (name, strength) in enumerate(models.items()):
        for s in seeds:
            for fold in range(folds):
                if (name, s, fold) in missing:
                    continue
                run_rng = np.random.default_rng([seed, m, s, fold])
                slot = next(
                    x
                    for x in spec.slots()
                    if x.model.slug == name and x.seed == s and x.fold == fold
                )
                run_dir = bench.run_dir(slot)
                run_dir.mkdir(parents=True, exist_ok=True)

                def write_predictions(
                    split: str,
                    cases: list[str],
                    run_rng=run_rng,
                    run_dir=run_dir,
                    strength=strength,
                ) -> None:
                    rows = [index[c] for c in cases]
                    logits = difficulty[rows] + 0.7 * run_rng.normal(size=(len(rows), k))
                    logits[np.arange(len(rows)), labels[rows]] += strength
                    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                    with (run_dir / f"predictions_{split}.csv").open("w", newline="") as handle:
                        writer = csv.writer(handle)
                        writer.writerow(["id", "target", *[f"prob_{c}" for c in classes], "pred"])
                        for case, row, p in zip(cases, rows, probs):
                            writer.writerow(
                                [case, labels[row], *[f"{v:.6f}" for v in p], int(np.argmax(p))]
                            )

                write_predictions("val", [c for c in pool if fold_of[c] == fold])
                if with_test:
                    write_predictions("test", [c for c in ids if c in test])
                with (run_dir / "history.csv").open("w", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["epoch", "train_loss", "val_accuracy", "val_auc", "val_loss"])
                    for epoch in (1, 2, 3):
                        gain = strength * epoch / 3
                        writer.writerow(
                            [
                                epoch,
                                0.7 - 0.05 * epoch,
                                0.5 + 0.1 * gain + 0.01 * fold,
                                0.5 + 0.12 * gain + 0.01 * s,
                                0.7 - 0.04 * gain,
                            ]
                        )
                fit = 30.0 + 10 * m + fold
                atomic_write_json(
                    run_dir / "done.json",
                    {
                        "slot": slot.key,
                        "model": name,
                        "seed": s,
                        "fold": fold,
                        "best_epoch": 3,
                        "fit_seconds": fit,
                        "epochs_run": 3,
                        "seconds_per_epoch": fit / 3,
                        "params": 250_000 * (m + 1),
                        "family": ("cnn", "transformer", "hybrid")[m % 3],
                        "macs": 40_000_000 * (m + 1),
                        "latency_ms": 1.5 + m + 0.1 * fold,
                        "latency_device": "cpu",
                        "classes": list(classes),
                        "task": task,
                        "host": "test",
                    },
                )
    return bench


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
