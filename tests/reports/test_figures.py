"""Result figures: files are written, valid, and show something."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from medcls.errors import DataError
from medcls.evaluation import classification_metrics, roc_curves
from medcls.reports import (
    PALETTE,
    FigureFiles,
    plot_confusion_matrix,
    plot_roc,
    plot_training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_files(files: FigureFiles) -> np.ndarray:
    """Both files exist and are valid; returns the PNG as an (H, W, 3) uint8 array."""
    assert files.png.suffix == ".png" and files.svg.suffix == ".svg"
    assert files.png.read_bytes()[:8] == PNG_SIGNATURE
    assert files.png.stat().st_size > 10_000
    assert ET.parse(files.svg).getroot().tag.endswith("svg")
    with Image.open(files.png) as image:
        image.verify()
    with Image.open(files.png) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    non_white = np.any(pixels < 245, axis=-1).mean()
    assert 0.02 < non_white < 0.9, non_white  # neither empty nor a solid block
    return pixels


def _has_colour(pixels: np.ndarray, hex_colour: str, min_pixels: int = 50) -> bool:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    close = np.all(np.abs(pixels.astype(int) - rgb) <= 12, axis=-1)
    return int(close.sum()) >= min_pixels


def _multiclass(seed: int = 0, n: int = 60, k: int = 3):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), target] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, target


def test_plot_roc_per_class_curves(tmp_path):
    probs, target = _multiclass()
    names = ["normal", "bacterial", "viral"]
    curves = roc_curves(probs, target, "multiclass", class_names=names)
    result = classification_metrics(probs, target, "multiclass", class_names=names)
    aucs = {name: result["per_class"][name]["auc"] for name in names} | {"macro": result["auc"]}
    files = plot_roc(curves, aucs, tmp_path / "figs" / "roc", title="Validation ROC")
    assert files == FigureFiles(tmp_path / "figs" / "roc.png", tmp_path / "figs" / "roc.svg")
    pixels = _check_files(files)
    for colour in PALETTE[:4]:  # one colour per curve (3 classes + macro)
        assert _has_colour(pixels, colour), colour
    assert files.svg.read_text().count("<path") > 20  # curves, axes and glyphs as vectors


def test_plot_roc_many_models_and_suffix_in_stem(tmp_path):
    grid = np.linspace(0, 1, 20)
    curves = {f"model_{i}": (grid, grid ** (1 + i / 4)) for i in range(12)}
    aucs = {name: float("nan") if name == "model_3" else 0.8 for name in curves}
    files = plot_roc(curves, aucs, tmp_path / "bench.png", title="12 models")
    assert files.png == tmp_path / "bench.png"
    pixels = _check_files(files)
    assert pixels.shape[1] > pixels.shape[0]  # legend outside: a wider figure


def test_plot_roc_rejects_bad_curves(tmp_path):
    with pytest.raises(DataError, match="curves is empty"):
        plot_roc({}, None, tmp_path / "x")
    with pytest.raises(DataError, match="'a' needs 1-D fpr and tpr of equal"):
        plot_roc({"a": ([0, 1], [0, 0.5, 1])}, None, tmp_path / "x")


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion_matrix(tmp_path, normalize):
    cm = np.array([[30, 5, 1], [4, 25, 6], [0, 0, 0]])  # last class never true
    files = plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm", normalize=normalize)
    pixels = _check_files(files)
    darkest = pixels.reshape(-1, 3).sum(axis=1).min()
    assert darkest < 200  # the largest cell is drawn dark
    assert files.svg.stat().st_size > 5_000


def test_plot_multilabel_confusion_matrices(tmp_path):
    rng = np.random.default_rng(1)
    target = rng.integers(0, 2, (40, 5))
    probs = np.clip(0.4 * target + 0.6 * rng.random((40, 5)), 0, 1)
    result = classification_metrics(probs, target, "multilabel")
    files = plot_confusion_matrix(result["confusion_matrix"], result["class_names"], tmp_path / "m")
    pixels = _check_files(files)
    assert pixels.shape[1] > pixels.shape[0]  # a grid of panels


def test_plot_confusion_matrix_rejects_mismatch(tmp_path):
    with pytest.raises(DataError, match="class_names has 2 names; cm has 3"):
        plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b"], tmp_path / "cm")
    with pytest.raises(DataError, match=r"shape \(K, K\)"):
        plot_confusion_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "cm")


def _history(epochs: int = 8) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / (e + 1),
            "val_loss": 1.1 / (e + 1) + 0.03 * e,
            "val_accuracy": 0.5 + 0.05 * e,
            "val_auc": 0.55 + 0.05 * e,
        }
        for e in range(epochs)
    ]


def test_plot_training_curves_from_list(tmp_path):
    pixels = _check_files(plot_training_curves(_history(), tmp_path / "train"))
    assert _has_colour(pixels, PALETTE[0]) and _has_colour(pixels, PALETTE[1])
    assert pixels.shape[1] > 2 * pixels.shape[0]  # three panels side by side


def test_plot_training_curves_from_logger_style_csv(tmp_path):
    # a logger writes train and validation metrics on separate rows, with empty cells
    path = tmp_path / "metrics.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["epoch", "step", "train_loss", "val_loss", "lr"]
        )
        writer.writeheader()
        for row in _history(6):
            writer.writerow({"epoch": row["epoch"], "step": 10, "train_loss": row["train_loss"]})
            writer.writerow({"epoch": row["epoch"], "val_loss": row["val_loss"], "lr": 0.001})
    pixels = _check_files(plot_training_curves(path, tmp_path / "loss_only"))
    assert pixels.shape[1] < 1.6 * pixels.shape[0]  # one panel: loss


def test_plot_training_curves_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x")
    with pytest.raises(DataError, match="none of the columns"):
        plot_training_curves([{"epoch": 0, "lr": 0.1}], tmp_path / "x")
    with pytest.raises(DataError, match="'val_auc' holds 'high'"):
        plot_training_curves([{"epoch": 0, "val_auc": "high"}], tmp_path / "x")
