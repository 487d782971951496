"""Outputs of a tuning study: best configuration, trial table, figures, HTML report."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

from medcls.engine.checkpoint import atomic_write
from medcls.reports.html import (
    FigureEntry,
    _cards,
    _esc,
    _figure_html,
    _fmt,
    _grid_table,
    _kv_table,
    _notes,
    page_html,
)

__all__ = ["plot_study", "write_tuning_outputs"]


def plot_study(study: Any, out_dir: Path) -> tuple[list[FigureEntry], list[str]]:
    """Optimisation history, parameter importances and parallel coordinates (PNG + SVG).

    Returns:
        The figures written and, for each figure that could not be drawn, why (e.g.
        importances need two complete trials that differ).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    specs = [
        ("history", "Optimisation history", ovm.plot_optimization_history, False),
        ("importances", "Parameter importances", ovm.plot_param_importances, False),
        ("parallel", "Parallel coordinates", ovm.plot_parallel_coordinate, True),
    ]
    figures, missing = [], []
    for key, title, plot, wide in specs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's ExperimentalWarning
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(9.5 if wide else 6.4, 4.2)
            fig.tight_layout()
            png = out_dir / f"{key}.png"
            fig.savefig(png, dpi=130, facecolor="white")
            fig.savefig(out_dir / f"{key}.svg", facecolor="white", metadata={"Date": None})
            plt.close(fig)
            figures.append(FigureEntry(key, title, png, wide=wide))
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            missing.append(f"{title}: not drawn ({exc})")
            plt.close("all")
    return figures, missing


def _trial_rows(study: Any) -> tuple[list[str], list[dict[str, Any]]]:
    keys = sorted({k for t in study.get_trials(deepcopy=False) for k in t.params})
    rows = []
    for t in study.get_trials(deepcopy=False):
        runs = t.user_attrs.get("runs") or []
        test = [r.get("test", {}) for r in runs]
        epochs = max(t.intermediate_values) if t.intermediate_values else None
        row = {
            "trial": t.number,
            "state": t.state.name.lower(),
            "default": bool(t.user_attrs.get("default")),
            "value": t.value,
            "epochs": epochs,
            "seconds": t.duration.total_seconds() if t.duration else None,
            **{k: t.params.get(k) for k in keys},
        }
        for metric in ("auc", "accuracy", "f1"):
            vals = [r[metric] for r in test if metric in r]
            row[f"test_{metric}"] = sum(vals) / len(vals) if vals else None
        rows.append(row)
    return keys, rows


def _write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    columns = list(rows[0]) if rows else ["trial", "state", "value"]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


def write_tuning_outputs(study: Any, cfg: Any, base: dict[str, Any], folder: Path) -> dict:
    """Writes ``best.yaml``, ``trials.csv``, ``figures/`` and ``report.html`` of a study.

    Args:
        study: the Optuna study.
        cfg: the experiment configuration (with its ``tune`` section).
        base: the configuration mapping the trials were built from (no ``tune``).
        folder: the tuning folder.

    Returns:
        ``{"best_yaml", "trials_csv", "report", <figure keys>}`` -> paths.
    """
    from optuna.trial import TrialState

    from medcls.tune.study import best_config, dump_yaml

    files: dict[str, Path] = {}
    keys, rows = _trial_rows(study)
    files["trials_csv"] = _write_csv(rows, folder / "trials.csv")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    default = next((t for t in complete if t.user_attrs.get("default")), None)
    if best is not None:
        raw = best_config(base, best.params, f"{cfg.name}-tuned")
        header = (
            f"# Best configuration of study {study.study_name!r} (trial {best.number}): "
            f"{cfg.tune.metric} = {best.value:.4f}\n# Train it: medcls train best.yaml\n"
        )
        path = folder / "best.yaml"
        atomic_write(path, lambda tmp: tmp.write_text(dump_yaml(raw, header)))
        files["best_yaml"] = path
    figures, missing = plot_study(study, folder / "figures") if complete else ([], [])
    files.update({f.key: f.path for f in figures})
    files["report"] = _write_report(study, cfg, rows, keys, best, default, figures, missing, folder)
    return files


def _write_report(study, cfg, rows, keys, best, default, figures, missing, folder: Path) -> Path:
    metric = cfg.tune.metric
    states = [r["state"] for r in rows]
    cards = [
        (
            "Trials",
            str(len(rows)),
            f"{states.count('complete')} complete, "
            f"{states.count('pruned')} pruned, {states.count('fail')} failed",
        ),
        (
            "Best " + metric,
            _fmt(best.value) if best else "–",
            f"trial {best.number}" if best else "",
        ),
        (
            "Default " + metric,
            _fmt(default.value) if default else "–",
            "trial 0, the configuration as written" if default else "not run",
        ),
    ]
    if best is not None and default is not None:
        cards.append(("Gain", f"{best.value - default.value:+.4f}", "best - default"))
    finding = ""
    by_trial = {r["trial"]: r for r in rows}
    if best is not None and default is not None and best.number != default.number:
        test_best, test_default = (
            by_trial[best.number]["test_auc"],
            by_trial[default.number]["test_auc"],
        )
        if test_best is not None and test_default is not None:
            finding = (
                f'<div class="finding">On the held-out test split (not used by the search) the '
                f"best trial reaches AUC {test_best:.4f} against {test_default:.4f} for the default "
                "configuration. A gain on a small validation split need not carry over; "
                "<code>tune.folds</code> makes each trial's score a mean over folds.</div>"
            )
    parts = ['<section id="summary"><h2>Summary</h2>' + _cards(cards) + finding + "</section>"]
    sections = [("summary", "Summary")]
    if best is not None:
        sections.append(("best", "Best configuration"))
        rows_kv = [(k, v) for k, v in sorted(best.params.items())]
        parts.append(
            '<section id="best"><h2>Best configuration</h2>'
            + _kv_table(rows_kv or [("(default values)", "")])
            + _notes([f"Written to {folder / 'best.yaml'}; train it with medcls train best.yaml."])
            + "</section>"
        )
    if figures or missing:
        sections.append(("figures", "Figures"))
        figs = "".join(_figure_html(f, i + 1) for i, f in enumerate(figures))
        parts.append(
            '<section id="figures"><h2>Figures</h2><div class="figs">'
            + figs
            + "</div>"
            + _notes(missing)
            + "</section>"
        )
    sections.append(("trials", "Trials"))
    headers = ["trial", "state", metric, "epochs", "seconds", *keys, "test AUC"]
    table = []
    for r in sorted(rows, key=lambda r: (r["value"] is None, -(r["value"] or 0))):
        label = f"{r['trial']}" + (" (default)" if r["default"] else "")
        table.append(
            [label, r["state"], _fmt(r["value"]), _fmt(r["epochs"]), _fmt(r["seconds"], 0)]
            + [_fmt(r[k]) for k in keys]
            + [_fmt(r["test_auc"])]
        )
    parts.append(
        '<section id="trials"><h2>Trials</h2>'
        + _grid_table(headers, table)
        + _notes(
            [
                "Pruned trials show the metric of the last epoch they reported; the test AUC "
                "of each completed trial is of its best checkpoint (not used to choose it)."
            ]
        )
        + "</section>"
    )
    search = [(p, json.dumps(v, default=str)) for p, v in cfg.tune.space.items()]
    sections.append(("space", "Search space"))
    parts.append('<section id="space"><h2>Search space</h2>' + _kv_table(search) + "</section>")
    sub = (
        f"Study {_esc(study.study_name)}: {cfg.tune.sampler} sampler, {cfg.tune.pruner} pruner, "
        f"objective {_esc(metric)}"
        + (f" (mean over {cfg.tune.folds} folds)" if cfg.tune.folds else "")
    )
    page = page_html(
        f"Tuning: {cfg.name}",
        sub,
        sections,
        "".join(parts),
        "Written by <code>medcls tune</code>; study storage "
        + _esc(cfg.tune.storage or folder / "study.db"),
    )
    path = folder / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(page))
    return path
