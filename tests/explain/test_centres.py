"""Cell centres of feature maps and the resize of CAMs onto them (2D and 3D)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcls.explain import explain
from medcls.explain.centres import CellCentres, CentreTracker, resize_to_input
from medcls.models.contract import attach_contract
from tests.explain.toy_models import (
    SpotNet,
    _cfg,
    blob_input,
    channels_last_model,
    spot_model,
)

CONV = {2: nn.Conv2d, 3: nn.Conv3d}


class StridedNet(SpotNet):
    """Two "same"-padded stride-2 convolutions (kernel 3, padding 1), like a ResNet stem.

    Positive weights: the features are a blurred, 4x downsampled copy of the input,
    and cell ``i`` is centred on input voxel ``4 i`` (not ``4 i + 1.5``, where a
    resize with ``align_corners=False`` puts it). Head and forward are SpotNet's.
    """

    def __init__(self, dims: int, width: int = 4):
        super().__init__(dims, width=width)
        self.stem = CONV[dims](1, width, 3, stride=2, padding=1)
        self.down = CONV[dims](width, width, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        with torch.no_grad():
            self.stem.weight.fill_(1.0 / 3**dims)
            self.stem.bias.fill_(-0.02)
            self.down.weight.fill_(1.0 / (3**dims * width))
            self.down.bias.zero_()


def strided_model(dims: int, size: int = 32) -> nn.Module:
    return attach_contract(StridedNet(dims), cfg=_cfg("strided", dims, 1, size), in_chans=1).eval()


def _peak(m: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(m.argmax(), m.shape))


def _centres_of(model, x, layer):
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _a, out: store.setdefault("out", out)
    )
    try:
        with CentreTracker() as tracker:
            tracker.register_input(x)
            model(x)
    finally:
        handle.remove()
    out = store["out"]
    return tracker.centres(out, tuple(range(2, out.ndim)))


@pytest.mark.parametrize("dims", [2, 3])
def test_cam_peak_is_on_the_evidence_of_same_padded_strided_convolutions(dims):
    # the evidence sits on cell centres (multiples of 4): with the cells put where
    # the convolutions centre them, the map peaks exactly on it; resized as if the
    # cells tiled the input (the old behaviour) the peak was 1-2 voxels off per axis
    size = 32
    model = strided_model(dims, size)
    centre = (8, 20, 12)[:dims]
    x, _mask = blob_input(dims, size, centre, radius=1.0)
    for upsample in ("linear", "bspline"):
        result = explain(model, x, "gradcam", target=1, layer="act2", upsample=upsample)
        assert _peak(result.maps["image"][0]) == centre, upsample


@pytest.mark.parametrize("dims", [2, 3])
def test_bspline_peak_can_lie_between_cell_centres(dims):
    # evidence half-way between two cell centres on the first axis: linear
    # interpolation keeps the peak on a centre, the B-spline moves it onto the blob
    size = 32
    model = strided_model(dims, size)
    centre = (18, 12, 20)[:dims]
    x, _ = blob_input(dims, size, centre, radius=1.0)
    linear = explain(model, x, "gradcam", target=1, layer="act2", upsample="linear")
    bspline = explain(model, x, "gradcam", target=1, layer="act2")
    assert _peak(linear.maps["image"][0])[0] in (16, 20)
    peak = _peak(bspline.maps["image"][0])
    assert all(abs(p - c) <= 1 for p, c in zip(peak, centre)), (peak, centre)


def test_tracker_measures_zoo_cnns():
    from medcls.models import create_model

    x2, x3 = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 32, 32, 32)
    resnet = create_model("timm:resnet18", in_chans=1, num_classes=2).eval()
    # stride-2 3x3 convolutions with padding 1 and a "same" max pool: cells at 8 i
    assert _centres_of(resnet, x2, "layer2") == CellCentres((8.0, 8.0), (0.0, 0.0))
    convnext = create_model("timm:convnext_atto", in_chans=1, num_classes=2).eval()
    # patchify stem and 2x2 downsampling: the cells tile the input
    assert _centres_of(convnext, x2, "stages.1") == CellCentres((8.0, 8.0), (3.5, 3.5))
    volume = create_model("timm3d:resnet10t", in_chans=1, num_classes=2).eval()
    assert _centres_of(volume, x3, "layer1") == CellCentres((4.0,) * 3, (0.0,) * 3)
    # ResNet-D: a stride-2 convolution (centre 8 i) plus an average-pooled shortcut
    # (centre 8 i + 2) are summed; the mean of the two is used
    assert _centres_of(volume, x3, "layer2") == CellCentres((8.0,) * 3, (1.0,) * 3)


def test_tracker_follows_padding_pooling_permutes_and_leaves_results_unchanged():
    x = torch.randn(2, 3, 16, 16)

    def net(t):
        t = F.pad(t, (1, 0, 2, 0))  # left 1 on W, top 2 on H
        t = F.conv2d(t, torch.ones(4, 3, 2, 2), stride=2)  # 2x2, centre at +0.5 cell
        t = F.max_pool2d(t, 3, 1, 1)
        t = t.permute(0, 2, 3, 1)  # channels last
        return torch.relu(t) + 1.0

    with CentreTracker() as tracker:
        tracker.register_input(x)
        out = net(x)
    assert torch.equal(out, net(x))
    # H: 2 i + 0.5 - 2, W: 2 i + 0.5 - 1
    assert tracker.centres(out, (1, 2)) == CellCentres((2.0, 2.0), (-1.5, -0.5))
    assert tracker.centres(out, (2, 3)) is None  # the channel axis has no grid
    flat = tracker.centres(out.reshape(2, -1), (1,))
    assert flat is None  # reshaped into tokens: unknown


@pytest.mark.parametrize("dims", [2, 3])
def test_toy_models_keep_their_centres(dims):
    size = 16
    x, _ = blob_input(dims, size, (5,) * dims)
    # SpotNet: 3x3 stride-1 conv, then a 2x2 stride-2 conv without padding
    assert _centres_of(spot_model(dims, size=size), x, "act2") == CellCentres(
        (2.0,) * dims, (0.5,) * dims
    )
    # channels-last output (a Swin layout): the grid is followed through movedim
    model = channels_last_model(dims, size=size)
    store = {}
    handle = model.norm.register_forward_hook(lambda _m, _a, out: store.setdefault("out", out))
    with CentreTracker() as tracker:
        tracker.register_input(x)
        model(x)
    handle.remove()
    grid_axes = tuple(range(1, dims + 1))
    assert tracker.centres(store["out"], grid_axes) == CellCentres((2.0,) * dims, (0.5,) * dims)


def test_resize_to_input():
    torch.manual_seed(0)
    for grid, size in (((5,), (9,)), ((3, 4), (6, 8)), ((2, 3, 4), (4, 6, 8))):
        maps = torch.rand(2, *grid)
        reference = F.interpolate(
            maps[:, None], size=size, mode=("linear", "bilinear", "trilinear")[len(grid) - 1]
        )[:, 0]
        torch.testing.assert_close(resize_to_input(maps, size, mode="linear"), reference)
        smooth = resize_to_input(maps, size)
        assert smooth.shape == (2, *size) and float(smooth.min()) >= 0.0
        # the B-spline's weights sum to one: a constant map stays constant
        flat = resize_to_input(torch.full((1, *grid), 0.7), size)
        torch.testing.assert_close(flat, torch.full((1, *size), 0.7))
    # one strong cell: the peak is on its centre; two equal neighbours: half-way
    impulse = torch.zeros(1, 8)
    impulse[0, 3] = 1.0
    centres = CellCentres((4.0,), (0.0,))
    assert int(resize_to_input(impulse, (32,), centres).argmax()) == 12
    pair = torch.zeros(1, 8)
    pair[0, 3:5] = 1.0
    smooth = resize_to_input(pair, (32,), centres)
    assert int(smooth.argmax()) in (13, 14, 15) and float(smooth[0, 14]) == float(smooth.max())
    with pytest.raises(ValueError, match="upsample"):
        resize_to_input(impulse, (32,), mode="cubic")
