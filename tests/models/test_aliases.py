"""Aliases and the seed papers' tables: every table model builds by name, aliases resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from medcls.cli.main import main
from medcls.errors import ModelError
from medcls.models import create_model, is_model, list_models, model_info, register_model, registry
from medcls.models.paper_tables import (
    PAPERS,
    all_rows,
    count_model_params,
    get_paper,
    parse_figure,
    table_macs,
    table_params,
)
from medcls.models.registry import get_alias, list_aliases, register_alias

ROOT = Path(__file__).resolve().parents[2]

# one case per (registry name, dims, channels): the tables share many rows
CASES = sorted({(row.model, paper.spatial_dims, paper.input_size[0]) for paper, row in all_rows()})


def _build(name: str, **kwargs):
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except ModelError:  # timm_3d's ConvNeXt reads tensor values in its constructor
        return create_model(name, **kwargs)


@pytest.mark.parametrize(("name", "dims", "chans"), CASES, ids=lambda v: str(v))
def test_every_table_model_builds_in_its_dims(name, dims, chans):
    assert is_model(name)
    model = _build(name, in_chans=chans, num_classes=3, spatial_dims=dims)
    cfg = model.model_cfg
    assert model.spatial_dims == dims and cfg.spatial_dims == dims
    assert model.in_chans == chans and model.num_classes == 3
    if cfg.first_conv is None:  # T2T-ViT unfolds patches: no convolution to look at
        size = (1, chans, *cfg.input_size[1:])
        assert model(torch.zeros(size, device=next(model.parameters()).device)).shape == (1, 3)
    else:
        first = model.get_submodule(cfg.first_conv)
        modalities = getattr(model, "modalities", None)  # 3D paper models: a branch each
        per_branch = chans // len(modalities) if modalities else chans
        assert first.in_channels == (getattr(model, "modality_chans", None) or per_branch)
    out = [getattr(model.get_submodule(c), "out_features", None) for c in cfg.classifier]
    assert 3 in out, (cfg.classifier, out)


def test_aliases_resolve_to_their_targets():
    aliases = list_aliases()
    assert {a.name for a in aliases} >= {
        "efficientnet_b0",
        "mobilenetv3",
        "ghostnet",
        "deit_s",
        "xcit_s24_16",
        "convit",
        "mobilevit_s",
        "edgenext_s",
        "edgenext_b",
        "nextvit_b",
        "resnet101",
        "densenet121",
        "regnetx_032",
        "swin_b",
        "convnext_b",
        "vgg19",
        "poolformer_b",
        "seresnet101",
        "efficientnet_b4",
        "mobilenet",
        "resnet50_3d",
        "efficientnet_b3_3d",
        "convnext_s_3d",
    }
    for alias in aliases:
        assert ":" in alias.target and is_model(alias.target), alias
    assert get_alias("nextvit_b").target == "timm:nextvit_base"
    assert get_alias("resnet50_3d").target == "monai:resnet50"
    with torch.device("meta"):
        model = create_model("resnet50_3d", in_chans=2, num_classes=2)
    assert model.model_cfg.name == "monai:resnet50" and model.spatial_dims == 3


def test_alias_checks_spatial_dims():
    with pytest.raises(ModelError, match=r"resnet101 \(alias of timm:resnet101\).*2D"):
        create_model("resnet101", in_chans=1, num_classes=2, spatial_dims=3)
    with pytest.raises(ModelError, match="monai:resnet50"):
        model_info("resnet50_3d", spatial_dims=2)


def test_aliases_do_not_shadow_natives_and_are_not_counted_twice():
    natives = set(list_models(source="medcls"))
    names = {a.name for a in list_aliases()}
    assert not names & natives
    assert "nextvit_s" in natives and get_alias("nextvit_s") is None  # the native one
    assert not names & set(list_models())
    with_aliases = list_models(aliases=True)
    assert len(with_aliases) == len(list_models()) + len(names)
    assert list_models("resnet*", aliases=True, dims=3) == ["resnet50_3d"]
    assert list_models("timm:resnet101", aliases=True) == ["timm:resnet101"]


def test_register_alias_rejects_bad_aliases():
    with pytest.raises(ModelError, match="must not shadow"):
        register_alias("nextvit_s", "timm:nextvit_small", dims=(2,))
    with pytest.raises(ModelError, match="':'"):
        register_alias("timm:mine", "timm:resnet18", dims=(2,))
    with pytest.raises(ModelError, match="itself an alias"):
        register_alias("medcls_test_chain", "resnet101", dims=(2,))
    with pytest.raises(ModelError, match="already an alias of 'timm:resnet101'"):
        register_alias("resnet101", "timm:resnet101d", dims=(2,))
    with pytest.raises(ModelError, match="dims"):
        register_alias("medcls_test_dims", "timm:resnet18", dims=(4,))
    with pytest.raises(ModelError, match="already an alias"):
        register_model(lambda **kw: None, name="resnet101")
    assert "medcls_test_chain" not in registry._ALIASES


def test_model_info_and_unknown_names_know_aliases():
    info = model_info("convit")
    assert info["alias_of"] == "timm:convit_tiny" and info["dims"] == [2]
    assert info["name"] == "convit" and "ConViT" in info["note"]
    assert model_info("timm:resnet18")["alias_of"] is None
    with pytest.raises(ModelError, match="resnet50_3d"):
        create_model("resnet50_3", in_chans=1, num_classes=2)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2.53×10⁵", 2.53e5),
        ("4.48×10⁴", 4.48e4),
        ("1,096.09", 1096.09),
        ("46.203M", 46.203e6),
        ("417.090K", 417090.0),
        ("7.832G", 7.832e9),
        ("0.027", 0.027),
    ],
)
def test_parse_figure(text, value):
    assert parse_figure(text) == pytest.approx(value)


def test_parse_figure_rejects_other_forms():
    with pytest.raises(ModelError, match="table figure"):
        parse_figure("about 5 M")


def test_every_figure_parses_and_each_table_lists_its_paper_model():
    for paper in PAPERS.values():
        assert paper.model in [r.model for r in paper.rows], paper.key
        for row in paper.rows:
            assert table_params(paper, row) > 0
            assert (table_macs(paper, row) is None) == (paper.computation_column is None)


def test_unit_readings_reproduce_unambiguous_rows():
    # ResNet-101 at 3 channels, 2 classes: 42,504,258 parameters
    count = count_model_params("resnet101", in_chans=3, num_classes=2, spatial_dims=2)
    for key, factor in (("drltransformer", 4), ("madensenet", 8), ("ddsfnet", 8)):
        paper = get_paper(key)
        row = next(r for r in paper.rows if r.model == "resnet101")
        assert table_params(paper, row) == pytest.approx(count, rel=1e-4), key
        assert parse_figure(row.params) == pytest.approx(count * factor / 2**20, abs=0.005)
    paper = get_paper("ddsfnet")  # GFLOPs: ResNet-101 15.664 G = 2 x 7.83 G MACs
    assert table_macs(paper, paper.rows[1]) == pytest.approx(7.832e9)


def test_get_paper_accepts_printed_names():
    assert get_paper("DDSF-Net").key == "ddsfnet"
    assert get_paper("3D-CConvFormer").key == "cconvformer"
    assert get_paper("Light-3Dformer").key == "light3dformer"
    with pytest.raises(ModelError, match="ldtransformer, drltransformer"):
        get_paper("vit")


@pytest.fixture
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def test_cli_paper_lists_papers_and_prints_a_table(capsys, wide_console):
    assert main(["models", "--paper"]) == 0
    out = capsys.readouterr().out
    assert all(key in out for key in PAPERS)
    assert main(["models", "--paper", "light3dformer"]) == 0
    out = capsys.readouterr().out
    for expected in ("3D-ResNet50", "resnet50_3d -> monai:resnet50", "46.203M", "46.18M", "3D"):
        assert expected in out
    assert main(["models", "--paper", "nope"]) == 2
    assert "ddsfnet" in capsys.readouterr().err


def test_cli_aliases_and_show(capsys, wide_console):
    assert main(["models", "--aliases", "*_3d"]) == 0
    out = capsys.readouterr().out
    assert "resnet50_3d" in out and "timm3d:convnext_small" in out and "resnet101" not in out
    assert main(["models", "show", "resnet50_3d"]) == 0
    out = capsys.readouterr().out
    assert "alias of" in out and "monai:resnet50" in out
    assert main(["models", "resnet101", "--count"]) == 0
    assert capsys.readouterr().out.strip() == "0"  # aliases are not listed


def test_docs_block_matches_the_tables():
    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    block = text.split("<!-- paper-tables:start -->", 1)[1].split("<!-- paper-tables:end -->")[0]
    sections = re.split(r"^### `(\w+)`", block, flags=re.M)[1:]
    documented = dict(zip(sections[::2], sections[1::2], strict=True))
    assert list(documented) == list(PAPERS)
    for key, body in documented.items():
        rows = [line.split(" | ") for line in body.splitlines() if line.startswith("| ")][1:]
        names = [re.search(r"`([^`]+)`", cells[1]).group(1) for cells in rows]
        labels = [cells[0].lstrip("| ").strip("*") for cells in rows]
        assert names == [r.model for r in PAPERS[key].rows], key
        assert labels == [r.label for r in PAPERS[key].rows], key
