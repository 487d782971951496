"""LDTransformer and DRLTransformer: shapes, gradients, contract, fusion and budgets."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from medcls.config import load_config
from medcls.models import check_contract, create_model, list_models, model_info
from medcls.models.layers import ConvNormAct, DynamicConv, RepConv

CONFIGS = Path(__file__).resolve().parents[2] / "medcls" / "configs"
TINY = ["ldtransformer_tiny", "drltransformer_tiny"]
SIZES = {2: 32, 3: 16}


def _randomise_norms(model: nn.Module) -> None:
    """Non-trivial batch-norm statistics and affine parameters, so folding is tested."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """MACs of one forward pass at batch 1 (FLOPs / 2 of conv, linear, matmul, attention).

    Counted on the ``meta`` device; attention uses the math backend because the fused
    CPU kernel is invisible to ``FlopCounterMode``.
    """
    model.eval()
    x = torch.empty(1, *input_size, device="meta")
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() // 2


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module", params=[(n, d) for n in TINY for d in (2, 3)], ids=str)
def case(request):
    name, dims = request.param
    torch.manual_seed(0)
    model = create_model(name, in_chans=2, num_classes=3, spatial_dims=dims)
    x = torch.randn(2, 2, *(SIZES[dims],) * dims)
    return model, x, name, dims


def test_forward_shapes_and_every_parameter_gets_a_gradient(case):
    model, x, _, dims = case
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    assert out.shape == (2, 3)
    feats = model.forward_features(x)
    assert feats.shape[:2] == (2, model.num_features) and feats.ndim == dims + 2
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    model.zero_grad(set_to_none=True)


def test_contract_cam_layer_and_stages(case):
    model, x, name, dims = case
    check_contract(model, x)
    cfg = model.model_cfg
    assert (cfg.name, cfg.source, cfg.spatial_dims, cfg.family) == (name, "medcls", dims, "hybrid")
    assert cfg.classifier == ("head.fc",) and "kns.cnki.net" in cfg.paper
    modules = dict(model.named_modules())
    assert modules[cfg.first_conv].weight.shape[1] == 2
    seen: dict[str, tuple[int, ...]] = {}

    def record(key: str):
        def hook(_module, _inputs, out) -> None:
            seen[key] = tuple(out.shape)

        return hook

    hooks = [
        modules[s.module].register_forward_hook(record(s.module)) for s in model.feature_stages
    ]
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    for stage in model.feature_stages:
        grid = tuple(math.ceil(s / stage.reduction) for s in x.shape[2:])
        assert seen[stage.module] == (2, stage.num_chs, *grid), stage
    cam = model.cam_layer
    assert cam.layout == "channels_first" and cam.module == model.feature_stages[-1].module
    assert seen[cam.module][2:] == cam.grid(x.shape[2:])


def test_reset_classifier(case):
    model, x, _, _ = case
    fresh = copy.deepcopy(model).eval()
    fresh.reset_classifier(5)
    with torch.no_grad():
        assert fresh(x).shape == (2, 5)
    fresh.reset_classifier(0)
    with torch.no_grad():
        assert fresh(x).shape == (2, fresh.num_features)


def test_reparameterized_model_equals_training_form(case):
    model, x, name, _ = case
    trained = copy.deepcopy(model)
    _randomise_norms(trained)
    trained.eval()
    with torch.no_grad():
        ref = trained(x)
        fused = copy.deepcopy(trained).reparameterize()
        out = fused(x)
    assert not fused.training
    assert all(
        isinstance(m.norm, nn.Identity) for m in fused.modules() if isinstance(m, ConvNormAct)
    )
    assert all(m.fused is not None for m in fused.modules() if isinstance(m, RepConv))
    bn_before = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in trained.modules())
    bn_after = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert bn_after < bn_before / 2, (bn_before, bn_after)  # only pre-attention/final norms stay
    if name.startswith("drl"):
        assert any(isinstance(m, RepConv) for m in fused.modules())
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_drltransformer_with_axial_branches_fuses_exactly():
    torch.manual_seed(0)
    model = create_model("drltransformer_tiny", in_chans=1, num_classes=2, rep_axial=True)
    assert any("line1" in m.branches for m in model.modules() if isinstance(m, RepConv))
    _randomise_norms(model)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = copy.deepcopy(model).reparameterize()(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_ldtransformer_per_sample_kernels_keep_samples_independent(dims):
    """In eval mode each sample's output depends on that sample only, although every
    local block convolves the whole batch at once with per-sample kernels."""
    torch.manual_seed(0)
    model = create_model("ldtransformer_tiny", in_chans=1, num_classes=2, spatial_dims=dims)
    _randomise_norms(model)
    model.eval()
    x = torch.randn(4, 1, *(SIZES[dims],) * dims)
    assert any(isinstance(m, DynamicConv) for m in model.modules())
    with torch.no_grad():
        batched = model(x)
        looped = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["ldtransformer_s", "drltransformer_s"])
def test_paper_size_runs_small_inputs_2d_and_3d(name):
    for dims, size in ((2, 64), (3, 32)):
        model = create_model(name, in_chans=1, num_classes=2, spatial_dims=dims).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 1, *(size,) * dims))
        assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_ldtransformer_budget():
    """Paper: 2.53e5 parameters, 3.98e7 MACs; the issue allows 2.6e5 and 4.1e7 (3x224^2, 2 classes)."""
    with torch.device("meta"):
        model = create_model("ldtransformer_s", in_chans=3, num_classes=2)
    params, macs = _params(model), count_macs(model, (3, 224, 224))
    assert params <= 2.6e5, params
    assert macs <= 4.1e7, macs
    assert params >= 1.5e5 and macs >= 3.0e7  # the paper's scale, not a toy


def test_drltransformer_budget_against_densenet121():
    """At most 1/29 of DenseNet-121's parameters and 1/23 of its MACs at the same input."""
    with torch.device("meta"):
        model = create_model("drltransformer_s", in_chans=3, num_classes=2)
        dense = create_model("timm:densenet121", in_chans=3, num_classes=2)
    size = (3, 224, 224)
    params, macs = _params(model), count_macs(model, size)
    dense_params, dense_macs = _params(dense), count_macs(dense, size)
    assert params * 29 <= dense_params, (params, dense_params)
    assert macs * 23 <= dense_macs, (macs, dense_macs)


def test_registry_lists_variants_with_metadata():
    assert list_models("ldtransformer*") == ["ldtransformer_s", "ldtransformer_tiny"]
    assert list_models("drltransformer*", dims=3) == ["drltransformer_s", "drltransformer_tiny"]
    info = model_info("drltransformer_s")
    assert info["family"] == "hybrid" and info["dims"] == [2, 3]
    assert info["input_size"] == [1, 224, 224]
    assert info["cam_layer"]["module"] == "aggregate"


@pytest.mark.parametrize(
    ("config", "model_name", "loss"),
    [
        ("ldtransformer.yaml", "ldtransformer_s", "balanced_focal"),
        ("drltransformer.yaml", "drltransformer_s", "cross_entropy"),
    ],
)
def test_paper_configs_load_and_name_the_model(config, model_name, loss):
    cfg = load_config(CONFIGS / config)
    assert (cfg.model.name, cfg.loss.name) == (model_name, loss)
    assert cfg.data.source == "demo-xray2d"  # runs on the demo as given
    text = (CONFIGS / config).read_text()
    assert "paper:" in text and "[224, 224]" in text


def test_stages_from_yaml_mappings_and_clear_errors():
    from medcls.errors import ModelError

    stages = [{"depth": 1, "growth": 8, "width": 8, "dim": 8}]
    model = create_model("ldtransformer_tiny", in_chans=1, num_classes=2, stages=stages)
    assert model.num_features == 12 + 2 * 8
    with pytest.raises(ModelError, match=r"stages\[0\].*'layer'"):
        create_model("drltransformer_tiny", in_chans=1, num_classes=2, stages=[{"layer": 1}])
    with pytest.raises(ModelError, match="num_chunks=4 must divide out_chans=6"):
        create_model(
            "ldtransformer_s", in_chans=1, num_classes=2, stages=[{**stages[0], "width": 6}]
        )


def test_ldtransformer_static_ablation_has_no_per_sample_kernels():
    model = create_model("ldtransformer_tiny", in_chans=1, num_classes=2, dynamic=False)
    assert not any(isinstance(m, DynamicConv) for m in model.modules())
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 2)
