"""Drawing maps: overlays, NIfTI heatmaps, three-plane views, montages, paper figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medcls.errors import ConfigError, DataError
from medcls.explain.figures import classwise_maps, grid_figure, models_grid
from medcls.explain.render import (
    montage_figure,
    overlay,
    panel_figure,
    peak_index,
    save_figure,
    save_nifti,
    save_png,
    three_plane_figure,
)
from tests.explain.toy_models import blob_input, spot_model, token_model


def _png_ok(path, min_side=50):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side
        return np.asarray(im.convert("RGB"))


def test_overlay_colours_the_hot_region(tmp_path):
    image = np.full((20, 30), 100.0)
    heat = np.zeros((20, 30), dtype=np.float32)
    heat[5:8, 10:14] = 1.0
    rgb = overlay(image, heat, alpha=0.6)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert np.all(rgb[0, 0] == rgb[0, 0, 0])  # cold: grey
    assert rgb[6, 12].std() > 10  # hot: coloured
    path = save_png(rgb, tmp_path / "o.png")
    assert np.array_equal(np.asarray(Image.open(path)), rgb)
    with pytest.raises(DataError, match="differs from map shape"):
        overlay(image, heat[:10])


def test_nifti_keeps_grid_and_affine(tmp_path):
    import nibabel as nib

    heat = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    affine = np.array([[0.0, -2.0, 0, 10], [1.5, 0, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    path = save_nifti(heat, affine, tmp_path / "h.nii.gz")
    img = nib.load(str(path))
    assert img.shape == (6, 7, 8)
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(np.asarray(img.dataobj), heat)
    with pytest.raises(DataError, match="expected a 3D map"):
        save_nifti(heat[0], affine, tmp_path / "bad.nii.gz")


def test_peak_index():
    a = np.zeros((4, 5, 6))
    a[1, 3, 2] = 5
    assert peak_index(a) == (1, 3, 2)
    assert peak_index(torch.tensor([[0.0, 2.0], [1.0, 0.0]])) == (0, 1)


def test_3d_views_and_2d_panel(tmp_path):
    vol = np.random.default_rng(0).random((12, 10, 9))
    heat = np.zeros((12, 10, 9), dtype=np.float32)
    heat[8, 2, 4] = 1.0
    fig = three_plane_figure(vol, heat, spacing=(1.0, 1.0, 2.5))
    assert [ax.get_title() for ax in fig.axes[:3]] == ["i = 8", "j = 2", "k = 4"]
    _png_ok(save_figure(fig, tmp_path / "planes.png"))
    fig = montage_figure(vol, heat, slices=4, columns=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "k=4 (peak)" in titles and len(titles) <= 5
    _png_ok(save_figure(fig, tmp_path / "montage.png"))
    fig = panel_figure(vol[0], {"gradcam": heat[0], "gradients": heat[1]}, title="case")
    assert len(fig.axes) == 3
    _png_ok(save_figure(fig, tmp_path / "panel.png"))
    with pytest.raises(DataError, match="must be equal 3D shapes"):
        three_plane_figure(vol, heat[:5])


def test_grid_figure_rows_and_columns(tmp_path):
    images = [np.random.default_rng(i).random((16, 16)) for i in range(3)]
    maps = {"model A": [np.zeros((16, 16))] * 3, "model B": [np.ones((16, 16))] * 3}
    fig = grid_figure(images, maps, image_titles=["a", "b", "c"])
    assert len(fig.axes) == 9
    assert [fig.axes[i].get_title() for i in range(3)] == ["input", "model A", "model B"]
    with pytest.raises(ConfigError, match="has 1 maps for 3 images"):
        grid_figure(images, {"x": [np.zeros((16, 16))]})


@pytest.mark.parametrize("dims", [2, 3])
def test_models_grid_and_classwise_maps(tmp_path, dims):
    size = 24 if dims == 2 else 16
    centre = (6, 15) if dims == 2 else (4, 11, 7)
    x = torch.cat([blob_input(dims, size, centre)[0], blob_input(dims, size, centre[::-1])[0]])
    models = {"spot": spot_model(dims, size=size), "tokens": token_model(dims, size=size)}
    path = models_grid(models, x, "gradcam", tmp_path / "grid.png", target=1)
    rgb = _png_ok(path)
    assert rgb.shape[1] > rgb.shape[0]  # 3 columns, 2 rows
    path = classwise_maps(
        models["spot"], x[:1], "gradcam", tmp_path / "classes.png", classes=["no", "yes"]
    )
    _png_ok(path)
    with pytest.raises(ConfigError, match="batch of 1"):
        classwise_maps(models["spot"], x, "gradcam", tmp_path / "c2.png")
