"""Focal, balanced focal and class-balanced losses against their formulas written out."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medcls.config import load_config
from medcls.config.schema import LossConfig
from medcls.engine.api import train
from medcls.engine.losses import (
    BalancedFocalLoss,
    FocalLoss,
    SigmoidFocalLoss,
    balanced_class_weights,
    build_loss,
    class_balanced_weights,
    resolve_class_weights,
)
from medcls.errors import ConfigError
from tests.conftest import tiny_xray_overrides


def _softmax_row(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _focal_by_hand(logits, target, gamma, factors=None) -> float:
    """sum_i a_{y_i} (1 - p_i)^gamma (-log p_i) / sum_i a_{y_i}, in plain Python."""
    num = den = 0.0
    for row, y in zip(logits.tolist(), target.tolist()):
        p = _softmax_row(row)[y]
        a = 1.0 if factors is None else factors[y]
        num += a * (1.0 - p) ** gamma * -math.log(p)
        den += a
    return num / den


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 3, generator=gen) * 2.0
    target = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    return logits, target


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
def test_focal_matches_formula(batch, gamma):
    logits, target = batch
    alpha, weight = [0.2, 0.5, 0.3], [1.0, 2.0, 0.5]
    loss = FocalLoss(gamma, alpha=alpha, weight=torch.tensor(weight))(logits, target)
    factors = [a * w for a, w in zip(alpha, weight)]
    assert loss.item() == pytest.approx(_focal_by_hand(logits, target, gamma, factors), rel=1e-5)
    plain = FocalLoss(gamma)(logits, target)
    assert plain.item() == pytest.approx(_focal_by_hand(logits, target, gamma), rel=1e-5)


def test_focal_with_gamma_zero_is_weighted_cross_entropy(batch):
    logits, target = batch
    weight = torch.tensor([0.5, 1.0, 3.0])
    ours = FocalLoss(0.0, weight=weight)(logits, target)
    torch.testing.assert_close(ours, nn.CrossEntropyLoss(weight=weight)(logits, target))


def test_focal_down_weights_well_classified_samples():
    logits = torch.tensor([[4.0, -4.0], [0.2, 0.0]])  # sample 0 easy, sample 1 hard
    target = torch.tensor([0, 0])
    per_sample_ce = nn.functional.cross_entropy(logits, target, reduction="none")
    ratio_ce = (per_sample_ce[0] / per_sample_ce[1]).item()
    easy = FocalLoss(2.0)(logits[:1], target[:1]).item()
    hard = FocalLoss(2.0)(logits[1:], target[1:]).item()
    assert easy / hard < ratio_ce / 100  # the easy sample loses far more weight


def test_binary_alpha_is_positive_class_factor():
    logits = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 1, 0, 1, 1])
    loss = FocalLoss(2.0, alpha=0.25)(logits, target)
    assert loss.item() == pytest.approx(_focal_by_hand(logits, target, 2.0, [0.75, 0.25]), rel=1e-5)
    with pytest.raises(ConfigError, match="single alpha"):
        FocalLoss(2.0, alpha=0.25)(torch.randn(2, 3), torch.tensor([0, 2]))


def test_balanced_focal_counts_classes_in_training_mode():
    loss_fn = BalancedFocalLoss(gamma=2.0)
    gen = torch.Generator().manual_seed(1)
    targets = [torch.tensor([0, 0, 0, 0, 0, 1]), torch.tensor([0, 0, 0, 1, 0, 2])]
    for target in targets:
        loss_fn(torch.randn(6, 3, generator=gen), target)
    # start at one case per class, then add the batches: n = [1+9, 1+2, 1+1]
    counts = [10.0, 3.0, 2.0]
    assert loss_fn.class_counts.tolist() == counts
    factors = [sum(counts) / (3 * n) for n in counts]  # a_k = N / (K n_k)
    logits = torch.randn(5, 3, generator=gen)
    target = torch.tensor([0, 2, 1, 0, 2])
    loss_fn.eval()  # evaluation neither counts nor changes the factors
    loss = loss_fn(logits, target)
    assert loss_fn.class_counts.tolist() == counts
    assert loss.item() == pytest.approx(_focal_by_hand(logits, target, 2.0, factors), rel=1e-5)
    assert factors[2] > factors[1] > 1.0 > factors[0]  # small classes weigh more


def test_balanced_focal_uses_given_class_weights_and_is_not_saved():
    logits = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1, 0, 0, 0])
    loss_fn = BalancedFocalLoss(1.5, weight=torch.tensor([0.5, 3.0]))
    loss = loss_fn(logits, target)
    assert loss.item() == pytest.approx(_focal_by_hand(logits, target, 1.5, [0.5, 3.0]), rel=1e-5)
    assert loss_fn.class_counts.numel() == 0  # fixed factors: nothing counted
    assert "class_counts" not in BalancedFocalLoss().state_dict()


def test_balanced_focal_gradient_prefers_minority_and_hard_samples():
    loss_fn = BalancedFocalLoss(2.0)
    loss_fn(torch.zeros(10, 2), torch.tensor([0] * 9 + [1]))  # counts become [10, 2]
    loss_fn.eval()
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]], requires_grad=True)
    loss_fn(logits, torch.tensor([0, 1, 0])).backward()
    grad = logits.grad.abs().sum(1)
    assert grad[1] > grad[0]  # same confidence, minority class pulls harder
    assert grad[0] > grad[2]  # same class, the well-classified sample pulls less


def test_sigmoid_focal_matches_formula():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 4, generator=gen)
    target = (torch.rand(3, 4, generator=gen) > 0.5).float()
    weight = [1.0, 2.0, 0.5, 1.5]
    loss = SigmoidFocalLoss(2.0, alpha=0.25, weight=torch.tensor(weight))(logits, target)
    total = 0.0
    for i in range(3):
        for k in range(4):
            p = 1.0 / (1.0 + math.exp(-logits[i, k].item()))
            y = target[i, k].item()
            pt = p if y == 1 else 1.0 - p
            at = 0.25 if y == 1 else 0.75
            wt = weight[k] if y == 1 else 1.0
            total += at * wt * (1.0 - pt) ** 2 * -math.log(pt)
    assert loss.item() == pytest.approx(total / 12, rel=1e-5)
    torch.testing.assert_close(
        SigmoidFocalLoss(0.0)(logits, target),
        nn.BCEWithLogitsLoss()(logits, target),
    )


def test_class_balanced_weights_formula():
    counts, beta = [100, 10, 1], 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = [3 * r / sum(raw) for r in raw]
    assert class_balanced_weights(counts, beta) == pytest.approx(expected)
    assert class_balanced_weights(counts, 0.0) == pytest.approx([1.0, 1.0, 1.0])
    # beta -> 1 approaches inverse frequency
    near = class_balanced_weights(counts, 0.999999)
    inverse = balanced_class_weights(counts)
    assert [n / near[0] for n in near] == pytest.approx([i / inverse[0] for i in inverse], rel=1e-3)
    with pytest.raises(ConfigError, match=r"loss\.beta=1\.0"):
        class_balanced_weights(counts, 1.0)


def test_resolve_class_weights():
    counts = [30, 10]
    assert resolve_class_weights(LossConfig(), counts) is None
    assert resolve_class_weights(LossConfig(class_weights="balanced"), counts) == pytest.approx(
        [40 / 60, 40 / 20]
    )
    cb = resolve_class_weights(LossConfig(class_weights="class_balanced", beta=0.9), counts)
    assert cb == pytest.approx(class_balanced_weights(counts, 0.9))
    assert resolve_class_weights(LossConfig(class_weights=[1, 4]), counts) == [1.0, 4.0]
    with pytest.raises(ConfigError, match="'inverse'"):
        resolve_class_weights(LossConfig(class_weights="inverse"), counts)
    with pytest.raises(ConfigError, match="3 weights for 2 classes"):
        resolve_class_weights(LossConfig(class_weights=[1, 2, 3]), counts)


def test_build_loss_picks_and_checks_focal_losses():
    assert isinstance(build_loss(LossConfig(name="focal"), "binary"), FocalLoss)
    assert isinstance(build_loss(LossConfig(name="focal"), "multilabel"), SigmoidFocalLoss)
    loss = build_loss(LossConfig(name="balanced_focal", gamma=1.0), "multiclass", [1.0, 2.0, 3.0])
    assert isinstance(loss, BalancedFocalLoss) and loss.weight.tolist() == [1.0, 2.0, 3.0]
    assert loss.gamma == 1.0
    with pytest.raises(ConfigError, match="label_smoothing"):
        build_loss(LossConfig(name="focal", label_smoothing=0.1), "binary")
    with pytest.raises(ConfigError, match="balanced_focal needs one label"):
        build_loss(LossConfig(name="balanced_focal"), "multilabel")
    with pytest.raises(ConfigError, match=r"loss\.alpha"):
        build_loss(LossConfig(name="balanced_focal", alpha=0.25), "binary")
    with pytest.raises(ConfigError, match=r"loss\.gamma=-1"):
        build_loss(LossConfig(name="focal", gamma=-1.0), "binary")


def test_config_accepts_focal_keys():
    cfg = load_config(None, ["loss.name=balanced_focal", "loss.gamma=1.5", "loss.alpha=[0.3, 0.7]"])
    assert (cfg.loss.name, cfg.loss.gamma, cfg.loss.alpha) == ("balanced_focal", 1.5, [0.3, 0.7])
    with pytest.raises(ConfigError, match="balanced_focal"):
        load_config(None, ["loss.name=balanced_focall"])


def test_training_with_balanced_focal_runs(tmp_path):
    overrides = tiny_xray_overrides(tmp_path / "run", epochs=1)
    result = train(None, [*overrides, "loss.name=balanced_focal", "data.demo.num_cases=48"])
    assert math.isfinite(result.metrics["val"]["loss"])
