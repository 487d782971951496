from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from medcls.engine.checkpoint import (
    atomic_write,
    load_weights,
    read_meta,
    safe_torch_load,
    save_weights,
)
from medcls.errors import CheckpointError

MARKER = "medcls-test-pwned"


class Exploit:
    """Unpickling this calls os.system: a checkpoint must never do that."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 1, 8, 8))
    return net


def test_malicious_torch_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        safe_torch_load(path)
    assert not (tmp_path / MARKER).exists()


def test_plain_state_dict_loads(tmp_path):
    path = tmp_path / "state.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": 2, "loops": {"a": [1, 2]}}, path)
    loaded = safe_torch_load(path)
    assert loaded["epoch"] == 2 and torch.equal(loaded["state_dict"]["w"], torch.ones(3))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "t.ckpt"
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        safe_torch_load(path)


def test_safetensors_round_trip_with_tied_weights(tmp_path):
    net = _net()
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    for model in (net, tied):
        save_weights(model, tmp_path / model.__class__.__name__, {"classes": ["a", "b"]})
        fresh = _net() if model is net else nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        if model is tied:
            fresh[1].weight = fresh[0].weight
        meta = load_weights(fresh, tmp_path / model.__class__.__name__)
        assert meta["classes"] == ["a", "b"] and "torch" in meta["versions"]
        for (k, v), (k2, v2) in zip(model.state_dict().items(), fresh.state_dict().items()):
            assert k == k2 and torch.equal(v, v2)


def test_pickle_disguised_as_safetensors_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = _net()
    save_weights(net, tmp_path / "best", {})
    (tmp_path / "best.safetensors").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_weights(net, tmp_path / "best")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_weights(net, tmp_path / "best", verify=False)
    assert not (tmp_path / MARKER).exists()


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1}, path)

    def broken(tmp):
        tmp.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is interrupted in the middle of a save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert safe_torch_load(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_meta_must_be_a_medcls_description(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="not a medcls checkpoint"):
        read_meta(tmp_path / "x")
