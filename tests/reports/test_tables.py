"""Comparison tables: the seed's layout, best values, significance marks, LaTeX that compiles."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess

import pytest

from medcls.benchmark.aggregate import summarize
from medcls.errors import ConfigError
from medcls.reports.tables import (
    PRESETS,
    build_comparison_table,
    build_table,
    format_count,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)
from tests.benchmark.fake_bench import make_fake_benchmark

SEED_HEADER = (
    "| Model | Parameter amount | Calculation amount | Total time /s | A /% | AUC /% | R /% "
    "| F1 /% | P /% |"
)


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    bench = make_fake_benchmark(tmp_path_factory.mktemp("tables") / "b")
    return summarize(bench).summary


def test_seed_preset_matches_the_seed_table_layout(summary):
    text = to_markdown(build_table(summary, "seed"), notes=False)
    lines = text.splitlines()
    assert lines[0] == SEED_HEADER
    assert len(lines) == 2 + 3
    sci = r"\d\.\d{2}×10[⁰¹²³⁴⁵⁶⁷⁸⁹]+"
    pct = r"\d{1,3}\.\d{2}±\d+\.\d[*†]?"
    for line in lines[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        assert len(cells) == 9
        assert cells[0] in ("strong", "medium", "weak")
        assert re.fullmatch(sci, cells[1]) and re.fullmatch(sci, cells[2]), cells
        assert re.fullmatch(r"\d+", cells[3])  # total time in whole seconds
        for cell in cells[4:]:
            assert re.fullmatch(pct, cell), cell
    # the numbers are the summary's, in percent
    strong = next(m for m in summary["models"] if m["label"] == "strong")
    auc = strong["metrics"]["auc"]
    row = next(line for line in lines if line.startswith("| strong"))
    assert f"{100 * auc['mean']:.2f}±{100 * auc['std']:.1f}" in row
    assert "2.50×10⁵" in row and "4.00×10⁷" in row


def test_best_value_is_bold_in_every_direction(summary):
    table = build_table(summary, "full")
    column = {key: j for j, key in enumerate(table.keys)}
    labels = [row[0].text for row in table.rows]
    bold = {
        key: [labels[i] for i, row in enumerate(table.rows) if row[j].bold]
        for key, j in column.items()
    }
    assert bold["auc"] == ["strong"]  # highest mean AUC
    assert bold["params"] == ["strong"]  # fewest parameters (250 K)
    assert bold["fit_seconds"] == ["strong"]  # shortest training
    assert bold["latency_ms"] == ["strong"]
    assert bold["model"] == []
    md = to_markdown(table)
    assert "**" in md and "Bold: best value" in md


def test_significant_differences_are_marked(summary):
    table = build_table(summary, "full")
    auc = table.keys.index("auc")
    marks = {row[0].text: row[auc].mark for row in table.rows}
    comparisons = {c["model"]: c for c in summary["comparisons"]}
    for label, mark in marks.items():
        significant = label in comparisons and comparisons[label]["delong"]["significant"]
        assert mark == ("*" if significant else "")
    assert marks["weak"] == "*"
    assert any("DeLong, Holm-adjusted" in note for note in table.notes)
    tests = to_markdown(build_comparison_table(summary))
    assert "| weak |" in tests and "Holm" in tests


def test_csv_holds_unformatted_numbers(summary):
    rows = list(csv.DictReader(io.StringIO(to_csv(summary, "seed"))))
    assert [r["Model"] for r in rows] == ["strong", "medium", "weak"]
    medium = next(m for m in summary["models"] if m["label"] == "medium")
    row = rows[1]
    assert float(row["AUC /%"]) == pytest.approx(100 * medium["metrics"]["auc"]["mean"])
    assert float(row["AUC /% std"]) == pytest.approx(100 * medium["metrics"]["auc"]["std"])
    assert int(row["Parameter amount"]) == medium["params"]
    full = list(csv.DictReader(io.StringIO(to_csv(summary, "full"))))
    ci = medium["ci"]["auc"]
    assert float(full[1]["AUC 95% CI (%) low"]) == pytest.approx(100 * ci["low"])


def test_other_presets_and_html(summary):
    for name in PRESETS:
        table = build_table(summary, name)
        assert len(table.rows) == 3 and len(table.headers) == len(PRESETS[name].columns)
    mad = to_markdown(build_table(summary, "madensenet"), notes=False)
    assert mad.splitlines()[0].startswith("| Network | Type | Params/M |")
    assert "| CNN |" in mad and re.search(r"\| 0\.\d{4} \|", mad)
    html = to_html(build_table(summary, "full"))
    assert html.count("<tr>") == 4 and "<strong>" in html and 'class="sd"' in html
    with pytest.raises(ConfigError, match="unknown table preset"):
        build_table(summary, "nope")


def test_number_formats():
    assert format_count(253_000, "sci") == ("2.53×10⁵", "$2.53\\times10^{5}$")
    assert format_count(9_999_999, "sci")[0] == "1.00×10⁷"
    assert format_count(417_090, "si_compact", 3)[0] == "417.090K"
    assert format_count(68_210_000_000, "si", 3)[0] == "68.210 G"
    assert format_count(1_096_090_000, "M", 2)[0] == "1,096.09"
    assert format_count(None) == ("–", "--")


def _tex_engine() -> str | None:
    for name in ("pdflatex", "lualatex", "xelatex"):
        if shutil.which(name):
            return name
    return None


def test_latex_is_booktabs_and_escaped(summary):
    tex = to_latex(build_table(summary, "full"))
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\%" in tex and "$\\pm$" in tex and "\\textbf{" in tex
    assert "$^{*}$" in tex  # the weak model's AUC
    body = tex.split("\\midrule")[1]
    assert body.count("\\\\") == 3


@pytest.mark.skipif(_tex_engine() is None, reason="no TeX engine (pdflatex/lualatex/xelatex)")
@pytest.mark.parametrize("preset", ["full", "seed"])
def test_latex_compiles_as_a_standalone_snippet(summary, tmp_path, preset):
    snippet = to_latex(build_table(summary, preset))
    document = (
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
        "\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n"
        f"{snippet}\n\\end{{document}}\n"
    )
    (tmp_path / "table.tex").write_text(document)
    result = subprocess.run(
        [_tex_engine(), "-interaction=nonstopmode", "-halt-on-error", "table.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "table.pdf").stat().st_size > 1000
