"""PredictionCollector: batching, activations, export and DDP gathering."""

from __future__ import annotations

import csv
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medcls.errors import DataError, ModelError
from medcls.evaluation import PredictionCollector, classification_metrics
from medcls.evaluation.collector import all_gather_objects


def _data(task: str, n: int = 40, k: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    if task == "binary":
        target = torch.randint(0, 2, (n,), generator=gen)
        logits = torch.randn(n, generator=gen) + 1.5 * target
    elif task == "multiclass":
        target = torch.randint(0, k, (n,), generator=gen)
        logits = torch.randn(n, k, generator=gen)
        logits[torch.arange(n), target] += 1.5
    else:
        target = torch.randint(0, 2, (n, k), generator=gen)
        logits = torch.randn(n, k, generator=gen) + 1.5 * target
    return logits, target


def _activation(task: str, logits: torch.Tensor) -> np.ndarray:
    if task == "multiclass":
        return torch.softmax(logits, dim=1).numpy()
    return torch.sigmoid(logits).numpy()


def _assert_same_metrics(got: dict, expected: dict) -> None:
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    assert got["support"] == expected["support"]
    for key in ("accuracy", "auc", "recall", "specificity", "precision", "f1"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_batches_equal_one_shot(task):
    logits, target = _data(task)
    one = PredictionCollector(task, num_classes=2 if task == "binary" else 3)
    one.update(logits, target)
    batched = PredictionCollector(task, num_classes=2 if task == "binary" else 3)
    for start in range(0, 40, 7):  # uneven batches
        batched.update(logits[start : start + 7], target[start : start + 7])
    assert len(batched) == 40
    # vectorised sigmoid/softmax may differ in the last float32 bit with the batch size
    np.testing.assert_allclose(batched.probabilities(), one.probabilities(), rtol=1e-6)
    np.testing.assert_array_equal(batched.targets(), one.targets())
    _assert_same_metrics(batched.compute(), one.compute())
    # and both equal the pure function on the activated outputs
    expected = classification_metrics(_activation(task, logits), target.numpy(), task)
    _assert_same_metrics(batched.compute(), expected)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_from_logits_false_takes_probabilities_as_they_are(task):
    logits, target = _data(task, seed=3)
    probs = torch.from_numpy(_activation(task, logits))
    a = PredictionCollector(task, 2 if task == "binary" else 3)
    a.update(logits, target)
    b = PredictionCollector(task, 2 if task == "binary" else 3)
    b.update(probs, target, from_logits=False)
    np.testing.assert_allclose(a.probabilities(), b.probabilities(), atol=1e-6)
    shape = (40,) if task == "binary" else (40, 3)
    assert a.probabilities().shape == shape


def test_binary_one_and_two_logits_agree():
    logits, target = _data("binary", seed=5)
    single = PredictionCollector("binary", num_classes=1)
    single.update(logits[:, None], target[:, None].float())
    two = PredictionCollector("binary", num_classes=2)
    two.update(torch.stack([torch.zeros_like(logits), logits], dim=1), target)
    np.testing.assert_allclose(single.probabilities(), two.probabilities(), atol=1e-6)
    assert single.compute()["auc"] == pytest.approx(two.compute()["auc"])


def test_low_precision_outputs_and_no_grad_kept():
    logits, target = _data("multiclass")
    logits = logits.to(torch.bfloat16).requires_grad_(True)
    collector = PredictionCollector("multiclass", 3)
    collector.update(logits * 1, target)  # a non-leaf with grad history
    probs = collector.probabilities()
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_reset_and_accessors_return_copies():
    logits, target = _data("multiclass")
    collector = PredictionCollector("multiclass", 3, class_names=["a", "b", "c"])
    collector.update(logits, target, ids=[f"case{i}" for i in range(40)])
    probs = collector.probabilities()
    probs[:] = 0  # must not change the collector
    assert collector.probabilities().sum() == pytest.approx(40, abs=1e-3)
    assert collector.ids()[:2] == ["case0", "case1"]
    collector.reset()
    assert len(collector) == 0
    assert collector.ids() is None
    with pytest.raises(DataError, match="no samples"):
        collector.compute()


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_csv_export_round_trip(task, tmp_path):
    logits, target = _data(task, n=12)
    names = ["neg", "pos"] if task == "binary" else ["a", "b", "c"]
    collector = PredictionCollector(task, len(names), class_names=names)
    collector.update(logits, target, ids=[f"p{i:02d}" for i in range(12)])
    path = collector.write_csv(tmp_path / "out" / "predictions.csv", threshold=0.4)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    assert list(rows[0]) == collector.columns()
    assert [r["id"] for r in rows] == [f"p{i:02d}" for i in range(12)]
    probs = collector.probabilities()
    if task == "binary":
        assert [int(r["pred"]) for r in rows] == (probs >= 0.4).astype(int).tolist()
        np.testing.assert_allclose([float(r["prob_pos"]) for r in rows], probs, rtol=1e-6)
        np.testing.assert_allclose([float(r["prob_neg"]) for r in rows], 1 - probs, rtol=1e-6)
    elif task == "multiclass":
        assert [int(r["pred"]) for r in rows] == probs.argmax(axis=1).tolist()
        assert [int(r["target"]) for r in rows] == target.tolist()
    else:
        assert [int(r["pred_b"]) for r in rows] == (probs[:, 1] >= 0.4).astype(int).tolist()
        assert [int(r["target_c"]) for r in rows] == target[:, 2].tolist()


def test_rows_without_ids_use_positions():
    logits, target = _data("binary", n=5)
    collector = PredictionCollector("binary", 2)
    collector.update(logits, target)
    assert [row["id"] for row in collector.to_rows()] == ["0", "1", "2", "3", "4"]


def test_update_errors():
    collector = PredictionCollector("multiclass", 3)
    with pytest.raises(ModelError, match=r"shape \(B, 3\)"):
        collector.update(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match=r"holds 3; expected values in \[0, 3\)"):
        collector.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(DataError, match="ids: expected 2 ids"):
        collector.update(torch.zeros(2, 3), torch.tensor([0, 1]), ids=["a"])
    collector.update(torch.zeros(2, 3), torch.tensor([0, 1]), ids=["a", "b"])
    with pytest.raises(DataError, match="every update or with none"):
        collector.update(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="soft or mixed"):
        PredictionCollector("binary", 2).update(torch.zeros(2), torch.tensor([0.3, 1.0]))
    with pytest.raises(ModelError, match="num_classes"):
        PredictionCollector("binary", 3)


def test_sync_with_fake_gather_deduplicates_padding():
    logits, target = _data("binary", n=10)
    ids = [f"c{i}" for i in range(10)]
    ranks = []
    for rank in range(2):  # DistributedSampler order: rank r takes r, r+2, ...; pads with c0
        index = list(range(rank, 10, 2)) + ([0] if rank == 1 else [])
        collector = PredictionCollector("binary", 2)
        collector.update(logits[index], target[index], ids=[ids[i] for i in index])
        ranks.append(collector)
    states = [(c.probabilities(), c.targets(), c.ids(), True) for c in ranks]
    ranks[0].sync(lambda _local: states)
    assert len(ranks[0]) == 10
    assert sorted(ranks[0].ids()) == sorted(ids)
    full = PredictionCollector("binary", 2)
    full.update(logits, target)
    _assert_same_metrics(ranks[0].compute(), full.compute())


def test_sync_without_distributed_is_a_no_op():
    logits, target = _data("multilabel")
    collector = PredictionCollector("multilabel", 3)
    collector.update(logits, target)
    before = collector.compute()
    collector.sync()
    assert collector.compute() == before
    assert all_gather_objects("x") == ["x"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        logits, target = _data("multiclass", n=9)
        index = list(range(rank, 9, world))
        collector = PredictionCollector("multiclass", 3)
        collector.update(logits[index], target[index], ids=[f"s{i}" for i in index])
        collector.sync()
        queue.put((rank, len(collector), collector.compute()["accuracy"]))
    finally:
        dist.destroy_process_group()


def test_sync_gathers_across_real_processes():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for proc in procs:
        proc.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    logits, target = _data("multiclass", n=9)
    full = PredictionCollector("multiclass", 3)
    full.update(logits, target)
    expected = full.compute()["accuracy"]
    assert [r[1] for r in results] == [9, 9]
    assert [r[2] for r in results] == [pytest.approx(expected)] * 2
