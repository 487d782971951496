"""Training-recipe options: mixup/CutMix, EMA, layer-wise LR decay, warm restarts,
stochastic depth, the learning-rate range test and the automatic batch size."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from medcls.config.schema import OptimizerConfig
from medcls.engine.api import train
from medcls.engine.batch_size import accumulation_plan, largest_batch_size, training_step_bytes
from medcls.engine.ema import ModelEma
from medcls.engine.lr_finder import lr_range_test
from medcls.engine.mixing import BatchMixer, cutmix_box
from medcls.engine.optim import build_optimizer, lr_factor, parameter_depths
from medcls.errors import ConfigError, ModelError
from medcls.models import create_model
from tests.conftest import tiny_xray_overrides

# ------------------------------------------------------------------ mixing


def _batch(spatial, batch=6, modalities=("pet", "ct")):
    gen = torch.Generator().manual_seed(1)
    return {m: torch.randn(batch, 1, *spatial, generator=gen) for m in modalities}


@pytest.mark.parametrize("spatial", [(12, 10), (6, 8, 10)], ids=["2d", "3d"])
def test_mixup_blends_inputs_and_labels_alike(spatial):
    inputs = _batch(spatial)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    mixer = BatchMixer(mixup_alpha=0.4)
    gen = torch.Generator().manual_seed(3)
    mixed, t = mixer(inputs, target, gen)
    assert 0 < t.lam < 1
    perm = [int((target == v).nonzero()[0]) for v in t.target_perm]  # not unique; check rows
    for name, x in inputs.items():
        # each mixed sample is lam * x_i + (1 - lam) * x_j for the j whose label was taken
        for i in range(6):
            candidates = [
                j
                for j in range(6)
                if target[j] == t.target_perm[i]
                and torch.allclose(mixed[name][i], t.lam * x[i] + (1 - t.lam) * x[j], atol=1e-6)
            ]
            assert candidates, (name, i)
    assert perm  # labels of the partners are real labels
    soft = t.soft(3, "multiclass")
    assert torch.allclose(soft.sum(1), torch.ones(6))
    expected = t.lam * nn.functional.one_hot(target, 3) + (1 - t.lam) * nn.functional.one_hot(
        t.target_perm, 3
    )
    assert torch.allclose(soft, expected.float())


@pytest.mark.parametrize("spatial", [(16, 12), (8, 10, 12)], ids=["2d", "3d"])
def test_cutmix_pastes_one_box_into_every_modality_and_weighs_labels_by_area(spatial):
    inputs = _batch(spatial)
    target = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]])
    mixer = BatchMixer(cutmix_alpha=1.0)
    gen = torch.Generator().manual_seed(5)
    mixed, t = mixer(inputs, target, gen)
    changed = None
    for name, x in inputs.items():
        diff = (mixed[name] != x).any(dim=1)  # (B, *spatial): where a partner's voxel went in
        box = diff.any(dim=0)
        changed = box if changed is None else changed
        assert torch.equal(box, changed), "all modalities share one box"
    # the box is a rectangle/cuboid and lam is the share outside it
    idx = changed.nonzero()
    lo, hi = idx.min(0).values, idx.max(0).values + 1
    volume = math.prod(spatial)
    assert int(changed.sum()) == int(torch.prod(hi - lo))
    assert t.lam == pytest.approx(1 - int(changed.sum()) / volume)
    soft = t.soft(3, "multilabel")
    assert torch.allclose(soft, t.lam * target.float() + (1 - t.lam) * t.target_perm.float())


def test_cutmix_box_area_tracks_lambda():
    gen = torch.Generator().manual_seed(0)
    _, lam = cutmix_box((100, 100), 0.75, gen)
    assert 0.75 <= lam <= 1.0  # clipped at the border: never more pasted than asked


def test_mixed_loss_equals_soft_target_cross_entropy():
    logits = torch.randn(6, 3)
    inputs = _batch((8, 8), modalities=("image",))
    _, t = BatchMixer(mixup_alpha=0.4)(
        inputs, torch.tensor([0, 1, 2, 0, 1, 2]), torch.Generator().manual_seed(2)
    )
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert t.loss(ce, logits) == pytest.approx(float(ce(logits, t.soft(3, "multiclass"))), abs=1e-6)


def test_mixing_off_or_prob_zero_leaves_the_batch():
    inputs, target = _batch((8, 8)), torch.tensor([0, 1, 0, 1, 0, 1])
    for mixer in (BatchMixer(), BatchMixer(mixup_alpha=1.0, prob=0.0)):
        out, t = mixer(inputs, target)
        assert out is inputs and t.lam == 1.0


# --------------------------------------------------------------------- EMA


def test_ema_follows_with_warmup_and_copies_integer_buffers():
    live = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEma(live, decay=0.9, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        live[0].weight.add_(1.0)
    live[1].num_batches_tracked += 7
    ema.update(live)
    assert torch.allclose(ema.module[0].weight, 0.1 * before + 0.9 * live[0].weight)
    assert int(ema.module[1].num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.parameters())
    for _ in range(200):
        ema.update(live)
    assert ema.current_decay() == pytest.approx(0.9)


def test_ema_weights_are_saved_and_evaluated(tmp_path):
    run = tmp_path / "ema"
    result = train(
        None,
        [*tiny_xray_overrides(run, epochs=1), "trainer.ema_decay=0.9", "trainer.ema_warmup=false"],
    )
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    best = load_file(run / "checkpoints" / "best.safetensors")
    name = next(k for k in best if k.endswith("weight") and best[k].ndim == 4)
    assert torch.equal(best[name], state[f"ema.module.{name}"])
    assert not torch.equal(best[name], state[f"model.{name}"])
    # the validation of the epoch (EMA weights) is what the final evaluation reproduces
    history = (run / "history.csv").read_text().splitlines()
    header, row = history[0].split(","), history[1].split(",")
    val_auc = float(row[header.index("val_auc")])
    assert result.metrics["val"]["auc"] == pytest.approx(val_auc, abs=1e-6)


# ----------------------------------------------------- optimiser, schedule


def test_layer_decay_scales_learning_rates_by_depth():
    model = create_model("timm:resnet10t", in_chans=1, num_classes=2)
    depths, last = parameter_depths(model)
    assert depths["conv1.0.weight"] == 0 and depths["fc.weight"] == last
    assert depths["layer1.0.conv1.weight"] < depths["layer4.0.conv1.weight"] < last
    opt = build_optimizer(model, OptimizerConfig(lr=1.0, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    for name, depth in depths.items():
        assert lr_of[id(params[name])] == pytest.approx(0.5 ** (last - depth))
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0.0]
    assert all(p.ndim <= 1 for g in no_decay for p in g["params"])


def test_layer_decay_needs_feature_stages():
    with pytest.raises(ConfigError, match="layer_decay"):
        build_optimizer(nn.Linear(2, 2), OptimizerConfig(layer_decay=0.7))


def test_warm_restarts_repeat_and_lengthen_cycles():
    f = [
        lr_factor(
            s,
            total_steps=1000,
            warmup_steps=0,
            min_ratio=0.0,
            name="cosine_restarts",
            restart_steps=10,
            restart_mult=2.0,
        )
        for s in range(70)
    ]
    assert f[0] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)  # restart after 10
    assert f[30] == pytest.approx(1.0) and f[70 - 1] < 0.05  # then 20, then 40 steps
    assert f[5] == pytest.approx(0.5) and f[20] == pytest.approx(0.5)  # cycle midpoints
    flat = [
        lr_factor(
            s,
            total_steps=100,
            warmup_steps=0,
            min_ratio=0.1,
            name="cosine_restarts",
            restart_steps=4,
        )
        for s in range(8)
    ]
    assert flat[:4] == pytest.approx(flat[4:])


def test_drop_path_rate_reaches_the_model_or_is_refused(tmp_path):
    from medcls.config import load_config
    from medcls.engine.api import _build_model, _model_kwargs

    cfg = load_config(None, ["model.name=timm:resnet10t", "model.drop_path_rate=0.2"])
    model = _build_model(
        cfg.model.name, in_chans=1, num_classes=2, spatial_dims=2, kwargs=_model_kwargs(cfg)
    )
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)
    cfg = load_config(None, ["model.name=monai:densenet121", "model.drop_path_rate=0.2"])
    with pytest.raises(ModelError, match="drop_path_rate"):
        _build_model(
            cfg.model.name, in_chans=1, num_classes=2, spatial_dims=3, kwargs=_model_kwargs(cfg)
        )
    with pytest.raises(ConfigError, match=r"model\.drop_path_rate"):
        load_config(None, ["model.drop_path_rate=1.5"])


# ------------------------------------------------------------ LR finder


def _separable(n=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    w = torch.randn(8, generator=gen)
    y = (x @ w > 0).long()
    return x, y


def _final_loss(model_fn, lr, x, y, steps=60):
    torch.manual_seed(0)
    model = model_fn()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = None
    for i in range(steps):
        idx = slice((i * 32) % 256, (i * 32) % 256 + 32)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def test_lr_finder_suggests_a_rate_where_training_converges():
    x, y = _separable()

    def model_fn():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    result = lr_range_test(
        model_fn(),
        batches,
        lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        lambda m: torch.optim.SGD(m.parameters(), lr=1.0),
        min_lr=1e-5,
        max_lr=1e3,
        steps=120,
    )
    start = _final_loss(model_fn, 0.0, x, y, steps=1)
    grid = [10.0**e for e in range(-5, 4)]
    converges = [lr for lr in grid if _final_loss(model_fn, lr, x, y) < 0.5 * start]
    assert converges, "the known case must have a converging range"
    assert min(converges) <= result.suggestion <= max(converges)
    assert _final_loss(model_fn, result.suggestion, x, y) < 0.5 * start
    assert result.suggestion < result.min_loss_lr


def test_lr_finder_leaves_the_model_untouched():
    model = nn.Linear(8, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _separable()
    lr_range_test(
        model,
        [(x[:32], y[:32])],
        lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        lambda m: torch.optim.SGD(m.parameters(), lr=1.0),
        steps=20,
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------ batch size


def test_largest_batch_size_search_is_exact_and_cheap():
    calls = []

    def fits(b):
        calls.append(b)
        return 1000 + 37 * b <= 4000

    assert largest_batch_size(fits, 512) == 81
    assert len(calls) <= 2 * math.ceil(math.log2(512)) + 1
    assert largest_batch_size(lambda b: True, 48) == 48
    with pytest.raises(ConfigError, match="not even one sample"):
        largest_batch_size(lambda b: False, 8)


def test_auto_batch_size_under_a_simulated_memory_limit():
    model = create_model("timm:test_resnet", in_chans=1, num_classes=2)
    example = torch.randn(1, 1, 24, 24)
    used = {b: training_step_bytes(model, example, b) for b in range(1, 33)}
    assert all(used[b] < used[b + 1] for b in range(1, 32)), "memory grows with the batch"
    limit = (used[13] + used[14]) // 2
    found = largest_batch_size(lambda b: training_step_bytes(model, example, b) <= limit, 32)
    assert found == 13 == max(b for b, u in used.items() if u <= limit)


def test_accumulation_keeps_the_effective_batch():
    assert accumulation_plan(13, 64) == (13, 5)  # 5 x 13 = 65 >= 64, the fewest steps
    assert accumulation_plan(64, 64) == (64, 1)
    assert accumulation_plan(100, 64) == (64, 1)
    assert accumulation_plan(16, 64, devices=2) == (16, 2)
    assert accumulation_plan(16, None) == (16, 1)


def test_train_resolves_auto_batch_size_into_the_saved_config(tmp_path):
    run = tmp_path / "auto"
    train(
        None,
        [
            *tiny_xray_overrides(run, epochs=1),
            "data.batch_size=auto",
            "trainer.memory_limit_gb=0.01",
            "trainer.effective_batch_size=32",
        ],
    )
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    batch, accumulate = saved["data"]["batch_size"], saved["trainer"]["accumulate_grad_batches"]
    assert isinstance(batch, int) and 1 <= batch <= 32
    assert batch * accumulate >= 32 and (batch - 1) * accumulate < 32
    assert json.loads((run / "metrics.json").read_text())["val"]["auc"] >= 0
