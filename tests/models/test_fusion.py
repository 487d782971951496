"""Multimodal fusion wrappers: shapes, gradients, contract, errors, explain, engine runs."""

from __future__ import annotations

import json

import pytest
import torch

from medcls.config import load_config
from medcls.errors import ConfigError, ModelError
from medcls.explain import explain
from medcls.models import check_contract, create_fusion_model
from medcls.models.fusion import (
    CrossAttentionFusion,
    EarlyFusion,
    LateFusion,
    feature_layout,
    from_tokens,
    to_tokens,
)

MODES = ("early", "late", "cross_attention")
# a 0.9 M-parameter 3D ResNet without depthwise convolutions (slow on CPUs), at 16^3
TINY_3D = "monai:resnet10"
TINY_3D_KWARGS = {"widen_factor": 0.25, "conv1_t_size": 3, "conv1_t_stride": 2}


def _batch(dims: int, size: int, batch: int = 2, chans: dict | None = None) -> dict:
    torch.manual_seed(0)
    chans = chans or {"ct": 1, "pet": 1}
    return {m: torch.randn(batch, c, *(size,) * dims) for m, c in chans.items()}


def _concat(x: dict) -> torch.Tensor:
    return torch.cat(list(x.values()), dim=1)


@pytest.fixture(scope="module")
def models_3d() -> dict:
    torch.manual_seed(0)
    return {
        mode: create_fusion_model(
            TINY_3D,
            modalities=["ct", "pet"],
            fusion=mode,
            num_classes=3,
            spatial_dims=3,
            **TINY_3D_KWARGS,
        )
        for mode in MODES
    }


# ---------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("mode", MODES)
def test_3d_shapes_contract_and_gradients_reach_every_branch(models_3d, mode):
    model = models_3d[mode].train()
    x = _batch(3, 16)
    check_contract(model, _concat(x))
    assert model.modalities == ("ct", "pet") and model.fusion == mode
    assert model.spatial_dims == 3 and model.in_chans == 2
    out = model(x)
    assert out.shape == (2, 3)
    model.zero_grad()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    if mode == "early":
        assert isinstance(model, EarlyFusion) and not hasattr(model, "cam_layers")
        assert model.cam_layer.module.startswith("backbone.")
    else:
        for m in ("ct", "pet"):
            grads = [p.grad.abs().sum() for p in model.branches[m].parameters()]
            assert float(sum(grads)) > 0, m
        assert set(model.cam_layers) == {"ct", "pet"}
        assert model.cam_layers["pet"].module.startswith("branches.pet.")
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (2, model.num_features)


def test_late_and_cross_attention_differ_in_what_a_branch_sees(models_3d):
    """A late branch's pooled vector ignores the other modality; cross-attention's does not."""
    x = _batch(3, 16)
    y = {"ct": x["ct"], "pet": torch.randn_like(x["pet"])}
    for mode, depends in (("late", False), ("cross_attention", True)):
        model = models_3d[mode].eval()
        width = model.pooled_widths["ct"]
        with torch.no_grad():
            a = model.forward_head(model.forward_features(x), pre_logits=True)[:, :width]
            b = model.forward_head(model.forward_features(y), pre_logits=True)[:, :width]
        assert torch.allclose(a, b) is not depends, mode


@pytest.mark.parametrize(
    ("name", "size", "layout"),
    [
        ("timm:test_resnet", 64, "channels_first"),
        ("timm:test_vit", 32, "tokens"),
        ("timm:test_mambaout", 64, "channels_last"),
    ],
)
def test_2d_cross_attention_keeps_each_backbone_layout(name, size, layout):
    torch.manual_seed(0)
    model = create_fusion_model(
        name,
        modalities=["t1", "t2"],
        fusion="cross_attention",
        in_chans={"t1": 1, "t2": 2},
        num_classes=2,
    )
    x = _batch(2, size, chans={"t1": 1, "t2": 2})
    check_contract(model, _concat(x))
    feats = model.forward_features(x)
    raw = model.branch_features(x)
    for m in ("t1", "t2"):
        assert feature_layout(model.branches[m], raw[m]) == layout
        assert feats[m].shape == raw[m].shape
    model(x).sum().backward()
    assert model.attn["t1"].q.weight.grad is not None


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((2, 8, 3, 4), "channels_first"), ((2, 3, 4, 2, 8), "channels_last"), ((2, 5, 8), "tokens")],
)
def test_tokens_round_trip(shape, layout):
    x = torch.randn(shape)
    tokens = to_tokens(x, layout)
    assert tokens.ndim == 3 and tokens.shape[-1] == 8
    assert torch.equal(from_tokens(tokens, layout, x), x)


def test_reset_classifier_and_model_cfg(models_3d):
    model = create_fusion_model(
        "timm:test_resnet", modalities=["a", "b", "c"], fusion="late", num_classes=4
    )
    assert isinstance(model, LateFusion) and model.model_cfg.input_size[0] == 3
    assert len(model.model_cfg.mean) == 3 and model.model_cfg.classifier == ("head.fc",)
    model.reset_classifier(5)
    assert model(_batch(2, 32, chans={"a": 1, "b": 1, "c": 1})).shape == (2, 5)
    model.reset_classifier(0)
    assert model(_batch(2, 32, chans={"a": 1, "b": 1, "c": 1})).shape == (2, model.num_features)
    early = models_3d["early"]
    assert early.model_cfg.first_conv.startswith("backbone.")
    assert isinstance(models_3d["cross_attention"], CrossAttentionFusion)


# --------------------------------------------------------------------------- errors


def test_input_errors_name_the_modality(models_3d):
    model = models_3d["late"]
    x = _batch(3, 16)
    with pytest.raises(ModelError, match=r"'pet' is missing.*\['ct', 'pet'\]"):
        model({"ct": x["ct"]})
    with pytest.raises(ModelError, match=r"unexpected input modality 'mri'.*\['ct', 'pet'\]"):
        model({**x, "mri": x["ct"]})
    with pytest.raises(ModelError, match=r"modality 'pet' has shape"):
        model({"ct": x["ct"], "pet": torch.cat([x["pet"]] * 2, dim=1)})
    with pytest.raises(ModelError, match=r"\(B, 2, \*spatial\)"):
        model(x["ct"])


def test_construction_errors():
    with pytest.raises(ModelError, match="unknown fusion mode"):
        create_fusion_model("timm:test_resnet", modalities=["a", "b"], fusion="mid", num_classes=2)
    with pytest.raises(ModelError, match="at least two modalities"):
        create_fusion_model("timm:test_resnet", modalities=["a"], fusion="late", num_classes=2)
    with pytest.raises(ModelError, match="repeats"):
        create_fusion_model("timm:test_resnet", modalities=["a", "a"], fusion="late", num_classes=2)
    with pytest.raises(ModelError, match="differ from modalities"):
        create_fusion_model(
            "timm:test_resnet", modalities=["a", "b"], fusion="late", in_chans={"a": 1},
            num_classes=2,
        )  # fmt: skip
    with pytest.raises(ModelError, match="num_heads=5 must divide"):
        create_fusion_model(
            "timm:test_resnet", modalities=["a", "b"], fusion="cross_attention", num_classes=2,
            fusion_heads=5,
        )  # fmt: skip
    with pytest.raises(ModelError, match="fusion_heads applies to fusion='cross_attention'"):
        create_fusion_model(
            "timm:test_resnet", modalities=["a", "b"], fusion="late", num_classes=2,
            fusion_heads=2,
        )  # fmt: skip
    plain = create_fusion_model(
        "timm:test_resnet", modalities=["a", "b"], fusion="none", num_classes=2
    )
    assert plain.in_chans == 2 and not hasattr(plain, "modalities")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.fusion=late", "data.modalities=[ct]"], "model.fusion: 'late' fuses several"),
        (["model.fusion=middle"], "model.fusion: expected one of"),
    ],
)
def test_config_rejects_bad_fusion(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, overrides)
    assert load_config(None, ["model.fusion=late", "data.modalities=[ct, pet]"]).model.fusion == (
        "late"
    )


# -------------------------------------------------------------------------- explain


@pytest.mark.parametrize("mode", ["late", "cross_attention"])
def test_gradcam_gives_one_map_per_modality_from_its_branch(models_3d, mode):
    model = models_3d[mode]
    x = _batch(3, 16)
    result = explain(model, x, "gradcam")
    assert result.modalities == ["ct", "pet"] and not result.shared
    for m in ("ct", "pet"):
        assert result.maps[m].shape == (2, 16, 16, 16)
    assert {layer.split(".")[1] for layer in result.layers} == {"ct", "pet"}
    # 16^3 leaves the contract's layer one cell: each branch moved to a finer stage
    assert all(
        layer not in {c.module for c in model.cam_layers.values()} for layer in result.layers
    )


def test_gradcam_on_early_fusion_is_shared(models_3d):
    result = explain(models_3d["early"], _batch(3, 16), "gradcam")
    assert result.shared and result.modalities == ["ct", "pet"]


# --------------------------------------------------------------------------- engine


def _petct_overrides(run_dir, mode: str) -> list[str]:
    return [
        "data.source=demo-petct3d",
        "data.demo.num_cases=24",
        "data.demo.size=16",
        "data.modalities=[ct, pet]",
        "data.classes=[benign, malignant]",
        "data.batch_size=8",
        "preprocess.spatial_size=[16, 16, 16]",
        "preprocess.intensity={ct: {mode: range, a_min: -1000, a_max: 400}, "
        "pet: {mode: range, a_min: 0, a_max: 15}}",
        f"model.name={TINY_3D}",
        "model.kwargs={" + ", ".join(f"{k}: {v}" for k, v in TINY_3D_KWARGS.items()) + "}",
        f"model.fusion={mode}",
        "trainer.max_epochs=1",
        "trainer.progress=false",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        f"run_dir={run_dir}",
    ]


@pytest.mark.parametrize("mode", MODES)
def test_engine_trains_saves_and_reloads_each_mode(tmp_path, mode):
    from medcls.engine.api import load_run_model, predict, train
    from medcls.explain.pipeline import load_explain_model

    result = train(None, _petct_overrides(tmp_path / mode, mode))
    run = result.run_dir
    for name in ("metrics.json", "checkpoints/best.safetensors", "predictions_test.csv"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "checkpoints" / "best.json").read_text())
    assert meta["model"]["fusion"] == mode
    assert meta["model"]["modality_chans"] == {"ct": 1, "pet": 1}
    model, _ = load_run_model(run)
    assert model.fusion == mode and model.modalities == ("ct", "pet")
    assert load_explain_model(run).model.fusion == mode  # `medcls explain RUN_DIR`
    if mode == "cross_attention":
        # predict from a manifest of the run's test cases (one column per modality)
        rows = (run / "predictions_test.csv").read_text().splitlines()
        assert len(rows) > 1
        from medcls.data.synthetic import demo_dataset

        manifest = demo_dataset("demo-petct3d", num_cases=24, size=16)
        out = predict(run, [manifest], output=tmp_path / "pred.csv")
        assert len(out.read_text().splitlines()) == 1 + 24


def test_num_heads_goes_to_the_backbone():
    """``num_heads`` is the backbone's argument; the fusion's heads are ``fusion_heads``."""
    model = create_fusion_model(
        "timm:vit_tiny_patch16_224", modalities=["a", "b"], fusion="cross_attention",
        num_classes=2, img_size=32, depth=1, num_heads=6, fusion_heads=4,
    )  # fmt: skip
    assert all(b.blocks[0].attn.num_heads == 6 for b in model.branches.values())
    assert model.num_heads == 4
