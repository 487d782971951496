"""Every method on a sample of zoo models: 2D/3D, CNN/Transformer/hybrid, tiny inputs.

Each model runs Grad-CAM with its default layer (no layer named) plus one other
method, the other methods rotating over the sample so that each one meets 2D CNNs,
2D Transformers, hybrids and 3D models; two models run every method. The maps must
have the input's spatial shape, hold no NaN and not be constant.

Weights are random (seeded). A CAM is ReLU-clipped, so with random weights the map
of one class can legitimately be zero everywhere (every cell votes against it; the
zoo probe saw it too). A sample's map therefore has to vary for class 1 *or*, when
that one is all zero, for class 0. ``-m slow`` runs every method on every model.
"""

from __future__ import annotations

import pytest
import torch

from medcls.explain import METHODS, explain

# (name, spatial dims, input side, create kwargs, family as classified by the zoo, the
# method run besides Grad-CAM). The costly methods (Score-/Ablation-CAM, occlusion,
# SmoothGrad, integrated gradients) go to the cheapest models of each kind.
SAMPLE = [
    # 2D CNN
    ("timm:test_resnet", 2, 32, {}, "cnn", "scorecam"),
    ("timm:test_efficientnet", 2, 32, {}, "cnn", "ablationcam"),
    ("timm:test_convnext", 2, 32, {}, "cnn", "occlusion"),
    ("timm:test_efficientnet_gn", 2, 32, {}, "cnn", "smoothgrad"),
    ("timm:test_nfnet", 2, 32, {}, "cnn", "integrated-gradients"),
    ("timm:test_mambaout", 2, 32, {}, "cnn", "layercam"),  # channels-last features
    ("timm:resnet10t", 2, 32, {}, "cnn", "gradcam++"),
    ("timm:mobilenetv3_small_050", 2, 32, {}, "cnn", "xgradcam"),
    ("timm:ghostnet_050", 2, 32, {}, "cnn", "hirescam"),
    ("timm:mnasnet_small", 2, 32, {}, "cnn", "guided-backprop"),
    ("timm:convnext_atto", 2, 32, {}, "cnn", "eigencam"),
    ("timm:efficientnet_lite0", 2, 32, {}, "cnn", "gradients"),
    ("timm:mobileone_s0", 2, 32, {}, "cnn", "layercam"),
    ("timm:fastvit_t8", 2, 32, {}, "cnn", "eigencam"),
    # 2D Transformer
    ("timm:test_vit", 2, 32, {"img_size": 32}, "transformer", "scorecam"),
    ("timm:test_vit2", 2, 32, {"img_size": 32}, "transformer", "ablationcam"),
    ("timm:test_vit3", 2, 32, {"img_size": 32}, "transformer", "occlusion"),
    ("timm:test_vit4", 2, 32, {"img_size": 32}, "transformer", "smoothgrad"),
    ("timm:test_vit_relpos", 2, 32, {"img_size": 32}, "transformer", "integrated-gradients"),
    ("timm:vit_tiny_patch16_224", 2, 32, {"img_size": 32}, "transformer", "gradcam++"),
    # a distillation token and four register tokens before the patch tokens
    ("timm:deit_tiny_distilled_patch16_224", 2, 32, {"img_size": 32}, "transformer", "layercam"),
    ("timm:vit_small_patch14_reg4_dinov2", 2, 28, {"img_size": 28}, "transformer", "eigencam"),
    ("timm:eva02_tiny_patch14_224", 2, 28, {"img_size": 28}, "transformer", "hirescam"),
    (
        "timm:swin_tiny_patch4_window7_224",
        2,
        32,
        {"img_size": 32, "window_size": 2},
        "transformer",
        "xgradcam",
    ),
    ("timm:convit_tiny", 2, 32, {"img_size": 32}, "transformer", "guided-backprop"),
    # 2D hybrid
    ("timm:test_coatnet", 2, 32, {"img_size": 32}, "hybrid", "scorecam"),
    ("timm:test_maxvit", 2, 32, {"img_size": 32}, "hybrid", "occlusion"),
    ("timm:mobilevit_xxs", 2, 32, {}, "hybrid", "ablationcam"),
    ("timm:pvt_v2_b0", 2, 32, {}, "hybrid", "smoothgrad"),
    ("timm:edgenext_xx_small", 2, 32, {}, "hybrid", "integrated-gradients"),
    ("timm:efficientvit_b0", 2, 32, {}, "hybrid", "gradients"),
    ("timm:xcit_nano_12_p16_224", 2, 32, {"img_size": 32}, "hybrid", "hirescam"),
    ("timm:efficientformerv2_s0", 2, 32, {"img_size": 32}, "hybrid", "eigencam"),
    # 3D CNN
    ("timm3d:resnet10t", 3, 32, {}, "cnn", "layercam"),
    ("timm3d:mobilenetv2_035", 3, 32, {}, "cnn", "gradcam++"),
    ("timm3d:mnasnet_small", 3, 16, {}, "cnn", "guided-backprop"),
    ("timm3d:tinynet_e", 3, 32, {}, "cnn", "xgradcam"),
    ("timm3d:convnext_atto", 3, 32, {}, "cnn", "hirescam"),
    ("monai:resnet10", 3, 16, {}, "cnn", "occlusion"),
    (
        "monai:densenet121",
        3,
        32,
        {"block_config": (2, 2, 2, 2), "growth_rate": 8, "init_features": 16},
        "cnn",
        "gradients",
    ),
    # 3D hybrid
    ("timm3d:coatnet_nano_rw_224", 3, 32, {"img_size": 32}, "hybrid", "gradients"),
    ("timm3d:coatnet_pico_rw_224", 3, 32, {"img_size": 32}, "hybrid", "eigencam"),
]

OTHERS = [m for m in METHODS if m != "gradcam"]
# cheap settings: tiny inputs, few channels / samples / steps
CHEAP = {
    "scorecam": {"max_channels": 8},
    "ablationcam": {},
    "smoothgrad": {"samples": 4},
    "integrated-gradients": {"steps": 4},
    "occlusion": {"window": 8},
}
# every method on a 2D Transformer and a 3D CNN
EVERY_METHOD = ("timm:test_vit", "timm3d:mnasnet_small")
PLAN = [(entry[:5], entry[5]) for entry in SAMPLE]


def _model_and_input(entry):
    from medcls.models import create_model

    name, dims, size, kwargs, _ = entry
    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=2, spatial_dims=dims, **kwargs).eval()
    x = torch.rand(2, 1, *(size,) * dims, generator=torch.Generator().manual_seed(1))
    return model, x


def _spread(model, x, method, target, label, options):
    result = explain(model, x, method, target=target, **options)
    m = result.maps["image"]
    assert tuple(m.shape) == (x.shape[0], *x.shape[2:]), label
    assert not torch.isnan(m).any(), label
    return m.flatten(1).std(dim=1), result


def _check(model, x, method, label, ablation_channels=None):
    """Shape, no NaN, and a map that varies (for class 1, else for class 0)."""
    options = dict(CHEAP.get(method, {}))
    if method == "ablationcam" and ablation_channels:
        options["max_channels"] = ablation_channels
    spread, result = _spread(model, x, method, 1, label, options)
    if not bool((spread > 1e-4).all()):
        other, _ = _spread(model, x, method, 0, label, options)
        spread = torch.maximum(spread, other)
    assert bool((spread > 1e-4).all()), (
        f"{label}: constant map for both classes ({spread.tolist()})"
    )
    return result


def test_sample_spreads_over_dims_and_families():
    assert len(SAMPLE) >= 40
    assert len({e[0] for e in SAMPLE}) == len(SAMPLE)
    cells = {(dims, family) for _, dims, _, _, family, _ in SAMPLE}
    assert {(2, "cnn"), (2, "transformer"), (2, "hybrid"), (3, "cnn"), (3, "hybrid")} <= cells
    covered: dict[str, set] = {}
    for (_, dims, _, _, family), method in PLAN:
        covered.setdefault(method, set()).add((dims, family))
    # every method besides Grad-CAM meets at least two kinds of model ...
    assert all(len(covered.get(m, ())) >= 2 for m in OTHERS), covered
    # ... and all of them run on a 2D Transformer and a 3D CNN in EVERY_METHOD
    kinds = {(e[1], e[4]) for e in SAMPLE if e[0] in EVERY_METHOD}
    assert kinds == {(2, "transformer"), (3, "cnn")}


@pytest.mark.parametrize(("entry", "method"), PLAN, ids=[f"{e[0]}+{m}" for e, m in PLAN])
def test_gradcam_and_one_more_method(entry, method):
    model, x = _model_and_input(entry)
    cam = _check(model, x, "gradcam", f"{entry[0]} gradcam")
    assert cam.layers, "a default layer was chosen"
    _check(model, x, method, f"{entry[0]} {method}")


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_every_method_on_one_model(name):
    entry = next(e[:5] for e in SAMPLE if e[0] == name)
    model, x = _model_and_input(entry)
    # a 2D ViT has few channels: ablate them all (with only 8 of them, every ablated
    # channel can vote against both classes for one of the random samples)
    channels = 8 if entry[1] == 3 else None
    for method in METHODS:
        _check(model, x, method, f"{name} {method}", ablation_channels=channels)


@pytest.mark.slow
@pytest.mark.parametrize("entry", [e[:5] for e in SAMPLE], ids=[e[0] for e in SAMPLE])
def test_every_method_on_every_sampled_model(entry):
    model, x = _model_and_input(entry)
    for method in METHODS:
        _check(model, x, method, f"{entry[0]} {method}")


@pytest.mark.slow
def test_gradcam_on_the_whole_zoo():
    """``make zoo-check``: Grad-CAM on every registered model at a small input size.

    A model that cannot be built or run at any size is a zoo problem and is only
    counted; an explanation that fails, has the wrong shape or holds NaN fails the test.
    Random-weight maps may be all zero (ReLU-clipped) and are counted, not failed.
    """
    from medcls.errors import MedclsError
    from medcls.models import create_model, list_models

    failures, unbuildable, zero = [], [], []
    for name in list_models():
        dims = 2 if name.startswith("timm:") else 3
        try:
            torch.manual_seed(0)
            spatial_dims = dims if name.startswith(("timm:", "timm3d:", "monai:")) else None
            model = create_model(name, in_chans=1, num_classes=2, spatial_dims=spatial_dims)
            model = model.eval()
        except (MedclsError, RuntimeError, TypeError, ValueError) as exc:
            unbuildable.append((name, str(exc)[:80]))
            continue
        dims = int(model.spatial_dims)
        sizes = [(64,) * dims if dims == 2 else (32,) * dims, tuple(model.model_cfg.input_size[1:])]
        x = None
        for size in sizes:
            candidate = torch.rand(1, 1, *size)
            try:
                with torch.no_grad():
                    model(candidate)
            except Exception:  # fixed-size models: try their own size
                continue
            x = candidate
            break
        if x is None:
            unbuildable.append((name, "forward fails at every size"))
            continue
        try:
            result = explain(model, x, "gradcam")
        except Exception as exc:
            failures.append((name, f"{type(exc).__name__}: {str(exc)[:120]}"))
            continue
        m = result.maps["image"]
        if tuple(m.shape) != (1, *x.shape[2:]) or torch.isnan(m).any():
            failures.append((name, f"map shape {tuple(m.shape)} / NaN"))
        elif float(m.std()) == 0.0:
            zero.append(name)
    print(f"zoo: {len(failures)} failures, {len(unbuildable)} not buildable, {len(zero)} zero maps")
    assert not failures, failures[:20]
