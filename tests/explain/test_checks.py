"""Checks of maps: pointing game, energy, deletion/insertion, randomisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from medcls.errors import ConfigError
from medcls.explain import explain
from medcls.explain.checks import (
    deletion_insertion,
    energy_in_mask,
    peak_on_border,
    pointing_game,
    randomization_check,
    randomized_copy,
    spearman,
    top_overlap,
)
from tests.explain.toy_models import blob_input, spot_model


def test_pointing_game_2d_and_3d():
    maps = torch.zeros(2, 8, 8)
    maps[0, 2, 3] = 1.0
    maps[1, 6, 6] = 1.0
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, 0, 1:4, 2:5] = 1
    assert pointing_game(maps, masks).tolist() == [True, False]
    assert pointing_game(maps, masks, tolerance=2).tolist() == [True, False]
    assert pointing_game(maps, masks, tolerance=3).tolist() == [True, True]
    vol = torch.zeros(1, 4, 5, 6)
    vol[0, 3, 1, 5] = 2.0
    mask = torch.zeros(1, 4, 5, 6)
    mask[0, 3, 1, 5] = 1
    assert pointing_game(vol, mask).tolist() == [True]
    assert pointing_game(vol, mask.flip(-1)).tolist() == [False]
    # a mask on another grid is resized (nearest) onto the map's grid
    big = torch.zeros(2, 1, 16, 16)
    big[:, 0, 2:8, 4:10] = 1
    assert pointing_game(maps, big).tolist() == [True, False]
    with pytest.raises(ConfigError, match="do not match"):
        pointing_game(maps, torch.zeros(3, 8, 8))


def test_peak_on_border_2d_and_3d():
    maps = torch.zeros(4, 32, 32)  # margin: 32 / 16 = 2 pixels from the outermost one
    maps[0, 2, 16] = 1.0  # on the border, off the lesion
    maps[1, 16, 16] = 1.0  # inside
    maps[2, 30, 30] = 1.0  # on the border, but inside the lesion
    maps[3, 0, 5] = maps[3, 16, 16] = 1.0  # two maxima, one inside: not only on the border
    masks = torch.zeros(4, 1, 32, 32)
    masks[2, 0, 28:, 28:] = 1
    assert peak_on_border(maps, masks).tolist() == [True, False, False, False]
    assert peak_on_border(maps).tolist() == [True, False, True, False]
    assert peak_on_border(maps, masks, margin=1).tolist() == [False, False, False, False]
    vol = torch.zeros(2, 48, 48, 48)
    vol[0, 20, 24, 44] = 1.0  # the last cell centre of a stride-4 layer: 3 from voxel 47
    vol[1, 20, 24, 43] = 1.0  # 4 from it: inside
    assert peak_on_border(vol).tolist() == [True, False]


def test_energy_in_mask():
    maps = torch.tensor(
        [[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]
    )
    masks = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]] * 3)
    torch.testing.assert_close(energy_in_mask(maps, masks), torch.tensor([1.0, 0.5, 0.0]))


def test_spearman_matches_scipy_including_ties():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 5, 7, generator=gen)
    b = a + 0.3 * torch.rand(3, 5, 7, generator=gen)
    b[1] = torch.round(b[1] * 3)  # ties
    ours = spearman(a, b)
    for i in range(3):
        expected = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert abs(float(ours[i]) - expected) < 1e-5
    assert float(spearman(a[:1], a[:1])[0]) == pytest.approx(1.0)
    assert float(spearman(a[:1], torch.ones(1, 5, 7))[0]) == 0.0  # constant: no ranking


@pytest.mark.parametrize("dims", [2, 3])
def test_deletion_and_insertion_favour_the_faithful_map(dims):
    size, centre = (24, (6, 15)) if dims == 2 else (16, (4, 11, 7))
    model = spot_model(dims, size=size)
    x, mask = blob_input(dims, size, centre, radius=3.0)
    good = mask[:, 0]
    bad = 1.0 - good
    maps = torch.cat([good, bad])
    curves = deletion_insertion(model, x.repeat(2, *(1,) * (dims + 1)), maps, [1, 1], steps=10)
    assert (
        curves.deletion.shape == (2, 11) and curves.fractions[0] == 0 and curves.fractions[-1] == 1
    )
    assert float(curves.deletion_auc[0]) < float(curves.deletion_auc[1])
    assert float(curves.insertion_auc[0]) > float(curves.insertion_auc[1])
    # nothing removed at step 0: the original probability
    p = torch.softmax(model(x), 1)[0, 1]
    assert float(curves.deletion[0, 0]) == pytest.approx(float(p), abs=1e-5)
    with pytest.raises(ConfigError, match="do not fit"):
        deletion_insertion(model, x, maps, [1, 1])


def test_randomized_copy_changes_every_weight_and_leaves_the_model():
    from medcls.models import create_model

    torch.manual_seed(0)
    model = create_model("timm:test_vit", in_chans=1, num_classes=2, img_size=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = randomized_copy(model, seed=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    originals = dict(model.named_parameters())
    unchanged = [k for k, v in clone.named_parameters() if torch.equal(v, originals[k])]
    # only normalisation layers may come back as they were (ones and zeros)
    norms = {
        name
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d, torch.nn.GroupNorm))
    }
    assert all(k.rsplit(".", 1)[0] in norms for k in unchanged), unchanged
    assert len(unchanged) < len(originals) / 2
    again = randomized_copy(model, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(clone.parameters(), again.parameters()))


def test_top_overlap_counts_shared_salient_voxels_not_the_background():
    gen = torch.Generator().manual_seed(0)
    body = torch.zeros(1, 20, 20)
    body[:, 4:16, 4:16] = 1.0  # both maps are low outside the "body"
    a = body + 0.01 * torch.rand(1, 20, 20, generator=gen)
    b = body + 0.01 * torch.rand(1, 20, 20, generator=gen)
    a[0, 5, 5] = b[0, 14, 14] = 5.0  # each points somewhere else inside it
    assert float(spearman(a, b)[0]) > 0.5  # the whole-map rank correlation sees the body
    assert float(top_overlap(a, b, fraction=0.01)[0]) == 0.0  # the top voxels differ
    torch.testing.assert_close(top_overlap(a, a), torch.ones(1))
    ties = torch.zeros(1, 10, 10)  # a constant map: every voxel ties at the threshold
    torch.testing.assert_close(top_overlap(ties, ties), torch.ones(1))
    with pytest.raises(ValueError, match="fraction"):
        top_overlap(a, b, fraction=0.0)


def test_randomization_check_passes_for_gradcam_on_a_model_with_evidence():
    model = spot_model(2, size=24)
    xs = torch.cat([blob_input(2, 24, c)[0] for c in [(5, 6), (17, 12), (9, 19)]])
    result = randomization_check(model, xs, "gradcam", target=1)
    assert result.correlation.shape == (3,)
    assert result.passed and result.mean < 0.5
    assert result.overlap is not None and result.overlap.shape == (3,)
    assert float(result.overlap.max()) < 0.5  # the random model points elsewhere
    # the trained maps compared with themselves would not pass
    trained = explain(model, xs, "gradcam", target=1)
    assert float(spearman(trained.maps["image"], trained.maps["image"]).mean()) > 0.99
    assert np.isfinite(result.mean)
