"""The disk cache: keys follow files and configuration, entries are atomic and shared."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medcls.config import config_to_dict, load_config
from medcls.data.cache import DiskCache, file_fingerprint
from medcls.data.cases import Case, CaseTable
from medcls.data.dataset import CaseDataset
from medcls.data.sources import member_locator
from medcls.data.transforms import build_preprocess

try:
    from tests.data.data_utils import write_nifti, write_png
except ImportError:  # pragma: no cover
    from data_utils import write_nifti, write_png


def _preprocess(*overrides):
    return load_config(None, [f"preprocess.{o}" for o in overrides]).preprocess


def _dataset(case, root, pre_cfg, *, dims=2):
    table = CaseTable([case], ["a", "b"], "binary", ["image"])
    cache = DiskCache(root, {"preprocess": config_to_dict(pre_cfg)})
    pre = build_preprocess(pre_cfg, ["image"], dims, with_mask=True)
    return CaseDataset(table, [case], pre, spatial_dims=dims, cache="disk", disk_cache=cache)


def _entries(root):
    return sorted(p for p in root.rglob("*.safetensors"))


def test_entry_is_reused_and_a_changed_file_or_config_is_never_stale(tmp_path):
    image = write_png(tmp_path / "x.png", np.full((8, 8), 100, np.uint8))
    case = Case("x", {"image": str(image)}, ("a",))
    root = tmp_path / "cache"
    cfg = _preprocess("intensity={image: {mode: range, a_min: 0, a_max: 200}}")
    first = _dataset(case, root, cfg).prepare(0)
    assert float(first["image"].max()) == pytest.approx(0.5)
    assert len(_entries(root)) == 1
    again = _dataset(case, root, cfg)
    again._compute = None  # a cache hit must not recompute
    assert torch.equal(again.prepare(0)["image"], first["image"])
    assert again.records[0].hashes["image"]  # the record comes back with the entry
    # another configuration: another entry, recomputed
    cfg2 = _preprocess("intensity={image: {mode: range, a_min: 0, a_max: 100}}")
    assert float(_dataset(case, root, cfg2).prepare(0)["image"].max()) == pytest.approx(1.0)
    assert len(_entries(root)) == 2
    # the file changes (new content, new mtime): new key, new values
    write_png(image, np.full((8, 8), 50, np.uint8))
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert float(_dataset(case, root, cfg).prepare(0)["image"].max()) == pytest.approx(0.25)
    assert len(_entries(root)) == 3


def test_content_keys_ignore_mtime_but_follow_bytes(tmp_path):
    image = write_png(tmp_path / "x.png", np.full((4, 4), 7, np.uint8))
    before = file_fingerprint(str(image), "content")
    os.utime(image, ns=(1, 1))
    assert file_fingerprint(str(image), "content") == before
    write_png(image, np.full((4, 4), 8, np.uint8))
    assert file_fingerprint(str(image), "content") != before
    # folders (DICOM series) count every file; npz members their file and member
    series = tmp_path / "series"
    series.mkdir()
    (series / "a.dcm").write_bytes(b"1")
    first = file_fingerprint(str(series))
    (series / "b.dcm").write_bytes(b"2")
    assert file_fingerprint(str(series)) != first
    np.savez(tmp_path / "m.npz", train_images=np.zeros((2, 4, 4)))
    a = file_fingerprint(member_locator(tmp_path / "m.npz", "train_images", 0))
    b = file_fingerprint(member_locator(tmp_path / "m.npz", "train_images", 1))
    assert a != b and file_fingerprint(str(tmp_path / "gone.png")) == "missing"


def test_damaged_entry_is_recomputed(tmp_path):
    image = write_png(tmp_path / "x.png", np.full((8, 8), 10, np.uint8))
    case = Case("x", {"image": str(image)}, ("a",))
    cfg = _preprocess("intensity={image: {mode: none}}")
    _dataset(case, tmp_path / "c", cfg).prepare(0)
    (entry,) = _entries(tmp_path / "c")
    entry.write_bytes(entry.read_bytes()[:20])  # truncated
    assert float(_dataset(case, tmp_path / "c", cfg).prepare(0)["image"].max()) == 10.0
    assert entry.stat().st_size > 20


def _writer(root: str, case_path: str, rounds: int) -> None:
    cfg = _preprocess("intensity={image: {mode: none}}")
    case = Case("v", {"image": case_path}, ("a",))
    for _ in range(rounds):
        ds = _dataset(case, Path(root), cfg, dims=3)
        item = ds.prepare(0)
        assert item["image"].shape == (1, 8, 8, 8)


def test_several_processes_share_one_cache_safely(tmp_path):
    volume = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    path = write_nifti(tmp_path / "v.nii.gz", volume)
    root = tmp_path / "shared"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(root), str(path), 5)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    entries = _entries(root)
    assert len(entries) == 1 and not list(root.rglob("*.tmp"))
    table = CaseTable([Case("v", {"image": str(path)}, ("a",))], ["a", "b"], "binary", ["image"])
    cfg = _preprocess("intensity={image: {mode: none}}")
    cache = DiskCache(root, {"preprocess": config_to_dict(cfg)})
    tensors, record = cache.load(entries[0].stem)
    np.testing.assert_allclose(tensors["image"][0].numpy(), volume, rtol=1e-6)
    assert record["shapes"]["image"] == [1, 8, 8, 8] and table.cases


def test_every_preprocessing_step_can_be_stored(tmp_path):
    volume = np.zeros((10, 10, 6), np.float32)
    volume[2:8, 3:7, 1:5] = 500.0
    path = write_nifti(tmp_path / "v.nii.gz", volume, np.diag([1.0, 1.0, 2.0, 1.0]))
    case = Case("v", {"image": str(path)}, ("a",))
    cfg = _preprocess(
        "orientation=RAS",
        "spacing=[2, 2, 2]",
        "crop_foreground=image",
        "foreground_threshold=100",
        "spatial_size=[4, 4, 4]",
        "size_mode=pad_crop",
        "intensity={image: {preset: ct_lung}}",
    )
    first = _dataset(case, tmp_path / "c", cfg, dims=3).prepare(0)
    again = _dataset(case, tmp_path / "c", cfg, dims=3)
    again._compute = None
    assert set(again.prepare(0)) == {"image"} and torch.equal(
        again.prepare(0)["image"], first["image"]
    )
