"""Cross-modal Light-3Dformer and 3D-CConvFormer: named modalities, shapes, gradients,
contract, blocks and the papers' budgets."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from medcls.config import load_config
from medcls.engine.module import model_input
from medcls.errors import ModelError
from medcls.models import check_contract, create_model, list_models
from medcls.models.layers.cross_modal import (
    LCCAM,
    ChannelCrossAttention,
    CrossAttention,
    split_modalities,
)
from medcls.models.layers.self_calibrated import SelfCalibratedConv
from medcls.models.layers.simam import SimAM
from medcls.models.paper.light3dformer import CascadedModulation

CONFIGS = Path(__file__).resolve().parents[2] / "medcls" / "configs"
TINY = ["light3dformer_tiny", "cconvformer_tiny"]
SIZES = {3: 16, 2: 32}


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """MACs (FLOPs / 2 from ``FlopCounterMode``) of one forward pass at batch 1, on meta.

    The input is one tensor (the modalities concatenated in the model's order), which
    every medcls model accepts; attention runs on the math backend so it is counted.
    """
    model.eval()
    x = torch.empty(1, *input_size, device="meta")
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() // 2


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _inputs(dims: int, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 1, *(SIZES[dims],) * dims)
    return {"pet": torch.randn(shape, generator=gen), "ct": torch.randn(shape, generator=gen)}


@pytest.fixture(scope="module", params=[(n, d) for n in TINY for d in (3, 2)], ids=str)
def case(request):
    name, dims = request.param
    torch.manual_seed(0)
    model = create_model(name, in_chans=2, num_classes=3, spatial_dims=dims)
    return model, _inputs(dims), name, dims


# ------------------------------------------------------------------------ models


def test_takes_modalities_by_name_and_every_parameter_gets_a_gradient(case):
    model, x, _, dims = case
    assert model.modalities == ("pet", "ct")
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


def test_dict_and_concatenated_tensor_agree_and_both_modalities_matter(case):
    model, x, _, _ = case
    model.eval()
    with torch.no_grad():
        ref = model(x)
        # the channels of a tensor input follow model.modalities
        torch.testing.assert_close(model(torch.cat([x["pet"], x["ct"]], dim=1)), ref)
        for name in ("pet", "ct"):
            changed = dict(x, **{name: torch.randn_like(x[name])})
            assert not torch.allclose(model(changed), ref, atol=1e-5), name


def test_missing_or_unexpected_modalities_are_rejected_by_name(case):
    model, x, name, _ = case
    with pytest.raises(ModelError, match=r"modality 'ct' is missing.*\['pet', 'ct'\]"):
        model({"pet": x["pet"]})
    with pytest.raises(ModelError, match="unexpected input modality 'mask'"):
        model({**x, "mask": x["pet"]})
    with pytest.raises(ModelError, match=r"modality 'pet' has shape .* expected \(B, 1"):
        model({"pet": torch.cat([x["pet"]] * 2, dim=1), "ct": x["ct"]})
    with pytest.raises(ModelError, match=r"must be \(B, 2, \*spatial\)"):
        model(x["pet"])
    with pytest.raises(ModelError, match="must split evenly"):
        create_model(name, in_chans=3, num_classes=2)
    with pytest.raises(ModelError, match="exactly 2 names"):
        create_model(name, in_chans=3, num_classes=2, modalities=["pet", "ct", "mr"])


def test_modality_names_follow_the_data_and_the_engine_passes_a_dict(case):
    _, x, name, dims = case
    model = create_model(
        name, in_chans=2, num_classes=3, spatial_dims=dims, modalities=["PT", "CT"]
    )
    batch = {"CT": x["ct"], "PT": x["pet"], "label": torch.tensor([0, 1])}
    inputs = model_input(model, batch, ["CT", "PT"])  # the data's order
    assert isinstance(inputs, dict) and set(inputs) == {"CT", "PT"}
    assert model.eval()(inputs).shape == (2, 3)


def test_contract_and_cam_layer(case):
    model, x, name, dims = case
    tensor = torch.cat([x["pet"], x["ct"]], dim=1)
    check_contract(model, tensor)
    cfg = model.model_cfg
    assert (cfg.name, cfg.source, cfg.spatial_dims, cfg.family) == (name, "medcls", dims, "hybrid")
    assert cfg.input_size[0] == 2 and "kns.cnki.net" in cfg.paper
    seen: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
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
        grid = tuple(-(-s // stage.reduction) for s in tensor.shape[2:])
        assert seen[stage.module] == (2, stage.num_chs, *grid), stage
    cam = model.cam_layer
    assert (cam.module, cam.layout) == ("fusion", "channels_first")
    assert seen[cam.module] == tuple(feats.shape)


def test_gradcam_on_named_modalities():
    from medcls.explain import explain

    torch.manual_seed(0)
    model = create_model("light3dformer_tiny", in_chans=2, num_classes=2).eval()
    result = explain(model, _inputs(3, batch=1), "gradcam", layer="contract")
    assert set(result.maps) == {"pet", "ct"} and result.shared  # one map for both
    assert result.layers == ("fusion",)
    maps = result.maps["pet"]
    assert maps.shape == (1, 16, 16, 16) and torch.isfinite(maps).all()
    torch.testing.assert_close(maps, result.maps["ct"])


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
    gen = torch.Generator().manual_seed(1)
    for m in trained.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    trained.eval()
    with torch.no_grad():
        ref = trained(x)
        out = copy.deepcopy(trained).reparameterize()(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "dims"), [("light3dformer_s", 3), ("light3dformer_s", 2), ("cconvformer_s", 3)]
)
def test_paper_size_runs_small_inputs(name, dims):
    model = create_model(name, in_chans=2, num_classes=2, spatial_dims=dims).eval()
    shape = (1, 1, *(SIZES[dims],) * dims)
    with torch.no_grad():
        out = model({"pet": torch.randn(shape), "ct": torch.randn(shape)})
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def _permute_rearrange(x: torch.Tensor, pattern: str) -> torch.Tensor:
    """``einops.rearrange`` for pure axis permutations such as ``"b c d h w -> b d h w c"``."""
    left, right = (side.split() for side in pattern.split("->"))
    return x.permute(*(left.index(axis) for axis in right))


def _monai_swin_s_reference(in_chans: int, size: tuple[int, ...]) -> tuple[int, int]:
    """Parameters and MACs of MONAI's Swin-S backbone + a linear classifier at ``size``.

    MONAI's ``SwinTransformer`` at Swin-S depths (2, 2, 18, 2), heads (3, 6, 12, 24),
    embed 96, window 7, patch 2 (SwinUNETR's setting), built on ``meta``. MONAI moves
    channels with ``einops.rearrange`` (einops is not a dependency here): an equivalent
    permute is patched in, and the drop-path rates, read with ``.item()``, are computed
    on the CPU.
    """
    import monai.networks.nets.swin_unetr as swin

    class SwinS(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = swin.SwinTransformer(
                in_chans=in_chans,
                embed_dim=96,
                window_size=(7, 7, 7),
                patch_size=(2, 2, 2),
                depths=(2, 2, 18, 2),
                num_heads=(3, 6, 12, 24),
                spatial_dims=3,
            )
            self.fc = nn.Linear(16 * 96, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.backbone(x)[-1].mean(dim=(2, 3, 4)))

    real_linspace, real_rearrange = torch.linspace, swin.rearrange
    try:
        swin.rearrange = _permute_rearrange
        torch.linspace = lambda *a, **kw: real_linspace(*a, **{**kw, "device": "cpu"})
        with torch.device("meta"):
            model = SwinS()
        torch.linspace = real_linspace
        return _params(model), count_macs(model, size)
    finally:
        torch.linspace, swin.rearrange = real_linspace, real_rearrange


def test_light3dformer_budget_against_monai_swin_s():
    """<= 4.2e5 parameters, <= 1/117 of Swin-S's parameters and 1/400 of its MACs,
    at the same input 2x64^3 (PET + CT)."""
    size = (2, 64, 64, 64)
    with torch.device("meta"):
        model = create_model("light3dformer_s", in_chans=2, num_classes=2)
    params, macs = _params(model), count_macs(model, size)
    ref_params, ref_macs = _monai_swin_s_reference(2, size)
    assert params <= 4.2e5, params
    assert params * 117 <= ref_params, (params, ref_params)
    assert macs * 400 <= ref_macs, (macs, ref_macs)
    assert params >= 3.0e5 and macs >= 1.0e8  # the paper's scale (417 K, 171 M), not a toy


def test_cconvformer_size_matches_the_paper():
    """11.2 M parameters (the paper's 11.199 M) within +-15 %."""
    with torch.device("meta"):
        model = create_model("cconvformer_s", in_chans=2, num_classes=2)
    params = _params(model)
    assert 0.85 * 11.2e6 <= params <= 1.15 * 11.2e6, params
    assert count_macs(model, (2, 32, 32, 32)) > 0


def test_registry_lists_3d_first_and_2d_variants():
    from medcls.models.registry import get_entry

    assert list_models("light3dformer*", dims=2) == ["light3dformer_s", "light3dformer_tiny"]
    assert list_models("cconvformer*", dims=3) == ["cconvformer_s", "cconvformer_tiny"]
    entry = get_entry("cconvformer_tiny")
    assert entry.dims == (3, 2) and entry.family == "hybrid"
    # without spatial_dims a 3D model is built
    assert create_model("light3dformer_tiny", in_chans=2, num_classes=2).spatial_dims == 3


@pytest.mark.parametrize(
    ("config", "model_name"),
    [("light3dformer.yaml", "light3dformer_s"), ("cconvformer.yaml", "cconvformer_s")],
)
def test_paper_configs_key_the_model_by_the_data_modalities(config, model_name):
    cfg = load_config(CONFIGS / config)
    assert cfg.model.name == model_name and cfg.data.source == "demo-petct3d"
    assert sorted(cfg.model.kwargs["modalities"]) == sorted(cfg.data.modalities)
    model = create_model(
        "light3dformer_tiny" if "light" in config else "cconvformer_tiny",
        in_chans=len(cfg.data.modalities),
        num_classes=2,
        modalities=cfg.model.kwargs["modalities"],
    )
    batch = {m: torch.randn(1, 1, 16, 16, 16) for m in cfg.data.modalities}
    assert model.eval()(model_input(model, batch, cfg.data.modalities)).shape == (1, 2)
    assert "paper:" in (CONFIGS / config).read_text()


# ------------------------------------------------------------------------ blocks


@pytest.mark.parametrize("dims", [2, 3])
def test_simam_is_parameter_free_and_matches_its_formula(dims):
    x = torch.randn(2, 3, *(5,) * dims)
    block = SimAM(eps=1e-4)
    assert not list(block.parameters())
    axes = tuple(range(2, x.ndim))
    n = x[0, 0].numel() - 1
    d = (x - x.mean(dim=axes, keepdim=True)) ** 2
    energy = d / (4 * (d.sum(dim=axes, keepdim=True) / n + 1e-4)) + 0.5
    torch.testing.assert_close(block(x), x * torch.sigmoid(energy))


@pytest.mark.parametrize("dims", [2, 3])
def test_lccam_weights_each_stream_from_both(dims):
    torch.manual_seed(0)
    block = LCCAM(dims, channels=6)
    a, b = torch.randn(2, 6, *(4,) * dims), torch.randn(2, 6, *(4,) * dims)
    a2, b2 = block(a, b)
    assert a2.shape == a.shape and b2.shape == b.shape
    assert sum(p.numel() for p in block.parameters()) < 300  # lightweight
    # the enhancement of stream a depends on stream b
    a3, _ = block(a, torch.randn_like(b))
    assert not torch.allclose(a3, a2)
    with pytest.raises(ModelError, match="both streams"):
        block(a, b[:, :4])


@pytest.mark.parametrize("dims", [2, 3])
def test_cascaded_modulation_feeds_each_group_the_previous_one(dims):
    torch.manual_seed(0)
    mixer = CascadedModulation(dims, dim=8, groups=4).eval()
    x = torch.randn(1, 8, *(5,) * dims, requires_grad=True)
    outs = []
    hook = mixer.proj.register_forward_hook(lambda _m, inp, _o: outs.append(inp[0]))
    mixer(x)
    hook.remove()
    # group 3's output (channels 6-7) depends on group 0's input (channels 0-1) ...
    (grad,) = torch.autograd.grad(outs[0][:, 6:].sum(), x, retain_graph=True)
    assert grad[:, :2].abs().sum() > 0
    # ... but group 0's output does not see later groups
    (grad,) = torch.autograd.grad(outs[0][:, :2].sum(), x, allow_unused=True)
    assert grad[:, 2:].abs().sum() == 0


@pytest.mark.parametrize("dims", [2, 3])
def test_attention_blocks_and_self_calibrated_conv_shapes(dims):
    torch.manual_seed(0)
    x, ctx = torch.randn(2, 8, *(6,) * dims), torch.randn(2, 16, *(6,) * dims)
    assert CrossAttention(dims, 8, 16, num_heads=2, kv_stride=4)(x, ctx).shape == x.shape
    assert ChannelCrossAttention(dims, 8, 16, num_heads=2)(x, ctx).shape == x.shape
    with pytest.raises(ModelError, match="share the grid"):
        ChannelCrossAttention(dims, 8, 16)(x, ctx[..., :3])
    sc = SelfCalibratedConv(dims, 8, 12, pool=4, groups=2)
    assert sc(x).shape == (2, 12, *(6,) * dims)
    with pytest.raises(ModelError, match="even"):
        SelfCalibratedConv(dims, 7)


def test_split_modalities_rejects_non_tensors():
    with pytest.raises(ModelError, match="expected a dict"):
        split_modalities([torch.zeros(1)], ("pet", "ct"), 1, "M")
    with pytest.raises(ModelError, match="share batch size and grid"):
        split_modalities(
            {"pet": torch.zeros(1, 1, 4, 4), "ct": torch.zeros(1, 1, 4, 5)}, ("pet", "ct"), 1, "M"
        )
