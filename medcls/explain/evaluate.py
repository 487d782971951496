"""How good are a trained model's maps? Checks over a run's test split with lesion masks.

:func:`evaluate_run_maps` loads a run, takes the positive cases of its saved split
that have a lesion mask, explains them with each method (target: the positive
class) and reports, per method:

- ``pointing``: share of cases whose map peak lies inside the lesion;
- ``pointing_near``: the same with the lesion grown by one voxel (pixel) in every
  direction: tells a peak beside a small lesion from one elsewhere;
- ``energy``: mean share of the map inside the lesion;
- ``peak_on_border``: share of cases whose peak is off the lesion and next to the
  border of the input (an edge the zero padding of early layers makes; see
  ``model.restructure.padding``);
- ``deletion_auc`` / ``insertion_auc``: faithfulness (on up to ``curve_cases`` cases);
- ``randomization``: mean Spearman correlation with the maps of a re-initialised
  model and whether it is below the threshold, and the mean overlap of both maps'
  top 5 % of voxels (on up to ``random_cases`` cases).

``medcls explain RUN_DIR --check`` runs it and writes ``explain_check.json`` and a
Markdown table; the numbers in ``docs/explain.md`` come from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medcls.errors import ConfigError, DataError
from medcls.explain.api import create_explainer
from medcls.explain.checks import (
    deletion_insertion,
    energy_in_mask,
    peak_on_border,
    pointing_game,
    randomization_check,
)
from medcls.explain.names import canonical_method

__all__ = ["evaluate_run_maps", "load_split_with_masks", "markdown_table"]


def load_split_with_masks(
    run_dir: str | Path,
    *,
    split: str = "test",
    positive_class: str | None = None,
    checkpoint: str = "best",
    max_cases: int | None = None,
):
    """The positive cases of a run's split that have a lesion mask, preprocessed.

    Args:
        run_dir: the run folder (with ``splits.csv``).
        split: ``train``, ``val`` or ``test``.
        positive_class: the class whose cases are explained (default: the last class,
            e.g. ``pneumonia`` / ``malignant``).
        checkpoint: ``best`` or ``last``.
        max_cases: keep at most this many cases (in split order).

    Returns:
        ``(loaded, x, masks, ids, target)``: the
        :class:`~medcls.explain.pipeline.ExplainModel`, the model input
        ``(N, C, *S)`` (or a dict of modalities), masks ``(N, 1, *S)``, case ids and
        the positive class index.

    Raises:
        DataError: no such split, or no positive case with a non-empty mask.
    """
    from medcls.config import load_config
    from medcls.data.cases import CaseTable, load_cases
    from medcls.data.dataset import CaseDataset
    from medcls.data.splits import read_splits
    from medcls.data.transforms import build_preprocess
    from medcls.engine.checkpoint import read_meta
    from medcls.explain.pipeline import load_explain_model

    run_dir = Path(run_dir)
    loaded = load_explain_model(run_dir, checkpoint=checkpoint)
    meta = read_meta(run_dir / "checkpoints" / checkpoint)
    cfg = load_config(meta["config"])
    positive = positive_class or loaded.classes[-1]
    if positive not in loaded.classes:
        raise ConfigError(
            f"positive_class: {positive!r} is not a class of this run {loaded.classes}"
        )
    table = load_cases(cfg.data)
    assignment = read_splits(run_dir / "splits.csv")
    cases = [
        c for c in table.cases if assignment.get(c.id) == split and c.mask and positive in c.labels
    ]
    if max_cases is not None:
        cases = cases[:max_cases]
    if not cases:
        raise DataError(
            f"no {positive!r} case with a lesion mask in split {split!r}",
            path=run_dir / "splits.csv",
        )
    sub = CaseTable(cases, loaded.classes, loaded.task, loaded.modalities, source="explain-check")
    preprocess = build_preprocess(
        loaded.preprocess, loaded.modalities, loaded.spatial_dims, with_mask=True
    )
    dataset = CaseDataset(
        sub, cases, preprocess, spatial_dims=loaded.spatial_dims, cache="none", with_mask=True
    )
    samples = [dataset[i] for i in range(len(dataset))]
    parts = {m: torch.stack([s[m] for s in samples]) for m in loaded.modalities}
    if getattr(loaded.model, "modalities", None):
        x: Any = parts
    else:
        x = torch.cat([parts[m] for m in loaded.modalities], dim=1)
    masks = torch.stack([s["mask"] for s in samples])
    empty = [c.id for c, m in zip(cases, masks) if not bool(m.any())]
    if len(empty) == len(cases):
        raise DataError(f"every {positive!r} mask of split {split!r} is empty after preprocessing")
    keep = [i for i, m in enumerate(masks) if bool(m.any())]
    x = {k: v[keep] for k, v in x.items()} if isinstance(x, dict) else x[keep]
    return loaded, x, masks[keep], [cases[i].id for i in keep], loaded.classes.index(positive)


def evaluate_run_maps(
    run_dir: str | Path,
    methods: Sequence[str] = ("gradcam",),
    *,
    split: str = "test",
    positive_class: str | None = None,
    checkpoint: str = "best",
    layer: str | None = None,
    max_cases: int | None = None,
    curve_cases: int = 16,
    random_cases: int = 16,
    random_threshold: float = 0.5,
    batch_size: int = 16,
    device: str | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    min_cells: int | None = None,
) -> dict[str, Any]:
    """Localisation, faithfulness and sanity of each method's maps on a run's split.

    Args:
        run_dir: the run folder.
        methods: explanation methods to check.
        split: which split's cases.
        positive_class: see :func:`load_split_with_masks`.
        checkpoint: ``best`` or ``last``.
        layer: CAM layer(s) instead of the default.
        max_cases: at most this many positive cases.
        curve_cases: cases for the deletion/insertion curves (0: skip).
        random_cases: cases for the randomisation check (0: skip).
        random_threshold: largest mean rank correlation that passes.
        batch_size: samples per pass.
        device: ``auto``/``cpu``/``cuda``.
        method_options: method -> options (e.g. ``{"scorecam": {"max_channels": 64}}``).
        min_cells: CAM methods: the automatic layer choice's fewest grid cells.

    Returns:
        ``{"run_dir", "model", "split", "positive_class", "num_cases", "methods":
        {method: {"pointing", "pointing_near", "energy", "deletion_auc", "insertion_auc",
        "peak_on_border", "randomization": {"mean_spearman", "top5_overlap", "passed",
        "cases"}, "layers",
        "seconds_per_case", "predicted_positive"}}}``.
    """
    from medcls.explain.names import CAM_METHODS
    from medcls.explain.pipeline import _resolve_device

    loaded, x, masks, ids, positive = load_split_with_masks(
        run_dir,
        split=split,
        positive_class=positive_class,
        checkpoint=checkpoint,
        max_cases=max_cases,
    )
    dev = _resolve_device(device)
    model = loaded.model.to(dev).eval()
    channels = (
        {m: int(v.shape[1]) for m, v in x.items()}
        if isinstance(x, dict)
        else dict.fromkeys(loaded.modalities, int(x.shape[1]) // len(loaded.modalities))
    )
    n = len(ids)
    results: dict[str, Any] = {}
    for raw_name in methods:
        method = canonical_method(raw_name)
        options = dict((method_options or {}).get(method, {}))
        if method in CAM_METHODS:
            options["layer"] = layer
            if min_cells is not None:
                options["min_cells"] = min_cells
        explainer = create_explainer(
            method, model, modalities=channels, batch_size=batch_size, **options
        )
        started = time.perf_counter()
        result = explainer(x, target=positive)
        seconds = (time.perf_counter() - started) / n
        heat = result.map()
        hits = pointing_game(heat, masks)
        near = pointing_game(heat, masks, tolerance=1)
        energy = energy_in_mask(heat, masks)
        border = peak_on_border(heat, masks)
        entry: dict[str, Any] = {
            "pointing": float(hits.float().mean()),
            "pointing_hits": int(hits.sum()),
            "pointing_near": float(near.float().mean()),
            "energy": float(energy.mean()),
            "peak_on_border": float(border.float().mean()),
            "layers": list(result.layers),
            "seconds_per_case": seconds,
            "predicted_positive": float((result.logits.argmax(1) == positive).float().mean()),
            "notes": result.notes,
        }
        if curve_cases and not isinstance(x, dict):
            k = min(curve_cases, n)
            curves = deletion_insertion(
                model,
                x[:k],
                heat[:k],
                result.targets[:k],
                batch_size=batch_size,
                activation="sigmoid" if loaded.task == "multilabel" else "softmax",
            )
            entry["deletion_auc"] = float(curves.deletion_auc.mean())
            entry["insertion_auc"] = float(curves.insertion_auc.mean())
        if random_cases:
            k = min(random_cases, n)
            xs = {m: v[:k] for m, v in x.items()} if isinstance(x, dict) else x[:k]
            sub = _subset(result, k)
            check = randomization_check(
                model,
                xs,
                method,
                explanation=sub,
                threshold=random_threshold,
                modalities=channels,
                batch_size=batch_size,
                **options,
            )
            entry["randomization"] = {
                "mean_spearman": check.mean,
                "top5_overlap": float(check.overlap.mean()),
                "passed": check.passed,
                "threshold": random_threshold,
                "cases": k,
            }
        results[method] = entry
    return {
        "run_dir": str(run_dir),
        "model": loaded.name,
        "split": split,
        "positive_class": loaded.classes[positive],
        "num_cases": n,
        "spatial_size": list(masks.shape[2:]),
        "methods": results,
    }


def _subset(result: Any, k: int) -> Any:
    from medcls.explain.base import Explanation

    return Explanation(
        method=result.method,
        maps={m: v[:k] for m, v in result.maps.items()},
        raw={m: v[:k] for m, v in result.raw.items()},
        targets=result.targets[:k],
        logits=result.logits[:k],
        layers=result.layers,
        shared=result.shared,
        notes=list(result.notes),
    )


def markdown_table(report: dict[str, Any]) -> str:
    """The per-method numbers of :func:`evaluate_run_maps` as a Markdown table."""
    lines = [
        "| method | layer | pointing game | peak ≤ 1 voxel from lesion | peak on border "
        "| energy in lesion | deletion AUC ↓ | insertion AUC ↑ | randomisation ρ (pass) "
        "| top-5 % overlap with random | s/case |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, e in report["methods"].items():
        rnd = e.get("randomization")
        rnd_text = (
            f"{rnd['mean_spearman']:.2f} ({'yes' if rnd['passed'] else 'no'})" if rnd else "-"
        )
        overlap = f"{rnd['top5_overlap']:.2f}" if rnd and "top5_overlap" in rnd else "-"
        dele = f"{e['deletion_auc']:.3f}" if "deletion_auc" in e else "-"
        ins = f"{e['insertion_auc']:.3f}" if "insertion_auc" in e else "-"
        layer = ", ".join(e["layers"]) or "input"
        lines.append(
            f"| {method} | {layer} | {e['pointing']:.1%} ({e['pointing_hits']}/{report['num_cases']}) "
            f"| {e.get('pointing_near', float('nan')):.1%} | {e.get('peak_on_border', float('nan')):.1%} "
            f"| {e['energy']:.1%} | {dele} | {ins} | {rnd_text} | {overlap} "
            f"| {e['seconds_per_case']:.3f} |"
        )
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Writes ``explain_check.json`` and ``explain_check.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "explain_check.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path = out / "explain_check.md"
    md_path.write_text(
        f"Run `{report['run_dir']}` ({report['model']}), split `{report['split']}`, "
        f"{report['num_cases']} `{report['positive_class']}` cases with a lesion mask, "
        f"input {'x'.join(map(str, report['spatial_size']))}.\n\n" + markdown_table(report) + "\n"
    )
    return [json_path, md_path]
