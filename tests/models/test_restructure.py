"""Model restructuring on timm, timm_3d, MONAI and native models, 2D and 3D."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from medcls.config import OptimizerConfig, load_config
from medcls.engine.api import _build_restructured, load_run_model
from medcls.engine.checkpoint import save_weights
from medcls.engine.optim import build_optimizer
from medcls.errors import ConfigError, ModelError
from medcls.models import check_contract, create_model
from medcls.models.restructure import (
    HeadMLP,
    NormAct,
    fold_batchnorm,
    freeze,
    frozen_parameters,
    inflate,
    reparameterize,
    replace_head,
    restructure_model,
    set_in_chans,
    set_padding_mode,
    swap_act,
    swap_norm,
    unfreeze,
    weights_in_chans,
)


def _resnet(in_chans: int = 1, num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return create_model("timm:test_resnet", in_chans=in_chans, num_classes=num_classes)


def _vit(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return create_model("timm:test_vit", in_chans=1, num_classes=num_classes, img_size=32)


def _monai3d() -> nn.Module:
    torch.manual_seed(0)
    return create_model("monai:resnet10", in_chans=1, num_classes=2, spatial_dims=3)


@torch.no_grad()
def _calibrate(model: nn.Module, size: tuple[int, ...], steps: int = 2) -> nn.Module:
    """Train-mode forwards so batch norms hold non-trivial running statistics."""
    model.train()
    for _ in range(steps):
        model(torch.randn(4, *size))
    return model.eval()


def _count(model: nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------- input channels


@torch.no_grad()
def test_in_chans_mean_sums_kernels_and_keeps_the_grey_response():
    model = _resnet(in_chans=3).eval()
    conv = model.get_submodule(model.model_cfg.first_conv)
    before = conv.weight.clone()
    grey = torch.randn(2, 1, 32, 32)
    expected = model(grey.expand(-1, 3, -1, -1))
    set_in_chans(model, 1, "mean")
    assert torch.allclose(conv.weight, before.sum(1, keepdim=True))
    assert torch.allclose(model(grey), expected, atol=1e-5)
    assert model.in_chans == 1 and conv.in_channels == 1
    assert model.model_cfg.input_size[0] == 1 and len(model.model_cfg.mean) == 1
    set_in_chans(model, 2, "mean")  # every channel: summed kernel / 2
    assert torch.allclose(conv.weight, before.sum(1, keepdim=True).expand(-1, 2, -1, -1) / 2)


@torch.no_grad()
def test_in_chans_repeat_cycles_and_scales_kernels():
    model = _resnet(in_chans=3).eval()
    conv = model.get_submodule(model.model_cfg.first_conv)
    before = conv.weight.clone()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    set_in_chans(model, 6, "repeat")
    assert torch.allclose(conv.weight[:, :3], before / 2)
    assert torch.allclose(conv.weight[:, 3:], before / 2)
    assert torch.allclose(model(torch.cat([x, x], 1)), expected, atol=1e-5)
    assert model.model_cfg.mean[3:] == model.model_cfg.mean[:3]


def test_in_chans_on_a_3d_model_and_bad_arguments():
    model = create_model("timm3d:resnet10t", in_chans=1, num_classes=2)
    before = model.get_submodule("conv1.0").weight.detach().clone()
    set_in_chans(model, 2, "repeat")
    weight = model.get_submodule("conv1.0").weight
    assert weight.shape[1] == 2 and torch.allclose(weight, before.expand(-1, 2, -1, -1, -1) / 2)
    with pytest.raises(ModelError, match="mode"):
        set_in_chans(model, 1, "average")
    with pytest.raises(ModelError, match="in_chans"):
        set_in_chans(model, 0)


# ------------------------------------------------------------------------- head


def test_head_with_hidden_layer_and_dropout_keeps_the_contract():
    model = _vit()
    replace_head(model, 5, drop_rate=0.2, hidden=16)
    head = model.get_submodule("head")
    assert isinstance(head, HeadMLP) and head.hidden.out_features == 16
    assert head.drop.p == 0.2 and head.fc.out_features == 5
    assert model.num_classes == 5
    check_contract(model, torch.randn(2, 1, 32, 32))


def test_head_num_classes_only_and_errors():
    model = _monai3d()
    replace_head(model, 4)  # multi-label too: only num_classes changes
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 4
    assert model(torch.randn(2, 1, 16, 16, 16)).shape == (2, 4)
    with pytest.raises(ModelError, match="num_classes >= 1"):
        replace_head(model, 0, hidden=8)
    with pytest.raises(ModelError, match="drop_rate"):
        replace_head(model, 2, drop_rate=1.0)


# ----------------------------------------------------------------------- freeze


def test_freeze_all_but_head_no_grad_and_not_in_the_optimizer():
    model = _resnet()
    frozen = freeze(model, "all-but-head")
    assert frozen and not any(n.startswith("fc.") for n in frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    model.train()
    model(torch.randn(4, 1, 32, 32)).sum().backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == (name in trainable), name
    optimizer = build_optimizer(model, OptimizerConfig())
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}


@torch.no_grad()
def test_frozen_norms_keep_their_statistics_unless_asked():
    model = _resnet()
    freeze(model, 2)  # stem + act1 + layer1 (the first two contract stages)
    assert not model.bn1.weight.requires_grad and not model.layer1[0].conv1.weight.requires_grad
    assert model.layer2[0].conv1.weight.requires_grad and model.fc.weight.requires_grad
    stats = model.bn1.running_mean.clone(), model.layer2[0].bn1.running_mean.clone()
    model.train()
    model(torch.randn(4, 1, 32, 32))
    assert torch.equal(model.bn1.running_mean, stats[0])  # frozen: held in eval mode
    assert not torch.equal(model.layer2[0].bn1.running_mean, stats[1])  # trainable: updated
    unfreeze(model)
    assert not frozen_parameters(model)
    model.train()
    model(torch.randn(4, 1, 32, 32))
    assert not torch.equal(model.bn1.running_mean, stats[0])  # released
    other = _resnet()
    freeze(other, ["layer1"], norm_stats=False)
    before = other.layer1[0].bn1.running_mean.clone()
    other.train()
    other(torch.randn(4, 1, 32, 32))
    assert not torch.equal(other.layer1[0].bn1.running_mean, before)
    assert all(not p.requires_grad for p in other.layer1.parameters())


def test_freeze_errors_name_the_problem():
    model = _resnet()
    with pytest.raises(ModelError, match="did you mean 'layer1'"):
        freeze(model, ["layr1"])
    with pytest.raises(ModelError, match="6 leading stages asked, the model has 5"):
        freeze(model, 6)


# ------------------------------------------------------------------ swap layers


@torch.no_grad()
def test_swap_act_relu_to_gelu_and_vit_gelu_to_silu():
    model = _resnet().eval()
    relus = _count(model, nn.ReLU)
    names = swap_act(model, "gelu", source=["relu"])
    assert len(names) == relus and _count(model, nn.ReLU) == 0 and _count(model, nn.GELU) == relus
    assert torch.isfinite(model(torch.randn(2, 1, 32, 32))).all()
    vit = _vit().eval()
    gelus = _count(vit, nn.GELU)
    swap_act(vit, "silu")
    assert _count(vit, nn.GELU) == 0 and _count(vit, nn.SiLU) == gelus
    assert torch.isfinite(vit(torch.randn(2, 1, 32, 32))).all()
    with pytest.raises(ModelError, match="no activation module"):
        swap_act(vit, "relu", source=["mish"])
    with pytest.raises(ModelError, match="act="):
        swap_act(vit, "swish")


@torch.no_grad()
def test_swap_norm_copies_affine_parameters_2d_and_3d():
    model = _resnet().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
    old = model.bn1.weight.clone(), model.bn1.bias.clone()
    n_bn = _count(model, nn.BatchNorm2d)
    swap_norm(model, "group")
    assert _count(model, nn.BatchNorm2d) == 0 and _count(model, nn.GroupNorm) == n_bn
    assert torch.equal(model.bn1.weight, old[0]) and torch.equal(model.bn1.bias, old[1])
    assert torch.isfinite(model(torch.randn(2, 1, 32, 32))).all()
    net = _monai3d().eval()
    swap_norm(net, "instance")
    assert _count(net, nn.BatchNorm3d) == 0 and _count(net, nn.InstanceNorm3d) > 0
    # instance norm needs more than one voxel per map, also at the last stage
    assert torch.isfinite(net(torch.randn(2, 1, 32, 32, 32))).all()
    with pytest.raises(ModelError, match="no normalisation layer"):
        swap_norm(_vit(), "group")


@torch.no_grad()
def test_swap_norm_keeps_the_activation_of_timm_norm_act_layers():
    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", in_chans=1, num_classes=2).eval()
    acts = _count(model, nn.SiLU)
    names = swap_norm(model, "group")
    assert _count(model, nn.modules.batchnorm._BatchNorm) == 0
    assert _count(model, NormAct) == len(names) and _count(model, nn.SiLU) == acts
    assert torch.isfinite(model(torch.randn(2, 1, 32, 32))).all()


# ---------------------------------------------------------------------- inflate


@pytest.mark.parametrize("name", ["timm:test_resnet", "ddsfnet_tiny"])
@torch.no_grad()
def test_inflated_model_reproduces_the_2d_logits_on_a_depth_constant_volume(name):
    torch.manual_seed(0)
    model = _calibrate(create_model(name, in_chans=1, num_classes=3, spatial_dims=2), (1, 32, 32))
    x2 = torch.randn(1, 1, 32, 32)
    expected = model(x2)
    inflate(model)
    assert model.spatial_dims == 3 and model.model_cfg.spatial_dims == 3
    assert _count(model, nn.Conv2d) == 0 and _count(model, nn.BatchNorm2d) == 0
    depth = model.feature_stages[-1].reduction  # the smallest depth every stage accepts
    x3 = x2.unsqueeze(2).expand(-1, -1, depth, -1, -1)
    assert torch.allclose(model(x3), expected, atol=1e-5, rtol=1e-4)
    check_contract(model)


@torch.no_grad()
def test_inflate_mean_repeats_kernels_divided_by_depth():
    model = _resnet()
    kernels = {n: m.weight.clone() for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    inflate(model, mode="mean")
    for name, weight in kernels.items():
        w3 = model.get_submodule(name).weight
        depth = w3.shape[2]
        assert depth == weight.shape[2]  # depth kernel = height kernel
        assert torch.allclose(w3, weight.unsqueeze(2).expand_as(w3) / depth)
    assert model.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3)


def test_inflate_refuses_2d_only_code_and_leaves_the_model_2d():
    with pytest.raises(ModelError, match="'patch_embed' \\(PatchEmbed\\)"):
        inflate(_vit())
    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", in_chans=1, num_classes=2)
    with pytest.raises(ModelError, match=r"inside '[\w.]*se' \(SqueezeExcite\)"):
        inflate(model)
    assert model.spatial_dims == 2 and _count(model, nn.Conv3d) == 0
    assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 2)
    with pytest.raises(ModelError, match="expected a 2D model"):
        inflate(_monai3d())
    with pytest.raises(ModelError, match="mode"):
        inflate(_resnet(), mode="repeat")


# ---------------------------------------------------------------- reparameterize


def test_every_model_has_reparameterize_and_still_copies_and_pickles():
    models = [_resnet(), _vit(), _monai3d()]
    models.append(create_model("drltransformer_tiny", in_chans=1, num_classes=2))
    for model in models:
        assert callable(model.reparameterize)
    clone = copy.deepcopy(models[0])
    assert clone.reparameterize.model is clone
    buffer = io.BytesIO()
    torch.save(models[0], buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.reparameterize.model is loaded


@torch.no_grad()
def test_reparameterize_rep_blocks_same_outputs_fewer_parameters():
    torch.manual_seed(0)
    model = create_model("timm:mobileone_s0", in_chans=1, num_classes=3).eval()
    x = torch.randn(2, 1, 32, 32)
    before, n_before = model(x), _params(model)
    assert model.reparameterize() is model
    after = model(x)
    # an untrained MobileOne's logits are huge (~1e13): compare relative to their scale
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()
    assert _params(model) < n_before
    torch.manual_seed(0)
    native = _calibrate(create_model("drltransformer_tiny", in_chans=1, num_classes=2), (1, 32, 32))
    x = torch.randn(2, 1, 32, 32)
    before, n_before = native(x), _params(native)
    reparameterize(native)
    assert torch.allclose(native(x), before, atol=1e-5) and _params(native) < n_before


@torch.no_grad()
def test_fold_batchnorm_same_outputs_and_residuals_are_safe():
    model = _calibrate(_resnet(), (1, 32, 32))
    x = torch.randn(2, 1, 32, 32)
    before, n_before, n_bn = model(x), _params(model), _count(model, nn.BatchNorm2d)
    folded = fold_batchnorm(model)
    assert len(folded) == n_bn  # every BN of a ResNet follows a conv used nowhere else
    assert _count(model, nn.BatchNorm2d) == 0 and _params(model) < n_before
    assert torch.allclose(model(x), before, atol=1e-5)
    net = _calibrate(_monai3d(), (1, 16, 16, 16))
    x = torch.randn(2, 1, 16, 16, 16)
    before = net(x)
    net.reparameterize(fold_bn=True)
    assert torch.allclose(net(x), before, atol=1e-5) and _count(net, nn.BatchNorm3d) == 0


# ------------------------------------------------------------------ padding mode


def _save_and_reload(model, cfg, run_dir, *, spatial_dims: int) -> nn.Module:
    """Saves ``model`` as a run's best checkpoint (1 channel, 3 classes) and loads it back."""
    spec = {
        "name": cfg.model.name,
        "kwargs": {},
        "in_chans": 1,
        "num_classes": 3,
        "spatial_dims": spatial_dims,
        "restructure": vars(cfg.model.restructure),
    }
    save_weights(model, run_dir / "checkpoints" / "best", {"model": spec})
    return load_run_model(run_dir)[0]


@pytest.mark.parametrize("dims", [2, 3])
def test_replicate_padding_makes_no_edge_at_the_border(dims):
    conv = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1) if dims == 2 else nn.Conv3d(1, 4, 3, padding=1)
    )
    with torch.no_grad():
        conv[0].weight.fill_(1.0)
        conv[0].bias.zero_()
    x = torch.ones(1, 1, *(6,) * dims)  # anatomy filling the whole input
    zeros = conv(x)
    assert zeros.amax() > zeros.amin()  # zero padding: weaker response at the border
    assert set_padding_mode(conv, "replicate") == ["0"]
    torch.testing.assert_close(conv(x), torch.full_like(zeros, 3.0**dims))


def test_padding_mode_changes_every_padded_conv_and_keeps_shapes():
    model = _monai3d().eval()
    x = torch.randn(2, 1, 16, 16, 16)
    before = model(x)
    padded = [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d) and any(m.padding)]
    changed = set_padding_mode(model, "replicate")
    assert changed == padded and len(padded) > 0
    assert all(model.get_submodule(n).padding_mode == "replicate" for n in changed)
    unpadded = [
        n for n, m in model.named_modules() if isinstance(m, nn.Conv3d) and not any(m.padding)
    ]
    assert all(model.get_submodule(n).padding_mode == "zeros" for n in unpadded)
    after = model(x)
    assert after.shape == before.shape and not torch.allclose(after, before)
    set_padding_mode(model, "zeros")
    torch.testing.assert_close(model(x), before)


def test_padding_mode_errors_name_the_problem():
    with pytest.raises(ModelError, match="expected one of"):
        set_padding_mode(_resnet(), "circular")
    with pytest.raises(ModelError, match="no padded convolution"):
        set_padding_mode(
            nn.Sequential(nn.Conv2d(1, 2, 1), nn.ConvTranspose2d(2, 2, 3, padding=1)), "replicate"
        )


def test_padding_mode_from_the_config_survives_a_reload(tmp_path):
    cfg = load_config(None, ["model.name=timm:test_resnet", "model.restructure.padding=replicate"])
    model = _engine_build(cfg, spatial_dims=2).eval()
    assert model.conv1[0].padding_mode == "replicate"
    loaded = _save_and_reload(model, cfg, tmp_path, spatial_dims=2)
    assert loaded.conv1[0].padding_mode == "replicate"
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


# ------------------------------------------------------------- config and engine


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.restructure.head_drop_rate=1.5", "model.restructure.head_drop_rate"),
        ("model.restructure.act=swish", "model.restructure.act"),
        ("model.restructure.freeze=all", "model.restructure.freeze"),
        ("model.restructure.freeze=-1", "model.restructure.freeze"),
        ("model.restructure.inflate=true", "model.restructure.inflate"),
        ("model.restructure.fold_bn=true", "model.restructure.fold_bn"),
        ("model.restructure.norm=layer", "model.restructure.norm"),
        ("model.restructure.padding=reflect", "model.restructure.padding"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def _engine_build(cfg, **extra):
    args = dict(
        name=cfg.model.name,
        in_chans=1,
        num_classes=3,
        spatial_dims=3,
        kwargs={},
        pretrained=False,
        checkpoint_path=None,
    )
    return _build_restructured(cfg.model.restructure, for_training=True, **{**args, **extra})


@torch.no_grad()
def test_engine_builds_restructured_model_and_reloads_it_fused(tmp_path):
    cfg = load_config(
        None,
        [
            "model.name=timm:test_resnet",
            "model.restructure.inflate=centre",
            "model.restructure.act=silu",
            "model.restructure.head_hidden=8",
            "model.restructure.freeze=2",
            "model.restructure.reparameterize=true",
            "model.restructure.fold_bn=true",
        ],
    )
    model = _engine_build(cfg)
    assert model.spatial_dims == 3 and _count(model, nn.Conv3d) > 0
    assert _count(model, nn.ReLU) == 0 and isinstance(model.fc, HeadMLP)
    # the pool timm's reset_classifier rebuilds is 3D too: depth 2 at the last stage
    assert model.eval()(torch.randn(1, 1, 64, 32, 32)).shape == (1, 3)
    assert not model.bn1.weight.requires_grad and model.layer2[0].conv1.weight.requires_grad
    _calibrate(model, (1, 32, 32, 32), steps=1)
    loaded = _save_and_reload(model, cfg, tmp_path, spatial_dims=3)
    x = torch.randn(1, 1, 32, 32, 32)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert _count(loaded, nn.BatchNorm3d) == 0  # reparameterize + fold_bn at load


def test_engine_in_chans_repeat_from_a_checkpoint_and_config_errors(tmp_path):
    source = _resnet(in_chans=3)
    path = tmp_path / "rgb.pth"
    torch.save(source.state_dict(), path)
    cfg = load_config(
        None, ["model.name=timm:test_resnet", "model.restructure.in_chans_mode=repeat"]
    )
    model = _engine_build(cfg, in_chans=6, spatial_dims=2, checkpoint_path=str(path))
    weight = model.get_submodule("conv1.0").weight
    expected = source.get_submodule("conv1.0").weight / 2
    assert torch.allclose(weight[:, :3], expected) and torch.allclose(weight[:, 3:], expected)
    # library weights: read from the pretrained config, nothing is downloaded
    assert weights_in_chans("timm:resnet18", pretrained=True) == 3
    assert weights_in_chans("timm3d:resnet10t", pretrained=True) == 3
    assert weights_in_chans("timm:resnet18") is None
    inflate_2d = load_config(None, ["model.restructure.inflate=centre"])
    with pytest.raises(ConfigError, match=r"model\.restructure\.inflate"):
        _engine_build(inflate_2d, spatial_dims=2)
    vit = load_config(None, ["model.name=timm:test_vit", "model.restructure.inflate=centre"])
    with pytest.raises(ConfigError, match=r"model\.restructure\.inflate.*patch_embed"):
        _engine_build(vit, kwargs={"img_size": 32})
    monai = load_config(None, ["model.name=monai:resnet10", "model.restructure.in_chans_mode=mean"])
    with pytest.raises(ConfigError, match=r"model\.restructure\.in_chans_mode"):
        _engine_build(monai, pretrained=True)


def test_restructure_model_applies_everything_in_one_call():
    model = restructure_model(
        _resnet(), in_chans=2, norm="group", act="gelu", head_hidden=8, freeze="all-but-head"
    )
    assert model.in_chans == 2 and isinstance(model.fc, HeadMLP)
    assert _count(model, nn.GroupNorm) > 0 and _count(model, nn.GELU) > 0
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith("fc.")
    }
