"""Comparison tables of a benchmark as Markdown, LaTeX (booktabs), CSV and HTML.

A table is built from a benchmark summary (``results/summary.json``, see
:mod:`medcls.benchmark.aggregate`) with a *preset*: the columns, their headers
and number formats. ``full`` shows everything medcls measures; the others
reproduce the layouts of the seed papers' comparison tables::

    from medcls.reports.tables import build_table, to_markdown, to_latex
    table = build_table(summary, "seed")        # LDTransformer's Table 2 layout
    print(to_markdown(table))

In every layout the best value of a column is bold (highest for metrics, lowest
for size, time and calibration error), metrics show ``mean ± std`` over runs
where the preset asks for it, and a model whose AUC (DeLong) or accuracy
(McNemar) differs significantly from the reference model after Holm correction
is marked ``*`` (AUC) or ``†`` (accuracy).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medcls.errors import ConfigError

__all__ = [
    "PRESETS",
    "Cell",
    "Column",
    "Preset",
    "Table",
    "build_comparison_table",
    "build_table",
    "format_count",
    "format_p",
    "latex_escape",
    "to_csv",
    "to_html",
    "to_latex",
    "to_markdown",
]

METRIC_NAMES = {
    "accuracy": "Accuracy",
    "auc": "AUC",
    "recall": "Recall",
    "specificity": "Specificity",
    "precision": "Precision",
    "f1": "F1",
    "balanced_accuracy": "Bal. acc.",
}

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass(frozen=True)
class Column:
    """One column of a preset.

    Attributes:
        key: what it shows: ``model``, ``family``, ``params``, ``macs``,
            ``fit_seconds``, ``seconds_per_epoch``, ``latency_ms``, a metric name
            (``accuracy``, ``auc``, ...), ``ci:<metric>``, ``ece``, ``brier``.
        header: the header text (plain; escaped for LaTeX).
        style: number format: counts ``si`` (``11.2 M``), ``si_compact``
            (``11.199M``), ``sci`` (``2.53×10⁵``), ``M``/``G`` (in millions/
            billions); times ``int``, ``int_comma`` (``15,729``), ``int_space``
            (``36 256``), ``pm`` (``123 ± 4``); metrics ``percent`` or ``fraction``.
        decimals: decimals of the value (mean).
        std_decimals: decimals of the ± std; ``None`` = no std.
    """

    key: str
    header: str
    style: str = ""
    decimals: int = 2
    std_decimals: int | None = None


@dataclass(frozen=True)
class Preset:
    """A table layout: columns and the ± separator (``"±"`` or ``" ± "``)."""

    name: str
    description: str
    columns: tuple[Column, ...]
    pm: str = " ± "


def _metric(key: str, header: str, style: str, decimals: int, std: int | None) -> Column:
    return Column(key, header, style, decimals, std)


PRESETS: dict[str, Preset] = {
    "full": Preset(
        "full",
        "everything medcls measures: size, speed, metrics as mean ± std over runs, the AUC's "
        "95 % bootstrap interval on pooled predictions, calibration",
        (
            Column("model", "Model"),
            Column("params", "Params", "si", 2),
            Column("macs", "MACs", "si", 2),
            Column("fit_seconds", "Train time (s)", "pm", 0, 0),
            Column("seconds_per_epoch", "s/epoch", "", 2),
            Column("latency_ms", "Latency (ms)", "", 2),
            _metric("accuracy", "Accuracy (%)", "percent", 2, 2),
            _metric("auc", "AUC (%)", "percent", 2, 2),
            Column("ci:auc", "AUC 95% CI (%)", "percent", 1),
            _metric("recall", "Recall (%)", "percent", 2, 2),
            _metric("specificity", "Specificity (%)", "percent", 2, 2),
            _metric("precision", "Precision (%)", "percent", 2, 2),
            _metric("f1", "F1 (%)", "percent", 2, 2),
            _metric("balanced_accuracy", "Bal. acc. (%)", "percent", 2, 2),
            Column("ece", "ECE", "", 3),
            Column("brier", "Brier", "", 3),
        ),
    ),
    "seed": Preset(
        "seed",
        "the seed's first table (LDTransformer, Acta Optica Sinica, Table 2): parameters, "
        "calculation amount, total time, then A, AUC, R, F1, P in % as mean±std",
        (
            Column("model", "Model"),
            Column("params", "Parameter amount", "sci", 2),
            Column("macs", "Calculation amount", "sci", 2),
            Column("fit_seconds", "Total time /s", "int", 0),
            _metric("accuracy", "A /%", "percent", 2, 1),
            _metric("auc", "AUC /%", "percent", 2, 1),
            _metric("recall", "R /%", "percent", 2, 1),
            _metric("f1", "F1 /%", "percent", 2, 1),
            _metric("precision", "P /%", "percent", 2, 1),
        ),
        pm="±",
    ),
    "ddsfnet": Preset(
        "ddsfnet",
        "DDSF-Net (Optics and Precision Engineering, Table 2): parameters (M), MACs (G), "
        "training time, then accuracy, precision, recall, F1, AUC in % as mean±std",
        (
            Column("model", "Model"),
            Column("params", "Params (M)", "M", 2),
            Column("macs", "MACs (G)", "G", 3),
            Column("fit_seconds", "Training time (s)", "int_comma", 0),
            _metric("accuracy", "Accuracy (%)", "percent", 2, 1),
            _metric("precision", "Precision (%)", "percent", 2, 1),
            _metric("recall", "Recall (%)", "percent", 2, 1),
            _metric("f1", "F1 (%)", "percent", 2, 1),
            _metric("auc", "AUC (%)", "percent", 2, 1),
        ),
        pm="±",
    ),
    "drltransformer": Preset(
        "drltransformer",
        "DRLTransformer (J. Electronics & Information Technology, Table 2): fractions with "
        "four decimals, no std",
        (
            Column("model", "Model"),
            Column("params", "Params (M)", "M", 2),
            Column("macs", "MACs", "si_compact", 3),
            Column("fit_seconds", "Training time (s)", "int_comma", 0),
            _metric("accuracy", "Accuracy", "fraction", 4, None),
            _metric("precision", "Precision", "fraction", 4, None),
            _metric("recall", "Recall", "fraction", 4, None),
            _metric("f1", "F1", "fraction", 4, None),
            _metric("auc", "AUC", "fraction", 4, None),
        ),
    ),
    "madensenet": Preset(
        "madensenet",
        "MADenseNet (Pattern Recognition and AI, Table 3): network type, parameters (M), "
        "training time, fractions with four decimals",
        (
            Column("model", "Network"),
            Column("family", "Type"),
            Column("params", "Params/M", "M", 2),
            Column("fit_seconds", "Training time/s", "int_comma", 0),
            _metric("accuracy", "Accuracy", "fraction", 4, None),
            _metric("precision", "Precision", "fraction", 4, None),
            _metric("recall", "Recall", "fraction", 4, None),
            _metric("f1", "F1", "fraction", 4, None),
            _metric("auc", "AUC", "fraction", 4, None),
        ),
    ),
    "cconvformer": Preset(
        "cconvformer",
        "3D-CConvFormer (J. Computer-Aided Design & Computer Graphics, Table 3): parameters, "
        "metrics in % without std, training time",
        (
            Column("model", "Model"),
            Column("params", "Params", "si_compact", 3),
            _metric("accuracy", "Accuracy/%", "percent", 2, None),
            _metric("auc", "AUC/%", "percent", 2, None),
            _metric("recall", "Recall/%", "percent", 2, None),
            _metric("f1", "F1/%", "percent", 2, None),
            _metric("precision", "Precision/%", "percent", 2, None),
            Column("fit_seconds", "Training time/s", "int_space", 0),
        ),
    ),
    "light3dformer": Preset(
        "light3dformer",
        "Light-3Dformer (Acta Electronica Sinica, Table 2): parameters, MACs, accuracy and "
        "AUC in %, training time",
        (
            Column("model", "Model"),
            Column("params", "Params", "si_compact", 3),
            Column("macs", "MACs", "si_compact", 3),
            _metric("accuracy", "Accuracy (%)", "percent", 2, None),
            _metric("auc", "AUC (%)", "percent", 2, None),
            Column("fit_seconds", "Training time (s)", "int_comma", 0),
        ),
    ),
}
"""Table layouts by name; ``seed`` is the seed document's first comparison table."""

_LOWER_IS_BETTER = {"params", "macs", "fit_seconds", "seconds_per_epoch", "latency_ms", "ece"}
_LOWER_IS_BETTER |= {"brier"}
_HIGHER_IS_BETTER = set(METRIC_NAMES) | {f"ci:{m}" for m in METRIC_NAMES}


@dataclass
class Cell:
    """One table cell: plain (Unicode) and LaTeX text, its number and flags."""

    text: str
    latex: str
    value: float | None = None
    bold: bool = False
    mark: str = ""  # "*" (AUC differs), "†" (accuracy differs)
    main: str = ""  # HTML: the mean alone ...
    sub: str = ""  # ... and the "± std" shown beneath it


@dataclass
class Table:
    """A built table: headers, rows of cells, and the notes printed below it."""

    preset: str
    headers: list[str]
    keys: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    caption: str = ""


# ---------------------------------------------------------------- number formats


def _sci(value: float, decimals: int) -> tuple[str, str]:
    if value == 0:
        return "0", "0"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = value / 10**exponent
    if round(mantissa, decimals) >= 10:
        exponent += 1
        mantissa = value / 10**exponent
    m = f"{mantissa:.{decimals}f}"
    return f"{m}×10{str(exponent).translate(_SUPERSCRIPT)}", f"${m}\\times10^{{{exponent}}}$"


def format_count(value: float | None, style: str = "si", decimals: int = 2) -> tuple[str, str]:
    """A parameter or MAC count as ``(plain, latex)`` text in a preset's style."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–", "--"
    value = float(value)
    if style == "sci":
        return _sci(value, decimals)
    if style == "M":
        text = f"{value / 1e6:,.{decimals}f}"
        return text, text.replace(",", "{,}")
    if style == "G":
        text = f"{value / 1e9:,.{decimals}f}"
        return text, text.replace(",", "{,}")
    units = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))
    for scale, unit in units:
        if abs(value) >= scale:
            number = f"{value / scale:.{decimals}f}"
            text = f"{number}{unit}" if style == "si_compact" else f"{number} {unit}"
            return text, text
    text = f"{value:.0f}"
    return text, text


def _seconds(value: float | None, style: str) -> tuple[str, str]:
    if value is None:
        return "–", "--"
    number = round(float(value))
    if style == "int_comma":
        return f"{number:,}", f"{number:,}".replace(",", "{,}")
    if style == "int_space":
        text = f"{number:,}".replace(",", " ")
        return text, text.replace(" ", "\\,")
    return str(number), str(number)


def _scale(style: str) -> float:
    return 100.0 if style == "percent" else 1.0


def _pm(mean: float, std: float | None, column: Column, pm: str) -> tuple[str, str]:
    m = f"{mean:.{column.decimals}f}"
    if column.std_decimals is None or std is None:
        return m, m
    s = f"{std:.{column.std_decimals}f}"
    latex_pm = "$\\pm$" if pm == "±" else " $\\pm$ "
    return f"{m}{pm}{s}", f"{m}{latex_pm}{s}"


def _with_sub(cell: Cell, mean: float, std: float | None, column: Column) -> Cell:
    if column.std_decimals is not None and std is not None:
        cell.main = f"{mean:.{column.decimals}f}"
        cell.sub = f"± {std:.{column.std_decimals}f}"
    return cell


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


# ---------------------------------------------------------------- building


def _model_summaries(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for m in summary.get("models", []) if m.get("runs_done")]


def _cell(model: Mapping[str, Any], column: Column, pm: str) -> Cell:
    key = column.key
    if key == "model":
        label = str(model.get("label") or model.get("name"))
        return Cell(label, latex_escape(label))
    if key == "family":
        family = model.get("family")
        text = {"cnn": "CNN", "mlp": "MLP"}.get(family, str(family).capitalize()) if family else "–"
        return Cell(text, latex_escape(text) if family else "--")
    if key in ("params", "macs"):
        value = model.get(key)
        plain, latex = format_count(value, column.style or "si", column.decimals)
        return Cell(plain, latex, None if value is None else float(value))
    if key == "fit_seconds":
        stats = model.get("fit_seconds") or {}
        mean, std = stats.get("mean"), stats.get("std")
        if mean is None:
            return Cell("–", "--")
        if column.style == "pm":
            plain, latex = _pm(mean, std, column, pm)
            return _with_sub(Cell(plain, latex, float(mean)), mean, std, column)
        plain, latex = _seconds(mean, column.style)
        return Cell(plain, latex, float(mean))
    if key == "seconds_per_epoch":
        mean = (model.get("seconds_per_epoch") or {}).get("mean")
    elif key in ("latency_ms", "ece", "brier"):
        mean = model.get(key)
    elif key.startswith("ci:"):
        ci = (model.get("ci") or {}).get(key[3:])
        if not ci or ci.get("low") is None or not math.isfinite(ci["low"]):
            return Cell("–", "--")
        k = _scale(column.style)
        low, high = k * ci["low"], k * ci["high"]
        text = f"{low:.{column.decimals}f}–{high:.{column.decimals}f}"
        return Cell(text, text.replace("–", "--"), float(ci["low"]))
    elif key in METRIC_NAMES:
        stats = (model.get("metrics") or {}).get(key) or {}
        mean, std = stats.get("mean"), stats.get("std")
        if mean is None:
            return Cell("–", "--")
        k = _scale(column.style)
        plain, latex = _pm(k * mean, None if std is None else k * std, column, pm)
        return _with_sub(
            Cell(plain, latex, float(mean)), k * mean, None if std is None else k * std, column
        )
    else:
        raise ConfigError(f"table column {key!r} is unknown")
    if mean is None:
        return Cell("–", "--")
    text = f"{float(mean):.{column.decimals}f}"
    return Cell(text, text, float(mean))


def _resolve_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ConfigError(
            f"--preset: unknown table preset {preset!r}; expected one of {sorted(PRESETS)}"
        )
    return PRESETS[preset]


def build_table(summary: Mapping[str, Any], preset: str | Preset = "full") -> Table:
    """The comparison table of a benchmark summary in a preset's layout.

    Args:
        summary: ``Aggregate.summary`` (or ``results/summary.json`` loaded).
        preset: a name in :data:`PRESETS` or a :class:`Preset`.

    Returns:
        The :class:`Table`, one row per model with finished runs (benchmark order).
    """
    layout = _resolve_preset(preset)
    models = _model_summaries(summary)
    rows = [[_cell(m, c, layout.pm) for c in layout.columns] for m in models]
    keys = [c.key for c in layout.columns]
    for j, key in enumerate(keys):
        if key in _LOWER_IS_BETTER:
            pick = min
        elif key in _HIGHER_IS_BETTER:
            pick = max
        else:
            continue
        values = [row[j].value for row in rows if row[j].value is not None]
        if len(values) < 2:
            continue
        best = pick(values)
        for row in rows:
            if row[j].value is not None and abs(row[j].value - best) <= 1e-12:
                row[j].bold = True
    marked_auc = marked_acc = False
    for model, row in zip(models, rows):
        comparison = model.get("comparison") or {}
        if (comparison.get("delong") or {}).get("significant") and "auc" in keys:
            row[keys.index("auc")].mark = "*"
            marked_auc = True
        if (comparison.get("mcnemar") or {}).get("significant") and "accuracy" in keys:
            row[keys.index("accuracy")].mark = "†"
            marked_acc = True
    table = Table(layout.name, [c.header for c in layout.columns], keys, rows)
    table.notes = _notes(summary, layout, marked_auc, marked_acc)
    table.caption = _caption(summary)
    return table


def _caption(summary: Mapping[str, Any]) -> str:
    bench = summary.get("benchmark", {})
    seeds = bench.get("seeds") or []
    split = summary.get("eval_split", "test")
    where = "held-out test split" if split == "test" else "out-of-fold validation predictions"
    done, expected = bench.get("runs_done"), bench.get("runs_expected")
    partial = f" Partial: {done} of {expected} runs finished." if done != expected else ""
    return (
        f"Comparison on the {where}: mean ± standard deviation over {bench.get('folds')} folds"
        + (f" × {len(seeds)} seeds" if len(seeds) > 1 else "")
        + "."
        + partial
    )


def _notes(summary: Mapping[str, Any], layout: Preset, auc: bool, acc: bool) -> list[str]:
    alpha = (summary.get("options") or {}).get("alpha", 0.05)
    threshold = (summary.get("threshold") or {}).get("text", "youden")
    reference = summary.get("reference")
    notes = ["Bold: best value of each column."]
    if reference:
        tests = f"Reference model for the tests: {reference}."
        if auc:
            tests += f" * AUC differs from the reference (DeLong, Holm-adjusted p < {alpha})."
        if acc:
            tests += f" † accuracy differs (McNemar, Holm-adjusted p < {alpha})."
        if not (auc or acc):
            tests += f" No model differs significantly from it (Holm-adjusted p < {alpha})."
        notes.append(tests)
    if summary.get("task") == "binary":
        rule = {
            "youden": "Youden's J",
        }.get(threshold, threshold)
        notes.append(
            f"Decision threshold chosen per run on its validation fold ({rule}) and applied "
            f"to the {summary.get('eval_split', 'test')} split."
        )
    if "ci:auc" in [c.key for c in layout.columns]:
        conf = (summary.get("options") or {}).get("confidence", 0.95)
        notes.append(
            f"CI: {conf:.0%} percentile bootstrap interval on the pooled per-case predictions."
        )
    return notes


# ---------------------------------------------------------------- rendering


def _plain(cell: Cell, *, markdown: bool) -> str:
    text = cell.text + cell.mark
    if cell.bold and markdown:
        return f"**{text}**"
    return text


def to_markdown(table: Table, *, notes: bool = True) -> str:
    """GitHub-flavoured Markdown: header, alignment row, one row per model, then the notes."""
    align = ["---" if k in ("model", "family") else "---:" for k in table.keys]
    lines = [
        "| " + " | ".join(table.headers) + " |",
        "|" + "|".join(align) + "|",
    ]
    for row in table.rows:
        cells = [_plain(c, markdown=True).replace("|", "\\|") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if notes and table.notes:
        text += "\n" + "\n".join(table.notes) + "\n"
    return text


def to_latex(
    table: Table,
    *,
    caption: str | None = None,
    label: str = "tab:benchmark",
    float_env: bool = True,
) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``); ``float_env=False`` gives the tabular only."""
    spec = "".join("l" if k in ("model", "family") else "r" for k in table.keys)
    lines = [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        cells = []
        for cell in row:
            text = cell.latex
            if cell.mark:
                text += "$^{*}$" if cell.mark == "*" else "$^{\\dagger}$"
            cells.append(f"\\textbf{{{text}}}" if cell.bold else text)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    body = "\n".join(lines)
    if not float_env:
        return body + "\n"
    note = " ".join(table.notes)
    cap = latex_escape(caption if caption is not None else f"{table.caption} {note}".strip())
    cap = cap.replace("±", "$\\pm$").replace("†", "$^{\\dagger}$").replace("×", "$\\times$")
    cap = cap.replace("≥", "$\\geq$")
    return (
        "% requires \\usepackage{booktabs}\n"
        "\\begin{table}[htbp]\n\\centering\n\\small\n"
        f"\\caption{{{cap}}}\n\\label{{{label}}}\n{body}\n\\end{{table}}\n"
    )


def to_html(table: Table, *, css_class: str = "results", stack_std: bool = True) -> str:
    """An HTML ``<table>`` (escaped); bold cells in ``<strong>``, marks as ``<sup>``.

    With ``stack_std`` a ``mean ± std`` cell shows the std on a second, smaller line
    (``<span class="sd">``), which keeps wide tables readable on screen.
    """
    head = "".join(
        f'<th class="{"text" if k in ("model", "family") else "num"}">{html.escape(h)}</th>'
        for k, h in zip(table.keys, table.headers)
    )
    body = []
    for row in table.rows:
        cells = []
        for key, cell in zip(table.keys, row):
            stacked = stack_std and cell.sub
            text = html.escape(cell.main if stacked else cell.text)
            if cell.mark:
                text += f"<sup>{html.escape(cell.mark)}</sup>"
            if cell.bold:
                text = f"<strong>{text}</strong>"
            if stacked:
                text += f'<span class="sd">{html.escape(cell.sub)}</span>'
            kind = "text" if key in ("model", "family") else "num"
            cells.append(f'<td class="{kind}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="{css_class}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _csv_columns(layout: Preset) -> list[tuple[str, str]]:
    out = []
    for column in layout.columns:
        key, header = column.key, column.header
        if key in METRIC_NAMES:
            out.append((f"{key}:mean", header))
            if column.std_decimals is not None:
                out.append((f"{key}:std", f"{header} std"))
        elif key.startswith("ci:"):
            out += [(f"{key}:low", f"{header} low"), (f"{key}:high", f"{header} high")]
        elif key == "fit_seconds":
            out.append(("fit_seconds:mean", header))
            if column.style == "pm":
                out.append(("fit_seconds:std", f"{header} std"))
        else:
            out.append((key, header))
    return out


def _raw(model: Mapping[str, Any], key: str, layout: Preset) -> Any:
    name, _, part = key.partition(":")
    column = next(c for c in layout.columns if c.key in (name, key.rsplit(":", 1)[0]))
    k = _scale(column.style)
    if name == "model":
        return model.get("label")
    if name == "family":
        return model.get("family")
    if name in METRIC_NAMES:
        value = ((model.get("metrics") or {}).get(name) or {}).get(part)
        return None if value is None else k * value
    if name == "ci":
        metric, bound = key.split(":")[1:]
        value = ((model.get("ci") or {}).get(metric) or {}).get(bound)
        return None if value is None else k * value
    if name in ("fit_seconds", "seconds_per_epoch"):
        return (model.get(name) or {}).get(part or "mean")
    return model.get(name)


def to_csv(summary: Mapping[str, Any], preset: str | Preset = "full") -> str:
    """The table's numbers unformatted (metrics in the preset's scale; mean and std apart)."""
    layout = _resolve_preset(preset)
    columns = _csv_columns(layout)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([header for _, header in columns])
    for model in _model_summaries(summary):
        row = []
        for key, _ in columns:
            value = _raw(model, key, layout)
            row.append("" if value is None else value)
        writer.writerow(row)
    return buffer.getvalue()


def build_comparison_table(summary: Mapping[str, Any]) -> Table:
    """The tests against the reference model: AUC difference with DeLong's p, McNemar's p."""
    headers = [
        "Model",
        "AUC",
        "ΔAUC vs ref.",
        "DeLong p",
        "DeLong p (Holm)",
        "Accuracy",
        "b / c",
        "McNemar p",
        "McNemar p (Holm)",
    ]
    keys = ["model", "auc", "dauc", "p", "p_holm", "acc", "bc", "mp", "mp_holm"]
    rows = []
    p_text = format_p

    for comp in summary.get("comparisons") or []:
        d, m = comp.get("delong"), comp.get("mcnemar")
        texts = [
            str(comp["model"]),
            f"{d['auc']:.4f}" if d else "–",
            f"{d['difference']:+.4f}" if d else "–",
            p_text(d["p_value"]) if d else "–",
            p_text(d.get("p_holm")) if d else "–",
            f"{m['accuracy']:.4f}" if m else "–",
            f"{m['b']} / {m['c']}" if m else "–",
            p_text(m["p_value"]) if m else "–",
            p_text(m.get("p_holm")) if m else "–",
        ]
        cells = [Cell(t, latex_escape(t).replace("Δ", "$\\Delta$")) for t in texts]
        if d and d.get("significant"):
            cells[4].bold = True
        if m and m.get("significant"):
            cells[8].bold = True
        rows.append(cells)
    table = Table("comparison", headers, keys, rows)
    reference = summary.get("reference")
    table.notes = [
        f"Reference: {reference}. Paired tests on the pooled per-case predictions of the "
        f"{summary.get('eval_split', 'test')} split; Holm correction over the "
        f"{len(rows)} comparison(s) of each test. b = cases only the model gets right, "
        "c = cases only the reference gets right. Bold: significant."
    ]
    return table


def format_p(value: float | None) -> str:
    """A p-value for display: ``<0.001`` or three decimals."""
    if value is None or not math.isfinite(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"
