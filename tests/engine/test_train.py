"""End-to-end training on a tiny synthetic set: outputs, determinism, resume, DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medcls.engine.api import evaluate, predict, train
from medcls.errors import ConfigError
from tests.conftest import tiny_xray_overrides

ROOT = Path(__file__).resolve().parents[2]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "a"
    result = train(None, tiny_xray_overrides(run_dir))
    return result


def test_run_folder_holds_everything(trained):
    run = trained.run_dir
    for name in (
        "config.yaml",
        "splits.csv",
        "history.csv",
        "metrics.json",
        "timing.json",
        "predictions_val.csv",
        "predictions_test.csv",
        "checkpoints/best.safetensors",
        "checkpoints/best.json",
        "checkpoints/last.ckpt",
        "figures/roc_test.png",
        "figures/confusion_test.png",
        "figures/training_curves.png",
        "logs/csv/metrics.csv",
    ):
        assert (run / name).is_file(), name
    assert any((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    metrics = _metrics(run)
    for split in ("val", "test"):
        for key in (
            "accuracy",
            "auc",
            "recall",
            "specificity",
            "precision",
            "f1",
            "balanced_accuracy",
            "confusion_matrix",
        ):
            assert key in metrics[split]
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3
    meta = json.loads((run / "checkpoints" / "best.json").read_text())
    assert meta["classes"] == ["normal", "pneumonia"] and meta["model"]["in_chans"] == 1
    assert meta["preprocess"]["spatial_size"] == [32, 32]


def test_same_seed_same_metrics(trained, tmp_path):
    again = train(None, tiny_xray_overrides(tmp_path / "b"))
    assert (again.run_dir / "metrics.json").read_bytes() == (
        trained.run_dir / "metrics.json"
    ).read_bytes()
    assert (again.run_dir / "splits.csv").read_bytes() == (
        trained.run_dir / "splits.csv"
    ).read_bytes()


def test_existing_run_is_not_overwritten_by_accident(trained):
    with pytest.raises(ConfigError, match="already holds a run"):
        train(None, tiny_xray_overrides(trained.run_dir))


def test_evaluate_reproduces_training_metrics(trained):
    metrics = evaluate(trained.run_dir)
    assert metrics["test"]["auc"] == pytest.approx(trained.metrics["test"]["auc"], abs=1e-6)
    assert (trained.run_dir / "metrics_best.json").is_file()


def test_predict_files_and_folder(trained, tmp_path):
    splits = (trained.run_dir / "splits.csv").read_text().splitlines()[1:]
    test_ids = [line.split(",")[0] for line in splits if line.split(",")[1] == "test"]
    images = Path(os.environ["MEDCLS_CACHE"]).rglob("images")
    folder = next(p for p in images if p.is_dir())
    files = [folder / f"{i}.png" for i in test_ids if (folder / f"{i}.png").exists()][:5]
    out = predict(trained.run_dir, files, output=tmp_path / "p.csv")
    rows = out.read_text().splitlines()
    assert rows[0] == "id,prob_normal,prob_pneumonia,predicted"
    assert len(rows) == 1 + len(files)
    for row in rows[1:]:
        _, p0, p1, label = row.split(",")
        assert abs(float(p0) + float(p1) - 1) < 1e-5 and label in ("normal", "pneumonia")
    out2 = predict(trained.run_dir, [folder], output=tmp_path / "all.csv")
    assert len(out2.read_text().splitlines()) > len(rows)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import lightning.pytorch as pl
    from medcls.engine.api import train

    class KillAt(pl.Callback):
        # SIGKILL in the middle of epoch 2: no chance to clean up
        def on_train_batch_end(self, trainer, *args):
            if trainer.current_epoch == 1 and trainer.fit_loop.epoch_loop.batch_progress.current.completed == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    train(None, sys.argv[1:], callbacks=[KillAt()])
    """
)


def test_killed_run_resumes_to_the_same_result(trained, tmp_path):
    run_dir = tmp_path / "killed"
    overrides = tiny_xray_overrides(run_dir)
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "metrics.json").exists()
    resumed = train(None, [*overrides, "resume=true"])
    assert (resumed.run_dir / "metrics.json").read_bytes() == (
        trained.run_dir / "metrics.json"
    ).read_bytes()
    history = (resumed.run_dir / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]


def _probabilities(path: Path) -> dict[str, list[float]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    cols = [i for i, name in enumerate(rows[0]) if name.startswith("prob_")]
    return {row[0]: [float(row[i]) for i in cols] for row in rows[1:]}


def test_ddp_two_processes_match_one_process(tmp_path):
    """Global batch 16: one process x 16 vs two gloo processes x 8.

    The model has no batch norm and no dropout, so both runs compute the same
    gradient per step up to float summation order: the test predictions of the
    final models agree to 1e-3 (BatchNorm models differ more on CPU, where
    statistics cannot be synchronised; see docs/engine.md).
    """
    model = ["model.name=timm:test_convnext"]
    single = train(None, tiny_xray_overrides(tmp_path / "single") + model)
    run_dir = tmp_path / "ddp"
    overrides = tiny_xray_overrides(run_dir, batch_size=8) + model
    overrides += ["trainer.strategy=ddp", "trainer.devices=2"]
    config = tmp_path / "ddp.yaml"
    config.write_text("name: ddp\n")
    medcls = Path(sys.executable).with_name("medcls")
    proc = subprocess.run(
        [str(medcls), "train", str(config), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = _probabilities(run_dir / "predictions_test.csv")
    one = _probabilities(single.run_dir / "predictions_test.csv")
    assert ddp.keys() == one.keys()
    worst = max(abs(a - b) for k in one for a, b in zip(one[k], ddp[k]))
    assert worst < 1e-3
    assert _metrics(run_dir)["test"]["auc"] == pytest.approx(
        single.metrics["test"]["auc"], abs=1e-6
    )


def test_channels_last_training_of_a_model_with_expert_kernels(tmp_path):
    """trainer.channels_last=on trains LDTransformer, whose 5-D expert kernels made
    ``Module.to(memory_format=channels_last)`` raise on every CUDA run before."""
    overrides = tiny_xray_overrides(tmp_path / "cl", epochs=1)
    overrides = [o for o in overrides if not o.startswith("model.name=")]
    result = train(None, [*overrides, "model.name=ldtransformer_tiny", "trainer.channels_last=on"])
    metrics = _metrics(result.run_dir)
    assert math.isfinite(metrics["test"]["loss"])


def test_trainer_compile_wraps_the_model_once(tmp_path, monkeypatch):
    """trainer.compile passes its mode to torch.compile; checkpoints keep plain keys."""
    import torch

    seen = []

    def fake_compile(model, mode=None):
        seen.append(mode)
        calls = {"n": 0}

        def run(*args, **kwargs):
            calls["n"] += 1
            return model(*args, **kwargs)

        run.calls = calls
        seen.append(run)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = train(
        None, [*tiny_xray_overrides(tmp_path / "c", epochs=1), "trainer.compile=reduce-overhead"]
    )
    assert seen[0] == "reduce-overhead"
    assert seen[1].calls["n"] > 0  # training went through the compiled callable
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("_compiled" in key or "_orig_mod" in key for key in state["state_dict"])
    with pytest.raises(ConfigError, match=r"trainer\.compile"):
        train(None, [*tiny_xray_overrides(tmp_path / "d", epochs=1), "trainer.compile=fast"])


@pytest.mark.slow
def test_trainer_compile_really_compiles_and_matches_eager(tmp_path):
    """torch.compile (inductor, about a minute on 2 CPU cores) trains to the same
    predictions as eager mode."""
    eager = train(None, tiny_xray_overrides(tmp_path / "eager", epochs=1))
    compiled = train(
        None, [*tiny_xray_overrides(tmp_path / "compiled", epochs=1), "trainer.compile=on"]
    )
    a = (eager.run_dir / "predictions_test.csv").read_text().splitlines()
    b = (compiled.run_dir / "predictions_test.csv").read_text().splitlines()
    assert a[0] == b[0] and len(a) == len(b)
    for row_a, row_b in zip(a[1:], b[1:]):
        va, vb = row_a.split(","), row_b.split(",")
        assert va[0] == vb[0]
        for x, y in zip(va[1:], vb[1:]):
            try:
                assert float(x) == pytest.approx(float(y), abs=1e-3)
            except ValueError:
                assert x == y
