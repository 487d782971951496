"""Native token/hybrid baselines (T2T-ViT, CvT, CoaT, CMT, Conformer, Mobile-Former).

Registry-driven: every entrypoint of the modules below is built from its ``TINY``
arguments in 2D (32²) and 3D (16³) and checked for shapes, gradients, the model contract
and Grad-CAM; the full sizes are counted on the meta device against the papers and the
3D-CConvFormer table; then checks specific to each architecture.
"""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn

from medcls.errors import ModelError
from medcls.explain import explain
from medcls.models import check_contract, create_model, list_models
from medcls.models.layers import ConvNormAct
from medcls.models.layers.token_blocks import ConvTokenEmbed, pad_to_multiple
from medcls.models.registry import get_entry

MODULES = ["t2t_vit", "cvt", "coat", "cmt", "conformer", "mobileformer"]
TINY = {
    name: kwargs
    for module in MODULES
    for name, kwargs in importlib.import_module(f"medcls.models.baselines.{module}").TINY.items()
}
SIZES = {2: 32, 3: 16}
FAMILIES = {
    "t2t_vit_19": "transformer",
    "cvt_13": "hybrid",
    "coat_s": "hybrid",
    "cmt_s": "hybrid",
    "conformer_b": "hybrid",
    "mobileformer_96m": "hybrid",
}
#: the original papers' parameter counts at 1,000 classes, 224², 3 input channels
PAPER_2D = {
    "t2t_vit_19": 39.2e6,
    "cvt_13": 20.0e6,
    "coat_s": 21.7e6,
    "cmt_s": 25.1e6,
    "conformer_b": 83.3e6,
    "mobileformer_96m": 4.6e6,
}
#: documented exceptions to the 3 % rule: the count of the authors' released configuration
DOCUMENTED_2D = {"cmt_s": 26_256_160}
#: the 3D-CConvFormer paper's table (2 classes; in_chans 2 assumed, PET + CT)
TABLE_3D = {"cvt_13": 21.430e6, "coat_s": 24.385e6, "cmt_s": 27.278e6}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tiny(name: str, dims: int, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    args = {**TINY[name], "drop_path_rate": 0.0, **kwargs}
    return create_model(name, in_chans=1, num_classes=3, spatial_dims=dims, **args)


@pytest.fixture(scope="module", params=[(n, d) for n in TINY for d in (2, 3)], ids=str)
def case(request):
    name, dims = request.param
    model = _tiny(name, dims)
    x = torch.randn(2, 1, *(SIZES[dims],) * dims, generator=torch.Generator().manual_seed(1))
    return model, x, name, dims


def test_every_entrypoint_is_registered_with_a_tiny_config():
    assert sorted(TINY) == sorted(FAMILIES)
    assert set(FAMILIES) <= set(list_models())
    for name, family in FAMILIES.items():
        entry = get_entry(name)
        assert entry.dims == (2, 3) and entry.family == family
        assert entry.paper and "arxiv.org" in entry.paper


# ------------------------------------------------------------------ every model, 2D and 3D


def test_forward_backward_every_parameter_gets_a_gradient(case):
    model, x, _, _ = case
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.square().mean().backward()
    # a convolution bias right before a training-mode batch norm has a zero gradient by
    # construction (the norm subtracts it again); the papers' layers keep such biases
    before_bn = {
        f"{name}.conv.bias"
        for name, m in model.named_modules()
        if isinstance(m, ConvNormAct) and isinstance(m.norm, nn.modules.batchnorm._BatchNorm)
    }
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    zero = [n for n, p in model.named_parameters() if n not in before_bn and not p.grad.abs().sum()]
    assert not missing and not zero, f"parameters without gradient: {(missing + zero)[:5]}"
    model.zero_grad(set_to_none=True)


def test_contract_features_and_stages(case):
    model, x, name, dims = case
    check_contract(model, x)
    assert model.model_cfg.family == FAMILIES[name] and model.spatial_dims == dims
    modules = dict(model.named_modules())
    seen: dict[str, tuple[int, ...]] = {}
    names = {s.module for s in model.feature_stages} | {model.cam_layer.module}
    hooks = [
        modules[n].register_forward_hook(
            lambda _m, _i, out, key=n: seen.__setitem__(key, tuple(out.shape))
        )
        for n in names
    ]
    model.eval()
    try:
        with torch.no_grad():
            feats = model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    assert feats.ndim == dims + 2 and feats.shape[:2] == (2, model.num_features)
    cam = model.cam_layer
    assert cam.layout == "channels_first" and seen[cam.module][2:] == feats.shape[2:]
    assert seen[cam.module][2:] == cam.grid(x.shape[2:])
    for stage in model.feature_stages:
        shape = seen[stage.module]  # a map (B, C, *grid) or tokens (B, [cls +] N, C)
        assert stage.num_chs in (shape[1], shape[-1]), (stage, shape)


def test_gradcam_automatic_layer(case):
    model, x, _, _ = case
    model.eval()
    result = explain(model, x, "gradcam")
    maps = result.maps["image"]
    assert maps.shape == (2, *x.shape[2:]) and torch.isfinite(maps).all()
    flat = maps.flatten(1)
    assert (flat.amax(1) > flat.amin(1)).all(), "Grad-CAM map is constant"


def test_reset_classifier_and_reparameterize(case):
    model, x, _, _ = case
    fresh = copy.deepcopy(model).eval()
    with torch.no_grad():
        ref = fresh(x)
        fused = copy.deepcopy(fresh).reparameterize()
        torch.testing.assert_close(fused(x), ref, atol=1e-5, rtol=1e-4)
        fresh.reset_classifier(5)
        assert fresh(x).shape == (2, 5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_odd_and_anisotropic_input_sizes(name):
    for dims, size in ((2, (37, 29)), (3, (18, 13, 21))):
        model = _tiny(name, dims).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 1, *size))
        assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_bad_spatial_dims_raise():
    for name in TINY:
        with pytest.raises(ModelError):
            create_model(name, in_chans=1, num_classes=2, spatial_dims=4)


# ------------------------------------------------------------------ full sizes (meta device)


@pytest.mark.parametrize("name", sorted(PAPER_2D))
def test_parameter_counts_against_the_papers(name):
    with torch.device("meta"):
        model_2d = create_model(name, in_chans=3, num_classes=1000, spatial_dims=2)
        model_3d = create_model(name, in_chans=2, num_classes=2, spatial_dims=3)
    count = _params(model_2d)
    if name in DOCUMENTED_2D:  # the released configuration (see the module docstring)
        assert count == DOCUMENTED_2D[name]
        assert abs(count / PAPER_2D[name] - 1) < 0.05
    else:
        assert abs(count / PAPER_2D[name] - 1) < 0.03, count
    if name in TABLE_3D:
        assert abs(_params(model_3d) / TABLE_3D[name] - 1) < 0.20, _params(model_3d)


def test_coat_small_matches_timm_count():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ours = create_model("coat_s", in_chans=3, num_classes=1000, spatial_dims=2)
        ref = timm.create_model("coat_small")
    assert _params(ours) == _params(ref)


# ------------------------------------------------------------------ shared token blocks


def test_conv_token_embed_pads_to_cover_every_cell():
    embed = ConvTokenEmbed(3, 2, 8, 4, 4)
    assert embed(torch.randn(1, 2, 9, 4, 13)).shape == (1, 8, 3, 1, 4)
    x = torch.arange(5.0).reshape(1, 1, 5)
    assert pad_to_multiple(x, (4,)).tolist() == [[[0, 1, 2, 3, 4, 0, 0, 0]]]
    with pytest.raises(ModelError, match="kernel_size == stride"):
        ConvTokenEmbed(2, 2, 8, 7, 4)


# ------------------------------------------------------------------ T2T-ViT


def test_soft_split_is_unfold_in_2d_and_generalises_to_3d():
    from medcls.models.baselines.t2t_vit import soft_split

    x = torch.randn(2, 3, 20, 17)
    ref = nn.Unfold(7, padding=2, stride=4)(x)
    assert torch.equal(soft_split(x, 7, 4, 2).flatten(2), ref)
    vol = torch.randn(1, 2, 9, 8, 7)
    out = soft_split(vol, 3, 2, 1)  # (1, 2 * 27, 5, 4, 4)
    assert out.shape == (1, 54, 5, 4, 4)
    padded = nn.functional.pad(vol, (1,) * 6)
    patch = padded[0, :, 2:5, 4:7, 0:3].reshape(-1)  # output cell (1, 2, 0)
    assert torch.equal(out[0, :, 1, 2, 0], patch)


def test_t2t_class_token_takes_part_in_attention():
    model = _tiny("t2t_vit_19", 2).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model.cls_token.tokens.add_(torch.randn_like(model.cls_token.tokens))  # LN drops a constant
        assert not torch.allclose(model(x), ref)


# ------------------------------------------------------------------ CvT


def test_cvt_class_token_only_in_the_last_stage():
    model = _tiny("cvt_13", 2)
    assert [s.cls_token is not None for s in model.stages] == [False, False, True]
    x = torch.randn(1, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        token = model.stages[-1].cls_token.tokens
        token.add_(torch.randn_like(token))
        assert not torch.allclose(model(x), ref)


# ------------------------------------------------------------------ CoaT


def test_coat_shares_position_encodings_and_the_parallel_mlp():
    from medcls.models.baselines.coat import ParallelBlock

    model = _tiny("coat_s", 2)
    block = next(m for m in model.modules() if isinstance(m, ParallelBlock))
    for attn, stage in zip(block.attn, model.stages[1:]):
        assert attn.crpe is stage.crpe
        assert all(b.attn.crpe is stage.crpe and b.pos is stage.cpe for b in stage.blocks)
    assert isinstance(block.mlp, nn.Module) and not isinstance(block.mlp, nn.ModuleList)


# ------------------------------------------------------------------ CMT


def test_cmt_position_bias_is_resampled_to_the_actual_grids():
    from medcls.models.baselines.cmt import ResampledPositionBias

    bias = ResampledPositionBias(2, (4, 4), (2, 2))
    assert torch.equal(bias((4, 4), (2, 2)), bias.table)
    with torch.no_grad():
        bias.table.fill_(0.5)
    out = bias((6, 3), (3, 1))
    assert out.shape == (2, 18, 3)
    torch.testing.assert_close(out, torch.full_like(out, 0.5))  # constant stays constant


# ------------------------------------------------------------------ Conformer


def test_conformer_logits_are_the_sum_of_a_cnn_and_a_transformer_head():
    model = _tiny("conformer_b", 2).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = feats.mean(dim=(2, 3))
        cnn_chans = model.num_features - model.merge.norm.normalized_shape[0]
        w, b = model.head.fc.weight, model.head.fc.bias
        cnn = pooled[:, :cnn_chans] @ w[:, :cnn_chans].T
        trans = pooled[:, cnn_chans:] @ w[:, cnn_chans:].T
        torch.testing.assert_close(model(x), cnn + trans + b)


def test_conformer_rejects_a_depth_not_divisible_by_three():
    with pytest.raises(ModelError, match="multiple of 3"):
        create_model("conformer_b", in_chans=1, num_classes=2, depth=4)


# ------------------------------------------------------------------ Mobile-Former


def test_mobileformer_head_reads_the_first_token():
    model = _tiny("mobileformer_96m", 3).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        feats = model.forward_features(x)
        token = feats[:, model.head_chans :]
        assert torch.equal(token, token[..., :1, :1, :1].expand_as(token))
        hidden = model.forward_head(feats, pre_logits=True)
    assert hidden.shape == (2, model.head_hidden_size)


def test_dynamic_relu_with_neutral_coefficients_is_relu():
    from medcls.models.baselines.mobileformer import DynamicReLU

    act = DynamicReLU(4, 8)
    with torch.no_grad():
        act.hyper.fc2.weight.zero_()
        act.hyper.fc2.bias.zero_()  # hsigmoid(0) = 0.5: slopes 1 and 0
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(act(x, torch.randn(2, 3, 8)), torch.relu(x))
