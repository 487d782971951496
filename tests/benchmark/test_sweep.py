"""Benchmark folders: one split for every model, joining a folder, model specs."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from medcls.benchmark.spec import parse_models, parse_seeds, parse_threshold
from medcls.benchmark.sweep import (
    SLOT_ENV,
    ddp_worker_slot,
    detach_from_torchrun,
    is_ddp_worker,
    prepare_benchmark,
)
from medcls.cli.common import resolve_config_path
from medcls.errors import ConfigError, ModelError

OVERRIDES = ["data.demo.num_cases=60", "data.demo.size=32", "preprocess.spatial_size=[32, 32]"]
CONFIG = resolve_config_path("demo-xray2d")


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep") / "bench"
    bench, _, _ = prepare_benchmark(
        CONFIG,
        "timm:test_resnet,timm:test_vit{img_size: 32, label: ViT}",
        folder,
        folds=3,
        seeds="0,1",
        overrides=OVERRIDES,
    )
    return bench


def test_one_patient_grouped_stratified_split_for_every_model(bench):
    rows = bench.read_folds(0)
    assert len(rows) == 60
    folds = Counter(r["fold"] for r in rows if r["split"] == "cv")
    assert sorted(folds) == ["0", "1", "2"] and max(folds.values()) - min(folds.values()) <= 2
    patients: dict[str, set[str]] = {}
    for r in rows:
        patients.setdefault(r["patient_id"], set()).add(r["fold"] or "test")
    assert all(len(where) == 1 for where in patients.values())  # a patient in one part only
    for fold in range(3):
        for label in ("normal", "pneumonia"):
            n = sum(1 for r in rows if r["fold"] == str(fold) and r["label"] == label)
            assert n >= 5  # both classes in every fold
    resnet, vit = bench.spec.models
    for fold in range(3):
        for seed in (0, 1):
            paths = []
            for model in (resnet, vit):
                slot = next(
                    s
                    for s in bench.spec.slots()
                    if s.model is model and s.fold == fold and s.seed == seed
                )
                paths.append(bench.write_run_split(slot, bench.run_dir(slot) / "splits.csv"))
            a, b = (_rows(p) for p in paths)
            assert a == b  # the same split for both models
            val = {r["id"] for r in a if r["split"] == "val"}
            assert val == {r["id"] for r in rows if r["fold"] == str(fold)}


def test_slot_config_sets_model_seed_fold_and_run_folder(bench):
    slot = bench.spec.slots()[-1]
    cfg = bench.slot_config(slot)
    assert (cfg.model.name, cfg.model.kwargs) == ("timm:test_vit", {"img_size": 32})
    assert (cfg.seed, cfg.data.fold, cfg.data.num_folds) == (1, 2, 3)
    assert cfg.resume and cfg.run_dir == str(bench.run_dir(slot))
    assert cfg.preprocess.spatial_size == [32, 32]
    assert slot.model.label == "ViT"


def test_joining_a_folder_adds_models_and_refuses_other_settings(bench):
    joined, models, seeds = prepare_benchmark(
        CONFIG, "timm:test_resnet,timm:test_efficientnet", bench.folder, folds=3, seeds=[2],
        overrides=OVERRIDES,
    )  # fmt: skip
    assert [m.name for m in joined.spec.models] == [
        "timm:test_resnet",
        "timm:test_vit",
        "timm:test_efficientnet",
    ]
    assert joined.spec.seeds == [0, 1, 2] and seeds == [2]
    assert len(joined.slots(models, seeds)) == 2 * 3
    with pytest.raises(ConfigError, match="folds"):
        prepare_benchmark(CONFIG, "timm:test_resnet", bench.folder, folds=5, overrides=OVERRIDES)
    with pytest.raises(ConfigError, match=r"data\.demo\.num_cases"):
        prepare_benchmark(CONFIG, "timm:test_resnet", bench.folder, folds=3)


def test_resplit_draws_new_folds_but_keeps_the_test_cases(tmp_path):
    bench, _, _ = prepare_benchmark(
        CONFIG, "timm:test_resnet", tmp_path / "b", folds=3, seeds="0,1", overrides=OVERRIDES,
        resplit=True,
    )  # fmt: skip
    first, second = bench.read_folds(0), bench.read_folds(1)
    assert [r["split"] for r in first] == [r["split"] for r in second]
    assert [r["fold"] for r in first] != [r["fold"] for r in second]


def test_model_specs_seeds_and_thresholds():
    specs = parse_models("timm:resnet18, timm:vit_tiny_patch16_224{img_size: [64, 64]},x{label: X}")
    assert [s.name for s in specs] == ["timm:resnet18", "timm:vit_tiny_patch16_224", "x"]
    assert specs[1].kwargs == {"img_size": [64, 64]} and specs[1].slug.startswith("timm-vit")
    assert specs[2].label == "X" and specs[0].slug == "timm-resnet18"
    with pytest.raises(ConfigError, match="listed twice"):
        parse_models("a,a")
    with pytest.raises(ConfigError, match="unbalanced"):
        parse_models("a{img_size: 3")
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    with pytest.raises(ConfigError, match="twice"):
        parse_seeds("1,1")
    assert parse_threshold("youden") == ("youden", None)
    assert parse_threshold("sensitivity:0.95") == ("sensitivity", 0.95)
    assert parse_threshold("0.3") == ("fixed", 0.3)
    with pytest.raises(ConfigError, match="threshold"):
        parse_threshold("sensitivity:1.5")
    with pytest.raises(ModelError, match="unknown model"):
        prepare_benchmark(CONFIG, "timm:not_a_model", "/nonexistent/never", folds=2)


def test_torchrun_processes_become_independent_sweep_workers():
    env = {
        "TORCHELASTIC_RUN_ID": "job",
        "LOCAL_RANK": "1",
        "RANK": "3",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29500",
        "CUDA_VISIBLE_DEVICES": "2,5",
        "HOME": "/root",
    }
    note = detach_from_torchrun(env)
    assert env == {"CUDA_VISIBLE_DEVICES": "5", "HOME": "/root"} and "rank 3" in note
    assert detach_from_torchrun({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}) is None  # not torchrun


def test_ddp_worker_of_a_run_finds_its_slot(bench, monkeypatch):
    slot = bench.spec.slots()[3]
    monkeypatch.setenv(SLOT_ENV, slot.key)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert is_ddp_worker() and ddp_worker_slot(bench) == slot
    monkeypatch.setenv("LOCAL_RANK", "0")  # the launcher itself is a normal sweep process
    assert not is_ddp_worker() and ddp_worker_slot(bench) is None
