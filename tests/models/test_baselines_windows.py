"""Native baselines (Swin, BEVT, PoolFormer, DSENet, RepLKNet, Next-ViT, NAT), 2D and 3D.

Registry-driven: every entrypoint of the modules below is built at its ``TINY`` size in
2D (32²) and 3D (16³) and checked for shapes, gradients, the model contract and
Grad-CAM through the automatic layer choice; full-size parameter counts are checked on
the ``meta`` device against the papers (2D, 1,000 classes) and the 3D-CConvFormer
paper's table (3D, 2 classes, ``in_chans=2``). Model-specific checks follow.
"""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.explain import explain
from medcls.models import check_contract, create_model, list_models
from medcls.models.baselines.nat import NeighborhoodAttention, neighborhood
from medcls.models.baselines.nextvit import NTB, make_divisible
from medcls.models.baselines.poolformer import PoolMixer
from medcls.models.baselines.replknet import LargeKernelConv
from medcls.models.baselines.swin import SwinBlock
from medcls.models.layers.windows import (
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from medcls.models.registry import get_entry

MODULES = {
    name: importlib.import_module(f"medcls.models.baselines.{name}")
    for name in ("swin", "poolformer", "dsenet", "replknet", "nextvit", "nat")
}
TINY = {entry: kwargs for module in MODULES.values() for entry, kwargs in module.TINY.items()}
MODULE_OF = {entry: module for module in MODULES.values() for entry in module.TINY}
SIZES = {2: 32, 3: 16}
FAMILIES = {
    "swin_s": "transformer",
    "bevt_b": "transformer",
    "poolformer_s24": "cnn",
    "dsenet": "cnn",
    "replknet_31b": "cnn",
    "nextvit_s": "hybrid",
    "nat_s": "hybrid",
}
# the original papers' 2D parameter counts (1,000 classes, 224², in_chans 3); DSENet
# has no paper of its own: its reference is DenseNet-121 (timm: 7,978,856), see dsenet.py
PAPER_2D = {
    "swin_s": 50e6,
    "bevt_b": 88e6,
    "poolformer_s24": 21e6,
    "replknet_31b": 79e6,
    "nextvit_s": 31.7e6,
    "nat_s": 51e6,
}
# the 3D-CConvFormer paper's table (3D, 2 classes); the two gaps above 20 % are
# explained in their modules' docstrings
TABLE_3D = {"swin_s": 48.751e6, "bevt_b": 86.628e6, "poolformer_s24": 31.687e6, "nextvit_s": 19.9e6}
DOCUMENTED_3D_GAP = {"poolformer_s24", "nextvit_s"}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _full_size_params(name: str, dims: int) -> int:
    in_chans, classes = (3, 1000) if dims == 2 else (2, 2)
    with torch.device("meta"):
        model = create_model(name, in_chans=in_chans, num_classes=classes, spatial_dims=dims)
    return _params(model)


def _tiny(name: str, dims: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, in_chans=1, num_classes=3, spatial_dims=dims, **TINY[name])


# ------------------------------------------------------------------------ registry


def test_every_entrypoint_is_registered_for_2d_and_3d():
    assert sorted(TINY) == sorted(FAMILIES)
    for name in TINY:
        entry = get_entry(name)
        assert entry.dims == (2, 3) and entry.family == FAMILIES[name], name
        assert entry.paper and "arXiv" in entry.paper, name
        assert entry.module == MODULE_OF[name].__name__
        assert list_models(name) == [name]  # no other source or paper model uses the name
        assert name in list_models(dims=3, source="medcls")


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_model_trains_follows_the_contract_and_explains(name, dims):
    model = _tiny(name, dims)
    x = torch.randn(2, 1, *(SIZES[dims],) * dims)
    model.train()
    out = model(x)
    assert out.shape == (2, 3)
    out.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not no_grad, no_grad
    features = model.forward_features(x)
    assert features.shape[:2] == (2, model.num_features) and features.ndim == dims + 2
    check_contract(model, x)
    names = dict(model.named_modules())
    assert model.cam_layer.module in names
    assert all(stage.module in names for stage in model.feature_stages)
    # the inference form (folded norms, fused kernels) computes the same function
    model.eval()
    with torch.no_grad():
        before = model(x)
        torch.testing.assert_close(model.reparameterize()(x), before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_model_gradcam_through_the_automatic_layer_choice(name, dims):
    model = _tiny(name, dims).eval()
    x = torch.randn(2, 1, *(SIZES[dims],) * dims)
    # with random weights the ReLU may clip one class's map to zero: every sample needs a
    # non-constant map for some class
    varies = torch.zeros(2, dtype=torch.bool)
    for target in range(3):
        result = explain(model, x, "gradcam", target=target)
        maps = result.map()
        assert maps.shape == (2, *x.shape[2:]) and torch.isfinite(maps).all()
        varies |= maps.flatten(1).std(dim=1) > 1e-3
    assert varies.all(), f"{name} {dims}D: Grad-CAM maps are constant"


# ------------------------------------------------------------------------ sizes


@pytest.mark.parametrize("name", sorted(PAPER_2D))
def test_2d_parameter_count_matches_the_paper(name):
    params = _full_size_params(name, 2)
    assert abs(params / PAPER_2D[name] - 1) <= 0.03, (name, params)
    assert f"{params / 1e6:.3f} M" in MODULE_OF[name].__doc__  # the docstring table is true


@pytest.mark.parametrize("name", sorted(TINY))
def test_3d_parameter_count_against_the_table(name):
    params = _full_size_params(name, 3)
    assert f"{params / 1e6:.3f} M" in MODULE_OF[name].__doc__
    if name in TABLE_3D and name not in DOCUMENTED_3D_GAP:
        assert abs(params / TABLE_3D[name] - 1) <= 0.20, (name, params)
    elif name in TABLE_3D:
        assert f"{TABLE_3D[name] / 1e6:.3f} M" in MODULE_OF[name].__doc__


def test_2d_counts_equal_timm_where_it_has_the_architecture():
    """Exact counts of timm's models (measured once, timm 1.0): a check of the layout."""
    timm_counts = {
        "swin_s": 49_606_258,  # swin_small_patch4_window7_224
        "bevt_b": 87_768_224,  # swin_base_patch4_window7_224 (2D Video Swin-B)
        "poolformer_s24": 21_388_968,
        "nextvit_s": 31_763_368,  # nextvit_small
    }
    for name, count in timm_counts.items():
        assert _full_size_params(name, 2) == count, name


def test_dsenet_is_densenet121_plus_squeeze_excitation():
    params = _full_size_params("dsenet", 2)
    assert abs(params / 7_978_856 - 1) <= 0.05  # timm densenet121
    with torch.device("meta"):
        model = create_model("dsenet", in_chans=3, num_classes=1000)
    assert [s.num_chs for s in model.feature_stages] == [256, 512, 1024, 1024]
    assert [s.reduction for s in model.feature_stages] == [4, 8, 16, 32]


# ------------------------------------------------------------------------ Swin / BEVT


@pytest.mark.parametrize(("grid", "window"), [((6, 9), (3, 3)), ((4, 6, 2), (2, 3, 2))])
def test_window_partition_round_trip(grid, window):
    x = torch.randn(2, *grid, 5)
    windows = window_partition(x, window)
    assert windows.shape == (
        2,
        math.prod(g // w for g, w in zip(grid, window)),
        math.prod(window),
        5,
    )
    # the first window holds the grid's first w_1 x ... x w_n corner, row-major
    corner = x[(slice(None), *(slice(0, w) for w in window))].reshape(2, -1, 5)
    torch.testing.assert_close(windows[:, 0], corner)
    torch.testing.assert_close(window_reverse(windows, window, grid), x)


def test_relative_position_index_counts_offsets_per_axis():
    index = relative_position_index((2, 3))
    assert index.shape == (6, 6) and int(index.max()) == 3 * 5 - 1
    # token (0, 0) vs (1, 2): offset (-1, -2) -> row (-1 + 1) * 5 + (-2 + 2) = 0
    assert index[0, 5] == 0 and index[5, 0] == 3 * 5 - 1 and index[0, 0] == 1 * 5 + 2
    # a window clamped to (1, 2) reads the central entries of the (2, 3) table
    small = relative_position_index((1, 2), (2, 3))
    assert small.tolist() == [[7, 6], [8, 7]]


def _groups(size: int, window: int, shift: int) -> list[int]:
    """Windows along one axis in original coordinates, written from the paper's picture."""
    if shift == 0:
        return [x // window for x in range(size)]
    return [-1 if x < shift else (x - shift) // window for x in range(size)]


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize(
    ("grid", "window"), [((5, 7), (3, 3)), ((3, 5, 4), (2, 3, 3))], ids=["2d", "3d"]
)
def test_swin_block_mixes_exactly_the_tokens_of_one_window(grid, window, shifted):
    """Perturb one token: the outputs that change are its (shifted) window's, never padding's.

    Both grids need padding (to 6 x 9 and 4 x 6 x 6); the expected windows come from
    the definition (boundaries at ``s, s + w, ...`` when shifted), not from the mask code.
    """
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window, shifted).eval()
    shift = [w // 2 if shifted else 0 for w in window]
    groups = [_groups(g, w, s) for g, w, s in zip(grid, window, shift)]
    x = torch.randn(1, *grid, 8)
    with torch.no_grad():
        base = block(x)
        for p in itertools.product(*(range(g) for g in grid)):
            moved = x.clone()
            moved[(0, *p)] += torch.randn(8)  # not a constant: layer norm would remove it
            changed = (block(moved) - base).abs().amax(-1)[0] > 1e-6
            expected = torch.zeros(grid, dtype=torch.bool)
            for q in itertools.product(*(range(g) for g in grid)):
                expected[q] = all(g[a] == g[b] for g, a, b in zip(groups, p, q))
            assert torch.equal(changed, expected), p


def test_shift_mask_is_none_without_shift_or_padding():
    assert shifted_window_mask((6, 6), (6, 6), (3, 3), (0, 0)) is None
    mask = shifted_window_mask((5, 6), (6, 6), (3, 3), (0, 0))
    assert mask.shape == (4, 9, 9) and (mask[0] == 0).all()  # the first window has no padding
    assert (mask[2][:6, 6:] < 0).all() and (mask[2][:6, :6] == 0).all()  # last row is padding


def test_swin_window_attention_windows_larger_than_the_grid_use_the_table_centre():
    attn = WindowAttention(8, 2, (7, 7))
    bias = attn.position_bias((2, 2))
    table = attn.relative_position_bias_table
    assert bias.shape == (2, 4, 4)
    torch.testing.assert_close(bias[:, 0, 0], table[6 * 13 + 6])  # zero offset
    torch.testing.assert_close(bias[:, 0, 3], table[5 * 13 + 5])  # offset (-1, -1)


def test_bevt_3d_uses_video_swin_patch_and_spatial_merging():
    model = create_model("bevt_b", in_chans=1, num_classes=2, spatial_dims=3, **TINY["bevt_b"])
    x = torch.randn(1, 1, 16, 16, 16)
    assert model.stem(x).shape == (1, 16, 8, 4, 4)  # patch 2 x 4 x 4
    assert model.forward_features(x).shape == (1, 32, 8, 2, 2)  # merging 1 x 2 x 2
    swin = create_model("swin_s", in_chans=1, num_classes=2, spatial_dims=3, **TINY["swin_s"])
    assert swin.forward_features(x).shape == (1, 32, 2, 2, 2)  # isotropic


def test_swin_rejects_bad_settings():
    with pytest.raises(ModelError, match="window_size"):
        create_model("swin_s", in_chans=1, num_classes=2, window_size=(7, 7, 7))
    with pytest.raises(ModelError, match=">= 1"):
        create_model("swin_s", in_chans=1, num_classes=2, window_size=0)
    with pytest.raises(ModelError, match="num_heads"):
        create_model("bevt_b", in_chans=1, num_classes=2, depths=(2, 2), num_heads=(2,))
    with pytest.raises(ModelError, match="spatial_dims"):
        create_model("swin_s", in_chans=1, num_classes=2, spatial_dims=4)


# ------------------------------------------------------------------------ PoolFormer


def test_pool_mixer_ignores_padding_and_takes_tiny_3d_grids():
    x = torch.randn(2, 3, 5, 6)
    expected = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x
    torch.testing.assert_close(PoolMixer(2)(x), expected)
    v = torch.randn(1, 2, 4, 3, 5)
    expected = F.avg_pool3d(v, 3, 1, 1, count_include_pad=False) - v
    torch.testing.assert_close(PoolMixer(3)(v), expected)
    single = torch.randn(1, 2, 1, 1, 1)  # avg_pool3d itself rejects maps below its kernel
    torch.testing.assert_close(PoolMixer(3)(single), torch.zeros_like(single))
    with pytest.raises(ModelError, match="odd"):
        PoolMixer(2, pool_size=2)


# ------------------------------------------------------------------------ RepLKNet


@pytest.mark.parametrize("dims", [2, 3])
def test_replknet_fused_form_equals_the_training_form(dims):
    model = _tiny("replknet_31b", dims)
    x = torch.randn(2, 1, *(SIZES[dims],) * dims)
    with torch.no_grad():  # running statistics and affine parameters far from identity
        for _ in range(3):
            model(3 * torch.randn_like(x) + 1)
        for norm in model.modules():
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                nn.init.uniform_(norm.weight, 0.5, 1.5)
                nn.init.uniform_(norm.bias, -0.3, 0.3)
    model.eval()
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 1  # only the final norm (nothing in front of it to fold into)
    lk = [m for m in model.modules() if isinstance(m, LargeKernelConv)]
    assert lk and all(m.small_conv is None for m in lk)


def test_replknet_kernels_per_dims_and_errors():
    with torch.device("meta"):
        model_2d = create_model("replknet_31b", in_chans=1, num_classes=2, spatial_dims=2)
        model_3d = create_model("replknet_31b", in_chans=1, num_classes=2, spatial_dims=3)
    for model, expected in ((model_2d, {31, 29, 27, 13}), (model_3d, {9, 7, 3})):
        lk = [m for m in model.modules() if isinstance(m, LargeKernelConv)]
        assert {m.lkb_origin.conv.kernel_size[0] for m in lk} == expected
    with pytest.raises(ModelError, match="exceeds"):
        LargeKernelConv(2, 4, 3, 5)
    with pytest.raises(ModelError, match="odd"):
        LargeKernelConv(2, 4, 4, 3)


# ------------------------------------------------------------------------ Next-ViT


def test_nextvit_hybrid_strategy_and_channel_split():
    assert make_divisible(192, 32) == 192 and make_divisible(768 * 0.75, 32) == 576
    block = NTB(2, 192, 256, stride=2, sr_ratio=4)
    assert (block.mhsa_chans, block.mhca_chans) == (192, 64)  # 3/4 attention, 1/4 conv
    assert block(torch.randn(1, 192, 16, 16)).shape == (1, 256, 8, 8)
    with torch.device("meta"):
        model = create_model("nextvit_s", in_chans=3, num_classes=1000)
    kinds = [[type(b).__name__ for b in stage] for stage in model.stages]
    assert kinds == [
        ["NCB"] * 3,
        ["NCB"] * 3 + ["NTB"],
        (["NCB"] * 4 + ["NTB"]) * 2,
        ["NCB"] * 2 + ["NTB"],
    ]
    assert model.num_features == 1024


# ------------------------------------------------------------------------ NAT


def test_neighborhood_indices_clamp_at_the_borders():
    index, offset = neighborhood(6, 3)
    assert index.tolist() == [[0, 1, 2], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [3, 4, 5]]
    assert offset[0].tolist() == [2, 3, 4] and offset[-1].tolist() == [0, 1, 2]
    index, offset = neighborhood(2, 5)  # shorter than the kernel: the whole axis
    assert index.tolist() == [[0, 1], [0, 1]] and offset.tolist() == [[4, 5], [3, 4]]


def _reference_neighborhood_attention(attn: NeighborhoodAttention, x: torch.Tensor) -> torch.Tensor:
    """Neighbourhood attention written with loops from the paper's definition."""
    _, *grid, dim = x.shape
    heads, kernel = attn.num_heads, attn.kernel_size
    q, key, v = attn.qkv(x[0]).reshape(*grid, 3, heads, dim // heads).unbind(-3)
    out = torch.zeros(*grid, heads, dim // heads)
    for p in itertools.product(*(range(g) for g in grid)):
        ranges = []
        for c, g, k in zip(p, grid, kernel):
            width = min(k, g)
            start = min(max(c - k // 2, 0), g - width)
            ranges.append(range(start, start + width))
        near = list(itertools.product(*ranges))
        for h in range(heads):
            logits = torch.stack(
                [
                    q[p][h] @ key[j][h] * (dim // heads) ** -0.5
                    + attn.rpb[(h, *(b - a + k - 1 for a, b, k in zip(p, j, kernel)))]
                    for j in near
                ]
            )
            weights = logits.softmax(0)
            out[p][h] = sum(w * v[j][h] for w, j in zip(weights, near))
    return attn.proj(out.reshape(*grid, dim))[None]


@pytest.mark.parametrize(
    ("grid", "kernel"),
    [((5, 6), 3), ((2, 5), 3), ((6, 7), (3, 5)), ((3, 4, 5), 3)],
    ids=["2d", "2d-short-axis", "2d-per-axis-kernel", "3d"],
)
def test_neighborhood_attention_matches_the_definition(grid, kernel):
    torch.manual_seed(0)
    attn = NeighborhoodAttention(8, 2, kernel_size=kernel, spatial_dims=len(grid)).eval()
    x = torch.randn(1, *grid, 8)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _reference_neighborhood_attention(attn, x))


def test_neighborhood_attention_on_a_kernel_sized_grid_is_window_attention():
    """Grid side == kernel: every query sees the whole grid; Swin's code must agree."""
    torch.manual_seed(0)
    nat = NeighborhoodAttention(8, 2, kernel_size=3, spatial_dims=2).eval()
    swin = WindowAttention(8, 2, (3, 3)).eval()
    swin.load_state_dict(
        {**nat.state_dict(), "relative_position_bias_table": nat.rpb.flip(1, 2).flatten(1).T},
        strict=False,
    )
    x = torch.randn(2, 3, 3, 8)
    with torch.no_grad():
        expected = swin(x.reshape(2, 1, 9, 8), swin.position_bias((3, 3))).reshape(2, 3, 3, 8)
        torch.testing.assert_close(nat(x), expected)
    with pytest.raises(ModelError, match="odd"):
        NeighborhoodAttention(8, 2, kernel_size=4, spatial_dims=2)
