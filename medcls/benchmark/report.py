"""Write a benchmark's results: tables, figures and the self-contained HTML report.

:func:`build_report` reads a benchmark folder (the saved runs), summarises it
(:func:`medcls.benchmark.aggregate.summarize`) and writes::

    results/summary.json            everything below, machine-readable
    results/table.{md,csv,tex}      the comparison table (preset layout) + tests
    results/comparisons.csv         DeLong and McNemar against the reference
    results/runs.csv                one row per run
    results/pooled_predictions.csv  the per-case predictions the statistics use
    figures/roc, validation_curves, calibration, confusion_<model>, heatmaps (PNG, SVG)
    report.html                     one file, figures embedded

:func:`run_benchmark` is the whole ``medcls benchmark`` command as a function:
prepare the folder, run this process's share of the sweep, and write the report
when no run is left.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from medcls.benchmark.aggregate import Aggregate, calibration_of, roc_of, summarize
from medcls.benchmark.spec import ReportOptions, Slot
from medcls.benchmark.sweep import (
    Benchmark,
    SweepStats,
    ddp_worker_slot,
    is_ddp_worker,
    prepare_benchmark,
    run_sweep,
    train_slot,
)

__all__ = ["append_command", "build_report", "read_commands", "run_benchmark"]

COMMANDS_FILE = "commands.log"


def append_command(folder: str | Path, command: str) -> None:
    """Record a command line that worked on the folder (shown in the report)."""
    import socket

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with (folder / COMMANDS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {socket.gethostname()}: {command}\n")


def read_commands(folder: str | Path, limit: int = 20) -> list[str]:
    path = Path(folder) / COMMANDS_FILE
    if not path.is_file():
        return []
    return path.read_text(encoding="utf-8").splitlines()[-limit:]


def _write_text(path: Path, text: str) -> Path:
    import os
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


RUN_COLUMNS = (
    "seed",
    "fold",
    "threshold",
    "num_cases",
    "accuracy",
    "auc",
    "recall",
    "specificity",
    "precision",
    "f1",
    "balanced_accuracy",
    "ece",
    "brier",
    "best_epoch",
    "epochs_run",
    "fit_seconds",
    "seconds_per_epoch",
    "params",
    "macs",
    "latency_ms",
    "latency_device",
    "host",
)


def _write_results(agg: Aggregate, results: Path) -> dict[str, Path]:
    from medcls.evaluation.functional import to_jsonable
    from medcls.reports.tables import (
        build_comparison_table,
        build_table,
        to_csv,
        to_latex,
        to_markdown,
    )

    summary = agg.summary
    preset = agg.options.preset
    files = {}
    files["summary"] = _write_text(
        results / "summary.json", json.dumps(to_jsonable(summary), indent=2) + "\n"
    )
    table = build_table(summary, preset)
    text = f"## {table.caption}\n\n{to_markdown(table)}"
    if summary.get("comparisons"):
        comparison = build_comparison_table(summary)
        text += "\n## Statistical comparison\n\n" + to_markdown(comparison)
    files["table_md"] = _write_text(results / "table.md", text)
    files["table_csv"] = _write_text(results / "table.csv", to_csv(summary, preset))
    files["table_tex"] = _write_text(results / "table.tex", to_latex(table))
    rows = []
    for m in agg.models:
        for r in m.runs:
            rows.append([m.label, *[r.get(c) for c in RUN_COLUMNS]])
    files["runs"] = _write_text(results / "runs.csv", _csv_text(["model", *RUN_COLUMNS], rows))
    comp_rows = []
    for c in summary.get("comparisons", []):
        d, mc = c.get("delong") or {}, c.get("mcnemar") or {}
        comp_rows.append(
            [
                c["model"],
                c["reference"],
                c["cases"],
                d.get("auc"),
                d.get("auc_reference"),
                d.get("difference"),
                d.get("se"),
                d.get("z"),
                d.get("p_value"),
                d.get("p_holm"),
                mc.get("accuracy"),
                mc.get("accuracy_reference"),
                mc.get("b"),
                mc.get("c"),
                mc.get("p_value"),
                mc.get("p_holm"),
            ]
        )
    files["comparisons"] = _write_text(
        results / "comparisons.csv",
        _csv_text(
            [
                "model",
                "reference",
                "cases",
                "auc",
                "auc_reference",
                "auc_difference",
                "delong_se",
                "delong_z",
                "delong_p",
                "delong_p_holm",
                "accuracy",
                "accuracy_reference",
                "mcnemar_b",
                "mcnemar_c",
                "mcnemar_p",
                "mcnemar_p_holm",
            ],
            comp_rows,
        ),
    )
    files["pooled"] = _write_text(results / "pooled_predictions.csv", _pooled_csv(agg))
    return files


def _pooled_csv(agg: Aggregate) -> str:
    models = agg.finished
    ids = sorted({i for m in models for i in m.case_ids})
    target: dict[str, int] = {}
    header = ["id", "target"]
    columns = []
    for m in models:
        index = {case: k for k, case in enumerate(m.case_ids)}
        for k, case in enumerate(m.case_ids):
            target[case] = int(m.target[k])
        if agg.task == "binary":
            header += [f"{m.label}:prob_{agg.classes[1]}", f"{m.label}:pred"]
        else:
            header += [f"{m.label}:prob_{c}" for c in agg.classes] + [f"{m.label}:pred"]
        columns.append((m, index))
    rows = []
    for case in ids:
        row: list[Any] = [case, target.get(case)]
        for m, index in columns:
            k = index.get(case)
            if agg.task == "binary":
                row += [None, None] if k is None else [f"{m.probs[k]:.6f}", int(m.pred[k])]
            elif k is None:
                row += [None] * (len(agg.classes) + 1)
            else:
                row += [f"{v:.6f}" for v in m.probs[k]] + [int(m.pred[k])]
        rows.append(row)
    return _csv_text(header, rows)


def _figures(agg: Aggregate, figures: Path) -> tuple[list, list]:
    from medcls.benchmark.figures import plot_calibration, plot_model_rocs, plot_validation_curves
    from medcls.reports.figures import plot_confusion_matrix
    from medcls.reports.html import FigureEntry

    split = "held-out test split" if agg.eval_split == "test" else "out-of-fold predictions"
    entries, confusion = [], []
    curves, aucs = {}, {}
    for m in agg.finished:
        curve = roc_of(m, agg.task, agg.classes)
        if curve is not None:
            curves[m.label] = curve
            aucs[m.label] = (m.summary.get("ci", {}).get("auc") or {}).get("estimate")
    if curves:
        files = plot_model_rocs(curves, aucs, figures / "roc", title=f"ROC curves ({split})")
        entries.append(
            FigureEntry(
                "roc",
                "ROC curves of all models.",
                files.png,
                f"Pooled per-case predictions on the {split}"
                + ("; multiclass: macro-average one-vs-rest curve" if agg.task != "binary" else "")
                + "; the legend gives the pooled AUC.",
            )
        )
    cal = {}
    for m in agg.finished:
        curve = calibration_of(m, agg.task)
        if curve is not None:
            cal[m.label] = {**curve, "ece": m.summary.get("ece")}
    if cal:
        files = plot_calibration(
            cal,
            figures / "calibration",
            xlabel="Predicted probability" if agg.task == "binary" else "Top-class confidence",
            ylabel="Observed frequency" if agg.task == "binary" else "Accuracy",
        )
        entries.append(
            FigureEntry(
                "calibration",
                "Calibration.",
                files.png,
                "Reliability diagram on 10 equal-width bins of the pooled predictions; "
                "ECE = expected calibration error.",
            )
        )
    histories = {m.label: m.histories for m in agg.finished if any(m.histories)}
    if histories:
        try:
            files = plot_validation_curves(histories, figures / "validation_curves")
        except Exception as exc:  # a figure must not stop the report; it says what is missing
            entries_note = f"validation curves not drawn: {exc}"
            agg.summary.setdefault("figure_notes", []).append(entries_note)
        else:
            entries.append(
                FigureEntry(
                    "validation_curves",
                    "Validation curves.",
                    files.png,
                    "Per-epoch validation AUC, accuracy and loss; line = mean over runs, "
                    "band = ± one standard deviation.",
                    wide=True,
                )
            )
    for m in agg.finished:
        matrix = m.summary.get("confusion_matrix")
        if not matrix:
            continue
        files = plot_confusion_matrix(
            matrix, agg.classes, figures / f"confusion_{m.slug}", title=m.label
        )
        confusion.append(
            FigureEntry(
                f"confusion_{m.slug}", f"{m.label}.", files.png, f"{sum(map(sum, matrix))} cases."
            )
        )
    return entries, confusion


def _first_run(agg: Aggregate, slug: str) -> Path | None:
    bench = agg.bench
    spec = bench.spec.model(slug)
    for seed in bench.spec.seeds:
        for fold in range(bench.spec.folds):
            slot = Slot(spec, seed, fold)
            if bench.is_done(slot):
                return bench.run_dir(slot)
    return None


def _heatmaps(agg: Aggregate, path: Path):
    """The models x images grid, or ``(None, reason)``."""
    from medcls.reports.html import FigureEntry

    method = agg.options.heatmap_method
    if method in ("none", ""):
        return None, "Heatmaps are switched off (heatmap_method: none)."
    import torch

    from medcls.benchmark.figures import plot_heatmap_grid
    from medcls.benchmark.samples import load_run_samples
    from medcls.engine.api import load_run_model

    runs = {m.label: _first_run(agg, m.slug) for m in agg.finished}
    runs = {k: v for k, v in runs.items() if v is not None}
    if not runs:
        return None, "No finished run to explain."
    count = int(agg.options.heatmap_images)
    per_class = max(1, math.ceil(count / max(1, len(agg.classes))))
    first = next(iter(runs.values()))
    samples = load_run_samples(first, split=agg.eval_split, per_class=per_class, max_cases=count)
    models, inputs = {}, {}
    torch.manual_seed(0)
    for label, run_dir in runs.items():
        model, _ = load_run_model(run_dir)
        models[label] = model
        inputs[label] = samples.input_for(model)
    first_modality = samples.modalities[0]
    images = [samples.parts[first_modality][i, 0].numpy() for i in range(len(samples))]
    titles = [f"{case}\n({label})" for case, label in zip(samples.ids, samples.labels)]
    written = plot_heatmap_grid(
        models,
        inputs,
        images,
        path,
        method=method,
        image_titles=titles,
        title=f"{method}, fold-0 models, {agg.eval_split} images",
    )
    entry = FigureEntry(
        "heatmaps",
        f"{method} heatmaps of every model.",
        written,
        "Rows: example images of each class; columns: the models (their fold-0 run), each map "
        "for the model's predicted class, scaled to [0, 1] per image.",
        wide=True,
    )
    return entry, None


def build_report(
    folder: str | Path,
    *,
    options: ReportOptions | dict | None = None,
    heatmaps: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Summarise a benchmark folder and write its tables, figures and ``report.html``.

    Works on a partial benchmark too (the report counts the missing runs).

    Args:
        folder: the benchmark folder.
        options: report options (threshold rule, reference, preset, ...); default:
            those stored in the folder.
        heatmaps: draw the heatmap grid (loads every model's fold-0 checkpoint).
        log: where progress lines go (default: nowhere).

    Returns:
        name -> written path (``report``, ``summary``, ``table_md``, ``roc``, ...).
    """
    from medcls.reports.html import render_report, write_report
    from medcls.reports.tables import build_comparison_table, build_table, to_html

    log = log or (lambda text: None)
    bench = Benchmark.open(folder)
    if isinstance(options, dict):
        options = ReportOptions.from_dict({**bench.spec.report.to_dict(), **options})
    agg = summarize(bench, options)
    files = _write_results(agg, bench.results_dir)
    log(f"results written to {bench.results_dir}")
    figure_entries, confusion = _figures(agg, bench.figures_dir)
    heatmap, note = None, None
    if heatmaps:
        try:
            heatmap, note = _heatmaps(agg, bench.figures_dir / "heatmaps.png")
        except Exception as exc:  # explanations of arbitrary models may fail; say so in the report
            note = f"The heatmap grid could not be drawn: {type(exc).__name__}: {exc}"
    else:
        note = "Heatmaps were not requested for this report (--no-heatmaps)."
    table = build_table(agg.summary, agg.options.preset)
    comparison = build_comparison_table(agg.summary) if agg.summary.get("comparisons") else None
    config_path = bench.folder / "config.yaml"
    page = render_report(
        agg.summary,
        main_table_html=to_html(table),
        main_table_notes=[table.caption, *table.notes],
        comparison_table_html=to_html(comparison) if comparison else None,
        comparison_notes=comparison.notes if comparison else [],
        figures=figure_entries,
        confusion=confusion,
        heatmap=heatmap,
        heatmap_note=note,
        config_yaml=config_path.read_text(encoding="utf-8") if config_path.is_file() else "",
        commands=read_commands(bench.folder),
    )
    files["report"] = write_report(bench.report_path, page)
    for entry in [*figure_entries, *confusion, *([heatmap] if heatmap else [])]:
        files[entry.key] = entry.path
    log(f"report written to {files['report']}")
    return files


def run_benchmark(
    config: str | Path | dict,
    models: str | Sequence[str],
    output: str | Path,
    *,
    folds: int = 5,
    seeds: str | Sequence[int] = (0,),
    overrides: Iterable[str] = (),
    resplit: bool = False,
    report: ReportOptions | dict | None = None,
    max_runs: int | None = None,
    stale_after: float = 600.0,
    runner: Callable[[Benchmark, Slot], dict[str, Any]] = train_slot,
    write: bool = True,
    heatmaps: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[Benchmark, SweepStats, dict[str, Path] | None]:
    """Prepare, sweep and report: ``medcls benchmark`` as a function.

    The report is written when no slot of the folder is pending or running
    (failed runs are listed in it); a process that finishes while others still
    run leaves the report to the last one.

    In a DDP worker that Lightning started for one run (``trainer.devices > 1``),
    only that run's training is joined: no claiming, no report.

    Returns:
        ``(benchmark, sweep statistics, written files or None)``.
    """
    if is_ddp_worker():
        from medcls.engine.api import train

        bench = Benchmark.open(output)
        train(bench.slot_config(ddp_worker_slot(bench)))
        return bench, SweepStats(), None
    bench, specs, seed_list = prepare_benchmark(
        config,
        models,
        output,
        folds=folds,
        seeds=seeds,
        overrides=overrides,
        resplit=resplit,
        report=report,
    )
    stats = run_sweep(
        bench,
        models=specs,
        seeds=seed_list,
        runner=runner,
        max_runs=max_runs,
        stale_after=stale_after,
        log=log,
    )
    state = bench.status(stale_after=stale_after)
    if not write or state["pending"] or state["running"] or not state["done"]:
        return bench, stats, None
    return bench, stats, build_report(bench.folder, heatmaps=heatmaps, log=log)
