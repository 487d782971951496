"""Explanation methods on models with known evidence, 2D and 3D, and their plumbing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medcls.errors import ConfigError, ModelError
from medcls.explain import METHODS, create_explainer, explain
from medcls.explain.api import EXPLAINERS
from medcls.explain.base import normalize_maps, resize_maps
from medcls.explain.cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from medcls.explain.checks import pointing_game
from medcls.explain.layers import LayerView, read_layer_output, resolve_layers, token_grid
from medcls.explain.names import canonical_method
from tests.explain.toy_models import (
    DictInputNet,
    TokenNet,
    blob_input,
    channels_last_model,
    spot_model,
    token_model,
    with_contract,
)

# cheap settings so every method runs in well under a second on these toys
CHEAP = {
    "scorecam": {"max_channels": 4},
    "ablationcam": {"max_channels": 4},
    "smoothgrad": {"samples": 8},
    "integrated-gradients": {"steps": 8},
}
# an off-centre blob with a different coordinate on every axis: a transposed or
# flipped map (or a lost depth axis) misses it
BLOB = {2: (24, (6, 15)), 3: (16, (4, 11, 7))}


def _check_map(result, x, name="image"):
    m = result.maps[name]
    assert tuple(m.shape) == (x.shape[0], *x.shape[2:])
    assert not torch.isnan(m).any()
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    return m


def test_one_class_per_method_name():
    assert tuple(EXPLAINERS) == METHODS
    assert all(cls.method == name for name, cls in EXPLAINERS.items())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_points_at_the_evidence(method, dims):
    size, centre = BLOB[dims]
    model = spot_model(dims, size=size)
    x, mask = blob_input(dims, size, centre)
    result = explain(model, x, method, target=1, **CHEAP.get(method, {}))
    m = _check_map(result, x)
    assert float(m.std()) > 0.01, "map is constant"
    assert bool(pointing_game(m, mask, tolerance=1)[0]), (
        f"{method} {dims}D peak at {np.unravel_index(int(m.argmax()), m.shape[1:])}, blob at {centre}"
    )
    assert result.targets.tolist() == [1]
    assert result.logits.shape == (1, 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_token_layout_drops_class_token_and_keeps_grid_order(dims):
    size, centre = (32, (5, 22)) if dims == 2 else (16, (3, 12, 7))
    model = token_model(dims, size=size)
    cam = model.cam_layer
    assert (cam.layout, cam.num_prefix_tokens) == ("tokens", 1)
    x, mask = blob_input(dims, size, centre, radius=2.0)
    for method in ("gradcam", "layercam", "eigencam", "ablationcam"):
        result = explain(model, x, method, target=1, **CHEAP.get(method, {}))
        m = _check_map(result, x)
        assert result.layers == (cam.module,)
        assert bool(pointing_game(m, mask, tolerance=4)[0]), method


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_features_are_permuted(dims):
    size, centre = BLOB[dims]
    model = channels_last_model(dims, size=size)
    assert model.cam_layer.layout == "channels_last"
    x, mask = blob_input(dims, size, centre)
    result = explain(model, x, "gradcam", target=1, layer="contract")
    assert result.layers == (model.cam_layer.module,)
    assert bool(pointing_game(_check_map(result, x), mask, tolerance=1)[0])


def test_multimodal_one_map_per_modality():
    dims, size, centre = 2, 24, (7, 16)
    model = spot_model(dims, in_chans=2, evidence_channel=1, size=size)
    x, mask = blob_input(dims, size, centre, in_chans=2, channel=1)
    grads = explain(model, x, "gradients", target=1, modalities=["ct", "pet"])
    assert grads.modalities == ["ct", "pet"] and not grads.shared
    assert float(grads.raw["ct"].abs().max()) == 0.0  # the model ignores the CT channel
    assert bool(pointing_game(grads.maps["pet"], mask, tolerance=1)[0])
    occl = explain(model, x, "occlusion", target=1, modalities={"ct": 1, "pet": 1})
    assert float(occl.raw["ct"].max()) == 0.0 and float(occl.raw["pet"].max()) > 0
    cam = explain(model, x, "gradcam", target=1, modalities=["ct", "pet"])
    assert cam.shared and torch.equal(cam.maps["ct"], cam.maps["pet"])


@pytest.mark.parametrize("method", ["gradcam", "gradients", "integrated-gradients"])
def test_dict_input_model(method):
    model = DictInputNet(2).eval()
    x, mask = blob_input(2, 24, (6, 15), in_chans=2, channel=1)
    inputs = {"ct": x[:, :1], "pet": x[:, 1:]}
    result = explain(model, inputs, method, target=1, **CHEAP.get(method, {}))
    assert result.modalities == ["ct", "pet"]
    assert bool(pointing_game(result.maps["pet"], mask, tolerance=1)[0])


def test_batched_equals_one_by_one_and_model_untouched():
    model = spot_model(2, size=24)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xs = torch.cat([blob_input(2, 24, c)[0] for c in [(5, 5), (12, 18), (19, 7)]])
    for method in ("gradcam", "scorecam", "guided-backprop"):
        together = explain(model, xs, method, batch_size=8, **CHEAP.get(method, {}))
        single = explain(model, xs, method, batch_size=1, **CHEAP.get(method, {}))
        torch.testing.assert_close(
            together.maps["image"], single.maps["image"], atol=1e-5, rtol=1e-4
        )
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_targets():
    model = spot_model(2, size=24)
    xs = torch.cat([blob_input(2, 24, (6, 15))[0], torch.zeros(1, 1, 24, 24)])
    predicted = explain(model, xs, "gradcam")
    assert predicted.targets.tolist() == predicted.logits.argmax(1).tolist()
    assert explain(model, xs, "gradcam", target=0).targets.tolist() == [0, 0]
    assert explain(model, xs, "gradcam", target=[1, 0]).targets.tolist() == [1, 0]
    with pytest.raises(ConfigError, match="out of range"):
        explain(model, xs, "gradcam", target=2)
    with pytest.raises(ConfigError, match="2 classes given for a batch of"):
        explain(model, xs[:1], "gradcam", target=[0, 1])


def test_errors_name_the_argument():
    model = spot_model(2, size=24)
    x = torch.zeros(1, 1, 24, 24)
    with pytest.raises(ConfigError, match="unknown explanation method 'gradkam'"):
        explain(model, x, "gradkam")
    with pytest.raises(ModelError, match="did you mean"):
        explain(model, x, "gradcam", layer="stemm")
    with pytest.raises(ModelError, match="'head' outputs shape"):
        explain(model, x, "gradcam", layer="head")
    with pytest.raises(ConfigError, match="drop --layer"):
        create_explainer("gradients", model, layer="stem")
    with pytest.raises(ConfigError, match="unsupported option"):
        create_explainer("gradcam", model, samples=3)
    with pytest.raises(ConfigError, match="do not split"):
        explain(model, x, "gradients", modalities=["a", "b", "c"])


def test_method_names_and_aliases():
    assert canonical_method("Grad-CAM++") == "gradcam++"
    assert canonical_method("grad_cam") == "gradcam"
    assert canonical_method("IG") == "integrated-gradients"
    assert canonical_method("GuidedBackprop") == "guided-backprop"
    assert canonical_method("saliency") == "gradients"


def test_layer_without_gradient_gives_zero_map_and_a_note():
    class ClassTokenHead(TokenNet):
        def forward_head(self, x, pre_logits=False):
            pooled = x[:, 0] * 10.0 + x[:, 1:].sum() * 0.0  # reads only the class token
            return pooled if pre_logits else self.head(pooled)

    model = with_contract(ClassTokenHead(2), "cls", 2, 1, 16)
    x, _ = blob_input(2, 16, (4, 11))
    result = explain(model, x, "gradcam", layer="blocks.1")
    assert not torch.isnan(result.maps["image"]).any()
    assert float(result.maps["image"].max()) == 0.0
    assert any("received no gradient" in n for n in result.notes)


def test_coarse_default_layer_moves_to_an_earlier_stage():
    from medcls.models import create_model

    model = create_model("timm:resnet10t", in_chans=1, num_classes=2)
    assert model.cam_layer.module == "layer4"
    # 2x2 at 64² -> layer2 (8x8, the deepest with >= 49 cells); 7x7 at 224² stays
    assert [s.module for s in resolve_layers(model, None, (64, 64))] == ["layer2"]
    assert [s.module for s in resolve_layers(model, None, (224, 224))] == ["layer4"]
    assert [s.module for s in resolve_layers(model, None, (64, 64), min_cells=4)] == ["layer4"]
    assert [s.module for s in resolve_layers(model, "contract", (64, 64))] == ["layer4"]
    assert [s.module for s in resolve_layers(model, "layer3,layer4", (64, 64))] == [
        "layer3",
        "layer4",
    ]
    result = explain(model, torch.randn(1, 1, 32, 32), "gradcam", layer=["layer3", "layer4"])
    assert result.layers == ("layer3", "layer4")
    volume = create_model("timm3d:resnet10t", in_chans=2, num_classes=2)
    # 7 cells per axis in 3D too: 8x8x8, not the 4x4x4 grid that 49 cells would accept
    assert [s.module for s in resolve_layers(volume, None, (32, 32, 32))] == ["layer1"]
    assert [s.module for s in resolve_layers(volume, None, (64, 64, 64))] == ["layer2"]
    assert [s.module for s in resolve_layers(volume, None, (32, 32, 32), min_cells=49)] == [
        "layer2"
    ]


def test_token_grid():
    assert token_grid(196, (224, 224)) == (14, 14)
    assert token_grid(4, (32, 32), 16) == (2, 2)
    assert token_grid(8, (64, 32), 16) == (4, 2)
    assert token_grid(8, (32, 32, 32)) == (2, 2, 2)
    assert token_grid(3 * 4 * 5, (24, 32, 40)) == (3, 4, 5)
    assert token_grid(7, (32, 32)) is None


def test_read_layer_output_infers_layouts():
    first = read_layer_output(torch.zeros(2, 64, 7, 7), (224, 224))
    assert (first.layout, first.grid) == ("channels_first", (7, 7))
    last = read_layer_output(torch.zeros(2, 7, 7, 768), (224, 224))
    assert (last.layout, last.grid) == ("channels_last", (7, 7))
    tokens = read_layer_output(torch.zeros(2, 5 + 16 * 16, 384), (224, 224))
    assert (tokens.layout, tokens.grid, tokens.num_prefix_tokens) == ("tokens", (16, 16), 5)
    volume = read_layer_output(torch.zeros(2, 1 + 4 * 4 * 2, 32), (64, 64, 32))
    assert (volume.grid, volume.num_prefix_tokens) == ((4, 4, 2), 1)
    out = torch.arange(2 * 5 * 4, dtype=torch.float32).reshape(2, 5, 4)  # 1 prefix + 2x2 grid
    cf = LayerView("tokens", (2, 2), 1).to_channels_first(out)
    assert cf.shape == (2, 4, 2, 2) and float(cf[0, 0, 0, 1]) == float(out[0, 2, 0])
    with pytest.raises(ModelError, match="not a spatial map"):
        read_layer_output(torch.zeros(2, 10), (32, 32), name="fc")


def test_normalize_and_resize():
    maps = torch.tensor([[[0.0, 2.0], [4.0, float("nan")]], [[3.0, 3.0], [3.0, 3.0]]])
    out = normalize_maps(maps)
    assert torch.equal(out[0], torch.tensor([[0.0, 0.5], [1.0, 0.0]]))
    assert float(out[1].abs().max()) == 0.0  # constant -> zeros
    assert resize_maps(torch.rand(2, 5), (9,)).shape == (2, 9)
    assert resize_maps(torch.rand(2, 3, 4), (6, 8)).shape == (2, 6, 8)
    assert resize_maps(torch.rand(2, 2, 3, 4), (4, 6, 8)).shape == (2, 4, 6, 8)
    big = resize_maps(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), (4, 4), nearest=True)
    assert set(big.unique().tolist()) == {0.0, 1.0}


# ------------------------------------------- agreement with pytorch-grad-cam's formulas


def _acts_and_grads(model, layer, x, target):
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, a, o: store.setdefault("a", o)
    )
    try:
        logits = model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[:, target].sum(), [store["a"]])
    return store["a"].detach(), grad.detach()


@pytest.mark.parametrize(
    ("name", "dims", "size"), [("timm:resnet10t", 2, 32), ("timm3d:resnet10t", 3, 32)]
)
def test_weights_agree_with_pytorch_grad_cam(name, dims, size):
    import pytorch_grad_cam as pgc

    from medcls.models import create_model

    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=2).eval()
    x = torch.randn(2, 1, *(size,) * dims)
    acts, grads = _acts_and_grads(model, "layer2", x, 1)
    pairs = [
        (GradCAM, pgc.GradCAM),
        (GradCAMPlusPlus, pgc.GradCAMPlusPlus),
        (XGradCAM, pgc.XGradCAM),
        (HiResCAM, pgc.HiResCAM),
        (LayerCAM, pgc.LayerCAM),
    ]
    layer = model.get_submodule("layer2")
    for ours_cls, theirs_cls in pairs:
        ours = ours_cls(model).layer_map(acts, grads, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = theirs_cls(model, [layer])
            theirs = reference.get_cam_image(x, layer, None, acts.numpy(), grads.numpy(), False)
            reference.activations_and_grads.release()
        np.testing.assert_allclose(
            ours.numpy(), theirs, rtol=1e-4, atol=1e-6, err_msg=ours_cls.method
        )
    ours = EigenCAM(model).layer_map(acts, grads, None).reshape(2, -1)
    theirs = torch.from_numpy(pgc.utils.svd_on_activations.get_2d_projection(acts.numpy())).reshape(
        2, -1
    )
    cosine = torch.nn.functional.cosine_similarity(ours, theirs.float(), dim=1).abs()
    assert bool((cosine > 0.999).all())  # same component; only the sign convention differs


def test_gradcam_end_to_end_agrees_with_pytorch_grad_cam_2d():
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from medcls.models import create_model

    # pytorch-grad-cam resizes bilinearly as if the cells tiled the image, which is
    # where a ConvNeXt's cells are (patchify stem, 2x2 stride-2 downsampling)
    torch.manual_seed(1)
    model = create_model("timm:convnext_atto", in_chans=1, num_classes=2).eval()
    x = torch.randn(2, 1, 64, 64)
    layer = model.get_submodule("stages.1")
    ours = explain(model, x, "gradcam", target=1, layer="stages.1", upsample="linear")
    ours = ours.maps["image"]
    with pgc.GradCAM(model, [layer]) as cam:
        theirs = torch.from_numpy(cam(x, [ClassifierOutputTarget(1)] * 2))
    corr = torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]
    assert float(corr) > 0.99
