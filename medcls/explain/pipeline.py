"""Explaining files on disk: the work behind ``medcls explain``.

:func:`load_explain_model` rebuilds a model with everything needed to feed it
(classes, modalities, preprocessing): from a run folder, from a medcls checkpoint,
or from a registry name plus a weights file (the seed's
``--model M --weight-path W``). :func:`explain_files` reads images, preprocesses
them exactly as the model was trained, explains them in batches and writes:

- 2D: ``<id>_<modality>_overlay.png`` (on the original image) and ``<id>_panel.png``;
- 3D: ``<id>_<modality>_heatmap.nii.gz`` on the input file's grid and affine,
  ``<id>_<modality>_planes.png`` (three planes through the peak) and
  ``<id>_<modality>_montage.png``;
- ``explain.csv``: per case the explained class and its probability, the
  prediction, each map's peak (in input voxel indices) and, when the manifest has
  lesion masks, the pointing-game hit and the energy inside the lesion.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcls.config.schema import IntensityConfig, PreprocessConfig
from medcls.errors import CheckpointError, ConfigError, DataError
from medcls.explain.api import create_explainer
from medcls.explain.base import Explanation, resize_maps
from medcls.explain.checks import energy_in_mask, pointing_game
from medcls.explain.names import canonical_method
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

__all__ = ["ExplainModel", "ExplainReport", "explain_files", "load_explain_model", "parse_target"]


@dataclass
class ExplainModel:
    """A model with what is needed to feed it files.

    Attributes:
        model: the classifier (eval mode).
        classes: class names in output order.
        modalities: modality names in input (channel) order.
        spatial_dims: 2 or 3.
        preprocess: the preprocessing the model was trained with.
        task: ``binary``, ``multiclass`` or ``multilabel``.
        source: where the model came from (run folder or weights file).
        name: the model's registry name.
    """

    model: nn.Module
    classes: list[str]
    modalities: list[str]
    spatial_dims: int
    preprocess: PreprocessConfig
    task: str = "multiclass"
    source: str = ""
    name: str = ""


@dataclass
class ExplainReport:
    """What :func:`explain_files` produced.

    Attributes:
        output_dir: the folder written.
        rows: one dict per case (the rows of ``explain.csv``).
        files: every written file.
        notes: findings of the explainer (deduplicated).
        explanations: the explanations per batch, if kept.
    """

    output_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    explanations: list[Explanation] = field(default_factory=list)


# ------------------------------------------------------------------ loading


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "checkpoints").is_dir()


def _from_meta(meta: dict[str, Any], stem: Path) -> ExplainModel:
    from medcls.config import load_config
    from medcls.engine.api import load_checkpoint_model

    spec = meta["model"]
    model = load_checkpoint_model(stem, meta)  # fusion and model.restructure included
    cfg = load_config(meta["config"]) if meta.get("config") else None
    preprocess = (
        cfg.preprocess
        if cfg is not None
        else PreprocessConfig(spatial_size=meta.get("spatial_size"))
    )
    return ExplainModel(
        model=model.eval(),
        classes=list(meta["classes"]),
        modalities=list(meta["modalities"]),
        spatial_dims=int(spec["spatial_dims"]),
        preprocess=preprocess,
        task=str(meta.get("task", "multiclass")),
        source=str(stem),
        name=str(spec["name"]),
    )


def _medcls_checkpoint(weight_path: Path) -> dict[str, Any] | None:
    """The description beside a medcls ``.safetensors`` checkpoint, or None."""
    from medcls.engine.checkpoint import read_meta

    if weight_path.suffix != ".safetensors" or not weight_path.with_suffix(".json").is_file():
        return None
    try:
        return read_meta(weight_path.with_suffix(""))
    except CheckpointError:
        return None


def _shapes_from_weights(name: str, weight_path: Path, spatial_dims: int | None) -> tuple[int, int]:
    """``(in_chans, num_classes)`` read from a weights file (first conv, classifier)."""
    from medcls.models import create_model
    from medcls.models.weights import read_state_dict

    with torch.device("meta"):
        probe = create_model(name, in_chans=1, num_classes=2, spatial_dims=spatial_dims)
    state = read_state_dict(weight_path)
    cfg = probe.model_cfg

    def find(module: str | None) -> torch.Tensor | None:
        if not module:
            return None
        key = f"{module}.weight"
        for k, v in state.items():
            if k == key or k.endswith("." + key):
                return v
        return None

    first = find(cfg.first_conv)
    head = next((w for w in (find(c) for c in cfg.classifier) if w is not None), None)
    if first is None or head is None:
        raise CheckpointError(
            f"{weight_path}: cannot tell the input channels / classes of {name} from the file "
            f"(looked for {cfg.first_conv}.weight and {[c + '.weight' for c in cfg.classifier]}); "
            "pass --in-chans and --num-classes"
        )
    return int(first.shape[1]), int(head.shape[0])


def load_explain_model(
    source: str | Path,
    *,
    weight_path: str | Path | None = None,
    checkpoint: str = "best",
    spatial_dims: int | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    spatial_size: Sequence[int] | None = None,
) -> ExplainModel:
    """Rebuilds a model for explanation.

    Args:
        source: a run folder (``medcls train`` output), or a registry model name
            (then ``weight_path`` is required).
        weight_path: weights: a medcls ``.safetensors`` checkpoint (its ``.json``
            description supplies everything else), or any state-dict file
            (``.safetensors``/``.pth``/``.pt``) for the model named by ``source``.
        checkpoint: ``best`` or ``last`` (run folders).
        spatial_dims: for model names that take 2 or 3.
        in_chans: input channels (default: read from the weights).
        num_classes: classes (default: read from the weights).
        classes: class names (default ``class_0``, ``class_1``, ...).
        modalities: modality names in channel order (default ``image``).
        spatial_size: input size the images are resized to (default: the model's
            default input size).

    Raises:
        CheckpointError: a missing run folder, checkpoint or weights file.
        ConfigError: a model name without weights, or inconsistent names/counts.
    """
    path = Path(source)
    if _is_run_dir(path):
        from medcls.engine.checkpoint import read_meta

        stem = path / "checkpoints" / checkpoint
        return _from_meta(read_meta(stem), stem)
    if path.exists() and path.is_dir():
        raise CheckpointError(f"{path}: not a run folder (no checkpoints/ inside)")
    if weight_path is None:
        raise ConfigError(
            f"{source}: neither a run folder nor a model with weights; pass a run folder, or a "
            "model name with --weight-path"
        )
    weights = Path(weight_path)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    meta = _medcls_checkpoint(weights)
    if meta is not None:
        return _from_meta(meta, weights.with_suffix(""))
    from medcls.models import create_model

    name = str(source)
    if in_chans is None or num_classes is None:
        found_in, found_classes = _shapes_from_weights(name, weights, spatial_dims)
        in_chans = in_chans or found_in
        num_classes = num_classes or found_classes
    model = create_model(
        name,
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        checkpoint_path=str(weights),
    )
    class_names = list(classes) if classes else [f"class_{i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ConfigError(
            f"--classes: {len(class_names)} names for a model with {num_classes} outputs"
        )
    names = list(modalities) if modalities else ["image"]
    dims = int(model.spatial_dims)
    size = list(spatial_size) if spatial_size else list(model.model_cfg.input_size[1:])
    if len(size) != dims:
        raise ConfigError(f"--spatial-size: {size} has {len(size)} axes, the model is {dims}D")
    preprocess = PreprocessConfig(
        spatial_size=size, intensity={m: IntensityConfig(mode="percentile") for m in names}
    )
    return ExplainModel(
        model=model.eval(),
        classes=class_names,
        modalities=names,
        spatial_dims=dims,
        preprocess=preprocess,
        task="multiclass" if num_classes > 1 else "binary",
        source=str(weights),
        name=name,
    )


def parse_target(target: str | int | None, classes: Sequence[str]) -> int | None:
    """A target class given as an index or a class name -> index (None stays None)."""
    if target is None or isinstance(target, int):
        if isinstance(target, int) and not 0 <= target < len(classes):
            raise ConfigError(
                f"--target-class: {target} out of range 0..{len(classes) - 1} ({list(classes)})"
            )
        return target
    text = str(target).strip()
    if text in classes:
        return list(classes).index(text)
    if re.fullmatch(r"\d+", text):
        return parse_target(int(text), classes)
    raise ConfigError(
        f"--target-class: {text!r} is neither a class of this model {list(classes)} nor an index"
    )


# ---------------------------------------------------------------- explaining


def _safe_name(text: str) -> str:
    stem = Path(text).name
    for suffix in (
        ".gz",
        ".nii",
        ".png",
        ".jpg",
        ".jpeg",
        ".dcm",
        ".npz",
        ".npy",
        ".nrrd",
        ".mha",
        ".tif",
        ".tiff",
        ".bmp",
    ):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "case"


def _geometry_preserved(cfg: PreprocessConfig) -> bool:
    """True if the preprocessing only resizes / pads: maps can be put back on the file's grid."""
    return not any(getattr(cfg, key, None) for key in ("spacing", "orientation", "crop_foreground"))


def _to_input_grid(heat: torch.Tensor, shape: Sequence[int], cfg: PreprocessConfig) -> np.ndarray:
    """A map on the model grid ``(*S)`` back on the file's grid ``shape``."""
    shape = tuple(int(s) for s in shape)
    if tuple(heat.shape) == shape:
        return heat.numpy()
    if getattr(cfg, "size_mode", "resize") == "pad_crop":
        from monai.transforms import ResizeWithPadOrCrop

        return np.asarray(
            ResizeWithPadOrCrop(spatial_size=shape)(heat[None].numpy())[0], dtype=np.float32
        )
    return resize_maps(heat[None], shape)[0].clamp(0, 1).numpy()


def _model_input(
    loaded: ExplainModel, batch: dict[str, Any]
) -> torch.Tensor | dict[str, torch.Tensor]:
    if getattr(loaded.model, "modalities", None):
        return {m: batch[m] for m in loaded.modalities}
    parts = [batch[m] for m in loaded.modalities]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _read_cases(loaded: ExplainModel, inputs: Sequence[str | Path]):
    from medcls.data.cases import cases_from_files, cases_from_manifest

    if len(inputs) == 1 and str(inputs[0]).lower().endswith(".csv"):
        table = cases_from_manifest(
            inputs[0], modalities=loaded.modalities, require_labels=False, mask_column="mask"
        )
        return table.cases
    if len(loaded.modalities) > 1:
        raise DataError(
            f"this model takes {len(loaded.modalities)} modalities {loaded.modalities}; give a "
            "manifest CSV with one column per modality"
        )
    return cases_from_files(inputs, modality=loaded.modalities[0])


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device: {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return dev


def explain_files(
    loaded: ExplainModel,
    inputs: Sequence[str | Path],
    *,
    method: str = "gradcam",
    target: int | str | None = None,
    layer: str | None = None,
    output_dir: str | Path = "explain",
    batch_size: int = 8,
    device: str | torch.device | None = None,
    alpha: float = 0.5,
    save: bool = True,
    keep_explanations: bool = False,
    **options: Any,
) -> ExplainReport:
    """Explains image files (or a manifest's cases) and writes the maps and figures.

    Args:
        loaded: from :func:`load_explain_model`.
        inputs: image files / folders, or one manifest CSV (multimodal models: one
            column per modality; an optional ``mask`` column enables the checks).
        method: explanation method.
        target: class (index or name) to explain; None: the predicted class.
        layer: CAM layer(s) instead of the default (comma-separated).
        output_dir: folder for the outputs.
        batch_size: cases per batch.
        device: ``auto`` (GPU when there is one), ``cpu``, ``cuda``, ...
        alpha: overlay weight.
        save: write files (False: compute the rows only).
        keep_explanations: keep every batch's :class:`Explanation` in the report.
        **options: method options (see :func:`medcls.explain.create_explainer`).

    Returns:
        an :class:`ExplainReport`.
    """
    from torch.utils.data import DataLoader

    from medcls.data.cases import CaseTable
    from medcls.data.dataset import CaseDataset
    from medcls.data.readers import read_image
    from medcls.data.transforms import build_preprocess

    method = canonical_method(method)
    target_index = parse_target(target, loaded.classes)
    dev = _resolve_device(device)
    model = loaded.model.to(dev).eval()
    cases = _read_cases(loaded, inputs)
    with_mask = any(c.mask for c in cases)
    table = CaseTable(cases, loaded.classes, loaded.task, loaded.modalities, source="explain")
    preprocess = build_preprocess(
        loaded.preprocess, loaded.modalities, loaded.spatial_dims, with_mask=with_mask
    )
    dataset = CaseDataset(
        table,
        cases,
        preprocess,
        spatial_dims=loaded.spatial_dims,
        cache="none",
        with_mask=with_mask,
        with_target=False,
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out_dir = Path(output_dir)
    report = ExplainReport(out_dir)
    explainer = None
    geometry_ok = _geometry_preserved(loaded.preprocess)
    if not geometry_ok:
        report.notes.append(
            "the preprocessing resamples, reorients or crops; heatmaps are written on the "
            "model's grid (not the input file's)"
        )
    for batch in loader:
        x = _model_input(loaded, batch)
        channels = {m: int(batch[m].shape[1]) for m in loaded.modalities}
        if explainer is None:
            explainer = create_explainer(
                method, model, layer=layer, modalities=channels, batch_size=batch_size, **options
            )
        result = explainer(x, target=target_index)
        if keep_explanations:
            report.explanations.append(result)
        report.notes += [n for n in result.notes if n not in report.notes]
        probs = (
            torch.sigmoid(result.logits)
            if loaded.task == "multilabel"
            else torch.softmax(result.logits, dim=1)
        )
        masks = batch.get("mask") if with_mask else None
        for i, case_id in enumerate(batch["id"]):
            case = cases[int(batch["index"][i])]
            t = int(result.targets[i])
            row: dict[str, Any] = {
                "id": case_id,
                "method": method,
                "layers": "|".join(result.layers),
                "target": loaded.classes[t],
                "target_prob": round(float(probs[i, t]), 6),
                "predicted": loaded.classes[int(probs[i].argmax())],
            }
            row.update(
                {f"prob_{c}": round(float(probs[i, k]), 6) for k, c in enumerate(loaded.classes)}
            )
            if masks is not None and case.mask:
                heat = result.map()[i : i + 1]
                row["pointing_hit"] = bool(pointing_game(heat, masks[i : i + 1])[0])
                row["energy_in_mask"] = round(float(energy_in_mask(heat, masks[i : i + 1])[0]), 6)
            files = _write_case(
                loaded,
                case,
                result,
                i,
                out_dir,
                read_image,
                geometry_ok,
                alpha=alpha,
                save=save,
                row=row,
            )
            report.files += files
            report.rows.append(row)
    if save and report.rows:
        report.files.append(_write_rows(report.rows, out_dir / "explain.csv"))
    return report


def _write_case(
    loaded: ExplainModel,
    case: Any,
    result: Explanation,
    i: int,
    out_dir: Path,
    read_image: Any,
    geometry_ok: bool,
    *,
    alpha: float,
    save: bool,
    row: dict[str, Any],
) -> list[Path]:
    files: list[Path] = []
    stem = _safe_name(case.id)
    images = {
        m: read_image(case.modalities[m], spatial_dims=loaded.spatial_dims)
        for m in loaded.modalities
    }
    reference = images[loaded.modalities[0]]
    overlays: dict[str, np.ndarray] = {}
    written_shared = False
    for m in loaded.modalities:
        image = images[m] if images[m].array.shape[1:] == reference.array.shape[1:] else reference
        heat_model = result.maps[m][i]
        if geometry_ok:
            heat = _to_input_grid(heat_model, image.array.shape[1:], loaded.preprocess)
            display = image.array[0]
            affine = image.affine
        else:
            heat = heat_model.numpy()
            display = None
            affine = None
        row[f"peak_{m}"] = " ".join(str(v) for v in peak_index(heat))
        if not save:
            continue
        if display is None:
            sample_grid = resize_maps(torch.from_numpy(image.array[:1]).float(), heat.shape)[
                0
            ].numpy()
            display = sample_grid
        if loaded.spatial_dims == 2:
            files.append(
                save_png(overlay(display, heat, alpha=alpha), out_dir / f"{stem}_{m}_overlay.png")
            )
            overlays[m] = (display, heat)
            continue
        if not (result.shared and written_shared):
            name = f"{stem}_heatmap.nii.gz" if result.shared else f"{stem}_{m}_heatmap.nii.gz"
            if affine is None:
                affine = np.diag([*(1.0,) * 3, 1.0])
            files.append(save_nifti(heat, affine, out_dir / name))
            written_shared = True
        title = f"{case.id}: {result.method} for {row['target']} ({m})"
        spacing = image.spacing if geometry_ok else None
        fig = three_plane_figure(display, heat, title=title, spacing=spacing, alpha=alpha)
        files.append(save_figure(fig, out_dir / f"{stem}_{m}_planes.png"))
        fig = montage_figure(display, heat, title=title, alpha=alpha)
        files.append(save_figure(fig, out_dir / f"{stem}_{m}_montage.png"))
    if save and loaded.spatial_dims == 2 and overlays:
        first = next(iter(overlays.values()))[0]
        maps = {
            f"{result.method} ({m})" if len(overlays) > 1 else result.method: h
            for m, (_, h) in overlays.items()
        }
        title = f"{Path(str(case.id)).name}: {row['target']} p={row['target_prob']:.2f}"
        fig = panel_figure(first, maps, title=title, alpha=alpha)
        files.append(save_figure(fig, out_dir / f"{stem}_panel.png"))
    return files


def _write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return path
