"""Zoo health: a registry-driven sample of models, the resumable runner, the report writer.

The full sweep (every listed model at its standard size) is ``make zoo-check``; here a
small sample chosen from the registry runs at 32²/32³ where the model accepts it.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from medcls.cli.main import main
from medcls.models import list_models
from medcls.models.registry import parse_model_name
from medcls.models.zoo.families import index_entry
from medcls.models.zoo.health import check_model, load_records, run_sweep, write_report


def _sample() -> list[str]:
    """The smallest listed model of each (zoo source, family), and every native ``*_tiny``.

    3D zoo hybrids are left out (every one needs 128³ on a CPU: the sweep covers them).
    """
    best: dict[tuple[str, str], tuple[int, str]] = {}
    for name in list_models(["timm:*", "timm3d:*", "monai:*"]):
        entry = index_entry(name)
        if not entry or (entry["spatial_dims"] == 3 and entry["family"] == "hybrid"):
            continue
        key = (parse_model_name(name)[0], entry["family"])
        best[key] = min(best.get(key, (entry["params"], name)), (entry["params"], name))
    return sorted(name for _, name in best.values()) + list_models("*_tiny", source="medcls")


SAMPLE = _sample()


def test_sample_spreads_over_sources_and_dims():
    sources = {parse_model_name(n)[0] for n in SAMPLE}
    assert sources == {"timm", "timm3d", "monai", "medcls"}
    assert 10 <= len(SAMPLE) <= 16


@pytest.mark.parametrize("name", SAMPLE)
def test_model_is_healthy(name):
    record = check_model(name, size=32, timeout=120)
    assert record["status"] == "pass", record["reason"]
    assert record["unused_params"] == []
    for check in record["checks"]:
        # one channel (one per modality for PET + CT models), two classes, finite output
        assert check["in_chans"] == len(record.get("modalities") or [None])
        assert check["cam_layer"]
        assert check["spatial_dims"] in record["dims"]
    assert set(record["input_size"]) == {str(d) for d in record["dims"]}


def test_unused_parameter_is_reported(monkeypatch):
    import torch

    from medcls.models import factory

    real = factory.create_model

    def with_spare(*args, **kwargs):
        model = real(*args, **kwargs)
        model.spare = torch.nn.Linear(2, 2)  # registered, never called
        return model

    monkeypatch.setattr(factory, "create_model", with_spare)
    record = check_model("timm:test_resnet", size=32)
    assert record["status"] == "fail"
    assert record["unused_params"] == ["2D:spare.weight", "2D:spare.bias"]
    assert "get no gradient" in record["reason"]


def test_deadline_fails_with_timeout():
    record = check_model("timm:test_resnet", size=32, timeout=1e-9)
    assert record["status"] == "fail" and record["timeout"] is True
    assert record["reason"].startswith("timeout")


def test_excluded_model_is_recorded_not_built():
    from medcls.models.zoo import broken_models

    name, reason = next(iter(broken_models().items()))
    record = check_model(name)
    assert (record["status"], record["reason"]) == ("excluded", reason)
    assert name not in list_models(name)


def test_runner_resumes_without_duplicates(tmp_path):
    out, docs = tmp_path / "health.jsonl", tmp_path / "zoo.md"
    names = ["timm:test_efficientnet", "timm:test_vit", "ldtransformer_tiny"]
    args = ["models", "check", "--out", str(out), "--docs", str(docs)]
    args += [a for n in names for a in ("--pattern", n)]
    assert main([*args, "--limit", "2"]) == 0  # worker processes; stopped after 2 of 3
    assert len(out.read_text().splitlines()) == 2
    with out.open("a") as fh:
        fh.write('{"name": "timm:test_vit", "sta')  # a line cut short by a hard kill
    assert main([*args, "--jobs", "0"]) == 0  # resumed, in this process this time
    lines = out.read_text().splitlines()
    assert lines[2] == '{"name": "timm:test_vit", "sta'  # kept apart, skipped when read
    assert [json.loads(line)["name"] for line in lines[3:]] == ["timm:test_vit"]
    records = load_records(out)
    assert sorted(records) == sorted(names)
    assert all(r["status"] == "pass" for r in records.values())
    assert "Partial results" in docs.read_text()
    summary = run_sweep(out, names=names, jobs=0, progress=False)  # nothing left to do
    assert (summary.checked, summary.skipped_done) == (0, 3)


def test_report_on_fake_records(tmp_path):
    listed = ["timm:a", "timm:b", "timm3d:c", "monai:d", "native_e", "timm:unchecked"]
    records = [
        {"name": "timm:a", "status": "pass", "source": "timm", "dims": [2], "family": "cnn"},
        {
            "name": "timm:b",
            "status": "fail",
            "source": "timm",
            "dims": [2],
            "family": "transformer",
            "reason": "2 trainable parameter(s) get no gradient: head_dist.weight, head_dist.bias",
        },
        {"name": "timm3d:c", "status": "pass", "source": "timm3d", "dims": [3], "family": "hybrid"},
        {"name": "monai:d", "status": "pass", "source": "monai", "dims": [2, 3], "family": "cnn"},
        {
            "name": "native_e",
            "status": "fail",
            "source": "medcls",
            "dims": [2, 3],
            "family": "hybrid",
            "timeout": True,
            "reason": "timeout: still running after 600 s (stopped)",
        },
    ]
    excluded = {"timm3d:x": "fails at every size up to 128^3"}
    info = {
        "timm:unchecked": {"source": "timm", "dims": [2], "family": "mlp"},
        "timm3d:x": {"source": "timm3d", "dims": [3], "family": "hybrid"},
    }
    path = tmp_path / "zoo.md"
    text = write_report(records, path, listed=listed, excluded=excluded, info=info)
    assert path.read_text() == text
    assert "Partial results" in text and "tried 5 of the 6 listed models" in text
    assert "| **pass rate over everything tried** | **60.0%** |" in text
    assert "| listed and passing, 3D | 2 |" in text
    assert "| listed and passing, CNN-Transformer hybrids | 1 |" in text
    assert "| timm3d:x | fails at every size up to 128^3 |" in text
    assert "| timm:b | 2 trainable parameter(s) get no gradient: head_dist.weight" in text
    assert "| native_e | [timeout] timeout: still running" in text
    assert "| hybrid, 3D | 2 | 2 | 1 | 1 | 0 | 1 | 0 | 50.0% |" in text
    complete = write_report(records[:1], None, listed=["timm:a"], excluded={}, info={})
    assert "Partial" not in complete and "**100.0%**" in complete


@pytest.fixture
def exclusions(tmp_path, monkeypatch):
    """Points ``excluded.json`` at a temporary file with two exclusions."""
    from medcls.models import zoo

    path = tmp_path / "excluded.json"
    reasons = {"timm:test_resnet": "no gradient for x", "madensenet_tiny": "nan logits"}
    path.write_text(json.dumps({"models": reasons}))
    monkeypatch.setattr(zoo, "EXCLUDED_PATH", path)
    zoo.excluded_models.cache_clear()
    yield reasons
    zoo.excluded_models.cache_clear()


def test_excluded_json_is_honoured(exclusions):
    from medcls.errors import ModelError
    from medcls.models import create_model, is_model
    from medcls.models.zoo import broken_models

    for name, reason in exclusions.items():
        assert name not in list_models(name.split("_")[0] + "*")
        assert not is_model(name)
        assert broken_models()[name] == reason
        with pytest.raises(ModelError, match=reason):
            create_model(name, in_chans=1, num_classes=2)
        assert check_model(name)["status"] == "excluded"
    assert "timm:test_efficientnet" in list_models("timm:test_*")


def test_two_sweeps_on_one_file_share_the_work(tmp_path, monkeypatch):
    """A name another sweep recorded meanwhile is not checked again."""
    from medcls import progress
    from medcls.models.zoo import health

    out = tmp_path / "health.jsonl"
    names = ["timm:test_efficientnet", "timm:test_vit"]
    real = progress.track

    @contextlib.contextmanager
    def track_and_write_other(*args, **kwargs):
        with real(*args, **kwargs) as advance:
            # the other sweep records the second name while this one starts
            health._append(out, {"name": names[1], "status": "pass", "by": "other"})
            yield advance

    monkeypatch.setattr("medcls.progress.track", track_and_write_other)
    summary = run_sweep(out, names=names, size=32, jobs=0, progress=False)
    assert summary.checked == 1
    records = load_records(out)
    assert records[names[1]]["by"] == "other" and records[names[0]]["status"] == "pass"
    assert len(out.read_text().splitlines()) == 2


def test_meta_trace_restores_shared_submodules():
    """A submodule registered under two parents (as in timm's CoaT) keeps its weights."""
    import torch
    from torch import nn

    from medcls.models.contract import trace_modules

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.blocks = nn.ModuleList([nn.Sequential(self.conv), nn.Sequential(self.conv)])
            self.norm = nn.BatchNorm2d(4)

        def forward_features(self, x):
            return self.norm(self.blocks[1](self.blocks[0](x)[:, :1]))

    model = Shared()
    trace_modules(model, (1, 8, 8))
    devices = {t.device.type for t in [*model.parameters(), *model.buffers()]}
    assert devices == {"cpu"}
    assert torch.isfinite(model.forward_features(torch.randn(2, 1, 8, 8))).all()


def test_check_past_its_time_is_killed_and_recorded(tmp_path, monkeypatch):
    from medcls.models.zoo import health

    monkeypatch.setattr(health, "KILL_GRACE_S", 0.0)
    out = tmp_path / "health.jsonl"
    # the worker is still importing torch when the 0.2 s run out: it is killed
    summary = run_sweep(out, names=["timm:test_resnet"], timeout=0.2, progress=False)
    record = load_records(out)["timm:test_resnet"]
    assert summary.checked == 1 and record["status"] == "fail" and record["timeout"] is True
    assert record["reason"] == "timeout: still running after 0.2 s"


def test_timm3d_fixed_size_models_default_to_the_standard_3d_size():
    from medcls.models.registry import get_source

    timm3d = get_source("timm3d")
    assert timm3d._default_kwargs("coatnet_pico_rw_224", False, {}) == {"img_size": 64}
    assert timm3d._default_kwargs("maxvit_tiny_tf_512", False, {}) == {"img_size": 64}
    assert timm3d._default_kwargs("maxvit_tiny_tf_224", False, {}) == {}  # already 64³
    assert timm3d._default_kwargs("coatnet_pico_rw_224", False, {"img_size": 96}) == {}
    assert timm3d._default_kwargs("coatnet_pico_rw_224", True, {}) == {}  # weights' size
    assert timm3d._default_kwargs("resnet18", False, {}) == {}  # any size works
    assert get_source("timm")._default_kwargs("vit_base_patch16_384", False, {}) == {}
    assert index_entry("timm3d:coatnet_pico_rw_224")["input_size"] == [64, 64, 64]


@pytest.mark.parametrize("name", ["timm3d:efficientnet_b1_pruned", "timm3d:resnetaa50"])
def test_timm3d_variants_fixed_by_the_adapter(name):
    """Anti-aliased ResNets (aa_layer given as AvgPool3d) and pruned EfficientNets /
    ECA-ResNets (channel lists from timm) build, train and keep 2D's channel counts."""
    import torch

    from medcls.models import create_model

    assert name in list_models("timm3d:*")
    model = create_model(name, in_chans=1, num_classes=2)
    logits = model(torch.randn(2, 1, 32, 32, 32))
    logits.sum().backward()
    assert logits.shape == (2, 2)
    assert all(p.grad is not None for p in model.parameters())
    twin = create_model(name.replace("timm3d:", "timm:"), in_chans=1, num_classes=2)
    assert model.num_features == twin.num_features
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    twin_convs = [m.out_channels for m in twin.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == twin_convs  # the pruned widths, layer by layer


def test_sweep_checks_again_a_model_an_adapter_fixed(tmp_path):
    out = tmp_path / "health.jsonl"
    name = "timm3d:efficientnet_b1_pruned"
    out.write_text(json.dumps({"name": name, "status": "excluded", "reason": "old"}) + "\n")
    summary = run_sweep(out, names=[name], jobs=0, progress=False, size=16)
    assert summary.checked == 1
    assert load_records(out)[name]["status"] == "pass"
