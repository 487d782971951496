"""A self-contained HTML report: one file, images embedded, no network access needed.

:func:`render_report` turns a benchmark summary, its tables and figures into one
HTML page (inline CSS, PNG figures as base64 ``data:`` URLs), so it can be mailed,
archived or opened offline. A tiny inline script marks each figure that decoded
(``data-loaded="1"``) and counts them on ``<body data-images-loaded>``, which the
tests read back from headless Chromium.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcls.errors import DataError

__all__ = ["FigureEntry", "embed_png", "page_html", "render_report", "write_report"]


@dataclass
class FigureEntry:
    """A figure of the report.

    Attributes:
        key: a short id (``roc``, ``validation_curves``, ...), used as the
            element's ``data-figure`` attribute.
        title: the caption's first sentence.
        path: the PNG file (embedded when rendering).
        caption: what the figure shows.
        wide: span the full content width.
    """

    key: str
    title: str
    path: Path
    caption: str = ""
    wide: bool = False


def embed_png(path: str | Path) -> str:
    """A ``data:image/png;base64,...`` URL of a PNG file.

    Raises:
        DataError: the file is missing or not a PNG.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"figure not readable ({exc})", path=path) from None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise DataError("expected a PNG file for the report", path=path)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


CSS = """
:root { --ink:#1f2933; --muted:#5f6b7a; --line:#d9dee5; --band:#f5f7fa; --accent:#0b5cad;
        --good:#1d7f4e; --warn:#9a5b00; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       "Noto Sans", "DejaVu Sans", sans-serif; color: var(--ink); background: #fff; }
header.top { background: linear-gradient(90deg, #0b3d6e, #0b5cad); color: #fff; padding: 28px 0 22px; }
.wrap { max-width: 1260px; margin: 0 auto; padding: 0 28px; }
header.top h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; letter-spacing: .2px; }
header.top .sub { opacity: .88; font-size: 14px; }
nav.toc { border-bottom: 1px solid var(--line); background: #fbfcfd; position: sticky; top: 0; z-index: 2; }
nav.toc a { display: inline-block; padding: 9px 12px 8px; color: var(--muted); text-decoration: none;
            font-size: 13px; border-bottom: 2px solid transparent; }
nav.toc a:hover { color: var(--accent); border-bottom-color: var(--accent); }
section { padding: 22px 0 6px; }
h2 { font-size: 19px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h2 .num { color: var(--accent); margin-right: 8px; font-weight: 600; }
h3 { font-size: 15px; margin: 18px 0 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(165px, 1fr)); gap: 12px; margin: 18px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 11px 14px; background: #fff; }
.card .k { font-size: 11.5px; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); }
.card .v { font-size: 19px; font-weight: 600; margin-top: 2px; }
.card .d { font-size: 12px; color: var(--muted); }
.finding { border-left: 4px solid var(--accent); background: #f2f7fc; padding: 10px 14px;
           margin: 14px 0 4px; border-radius: 0 6px 6px 0; }
.table-scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; white-space: nowrap; }
thead th { background: var(--band); border-bottom: 2px solid #c5ccd6; font-weight: 600; text-align: right; }
th.text, td.text { text-align: left; }
td.num { text-align: right; }
tbody tr:nth-child(even) td { background: #fafbfc; }
tbody tr:hover td { background: #eef4fb; }
td strong { color: #0b3d6e; }
table.results th { white-space: normal; vertical-align: bottom; min-width: 52px; }
table.results th, table.results td { padding: 7px 7px; }
table.results td { vertical-align: top; }
table.results td .sd { display: block; font-size: 11px; color: var(--muted); }
table.compact { width: auto; min-width: 420px; }
table.kv td:first-child { color: var(--muted); width: 200px; }
.two-col { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 18px; }
figure#fig-heatmaps img { max-width: 760px; }
sup { color: #b42318; font-weight: 700; margin-left: 1px; }
.notes { color: var(--muted); font-size: 12.5px; margin: 8px 2px 0; }
.notes p { margin: 3px 0; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 12px; background: #fff; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 8px; }
figcaption b { color: var(--ink); }
.small-figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 14px; }
.missing { color: var(--warn); background: #fff8eb; border: 1px solid #f3dcae; padding: 8px 12px;
           border-radius: 6px; }
details { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; margin: 10px 0; }
details summary { cursor: pointer; font-weight: 600; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 12px;
      overflow-x: auto; font-size: 12px; line-height: 1.45; }
footer { color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); margin-top: 26px;
         padding: 14px 0 30px; }
.tag { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 11.5px;
       background: #e8f0fa; color: #0b3d6e; margin-left: 6px; }
.fail { color: #b42318; }
@media print { nav.toc { display: none; } header.top { background: #0b3d6e; } figure, table { break-inside: avoid; } }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var ok = 0;
  document.querySelectorAll('img[data-figure]').forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { img.setAttribute('data-loaded', '1'); ok++; }
  });
  document.body.setAttribute('data-images-loaded', String(ok));
});
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _figure_html(entry: FigureEntry, number: int) -> str:
    cls = ' class="wide"' if entry.wide else ""
    caption = f"<b>Figure {number}. {_esc(entry.title)}</b>"
    if entry.caption:
        caption += " " + _esc(entry.caption)
    return (
        f'<figure{cls} id="fig-{_esc(entry.key)}"><img data-figure="{_esc(entry.key)}" '
        f'alt="{_esc(entry.title)}" src="{embed_png(entry.path)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _cards(cards: Sequence[tuple[str, str, str]]) -> str:
    items = "".join(
        f'<div class="card"><div class="k">{_esc(k)}</div><div class="v">{_esc(v)}</div>'
        f'<div class="d">{_esc(d)}</div></div>'
        for k, v, d in cards
    )
    return f'<div class="cards">{items}</div>'


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(
        f'<tr><td class="text">{_esc(k)}</td><td class="text">{_esc(v)}</td></tr>' for k, v in rows
    )
    return f'<div class="table-scroll"><table class="kv"><tbody>{body}</tbody></table></div>'


def _grid_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    first_text: bool = True,
    compact: bool = False,
) -> str:
    head = "".join(
        f'<th class="{"text" if i == 0 and first_text else "num"}">{_esc(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = ""
    for row in rows:
        cells = "".join(
            f'<td class="{"text" if i == 0 and first_text else "num"}">{_esc(v)}</td>'
            for i, v in enumerate(row)
        )
        body += f"<tr>{cells}</tr>"
    cls = ' class="compact"' if compact else ""
    wrap = "" if compact else ' class="table-scroll"'
    return (
        f"<div{wrap}><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _notes(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    return '<div class="notes">' + "".join(f"<p>{_esc(n)}</p>" for n in lines) + "</div>"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def render_report(
    summary: Mapping[str, Any],
    *,
    main_table_html: str,
    main_table_notes: Sequence[str],
    comparison_table_html: str | None,
    comparison_notes: Sequence[str],
    figures: Sequence[FigureEntry],
    confusion: Sequence[FigureEntry] = (),
    heatmap: FigureEntry | None = None,
    heatmap_note: str | None = None,
    config_yaml: str = "",
    commands: Sequence[str] = (),
    title: str | None = None,
    generated: _dt.datetime | None = None,
) -> str:
    """The report page as an HTML string.

    Args:
        summary: the benchmark summary (:mod:`medcls.benchmark.aggregate`).
        main_table_html: the comparison table (:func:`medcls.reports.tables.to_html`).
        main_table_notes: the notes under it.
        comparison_table_html: the statistical tests table (or ``None``).
        comparison_notes: the notes under it.
        figures: ROC, validation curves, calibration, ... in display order.
        confusion: one confusion-matrix figure per model.
        heatmap: the models × images heatmap grid, if drawn.
        heatmap_note: why the heatmap grid is missing (shown instead).
        config_yaml: the resolved configuration.
        commands: the command lines that built the benchmark.
        title: page title (default from the data source).
        generated: timestamp shown in the header (default now).
    """
    generated = generated or _dt.datetime.now().astimezone()
    bench = summary.get("benchmark", {})
    data = summary.get("data", {})
    models = [m for m in summary.get("models", []) if m.get("runs_done")]
    task = summary.get("task", "")
    classes = summary.get("classes", [])
    source = data.get("source") or "data"
    title = title or f"Model comparison on {source}"
    seeds = bench.get("seeds") or []
    reference = summary.get("reference")

    best = None
    if models:
        best = max(models, key=lambda m: m.get("metrics", {}).get("auc", {}).get("mean") or -1)
    cards = [
        ("Models", str(len(summary.get("models", []))), f"{len(models)} with results"),
        (
            "Runs",
            f"{bench.get('runs_done', 0)} / {bench.get('runs_expected', 0)}",
            f"{bench.get('folds')} folds × {len(seeds)} seed(s)"
            + (f", {bench.get('runs_failed')} failed" if bench.get("runs_failed") else ""),
        ),
        (
            "Cases",
            str(data.get("cases", "–")),
            f"{data.get('patients', '–')} patients, {task} {'/'.join(classes)}",
        ),
        (
            "Evaluation",
            "held-out test" if summary.get("eval_split") == "test" else "out-of-fold",
            f"{models[0].get('pooled_cases', '–') if models else '–'} cases pooled per model",
        ),
    ]
    if best is not None:
        auc = best["metrics"]["auc"]
        ci = (best.get("ci") or {}).get("auc") or {}
        detail = (
            f"95% CI {100 * ci['low']:.1f}–{100 * ci['high']:.1f}"
            if ci.get("low") is not None
            else ""
        )
        cards.append(("Best mean AUC", f"{100 * auc['mean']:.2f}%", f"{best['label']}; {detail}"))

    findings = []
    if best is not None:
        findings.append(
            f"<b>{_esc(best['label'])}</b> has the highest mean AUC "
            f"({100 * best['metrics']['auc']['mean']:.2f}%"
            + (
                f" ± {100 * best['metrics']['auc']['std']:.2f}"
                if best["metrics"]["auc"].get("std") is not None
                else ""
            )
            + ")."
        )
    significant = [
        c["model"]
        for c in summary.get("comparisons", [])
        if (c.get("delong") or {}).get("significant")
    ]
    if reference and summary.get("comparisons"):
        if significant:
            findings.append(
                f"AUC significantly different from the reference ({_esc(reference)}): "
                f"{_esc(', '.join(significant))} (DeLong test, Holm-adjusted)."
            )
        else:
            findings.append(
                f"No model's AUC differs significantly from the reference {_esc(reference)} "
                "(DeLong, Holm-adjusted)."
            )
    failed = [(m["label"], f) for m in summary.get("models", []) for f in m.get("failed") or []]

    parts: list[str] = []
    sections = [("results", "Results"), ("statistics", "Statistical comparison")]
    sections += [("figures", "Curves"), ("confusion", "Confusion matrices")]
    sections += [("heatmaps", "Heatmaps"), ("runs", "Runs"), ("data", "Data")]
    sections += [("config", "Configuration"), ("software", "Software")]

    number = iter(range(1, 100))

    def heading(key: str) -> str:
        return f'<h2><span class="num">{next(number)}</span>{_esc(dict(sections)[key])}</h2>'

    parts.append(f'<section id="results">{heading("results")}')
    parts.append(f'<div class="table-scroll">{main_table_html}</div>{_notes(main_table_notes)}')
    if findings:
        parts.append('<div class="finding">' + " ".join(findings) + "</div>")
    if failed:
        items = "".join(
            f"<li><b>{_esc(label)}</b> seed {f['seed']} fold {f['fold']}: "
            f'<span class="fail">{_esc(f.get("error"))}</span></li>'
            for label, f in failed
        )
        parts.append(f"<h3>Failed runs</h3><ul>{items}</ul>")
    parts.append("</section>")

    parts.append(f'<section id="statistics">{heading("statistics")}')
    if comparison_table_html:
        parts.append(f'<div class="table-scroll">{comparison_table_html}</div>')
        parts.append(_notes(comparison_notes))
    else:
        parts.append('<p class="missing">Only one model has results: nothing to compare.</p>')
    parts.append("</section>")

    figure_number = iter(range(1, 100))
    parts.append(f'<section id="figures">{heading("figures")}<div class="figs">')
    parts += [_figure_html(f, next(figure_number)) for f in figures]
    parts.append("</div></section>")

    parts.append(f'<section id="confusion">{heading("confusion")}')
    if confusion:
        parts.append('<div class="small-figs">')
        parts += [_figure_html(f, next(figure_number)) for f in confusion]
        parts.append("</div>")
    parts.append(
        _notes(
            [
                "Pooled per-case predictions on the evaluation split, at each model's "
                "validation-chosen threshold (binary) or the arg-max class (multiclass)."
            ]
        )
    )
    parts.append("</section>")

    parts.append(f'<section id="heatmaps">{heading("heatmaps")}')
    if heatmap is not None:
        heatmap.wide = True
        parts.append(f'<div class="figs">{_figure_html(heatmap, next(figure_number))}</div>')
    else:
        parts.append(f'<p class="missing">{_esc(heatmap_note or "No heatmap grid was drawn.")}</p>')
    parts.append("</section>")

    parts.append(f'<section id="runs">{heading("runs")}')
    run_headers = ["Model", "Seed", "Fold", "Threshold", "Accuracy", "AUC", "Recall"]
    run_headers += ["Specificity", "F1", "Best epoch", "Train time (s)"]
    run_rows = []
    for m in summary.get("models", []):
        for r in m.get("runs_table", []):
            run_rows.append(
                [
                    m["label"],
                    r["seed"],
                    r["fold"],
                    _fmt(r.get("threshold"), 3),
                    _fmt(r.get("accuracy")),
                    _fmt(r.get("auc")),
                    _fmt(r.get("recall")),
                    _fmt(r.get("specificity")),
                    _fmt(r.get("f1")),
                    _fmt(r.get("best_epoch")),
                    _fmt(r.get("fit_seconds"), 1),
                ]
            )
    parts.append(
        f"<details><summary>Every run ({len(run_rows)}) on the {_esc(summary.get('eval_split'))} "
        f"split</summary>{_grid_table(run_headers, run_rows)}</details>"
    )
    speed = [
        [
            m["label"],
            _fmt((m.get("epochs") or {}).get("mean"), 1),
            _fmt((m.get("seconds_per_epoch") or {}).get("mean"), 2),
            _fmt((m.get("fit_seconds") or {}).get("total"), 0),
            _fmt(m.get("latency_ms"), 2),
            m.get("latency_device") or "–",
        ]
        for m in models
    ]
    parts.append(
        "<h3>Time and speed</h3>"
        + _grid_table(
            ["Model", "Epochs", "s/epoch", "Train time, all runs (s)", "Latency (ms)", "Device"],
            speed,
        )
        + _notes(
            [
                "Latency: median time of single-sample forward passes (batch 1) after warm-up, "
                "the fastest of the model's runs. Times on a shared machine vary with its load; "
                "compare models measured together."
            ]
        )
    )
    parts.append("</section>")

    parts.append(f'<section id="data">{heading("data")}')
    split_rows = []
    data_classes = data.get("classes") or classes
    for part, counts in (data.get("parts") or {}).items():
        split_rows.append([part, *[counts.get(c, 0) for c in data_classes], sum(counts.values())])
    parts.append(
        _kv_table(
            [
                ("Source", data.get("source")),
                ("Path", data.get("path") or "built-in"),
                ("Cases / patients", f"{data.get('cases')} / {data.get('patients')}"),
                ("Input size", data.get("spatial_size") or "as stored"),
                (
                    "Split",
                    f"patient-grouped, class-stratified; split seed {bench.get('split_seed')}"
                    + (
                        "; new folds per seed" if bench.get("resplit") else "; same for every model"
                    ),
                ),
                ("Split file", data.get("split_file")),
            ]
        )
    )
    parts.append("<h3>Cases per fold and class</h3>")
    parts.append(_grid_table(["Part", *data_classes, "Total"], split_rows, compact=True))
    parts.append("</section>")

    parts.append(f'<section id="config">{heading("config")}')
    if commands:
        parts.append("<h3>Commands</h3><pre>" + _esc("\n".join(commands)) + "</pre>")
    parts.append(
        "<details><summary>Resolved configuration (YAML)</summary>"
        f"<pre>{_esc(config_yaml)}</pre></details>"
    )
    options = summary.get("options") or {}
    parts.append("<h3>Report options</h3>")
    parts.append(_kv_table([(k, v) for k, v in options.items()]))
    parts.append("</section>")

    parts.append(f'<section id="software">{heading("software")}')
    parts.append(_kv_table(list((summary.get("software") or {}).items())))
    parts.append("</section>")

    software = summary.get("software") or {}
    footer = (
        f"Generated by medcls {_esc(software.get('medcls', ''))} "
        f"from {_esc(bench.get('folder', ''))}. Rebuild with "
        f"<code>medcls report {_esc(bench.get('folder', 'FOLDER'))}</code>."
    )
    subtitle = (
        f"{_esc(task)} classification · {_esc(' vs '.join(classes))} · "
        f"{len(summary.get('models', []))} models"
    )
    return page_html(title, subtitle, sections, _cards(cards) + "".join(parts), footer, generated)


def page_html(
    title: str,
    subtitle_html: str,
    sections: Sequence[tuple[str, str]],
    body_html: str,
    footer_html: str,
    generated: _dt.datetime | None = None,
) -> str:
    """The report page around its content: head, title band, table of contents, footer.

    Args:
        title: page title (escaped here).
        subtitle_html: the line under the title (HTML; "generated <time>" is appended).
        sections: ``(anchor id, heading)`` of each section, for the table of contents.
        body_html: the cards and sections.
        footer_html: the footer's text (HTML).
        generated: timestamp shown in the header (default now).
    """
    generated = generated or _dt.datetime.now().astimezone()
    stamp = generated.strftime("%Y-%m-%d %H:%M %Z").strip()
    toc = "".join(f'<a href="#{k}">{_esc(t)}</a>' for k, t in sections)
    header = (
        f'<header class="top"><div class="wrap"><h1>{_esc(title)}</h1>'
        f'<div class="sub">{subtitle_html} · generated {_esc(stamp)}</div></div></header>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f'{header}<nav class="toc"><div class="wrap">{toc}</div></nav>'
        f'<main class="wrap">{body_html}</main>'
        f'<footer><div class="wrap">{footer_html}</div></footer>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(path: str | Path, page: str) -> Path:
    """Write the page atomically (a reader never sees half a report)."""
    import os
    import uuid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
