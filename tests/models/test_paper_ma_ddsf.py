"""MADenseNet and DDSF-Net: shapes, gradients, contract, blocks and the papers' budgets."""

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
from medcls.errors import ModelError
from medcls.models import check_contract, create_model, list_models, model_info
from medcls.models.layers import ConvNormAct
from medcls.models.layers.attention_gate import SpatialAttentionGate
from medcls.models.layers.dense import DenseBlock, DenseTransition
from medcls.models.layers.focus import FocusBlock, focus_box, zoom_crop
from medcls.models.layers.frequency_attention import (
    CoordFrequencyAttention,
    dct_basis,
    low_frequencies,
)
from medcls.models.layers.multiscale import ResidualMultiScaleBlock
from medcls.models.layers.resample import pool_down

CONFIGS = Path(__file__).resolve().parents[2] / "medcls" / "configs"
TINY = ["madensenet_tiny", "ddsfnet_tiny"]
SIZES = {2: 32, 3: 16}


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """MACs (FLOPs / 2 from ``FlopCounterMode``) of one forward pass at batch 1, on meta."""
    model.eval()
    x = torch.empty(1, *input_size, device="meta")
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() // 2


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomise_norms(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))


@pytest.fixture(scope="module", params=[(n, d) for n in TINY for d in (2, 3)], ids=str)
def case(request):
    name, dims = request.param
    torch.manual_seed(0)
    model = create_model(name, in_chans=2, num_classes=3, spatial_dims=dims)
    x = torch.randn(2, 2, *(SIZES[dims],) * dims)
    return model, x, name, dims


# ------------------------------------------------------------------------ models


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
    family = "cnn" if name.startswith("madensenet") else "hybrid"
    assert (cfg.name, cfg.source, cfg.spatial_dims, cfg.family) == (name, "medcls", dims, family)
    assert cfg.classifier == ("head.fc",) and "kns.cnki.net" in cfg.paper
    modules = dict(model.named_modules())
    assert modules[cfg.first_conv].weight.shape[1] == 2
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        modules[s.module].register_forward_hook(
            lambda _m, _i, out, key=s.module: seen.__setitem__(key, tuple(out.shape))
        )
        for s in model.feature_stages
    ]
    model.eval()
    try:
        with torch.no_grad():
            feats = model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    for stage in model.feature_stages:
        grid = tuple(math.ceil(s / stage.reduction) for s in x.shape[2:])
        assert seen[stage.module] == (2, stage.num_chs, *grid), stage
    cam = model.cam_layer
    assert cam.layout == "channels_first" and seen[cam.module] == tuple(feats.shape)
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


def test_folded_batch_norms_give_the_same_outputs(case):
    model, x, _, _ = case
    trained = copy.deepcopy(model)
    _randomise_norms(trained)
    trained.eval()
    with torch.no_grad():
        ref = trained(x)
        fused = copy.deepcopy(trained).reparameterize()
        out = fused(x)
    assert all(
        isinstance(m.norm, nn.Identity) for m in fused.modules() if isinstance(m, ConvNormAct)
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_madensenet_fuses_every_stage_through_a_gate():
    torch.manual_seed(0)
    model = create_model("madensenet_tiny", in_chans=1, num_classes=2).eval()
    x = torch.randn(2, 1, 64, 64)
    gates = [m for m in model.modules() if isinstance(m, SpatialAttentionGate)]
    assert len(gates) == len(model.stages) - 1  # one per shallow stage
    with torch.no_grad():
        # the fused map sits on the penultimate stage's grid (stride 16 of 4 stages)
        assert model.forward_features(x).shape[2:] == (4, 4) == model.cam_layer.grid((64, 64))
        ref = model(x)
        # closing the gates (alpha -> 0) cuts the shallow stages out: the output changes
        closed = copy.deepcopy(model)
        for gate in (m for m in closed.modules() if isinstance(m, SpatialAttentionGate)):
            gate.psi.bias.fill_(-1e4)
        assert not torch.allclose(closed(x), ref, atol=1e-4)
        # ... and the shallow maps no longer matter: only the deepest stage does
        for gate in (m for m in closed.modules() if isinstance(m, SpatialAttentionGate)):
            assert (
                gate.attention(
                    torch.randn(1, gate.theta.in_channels, 8, 8),
                    torch.randn(1, gate.phi.in_channels, 2, 2),
                ).max()
                < 1e-6
            )


def test_ddsfnet_focus_blocks_follow_their_attention():
    torch.manual_seed(0)
    model = create_model("ddsfnet_tiny", in_chans=1, num_classes=2).eval()
    focus = [m for m in model.modules() if isinstance(m, FocusBlock)]
    assert len(focus) == 2
    block = focus[0]
    x = torch.randn(2, block.attn.in_channels, 8, 8)
    with torch.no_grad():
        block.attn.weight.zero_()
        block.attn.bias.zero_()
        centre, half = block.box(x)  # uniform attention: a centred, wide box
    assert torch.allclose(centre, torch.zeros_like(centre), atol=1e-6)
    assert (half > 0.75).all() and (half < 1).all()


@pytest.mark.parametrize("name", ["madensenet_s", "ddsfnet_s"])
def test_paper_size_runs_small_inputs_2d_and_3d(name):
    for dims, size in ((2, 32), (3, 16)):  # 4 stages: the deepest grid is 1 cell
        model = create_model(name, in_chans=1, num_classes=2, spatial_dims=dims).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 1, *(size,) * dims))
        assert out.shape == (1, 2) and torch.isfinite(out).all()


def test_madensenet_budget_against_resnet101():
    """At most 1/7 of ResNet-101's parameters at the same num_classes (paper: 45.36 vs 324.28)."""
    with torch.device("meta"):
        model = create_model("madensenet_s", in_chans=1, num_classes=2)
        resnet = create_model("timm:resnet101", in_chans=1, num_classes=2)
    params, ref = _params(model), _params(resnet)
    assert params * 7 <= ref, (params, ref)
    assert params * 8 >= ref  # the paper's scale (1/7.15), not a toy


def test_ddsfnet_budget_against_densenet121():
    """At most 1.3x DenseNet-121's parameters and 0.75x its MACs at 1x224x224."""
    size = (1, 224, 224)
    with torch.device("meta"):
        model = create_model("ddsfnet_s", in_chans=1, num_classes=2)
        dense = create_model("timm:densenet121", in_chans=1, num_classes=2)
    params, macs = _params(model), count_macs(model, size)
    ref_params, ref_macs = _params(dense), count_macs(dense, size)
    assert params <= 1.3 * ref_params, (params, ref_params)
    assert macs <= 0.75 * ref_macs, (macs, ref_macs)
    assert params >= ref_params and macs >= 0.5 * ref_macs  # the paper's scale (1.25x, 0.72x)


def test_registry_and_model_info():
    assert list_models("madensenet*") == ["madensenet_s", "madensenet_tiny"]
    assert list_models("ddsfnet*", dims=3) == ["ddsfnet_s", "ddsfnet_tiny"]
    info = model_info("ddsfnet_tiny")
    assert info["family"] == "hybrid" and info["dims"] == [2, 3]
    assert info["input_size"] == [1, 224, 224]
    assert info["cam_layer"]["module"] == "stages.1"


@pytest.mark.parametrize(
    ("config", "model_name"), [("madensenet.yaml", "madensenet_s"), ("ddsfnet.yaml", "ddsfnet_s")]
)
def test_paper_configs_load_and_name_the_model(config, model_name):
    cfg = load_config(CONFIGS / config)
    assert cfg.model.name == model_name
    assert cfg.data.source == "demo-xray2d"  # runs on the demo as given
    text = (CONFIGS / config).read_text()
    assert "paper:" in text and "[224, 224]" in text


def test_stage_cfgs_from_yaml_mappings_and_clear_errors():
    stages = [{"units": 1, "growth": 8, "dim": 8}]
    model = create_model("ddsfnet_tiny", in_chans=1, num_classes=2, stages=stages)
    assert model.num_features == 16 + 8
    with pytest.raises(ModelError, match=r"stages\[0\].*'depth'"):
        create_model("ddsfnet_tiny", in_chans=1, num_classes=2, stages=[{"depth": 1}])
    with pytest.raises(ModelError, match="block_layers"):
        create_model("madensenet_tiny", in_chans=1, num_classes=2, block_layers=(2,))


# ------------------------------------------------------------------------ blocks


def test_dct_basis_and_low_frequencies():
    assert low_frequencies(2, 4) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert low_frequencies(3, 2) == [(0, 0, 0), (0, 0, 1)]
    basis = dct_basis(8, torch.tensor([0, 1, 2]))
    assert torch.allclose(basis[0], torch.full((8,), 1 / 8))
    # the DCT-II vectors are orthogonal
    gram = basis @ basis.T
    assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros(3, 3), atol=1e-6)
    # a frequency the axis cannot hold is clamped to the highest one
    assert torch.allclose(dct_basis(2, torch.tensor([5])), dct_basis(2, torch.tensor([1])))


@pytest.mark.parametrize("dims", [2, 3])
def test_coordinate_frequency_descriptors_by_hand(dims):
    torch.manual_seed(0)
    cfa = CoordFrequencyAttention(dims, channels=8, reduction=2, num_freqs=4)
    x = torch.randn(2, 8, *(5,) * dims)
    desc = cfa.descriptors(x)
    assert [tuple(d.shape) for d in desc] == [(2, 8, 5)] * dims
    # channels 0-1 use frequency 0 everywhere: the descriptor is the mean over other axes
    for a in range(dims):
        others = tuple(2 + b for b in range(dims) if b != a)
        torch.testing.assert_close(desc[a][:, :2], x[:, :2].mean(dim=others))
    # a channel of another group: contraction with its DCT vectors, written out
    c, freqs = 7, cfa.channel_freqs[7].tolist()
    vecs = [dct_basis(5, torch.tensor(f)) for f in freqs]
    expected = x[:, c]
    for b in reversed(range(1, dims)):  # contract the last axes, keep axis 0
        expected = (expected * vecs[b].reshape((5,) + (1,) * (dims - 1 - b))).sum(dim=b + 1)
    torch.testing.assert_close(desc[0][:, c], expected)
    out = cfa(x)
    assert out.shape == x.shape
    # the gates are in (0, 1) and broadcast per axis: out / x factorises
    ratio = out / x
    assert (ratio > 0).all() and (ratio < 1).all()


def test_coordinate_frequency_attention_rejects_wrong_inputs():
    with pytest.raises(ModelError, match="num_freqs=9"):
        CoordFrequencyAttention(2, channels=8, num_freqs=9)
    with pytest.raises(ModelError, match=r"expected \(B, 8"):
        CoordFrequencyAttention(2, channels=8)(torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize("dims", [2, 3])
def test_attention_gate_between_resolutions(dims):
    torch.manual_seed(0)
    gate = SpatialAttentionGate(dims, in_chans=4, gate_chans=6, inter_chans=3)
    x, g = torch.randn(2, 4, *(8,) * dims), torch.randn(2, 6, *(2,) * dims)
    alpha = gate.attention(x, g)
    assert alpha.shape == (2, 1, *(8,) * dims)
    assert (alpha > 0).all() and (alpha < 1).all()
    torch.testing.assert_close(gate(x, g), x * alpha)


def test_focus_box_contains_the_attention_peak_and_zoom_is_identity_at_full_box():
    weights = torch.zeros(2, 1, 9, 9)
    weights[0, 0, 1, 7] = 1.0  # a point mass near the top-right corner
    weights[1] = 1 / 81  # uniform
    centre, half = focus_box(weights, spread=2.0, min_half=0.5)
    peak = torch.tensor([(2 * 1 + 1) / 9 - 1, (2 * 7 + 1) / 9 - 1])
    assert torch.allclose(half[0], torch.full((2,), 0.5), atol=1e-3)  # narrowest box
    assert ((centre[0] - half[0] <= peak) & (peak <= centre[0] + half[0])).all()
    assert torch.allclose(centre[1], torch.zeros(2), atol=1e-6) and (half[1] > 0.75).all()
    x = torch.randn(2, 3, 6, 7, 5)
    ident = zoom_crop(x, torch.zeros(2, 3), torch.ones(2, 3))
    torch.testing.assert_close(ident, x, atol=1e-5, rtol=1e-5)
    # a half-size box centred on the upper-left quarter of a 2D map doubles it
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    zoomed = zoom_crop(img, torch.tensor([[-0.5, -0.5]]), torch.tensor([[0.5, 0.5]]))
    assert zoomed.shape == img.shape
    # output cell 3 samples input position 1.25 (bilinear): 4 * 1.25 + 1.25
    assert zoomed[0, 0, 0, 0] == 0 and torch.isclose(zoomed[0, 0, 3, 3], torch.tensor(6.25))


@pytest.mark.parametrize("dims", [2, 3])
def test_focus_block_is_differentiable_in_its_attention(dims):
    torch.manual_seed(0)
    block = FocusBlock(dims, channels=4)
    x = torch.randn(2, 4, *(6,) * dims)
    block(x).square().sum().backward()
    assert block.attn.weight.grad is not None and block.attn.weight.grad.abs().sum() > 0
    with pytest.raises(ModelError, match="min_half"):
        FocusBlock(dims, 4, min_half=0.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_residual_multiscale_dense_and_transition_shapes(dims):
    torch.manual_seed(0)
    x = torch.randn(2, 8, *(7,) * dims)
    block = ResidualMultiScaleBlock(dims, 8, 16, stride=2, group_width=4)
    assert block(x).shape == (2, 16, *(4,) * dims)
    assert isinstance(ResidualMultiScaleBlock(dims, 8, 8).shortcut, nn.Identity)
    dense = DenseBlock(dims, 8, num_layers=3, growth=4)
    y = dense(x)
    assert y.shape == (2, 20, *(7,) * dims) and torch.equal(y[:, :8], x)
    assert DenseTransition(dims, 20, 10)(y).shape == (2, 10, *(4,) * dims)
    # pooling clips its window to short axes instead of failing
    assert pool_down(torch.randn(1, 2, *(1,) * dims), 2).shape == (1, 2, *(1,) * dims)
    with pytest.raises(ModelError, match="group_width=3"):
        ResidualMultiScaleBlock(dims, 8, 16, group_width=3)
