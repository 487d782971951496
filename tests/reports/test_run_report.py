"""The report of one training run: metrics, curves, heatmaps and the pointing game."""

from __future__ import annotations

import pytest

from medcls.cli.main import main
from medcls.engine.api import train
from medcls.errors import DataError
from medcls.reports.run_report import build_run_report
from tests.benchmark.browser import MISSING, PageElements, render_dom, skip_without_chromium
from tests.conftest import tiny_xray_overrides

FIGURES = {"roc", "confusion", "training_curves", "heatmaps"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run-report") / "run"
    result = train("configs/demo-xray2d.yaml", tiny_xray_overrides(run_dir, epochs=2))
    return result


def test_report_holds_metrics_figures_and_pointing_game(run):
    path = build_run_report(run.run_dir)
    assert path == run.run_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    parsed = PageElements(page)
    assert parsed.external == []
    assert {img["data-figure"] for img in parsed.images} == FIGURES
    test_auc = run.metrics["test"]["auc"]
    assert f"{test_auc:.4f}" in page  # the numbers come from metrics.json
    # demo-xray2d has lesion masks: the Grad-CAM pointing game is measured and shown
    assert "Pointing game: the Grad-CAM peak lies inside the lesion mask for" in page
    assert (run.run_dir / "figures" / "heatmaps.png").is_file()


def test_report_command_accepts_a_run_folder(run, capsys):
    (run.run_dir / "report.html").unlink(missing_ok=True)
    assert main(["report", str(run.run_dir), "--no-heatmaps"]) == 0
    page = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert "Heatmaps were not requested." in page
    assert "Report:" in capsys.readouterr().err


def test_unfinished_run_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"metrics\.json"):
        build_run_report(tmp_path)


@pytest.mark.skipif(skip_without_chromium(), reason=MISSING)
def test_run_report_renders_in_headless_chromium(run, tmp_path):
    path = build_run_report(run.run_dir, localisation=False)
    parsed = PageElements(render_dom(path, tmp_path / "profile"))
    assert parsed.loaded_figures() == FIGURES
