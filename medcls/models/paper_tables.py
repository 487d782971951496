"""The seed papers' comparison tables as data: every row, its registry name and its figures.

Each of the six seed papers (``/work/shared/reference/seed-papers.md``) compares its
model with baselines in one table. :data:`PAPERS` holds, per paper (short keys
``ldtransformer``, ``drltransformer``, ``madensenet``, ``ddsfnet``, ``light3dformer``,
``cconvformer``), the table's rows in the printed order: the name as printed (without
the reference marker ``[n]``), the registry name that builds it (an alias of a zoo
model, :mod:`medcls.models.aliases`; a native baseline, :mod:`medcls.models.baselines`;
or the paper model), and the table's parameter and computation figures as printed.

Units. The columns are headed "parameters" / "computation", but the figures are not all
parameter counts and MACs. What each table's figures *seem* to be, read from the rows
whose model is unambiguous (the evidence, row by row, is the "matches" column of the
table in ``docs/models.md``, computed by ``benchmarks/paper_tables.py``):

- LDTransformer: parameters as a count (``2.53×10⁵``); computation as MACs.
- DRLTransformer: the column says "(M)", but the figures are the size of the weights in
  MiB at 4 bytes per parameter (ResNet101: 162.14 = 42,504,258 x 4 / 2^20); computation
  as MACs with a G/M suffix.
- MADenseNet and DDSF-Net: the size of the weights in MiB at 8 bytes per parameter
  (ResNet101: 324.28 = 42,504,258 x 8 / 2^20); DDSF-Net's computation is GFLOPs
  (2 x MACs: VGG19 39.294 G = 2 x 19.63 G MACs); MADenseNet's table has no computation.
- Light-3Dformer and 3D-CConvFormer: parameters as counts with a K/M suffix;
  Light-3Dformer's computation as MACs (G/M suffix); 3D-CConvFormer's table has none.

:func:`table_params` and :func:`table_macs` convert a printed figure with that reading
into a parameter count and MACs (:attr:`PaperTable.params_scale`,
:attr:`PaperTable.macs_scale`). Several rows match no reading (e.g. DRLTransformer's
DenseNet121, LDTransformer's DeiTS); the docs show them as they are.

Settings (assumed; no table states them all): the 2D tables at ``3x224x224`` with 2
classes (the models' counts match the tables' figures at 3 input channels where the
difference shows: ResNet101, EfficientNet-b4, RepLKNet-31B in DRLTransformer's table);
the 3D tables at ``2x64x64x64`` (PET + CT as two channels, 2 classes; the volume size
is not stated, 64³ is the size of the project's 3D presets and of the native
baselines' docstrings).

Example::

    from medcls.models.paper_tables import get_paper, paper_rows
    get_paper("cconvformer").rows[0].model      # 'resnet50_3d'
    paper_rows("drltransformer")[0]["params"]   # our count at 3x224², 2 classes
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medcls.errors import ModelError

__all__ = [
    "PAPERS",
    "PaperTable",
    "TableRow",
    "all_rows",
    "count_model_params",
    "get_paper",
    "model_source",
    "paper_rows",
    "parse_figure",
    "table_macs",
    "table_params",
]

_MIB = 2**20


@dataclass(frozen=True)
class TableRow:
    """One row of a paper's comparison table.

    Attributes:
        label: the model's name as printed (reference marker removed).
        model: the registry name that builds it.
        params: the parameter figure as printed.
        computation: the computation figure as printed (None: the table has none).
        note: what is known about the match between the row and ``model``.
    """

    label: str
    model: str
    params: str
    computation: str | None = None
    note: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class PaperTable:
    """A paper's comparison table and how to read it.

    Attributes:
        key: short key (``"ddsfnet"``).
        paper: the paper's model name and journal.
        table: the table's caption.
        model: the paper model's registry name.
        input_size: the input our figures are computed at, ``(C, *spatial)``.
        num_classes: classes of the task.
        params_column: the parameter column's header as printed.
        params_unit: what its figures seem to be.
        params_scale: parameters per unit of a printed figure (after its K/M/G suffix).
        computation_column: the computation column's header (None: no such column).
        computation_unit: what its figures seem to be.
        macs_scale: MACs per unit of a printed figure (after its K/M/G suffix).
        setting_note: what is assumed about channels, classes and input size.
        rows: the table's rows, in the printed order.
    """

    key: str
    paper: str
    table: str
    model: str
    input_size: tuple[int, ...]
    num_classes: int
    params_column: str
    params_unit: str
    params_scale: float
    computation_column: str | None
    computation_unit: str | None
    macs_scale: float | None
    setting_note: str
    rows: tuple[TableRow, ...] = field(default_factory=tuple)

    @property
    def spatial_dims(self) -> int:
        return len(self.input_size) - 1


_SETTING_2D = (
    "3x224x224, 2 classes (the tables' counts match 3 input channels where that shows, "
    "i.e. grey images fed as RGB; 224² is the papers' 2D size)"
)
_SETTING_3D = (
    "2x64x64x64, 2 classes (PET and CT as two channels; the volume size is not stated, "
    "64³ is the size of the project's 3D presets)"
)
_F32 = _MIB / 4
_F64 = _MIB / 8

PAPERS: dict[str, PaperTable] = {
    p.key: p
    for p in (
        PaperTable(
            key="ldtransformer",
            paper="LDTransformer (Acta Optica Sinica)",
            table="Table 2: comparison with lightweight CNN and Transformer models "
            "(pneumonia X-ray)",
            model="ldtransformer_s",
            input_size=(3, 224, 224),
            num_classes=2,
            params_column="Parameter amount",
            params_unit="parameters (count)",
            params_scale=1.0,
            computation_column="Calculation amount",
            computation_unit="MACs",
            macs_scale=1.0,
            setting_note=_SETTING_2D,
            rows=(
                TableRow(
                    "EfficientNetb0",
                    "efficientnet_b0",
                    "4.48×10⁴",
                    "1.35×10⁷",
                    note="both figures far below any EfficientNet-b0 at 224² (the DDSF-Net "
                    "table's run of the same model gives 4.01 M parameters)",
                ),
                TableRow("MobileNetV3", "mobilenetv3", "1.66×10⁶", "6.24×10⁷"),
                TableRow("GhostNet", "ghostnet", "3.90×10⁶", "1.48×10⁸"),
                TableRow(
                    "DeiTS", "deit_s", "2.19×10⁶", "4.24×10⁹", note="parameters 10x below DeiT-S"
                ),
                TableRow(
                    "T2TViT19",
                    "t2t_vit_19",
                    "2.14×10⁶",
                    "4.33×10⁹",
                    note="parameters 18x below T2T-ViT-19 (39.2 M in its paper)",
                ),
                TableRow("XCiTS24-16T", "xcit_s24_16", "4.76×10⁷", "8.95×10⁹"),
                TableRow(
                    "ConvViT",
                    "convit",
                    "4.22×10⁵",
                    "9.08×10⁷",
                    note="read as ConViT; below every ConViT size",
                ),
                TableRow("MobileFormer", "mobileformer_96m", "4.58×10⁶", "9.26×10⁷"),
                TableRow("MobileViT", "mobilevit_s", "5.63×10⁶", "1.75×10⁹"),
                TableRow("EdgeNeXtS", "edgenext_s", "5.58×10⁶", "9.57×10⁸"),
                TableRow("NextVitS", "nextvit_s", "3.18×10⁷", "5.79×10⁹"),
                TableRow("LDTransformer", "ldtransformer_s", "2.53×10⁵", "3.98×10⁷"),
            ),
        ),
        PaperTable(
            key="drltransformer",
            paper="DRLTransformer (Journal of Electronics & Information Technology)",
            table="Table 2: performance comparison on the COVID-19 CT dataset",
            model="drltransformer_s",
            input_size=(3, 224, 224),
            num_classes=2,
            params_column="模型参数量(M)",
            params_unit="MiB of weights at 4 bytes per parameter",
            params_scale=_F32,
            computation_column="模型计算量",
            computation_unit="MACs",
            macs_scale=1.0,
            setting_note=_SETTING_2D,
            rows=(
                TableRow("ResNet101", "resnet101", "162.14", "7.832G"),
                TableRow(
                    "DenseNet121",
                    "densenet121",
                    "42.62",
                    "1.816G",
                    note="both figures match no DenseNet-121 reading",
                ),
                TableRow(
                    "EfficientNetb4",
                    "efficientnet_b4",
                    "66.96",
                    "34.125M",
                    note="computation far below any EfficientNet-b4 at 224²",
                ),
                TableRow("RegNetx032", "regnetx_032", "58.35", "3.176G"),
                TableRow(
                    "MobileNet",
                    "mobilenet",
                    "12.26",
                    "2.322G",
                    note="version not stated; computation 4x that of MobileNet v1 at 224²",
                ),
                TableRow("GhostNet", "ghostnet", "14.89", "147.511M"),
                TableRow(
                    "EdgeNeXt-B",
                    "edgenext_b",
                    "113.29",
                    "1.851G",
                    note="parameters match no EdgeNeXt-B reading",
                ),
                TableRow("SwinTransformer", "swin_b", "330.66", "15.126G", note="size not stated"),
                TableRow("ReLKNet31B", "replknet_31b", "300.76", "15.513G"),
                TableRow("ConvNeXt-B", "convnext_b", "333.98", "15.359G"),
                TableRow(
                    "Conformer-B",
                    "conformer_b",
                    "510.06",
                    "14.486G",
                    note="parameters match no Conformer-B reading",
                ),
                TableRow(
                    "DRLTransformer",
                    "drltransformer_s",
                    "1.47",
                    "81.232M",
                    note="the abstract reads its 1.47 as '1.47 M' parameters",
                ),
            ),
        ),
        PaperTable(
            key="madensenet",
            paper="MADenseNet (Pattern Recognition and Artificial Intelligence)",
            table="Table 3: result comparison on the ChestXRay2017 dataset",
            model="madensenet_s",
            input_size=(3, 224, 224),
            num_classes=2,
            params_column="参数量/M",
            params_unit="MiB of weights at 8 bytes per parameter",
            params_scale=_F64,
            computation_column=None,
            computation_unit=None,
            macs_scale=None,
            setting_note=_SETTING_2D,
            rows=(
                TableRow("VGG19", "vgg19", "1096.09"),
                TableRow("ResNet101", "resnet101", "324.28"),
                TableRow("DSENet", "dsenet", "93.74", note="no defining paper; native design"),
                TableRow("REGNETX-3.2GF", "regnetx_032", "72.66"),
                TableRow("ConvNeXt-B", "convnext_b", "464.97"),
                TableRow("Swin Transformer", "swin_b", "460.34", note="size not stated"),
                TableRow("PoolFormer-B", "poolformer_b", "389.88", note="no PoolFormer-B exists"),
                TableRow("Conformer-B", "conformer_b", "710.11"),
                TableRow(
                    "Next-Vit-B",
                    "nextvit_b",
                    "238.18",
                    note="the figure is nearer Next-ViT-S (30.7 M) than B",
                ),
                TableRow("MADenseNet", "madensenet_s", "45.36"),
            ),
        ),
        PaperTable(
            key="ddsfnet",
            paper="DDSF-Net (Optics and Precision Engineering)",
            table="Table 2: performance comparison on the pneumonia X-ray dataset",
            model="ddsfnet_s",
            input_size=(3, 224, 224),
            num_classes=2,
            params_column="参数量(M)",
            params_unit="MiB of weights at 8 bytes per parameter",
            params_scale=_F64,
            computation_column="计算量(G)",
            computation_unit="GFLOPs (2 x MACs)",
            macs_scale=1e9 / 2,
            setting_note=_SETTING_2D,
            rows=(
                TableRow("VGG19", "vgg19", "1,096.09", "39.294"),
                TableRow("ResNet101", "resnet101", "324.28", "15.664"),
                TableRow("DenseNet121", "densenet121", "60.88", "5.732"),
                TableRow("SeResNet101", "seresnet101", "360.47", "15.692"),
                TableRow(
                    "EfficientNetb0",
                    "efficientnet_b0",
                    "30.59",
                    "0.027",
                    note="computation far below EfficientNet-b0 at 224²",
                ),
                TableRow(
                    "EfficientNetb4",
                    "efficientnet_b4",
                    "133.91",
                    "0.068",
                    note="computation far below EfficientNet-b4 at 224²",
                ),
                TableRow("RegNetx032", "regnetx_032", "72.66", "3.955"),
                TableRow(
                    "SwinTransformer",
                    "swin_s",
                    "411.75",
                    "18.836",
                    note="size not stated; both figures nearer Swin-S than Swin-B",
                ),
                TableRow(
                    "NATransformer",
                    "nat_s",
                    "240.63",
                    "9.308",
                    note="size not stated; the figures are nearer NAT-Tiny (28 M, 4.3 G "
                    "MACs) than NAT-S, the only NAT registered",
                ),
                TableRow("DDSF-Net", "ddsfnet_s", "76.31", "4.149"),
            ),
        ),
        PaperTable(
            key="light3dformer",
            paper="Cross-modal Light-3Dformer (Acta Electronica Sinica)",
            table="Table 2: performance comparison on the 3D PET/CT dataset",
            model="light3dformer_s",
            input_size=(2, 64, 64, 64),
            num_classes=2,
            params_column="参数量",
            params_unit="parameters (count, K/M suffix)",
            params_scale=1.0,
            computation_column="计算量",
            computation_unit="MACs (M/G suffix)",
            macs_scale=1.0,
            setting_note=_SETTING_3D,
            rows=(
                TableRow("3D-SwinTransformer-S", "swin_s", "48.751M", "68.210G"),
                TableRow("Light-3Dformer", "light3dformer_s", "417.090K", "170.550M"),
                TableRow("3D-ResNet50", "resnet50_3d", "46.203M", "39.981G"),
                TableRow(
                    "3D-EfficientNet-b3",
                    "efficientnet_b3_3d",
                    "1.624M",
                    "205.719M",
                    note="parameters 7x below any 3D EfficientNet-b3",
                ),
            ),
        ),
        PaperTable(
            key="cconvformer",
            paper="3D-CConvFormer (Journal of Computer-Aided Design & Computer Graphics)",
            table="Table 3: performance comparison on the 3D PET/CT multimodal lung tumour dataset",
            model="cconvformer_s",
            input_size=(2, 64, 64, 64),
            num_classes=2,
            params_column="参数量",
            params_unit="parameters (count, M suffix)",
            params_scale=1.0,
            computation_column=None,
            computation_unit=None,
            macs_scale=None,
            setting_note=_SETTING_3D,
            rows=(
                TableRow("3D-ResNet50", "resnet50_3d", "46.203M"),
                TableRow(
                    "3D-EfficientNet-b3",
                    "efficientnet_b3_3d",
                    "1.624M",
                    note="parameters 7x below any 3D EfficientNet-b3",
                ),
                TableRow("3D-ConvNeXt-S", "convnext_s_3d", "54.954M"),
                TableRow("3D-SwinTransformer-S", "swin_s", "48.751M"),
                TableRow("3D-PoolFormer-S24", "poolformer_s24", "31.687M"),
                TableRow("3D-BEVT", "bevt_b", "86.628M"),
                TableRow("3D-CoaT-S", "coat_s", "24.385M"),
                TableRow("3D-CVT-13", "cvt_13", "21.430M"),
                TableRow("3D-CMT-S", "cmt_s", "27.278M"),
                TableRow(
                    "3D-NextVit-S",
                    "nextvit_s",
                    "19.900M",
                    note="smaller than 2D Next-ViT-S, which no 3D version of it can be",
                ),
                TableRow("3D-CConvFormer", "cconvformer_s", "11.199M"),
            ),
        ),
    )
}

_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}
_FIGURE = re.compile(
    r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?:[×x]\s*10\^?(?P<exp>-?\d+))?\s*(?P<suffix>[KMG]?)\s*$"
)


def parse_figure(text: str) -> float:
    """Parses a table figure as printed: ``"2.53×10⁵"``, ``"1,096.09"``, ``"46.203M"``.

    Returns:
        the number, with a ``×10ⁿ`` exponent and a K/M/G suffix applied
        (``"417.090K"`` -> 417090.0, ``"162.14"`` -> 162.14).

    Raises:
        ModelError: a figure of another form.
    """
    clean = str(text).replace(",", "").translate(_SUPERSCRIPT)
    match = _FIGURE.match(clean)
    if match is None:
        raise ModelError(
            f"table figure {text!r}: expected a number with an optional ×10ⁿ and K/M/G "
            "suffix (e.g. '2.53×10⁵', '1,096.09', '46.203M')"
        )
    value = float(match["num"]) * _SUFFIX[match["suffix"]]
    return value * 10 ** int(match["exp"]) if match["exp"] else value


def get_paper(key: str) -> PaperTable:
    """The table of the paper ``key`` (case, ``-`` and ``_`` ignored: ``"DDSF-Net"`` works).

    Raises:
        ModelError: an unknown paper, with the valid keys.
    """
    wanted = re.sub(r"[^a-z0-9]", "", str(key).lower()).removeprefix("3d")
    for paper in PAPERS.values():
        if wanted in (paper.key, re.sub(r"[^a-z0-9]", "", paper.model.removesuffix("_s"))):
            return paper
    raise ModelError(f"unknown paper {key!r}: expected one of {', '.join(PAPERS)}")


def table_params(paper: PaperTable, row: TableRow) -> float:
    """The row's parameter figure as a parameter count (with the table's unit reading)."""
    return parse_figure(row.params) * paper.params_scale


def table_macs(paper: PaperTable, row: TableRow) -> float | None:
    """The row's computation figure as MACs (None if the table has no computation)."""
    if row.computation is None or paper.macs_scale is None:
        return None
    return parse_figure(row.computation) * paper.macs_scale


def count_model_params(name: str, *, in_chans: int, num_classes: int, spatial_dims: int) -> int:
    """Parameters of ``name`` built at this setting, on the ``meta`` device when possible."""
    import torch

    from medcls.models.factory import create_model
    from medcls.models.profile import count_params

    args = {"in_chans": in_chans, "num_classes": num_classes, "spatial_dims": spatial_dims}
    try:
        with torch.device("meta"):
            model = create_model(name, **args)
    except ModelError:
        model = create_model(name, **args)  # a constructor that reads tensor values
    return count_params(model)[0]


def model_source(name: str) -> str:
    """``timm``, ``timm_3d``, ``MONAI`` or ``native`` for a registry name (aliases resolved)."""
    from medcls.models.registry import get_alias, parse_model_name

    alias = get_alias(name) if ":" not in name else None
    source = parse_model_name(alias.target if alias else name)[0]
    return {"timm": "timm", "timm3d": "timm_3d", "monai": "MONAI"}.get(source, "native")


def paper_rows(key: str, *, imagenet: bool = False) -> list[dict[str, Any]]:
    """The rows of a paper's table with our parameter count at the table's setting.

    Args:
        key: a paper key (:func:`get_paper`).
        imagenet: also count the 2D models at 3 channels and 1,000 classes
            (``params_imagenet``; None for 3D tables), the setting of most published
            figures.

    Returns:
        one dict per row: ``label``, ``model``, ``target`` (an alias's target, else the
        model), ``source``, ``dims``, ``params`` (ours), ``params_imagenet``,
        ``table_params`` / ``table_computation`` (as printed), ``table_params_count``
        and ``table_macs`` (converted, see the module doc), ``note``.
    """
    from medcls.models.registry import get_alias

    paper = get_paper(key)
    chans, dims = paper.input_size[0], paper.spatial_dims
    out = []
    for row in paper.rows:
        alias = get_alias(row.model)
        setting = {"in_chans": chans, "num_classes": paper.num_classes, "spatial_dims": dims}
        out.append(
            {
                "label": row.label,
                "model": row.model,
                "target": alias.target if alias else row.model,
                "source": model_source(row.model),
                "dims": dims,
                "params": count_model_params(row.model, **setting),
                "params_imagenet": (
                    count_model_params(row.model, in_chans=3, num_classes=1000, spatial_dims=2)
                    if imagenet and dims == 2
                    else None
                ),
                "table_params": row.params,
                "table_computation": row.computation,
                "table_params_count": table_params(paper, row),
                "table_macs": table_macs(paper, row),
                "note": row.note,
            }
        )
    return out


def all_rows() -> Sequence[tuple[PaperTable, TableRow]]:
    """Every ``(paper, row)`` pair of every table, in order."""
    return [(paper, row) for paper in PAPERS.values() for row in paper.rows]
