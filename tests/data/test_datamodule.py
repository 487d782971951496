"""The data module: the pre-training scan, bad-case policy, leakage, folds, imbalance."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medcls.config import load_config
from medcls.data.cases import Case, CaseTable
from medcls.data.datamodule import ClassificationDataModule
from medcls.data.dataset import CaseDataset
from medcls.data.samplers import balanced_sample_weights
from medcls.data.transforms import build_preprocess
from medcls.engine.losses import balanced_class_weights
from medcls.errors import DataError

try:
    from tests.data.data_utils import (
        bad_dataset_2d,
        bad_dataset_3d,
        good_pngs,
        write_manifest,
        write_png,
    )
    from tests.data.dicom_utils import axial_positions, write_series
except ImportError:  # pragma: no cover
    from data_utils import bad_dataset_2d, bad_dataset_3d, good_pngs, write_manifest, write_png
    from dicom_utils import axial_positions, write_series


def _dm(manifest, *overrides, run_dir=None):
    cfg = load_config(
        None,
        [
            "data.source=csv",
            f"data.path={manifest}",
            "data.classes=[a, b]",
            "data.batch_size=4",
            "preprocess.spatial_size=[8, 8]",
            *overrides,
        ],
    )
    return ClassificationDataModule(cfg, run_dir, progress=False)


def _problem_lines(report):
    return [str(p) for p in report.problems]


def test_every_bad_2d_input_is_listed_with_its_file_before_training(tmp_path):
    manifest, bad = bad_dataset_2d(tmp_path)
    dm = _dm(manifest)
    report = dm.scan()
    lines = _problem_lines(report)
    assert len(lines) == len(bad)
    for name, words in bad.items():
        (line,) = [line for line in lines if line.startswith(str(tmp_path / name))]
        assert words in line, line
    assert len(report.usable()) == 20
    with pytest.raises(DataError) as info:
        dm.setup_data()
    message = str(info.value)
    assert message.startswith("7 case(s) cannot be used (set data.on_bad_case=skip to leave")
    assert len(message.splitlines()) == 1 + len(bad)


def test_every_bad_3d_input_is_listed(tmp_path):
    manifest, bad = bad_dataset_3d(tmp_path)
    dm = _dm(manifest, "data.modalities=[ct, pet]", "preprocess.spatial_size=[4, 4, 4]")
    lines = _problem_lines(dm.scan())
    assert len(lines) == len(bad)
    for name, words in bad.items():
        (line,) = [line for line in lines if line.startswith(str(tmp_path / name))]
        assert words in line, line
    summary = dm.report.summary()
    assert summary["images"]["ct"]["range"] == [-1.0, 11.0]
    assert summary["images"]["pet"]["output_shape"] == {"[1, 4, 4, 4]": 12}
    assert dm.in_chans == 2 and dm.spatial_size == [4, 4, 4]


def test_skip_policy_leaves_bad_cases_out_and_lists_them(tmp_path, caplog):
    manifest, _ = bad_dataset_2d(tmp_path)
    run = tmp_path / "run"
    dm = _dm(manifest, "data.on_bad_case=skip", run_dir=run)
    with caplog.at_level("WARNING"):
        dm.setup_data()
    used = {c.id for d in dm.datasets.values() for c in d.cases}
    assert len(used) == 20 and all(i.startswith("g") for i in used)
    assert "skipped 7 case(s)" in caplog.text and "corrupt.png" in caplog.text
    with (run / "skipped_cases.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7 and any("nan.npy" in r["problem"] for r in rows)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (1, 8, 8)
    # a resumed run reads the saved split and skips the same cases
    again = _dm(manifest, "data.on_bad_case=skip", run_dir=run)
    again.setup_data()
    assert {c.id for d in again.datasets.values() for c in d.cases} == used


def test_identical_image_content_in_two_splits_stops_the_run(tmp_path):
    rows = good_pngs(tmp_path, per_class=4)
    for k, row in enumerate(rows):
        row["split"] = "test" if k < 2 else ("val" if k < 4 else "train")
    rows.append(
        {"id": "copy", "image": "good0.png", "label": "a", "patient_id": "other", "split": "train"}
    )
    manifest = write_manifest(tmp_path / "m.csv", rows)
    dm = _dm(manifest)
    report = dm.scan()
    assert report.leaks and "identical image content in splits ['test', 'train']" in report.leaks[0]
    assert "'copy' (train" in report.leaks[0] and "'g0' (test" in report.leaks[0]
    with pytest.raises(DataError, match="leak"):
        dm.setup_data()
    _dm(manifest, "data.leakage=warn").setup_data()


def test_cases_with_different_sizes_need_a_spatial_size(tmp_path):
    rows = good_pngs(tmp_path, per_class=5)
    write_png(tmp_path / "big.png", np.zeros((12, 12), np.uint8))
    rows.append({"id": "big", "image": "big.png", "label": "a", "patient_id": "big"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    cfg = load_config(None, ["data.source=csv", f"data.path={manifest}", "data.test_fraction=0"])
    dm = ClassificationDataModule(cfg, None, progress=False)
    (problem,) = dm.scan().problems
    assert str(problem).startswith(str(tmp_path / "big.png"))
    assert "has shape [1, 12, 12] after preprocessing but 10 other case(s) have [1, 8, 8]" in str(
        problem
    )


def test_disk_cache_and_parallel_scan_give_the_memory_results(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", good_pngs(tmp_path, per_class=6))
    memory = _dm(manifest)
    memory.setup_data()
    disk = _dm(
        manifest, "data.cache=disk", f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=2"
    )
    disk.setup_data()
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 12
    for split, dataset in memory.datasets.items():
        for i in range(len(dataset)):
            assert torch.equal(dataset[i]["image"], disk.datasets[split][i]["image"])


def test_folds_keep_the_test_split_and_cover_the_rest(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", good_pngs(tmp_path, per_class=9))
    vals, tests = [], []
    for fold in range(3):
        dm = _dm(manifest, f"data.fold={fold}", "data.num_folds=3", "data.test_fraction=0.2")
        dm.setup_data()
        vals.append({c.id for c in dm.datasets["val"].cases})
        tests.append({c.id for c in dm.datasets["test"].cases})
    assert tests[0] == tests[1] == tests[2] and len(tests[0]) == 4
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2])
    assert len(vals[0] | vals[1] | vals[2] | tests[0]) == 18


def test_balanced_sampler_and_class_weights_use_the_training_split(tmp_path):
    rows = good_pngs(tmp_path, per_class=10)
    rows = [r for k, r in enumerate(rows) if r["label"] == "a" or k < 8]  # 10 a, 4 b
    manifest = write_manifest(tmp_path / "m.csv", rows)
    dm = _dm(manifest, "data.sampler=balanced", "data.val_fraction=0.2", "data.test_fraction=0.2")
    dm.setup_data()
    counts = dm.class_counts("train")
    assert counts == {"a": 6, "b": 2}
    weights = balanced_class_weights([counts[c] for c in dm.classes])
    assert weights == pytest.approx([8 / 12, 8 / 4])
    sampler = dm.train_dataloader().sampler
    assert sampler.weights is not None
    labels = [dm.datasets["train"].cases[i].labels[0] for i in range(8)]
    per_class = {lab: sum(w for w, x in zip(sampler.weights, labels) if x == lab) for lab in "ab"}
    assert per_class["a"] == pytest.approx(per_class["b"])


def test_balanced_weights_treat_unlabelled_cases_as_one_group():
    labels = [(), (), (), (), ("mass",), ("mass", "nodule"), ("nodule",)]
    weights = balanced_sample_weights(labels)
    assert weights[:4] == [0.25] * 4  # "No Finding" as a group, not weight 1 each
    assert weights[4] == 0.5 and weights[5] == 0.5 and weights[6] == 0.5


def test_on_device_augmentation_runs_only_on_training_batches(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", good_pngs(tmp_path, per_class=6))
    dm = _dm(manifest, "augment.on_device=true", "augment.flip_prob=1.0", "augment.flip_axes=[1]")
    dm.setup_data()
    assert dm.datasets["train"].augment is None  # flips moved to the device
    batch = next(iter(dm.train_dataloader()))
    original = batch["image"].clone()
    dm.trainer = SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer(dict(batch), 0)["image"], original)
    dm.trainer = SimpleNamespace(training=True)
    flipped = dm.on_after_batch_transfer(dict(batch), 0)["image"]
    torch.testing.assert_close(flipped, torch.flip(original, dims=[3]), atol=1e-5, rtol=0)


def test_dicom_series_with_names_in_the_wrong_order_reads_in_position_order(tmp_path):
    stored = np.stack([np.full((4, 5), 100 * k, np.int16) for k in range(4)])
    names = [f"IM{9 - k}.dcm" for k in range(4)]  # slice 0 has the largest name
    write_series(tmp_path / "series", stored, axial_positions(4), names=names)
    case = Case("s", {"ct": str(tmp_path / "series")}, ("a",))
    table = CaseTable([case], ["a", "b"], "binary", ["ct"])
    cfg = load_config(None, ["preprocess.intensity={ct: {mode: none}}"]).preprocess
    ds = CaseDataset(table, [case], build_preprocess(cfg, ["ct"], 3), spatial_dims=3)
    volume = ds.prepare(0)["ct"][0]  # (column, row, slice)
    assert volume.shape == (5, 4, 4)
    assert [float(volume[0, 0, k]) for k in range(4)] == [-1024.0, -924.0, -824.0, -724.0]


@pytest.mark.parametrize("leftover", [0, 1, 2])
def test_a_single_sample_last_training_batch_is_dropped(tmp_path, leftover):
    """BatchNorm cannot train on one sample at 1x1 features: such a last batch is dropped."""
    manifest = write_manifest(tmp_path / "m.csv", good_pngs(tmp_path, per_class=10))
    dm = _dm(manifest, "data.val_fraction=0", "data.test_fraction=0")
    dm.setup_data()
    n = len(dm.datasets["train"])
    dm.cfg.data.batch_size = n - leftover if leftover else 4  # n % batch == leftover
    sizes = [int(b["target"].shape[0]) for b in dm.train_dataloader()]
    if leftover == 1:
        assert sizes == [n - 1]  # the lone sample waits for another epoch's order
    else:
        assert sum(sizes) == n and 1 not in sizes
    assert sum(int(b["target"].shape[0]) for b in dm.loader("train")) == n  # evaluation: all
