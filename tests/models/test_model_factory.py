"""create_model on timm, timm_3d and MONAI: forward, backward and the model contract."""

from __future__ import annotations

import copy
import math
import urllib.error
from types import SimpleNamespace

import pytest
import torch

from medcls.errors import ModelError
from medcls.models import CamLayer, ModelCfg, check_contract, create_model

# a narrow DenseNet-121 layout keeps the CPU test fast; the full one is built on meta below
_SMALL_DENSE = {"block_config": (2, 2, 2, 2), "growth_rate": 8, "init_features": 16}

# (name, spatial_dims, spatial size, in_chans, num_classes, extra kwargs): tiny inputs
CASES = [
    ("timm:resnet10t", 2, 32, 1, 2, {}),
    ("timm:vit_tiny_patch16_224", 2, 32, 3, 5, {"img_size": 32, "depth": 3}),
    ("timm3d:resnet10t", 3, 32, 1, 5, {}),
    ("monai:resnet10", 3, 16, 3, 5, {}),
    ("monai:densenet121", 2, 32, 1, 2, _SMALL_DENSE),
    ("monai:densenet121", 3, 32, 2, 2, _SMALL_DENSE),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}d-c{c[3]}-n{c[4]}")
def case(request):
    name, dims, size, in_chans, num_classes, kwargs = request.param
    torch.manual_seed(0)
    model = create_model(
        name, in_chans=in_chans, num_classes=num_classes, spatial_dims=dims, **kwargs
    )
    x = torch.randn(2, in_chans, *(size,) * dims)
    return SimpleNamespace(
        model=model, x=x, name=name, dims=dims, in_chans=in_chans, num_classes=num_classes
    )


def test_forward_backward_every_parameter_gets_gradient(case):
    model, x, num_classes = case.model, case.x, case.num_classes
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    assert out.shape == (2, num_classes)
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)


def test_contract_and_feature_head_composition(case):
    model, x, name, dims, in_chans = case.model, case.x, case.name, case.dims, case.in_chans
    num_classes = case.num_classes
    check_contract(model, x)  # forward == forward_head(forward_features) in eval mode
    assert (model.in_chans, model.spatial_dims, model.num_classes) == (in_chans, dims, num_classes)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    cfg = model.model_cfg
    assert isinstance(cfg, ModelCfg)
    assert cfg.name == name and cfg.source == name.split(":")[0]
    assert cfg.input_size[0] == in_chans and len(cfg.input_size) == dims + 1
    assert len(cfg.mean) == len(cfg.std) == in_chans
    assert cfg.family in ("cnn", "transformer", "hybrid", "mlp")
    modules = dict(model.named_modules())
    assert cfg.first_conv in modules and cfg.classifier[0] in modules
    assert modules[cfg.first_conv].weight.shape[1] == in_chans
    assert all(s.module in modules for s in model.feature_stages)


def test_cam_layer_output_matches_declared_layout(case):
    model, x = case.model, case.x
    cam: CamLayer = model.cam_layer
    seen = []
    handle = model.get_submodule(cam.module).register_forward_hook(
        lambda _m, _i, out: seen.append(out.shape)
    )
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    assert len(seen) == 1, "the CAM layer must run exactly once per forward"
    shape, grid = seen[0], cam.grid(x.shape[2:])
    if cam.layout == "tokens":
        assert len(shape) == 3 and shape[1] - cam.num_prefix_tokens == math.prod(grid)
    elif cam.layout == "channels_first":
        assert tuple(shape[2:]) == grid
    else:
        assert tuple(shape[1:-1]) == grid


def test_vit_cam_layer_is_penultimate_block_with_class_token():
    with torch.device("meta"):
        model = create_model("timm:vit_tiny_patch16_224", in_chans=1, num_classes=2, img_size=32)
    depth = len(model.blocks)
    assert model.cam_layer == CamLayer(f"blocks.{depth - 2}", "tokens", 1, 16)


def test_swin_cam_layer_is_channels_last():
    with torch.device("meta"):
        model = create_model("timm:swin_tiny_patch4_window7_224", in_chans=1, num_classes=2)
    assert model.cam_layer.layout == "channels_last"
    assert model.model_cfg.family == "transformer"


def test_reset_classifier(case):
    x = case.x
    fresh = copy.deepcopy(case.model)
    fresh.eval()
    fresh.reset_classifier(7)
    with torch.no_grad():
        assert fresh(x).shape == (2, 7)
    assert fresh.num_classes == 7
    fresh.reset_classifier(0)
    with torch.no_grad():
        assert fresh(x).shape == (2, fresh.num_features)


MONAI_META = ["resnet50", "se_resnext50_32x4d", "efficientnet-b1"]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("net", MONAI_META)
def test_monai_nets_on_meta_device(net, dims):
    with torch.device("meta"):
        model = create_model(f"monai:{net}", in_chans=1, num_classes=3, spatial_dims=dims)
        x = torch.empty(2, 1, *(64,) * dims)
        out = model(x)
        composed = model.forward_head(model.forward_features(x))
    assert out.shape == composed.shape == (2, 3)
    assert model.cam_layer.layout == "channels_first"
    assert model.model_cfg.family == "cnn"  # SE blocks are channel attention, not attention


def test_monai_adapter_keeps_monai_state_dict_keys():
    from monai.networks.nets import DenseNet121

    with torch.device("meta"):
        native = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        adapted = create_model("monai:densenet121", in_chans=1, num_classes=2, spatial_dims=2)
    assert list(native.state_dict()) == list(adapted.state_dict())


def test_monai_defaults_to_3d_and_timm_rejects_3d():
    with torch.device("meta"):
        assert create_model("monai:resnet18", in_chans=1, num_classes=2).spatial_dims == 3
    with pytest.raises(ModelError, match="timm3d:"):
        create_model("timm:resnet18", in_chans=1, num_classes=2, spatial_dims=3)
    with pytest.raises(ModelError, match="spatial_dims"):
        create_model("monai:resnet18", in_chans=1, num_classes=2, spatial_dims=4)


def test_none_kwargs_are_dropped_and_bad_kwargs_raise():
    with torch.device("meta"):
        model = create_model("timm:resnet10t", in_chans=1, num_classes=2, drop_rate=None)
    assert model.num_classes == 2
    with pytest.raises(ModelError, match="no_such_argument"):
        create_model("timm:resnet10t", in_chans=1, num_classes=2, no_such_argument=3)


@pytest.mark.parametrize("bad", [{"in_chans": 0}, {"num_classes": -1}, {"in_chans": 1.5}])
def test_invalid_channel_or_class_counts(bad):
    args = {"in_chans": 1, "num_classes": 2, **bad}
    with pytest.raises(ModelError, match=next(iter(bad))):
        create_model("timm:resnet10t", **args)


def test_known_broken_model_raises_with_reason():
    with pytest.raises(ModelError, match="relative-position tables"):
        create_model("timm3d:maxvit_tiny_rw_256", in_chans=1, num_classes=2)


def test_pretrained_offline_raises_model_error(monkeypatch):
    import monai.networks.nets.densenet as monai_densenet

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(monai_densenet, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match="checkpoint_path"):
        create_model(
            "monai:densenet121", in_chans=3, num_classes=2, spatial_dims=2, pretrained=True
        )


def test_timm3d_densenet_gets_a_forward_head():
    # timm_3d's DenseNet lacks forward_head; the adapter adds timm's pooled head
    torch.manual_seed(0)
    model = create_model(
        "timm3d:densenet121", in_chans=1, num_classes=2, block_config=(1, 1, 1, 1), growth_rate=8
    )
    x = torch.randn(2, 1, 32, 32, 32)
    check_contract(model, x)
    assert next(iter(model.state_dict())).startswith("features.")


@pytest.mark.parametrize(
    ("name", "spatial_dims", "in_chans"),
    [("ldtransformer_tiny", 2, 1), ("ldtransformer_tiny", 3, 1), ("light3dformer_tiny", 3, 2)],
)
def test_to_channels_last_converts_only_matching_ranks(name, spatial_dims, in_chans):
    """Models with expert kernels of another rank convert where Module.to() raises."""
    from medcls.models import to_channels_last

    torch.manual_seed(0)
    model = create_model(name, in_chans=in_chans, num_classes=2, spatial_dims=spatial_dims).eval()
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    ranks = {p.ndim for p in model.parameters()}
    if name.startswith("ldtransformer"):
        assert spatial_dims + 3 in ranks  # the per-sample expert kernels: one rank more
    if name.startswith("ldtransformer") and spatial_dims == 2:  # 5-D expert kernels in 2D
        with pytest.raises(RuntimeError, match="channels_last"):
            copy.deepcopy(model).to(memory_format=fmt)
    x = torch.randn(2, in_chans, *([16] * spatial_dims))
    expected = model(x)
    assert to_channels_last(model, spatial_dims) is model
    converted = [p for p in model.parameters() if p.ndim == spatial_dims + 2]
    assert converted and all(p.is_contiguous(memory_format=fmt) for p in converted)
    torch.testing.assert_close(model(x.contiguous(memory_format=fmt)), expected)
    with pytest.raises(ModelError, match="spatial_dims=1"):
        to_channels_last(model, 1)
