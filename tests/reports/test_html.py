"""The HTML report: self-contained, and every table and figure shows in headless Chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from medcls.benchmark.report import build_report
from medcls.cli.main import main
from medcls.errors import DataError
from medcls.reports.html import embed_png
from tests.benchmark.browser import (
    MISSING,
    PageElements,
    render_dom,
    screenshot,
    skip_without_chromium,
)
from tests.benchmark.fake_bench import make_fake_benchmark

FIGURES = {"roc", "calibration", "validation_curves", "confusion_strong", "confusion_medium"}
FIGURES |= {"confusion_weak"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    bench = make_fake_benchmark(tmp_path_factory.mktemp("html") / "bench", seeds=(0, 1))
    files = build_report(bench.folder, heatmaps=False)
    return bench, files


def test_report_is_one_self_contained_file(report):
    _, files = report
    page = files["report"].read_text(encoding="utf-8")
    parsed = PageElements(page)
    assert parsed.external == []  # nothing to fetch: images are data: URLs, CSS inline
    assert {img["data-figure"] for img in parsed.images} == FIGURES
    assert all(img["src"].startswith("data:image/png;base64,") for img in parsed.images)
    classes = [t.get("class") for t in parsed.tables]
    assert classes.count("results") == 2  # the comparison table and the tests table
    for text in ("Resolved configuration", "demo-xray2d", "torch", "fold 2", "DeLong"):
        assert text in page
    assert "Heatmaps were not requested" in page
    for name in ("table_md", "table_csv", "table_tex", "runs", "comparisons", "pooled", "summary"):
        assert files[name].is_file(), name


def test_report_command_rebuilds_with_other_options(report, capsys):
    bench, files = report
    files["report"].unlink()
    assert main(["report", str(bench.folder), "--preset", "seed", "--no-heatmaps"]) == 0
    assert "| Model | Parameter amount | Calculation amount |" in files["table_md"].read_text()
    assert "Parameter amount" in files["report"].read_text()
    assert "Report:" in capsys.readouterr().err
    assert main(["report", str(bench.folder / "nope")]) == 2
    assert "not a benchmark folder" in capsys.readouterr().err


def test_embed_png_refuses_other_files(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not a png")
    with pytest.raises(DataError, match="expected a PNG"):
        embed_png(bad)


@pytest.mark.skipif(skip_without_chromium(), reason=MISSING)
def test_report_renders_in_headless_chromium(report, tmp_path):
    _, files = report
    dom = render_dom(files["report"], tmp_path / "profile")
    parsed = PageElements(dom)
    assert parsed.loaded_figures() == FIGURES  # every figure decoded in the browser
    assert parsed.body.get("data-images-loaded") == str(len(FIGURES))
    assert re.search(r'<table class="results">.*?<strong>', dom, re.S)  # best values bold

    shot = screenshot(files["report"], tmp_path / "report.png", tmp_path / "profile")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    header = pixels[:60].reshape(-1, 3).mean(axis=0)
    assert header[2] > header[0] + 40  # the blue title band is drawn
    assert 0.05 < np.any(pixels < 200, axis=-1).mean() < 0.8  # text and figures, not blank
