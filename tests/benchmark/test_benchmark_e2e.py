"""A real benchmark with tiny models (1 epoch): trained, profiled, reported; and killed.

The default tests train one model on 2 folds in this process (the statistics of
several models are tested on simulated runs in test_aggregate.py). The SIGKILL test
(a real 2-model sweep in a child process, killed after its first finished run, then
run again) is marked ``slow``; tests/benchmark/test_resume.py kills a sweep of quick
stand-in runs in the default suite.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medcls.benchmark.sweep import Benchmark, run_sweep
from medcls.cli.main import main
from tests.benchmark.browser import MISSING, PageElements, render_dom, skip_without_chromium

ROOT = Path(__file__).resolve().parents[2]
MODELS = "timm:test_resnet,timm:test_vit{img_size: 32}"
OVERRIDES = [
    "data.demo.num_cases=60",
    "data.demo.size=32",
    "preprocess.spatial_size=[32, 32]",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.progress=false",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
]


def _command(folder: Path, models: str = MODELS) -> list[str]:
    return [
        "benchmark",
        "demo-xray2d",
        *OVERRIDES,
        "--models",
        models,
        "--folds",
        "2",
        "--output",
        str(folder),
        "--bootstrap",
        "200",
        "--heatmap-images",
        "2",
    ]


def _done_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.glob("runs/*/*/done.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e") / "bench"
    assert main(_command(folder, "timm:test_resnet")) == 0
    return folder


def _split(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["id"]: row["split"] for row in csv.DictReader(handle)}


def test_runs_train_and_predict_on_the_benchmark_folds(finished):
    bench = Benchmark.open(finished)
    folds = bench.read_folds(0)
    vals = []
    for slot in bench.spec.slots():
        run_dir = bench.run_dir(slot)
        split = _split(run_dir / "splits.csv")
        val = {i for i, s in split.items() if s == "val"}
        assert val == {r["id"] for r in folds if r["fold"] == str(slot.fold)}
        with (run_dir / "predictions_val.csv").open(newline="") as handle:
            predicted = {row["id"] for row in csv.DictReader(handle)}
        assert predicted == val  # the engine trained on the benchmark's split
        vals.append(val)
    assert not vals[0] & vals[1]


def test_runs_record_size_speed_and_the_report_is_complete(finished):
    from medcls.models import create_model

    bench = Benchmark.open(finished)
    done = bench.done(bench.spec.slots()[0])
    model = create_model("timm:test_resnet", in_chans=1, num_classes=2)
    assert done["params"] == sum(p.numel() for p in model.parameters())
    assert done["macs"] > 100_000 and done["latency_ms"] > 0 and done["family"] == "cnn"
    assert done["fit_seconds"] > 0 and done["epochs_run"] == 1
    page = (finished / "report.html").read_text()
    figures = {"roc", "validation_curves", "calibration", "heatmaps", "confusion_timm-test_resnet"}
    assert {i["data-figure"] for i in PageElements(page).images} == figures
    assert "timm:test_resnet" in (finished / "results" / "table.md").read_text()
    log = (finished / "commands.log").read_text().splitlines()
    assert len(log) == 1 and "--models" in log[0]
    # nothing is left to run: the same command again trains nothing
    stats = run_sweep(bench, runner=lambda b, s: pytest.fail(f"re-ran {s.key}"), log=lambda t: None)
    assert stats.ran == [] and len(stats.already_done) == 2


@pytest.mark.skipif(skip_without_chromium(), reason=MISSING)
def test_real_report_with_heatmaps_renders_in_chromium(finished, tmp_path):
    dom = PageElements(render_dom(finished / "report.html", tmp_path / "profile"))
    assert "heatmaps" in dom.loaded_figures() and len(dom.loaded_figures()) == 5


@pytest.mark.slow
def test_real_benchmark_killed_then_rerun_repeats_no_finished_run(tmp_path, medcls_cache):
    folder = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDCLS_CACHE": str(medcls_cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medcls.cli.main", *_command(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 600
    while not list(folder.glob("runs/*/*/done.json")):
        if proc.poll() is not None:
            pytest.fail(f"benchmark exited early: {proc.stderr.read().decode()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("no run finished in time")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up: its claim on the next run stays behind
    proc.wait()
    before = _done_files(folder)
    stamps = {p: (folder / p).stat().st_mtime_ns for p in before}
    assert main(_command(folder)) == 0
    assert 1 <= len(before) < 4
    after = _done_files(folder)
    assert len(after) == 4  # 2 models x 2 folds
    for path, text in before.items():
        assert after[path] == text  # the finished run was not redone
        assert (folder / path).stat().st_mtime_ns == stamps[path]
    bench = Benchmark.open(folder)
    stats = run_sweep(bench, runner=lambda b, s: pytest.fail(f"re-ran {s.key}"), log=lambda t: None)
    assert stats.ran == [] and len(stats.already_done) == 4
    assert (folder / "report.html").is_file()
    # every model saw the same split
    resnet, vit = bench.spec.models
    for fold in range(2):
        a = _split(folder / "runs" / resnet.slug / f"seed0-fold{fold}" / "splits.csv")
        b = _split(folder / "runs" / vit.slug / f"seed0-fold{fold}" / "splits.csv")
        assert a == b
    assert "timm:test_vit (img_size=32)" in (folder / "results" / "table.md").read_text()
