"""Measure how hard the built-in demo datasets are (the calibration of their generators).

For each dataset (default size and number of cases) and each seed, the script
generates the data into a temporary folder, reads it back from the files (PNG,
NIfTI) through the manifest, splits it by patient into train (75 %) and test
(25 %), and reports the test ROC AUC of:

* ``logreg``: scikit-learn logistic regression on the raw, standardised
  pixels/voxels (3D: CT and PET concatenated), for every ``C`` of a grid; the
  best test AUC of the grid is the number that must stay <= 0.75, and the AUC of
  the ``C`` chosen by grouped 3-fold cross-validation on the training set is
  reported beside it;
* ``cnn``: a small CNN (4 conv-BN-ReLU blocks, global average pooling, linear
  head), plain PyTorch loop on the CPU; must exceed 0.9;
* ``resnet10t`` (2D only): ``timm.create_model("resnet10t", in_chans=1,
  num_classes=2)`` trained with the recipe of ``medcls demo`` (AdamW lr 1e-3,
  batch 32, 10 epochs, flips + small affine augmentation).

Usage::

    python benchmarks/demo_difficulty.py                       # both datasets, seeds 0 and 1
    python benchmarks/demo_difficulty.py --datasets demo-xray2d --seeds 0 --models logreg
    python benchmarks/demo_difficulty.py --set opacity_contrast=0.12 --no-save

Results go to ``benchmarks/results/demo_difficulty.json`` (unless ``--no-save``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medcls.data.synthetic import (
    DEMO_DATASETS,
    GENERATOR_VERSION,
    generate_demo_petct3d,
    generate_demo_xray2d,
)

RESULTS = Path(__file__).resolve().parent / "results" / "demo_difficulty.json"
LOGREG_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
GENERATORS = {"demo-xray2d": generate_demo_xray2d, "demo-petct3d": generate_demo_petct3d}


# --------------------------------------------------------------------------- data


def load_dataset(manifest: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a demo dataset back from its files.

    Returns:
        ``(x, y, groups)``: ``x`` float32 of shape ``(N, C, *spatial)`` (raw values:
        0-255 for PNG, HU and SUV for NIfTI), ``y`` int64 ``(N,)``, ``groups`` ``(N,)``.
    """
    root = manifest.parent
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    name = json.loads((root / "dataset.json").read_text())["name"]
    spec = DEMO_DATASETS[name]
    arrays = []
    for row in rows:
        channels = [_read(root / row[col]) for col in spec.modalities]
        arrays.append(np.stack(channels))
    x = np.stack(arrays).astype(np.float32)
    y = np.array([spec.class_names.index(r[spec.label_column]) for r in rows], dtype=np.int64)
    groups = np.array([r[spec.group_column] for r in rows])
    return x, y, groups


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(path), dtype=np.float32)
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


def grouped_split(y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import GroupShuffleSplit

    splitter = GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(y)), y, groups))
    return train, test


# --------------------------------------------------------------------------- models


def run_logreg(x, y, groups, train, test) -> dict:
    """Logistic regression on raw standardised pixels/voxels (all channels concatenated).

    With far more pixels than images, an L2-penalised logistic regression is fitted
    in the span of the training images: with the thin SVD ``X = U S Vᵀ`` of the
    standardised training matrix, the model on features ``U S`` (test: ``X_test V``)
    has exactly the same optimum, penalty and predictions as the model on the raw
    pixels (its weights are ``V β``), at a fraction of the cost.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    flat = x.reshape(len(x), -1).astype(np.float64)
    t0 = time.perf_counter()

    def features(tr, te):
        scaler = StandardScaler().fit(flat[tr])
        a, b = scaler.transform(flat[tr]), scaler.transform(flat[te])
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        return u * s, b @ vt.T

    def aucs(tr, te):
        f_tr, f_te = features(tr, te)
        out = {}
        for c in LOGREG_C_GRID:
            model = LogisticRegression(C=c, max_iter=5000, tol=1e-6).fit(f_tr, y[tr])
            out[c] = roc_auc_score(y[te], model.decision_function(f_te))
        return out

    test_auc = aucs(train, test)
    folds = GroupKFold(n_splits=3).split(train, y[train], groups[train])
    per_fold = [aucs(train[a], train[b]) for a, b in folds]
    cv_auc = {c: float(np.mean([f[c] for f in per_fold])) for c in LOGREG_C_GRID}
    chosen = max(cv_auc, key=cv_auc.get)
    return {
        "auc_best_of_grid": round(max(test_auc.values()), 4),
        "auc_cv_chosen_C": round(test_auc[chosen], 4),
        "C_cv_chosen": chosen,
        "auc_by_C": {str(c): round(a, 4) for c, a in test_auc.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def small_cnn(in_chans: int, spatial_dims: int, width: int = 16):
    """4 conv-BN-ReLU blocks (2x max pooling between them), global avg+max pooling, linear.

    Global max pooling beside average pooling lets a small network report "a
    lesion somewhere" without diluting it over the whole image.
    """
    import torch
    import torch.nn as nn

    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
    chans = [in_chans, width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [
            conv(chans[i], chans[i + 1], 3, padding=1, bias=False),
            norm(chans[i + 1]),
            nn.ReLU(),
        ]
        if i < 3:
            layers.append(pool(2))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(2 * chans[-1], 2)

        def forward(self, x):
            f = self.features(x).flatten(2)
            return self.head(torch.cat([f.mean(-1), f.amax(-1)], dim=1))

    return Net()


def _augment(xb, affine: bool, generator):
    """Random flips along every spatial axis (+ a small random affine in 2D)."""
    import torch
    import torch.nn.functional as F

    spatial = list(range(2, xb.ndim))
    for axis in spatial:
        flip = torch.rand(len(xb), generator=generator) < 0.5
        xb = torch.where(flip.view(-1, *[1] * (xb.ndim - 1)), xb.flip(axis), xb)
    if affine and len(spatial) == 2:
        n = len(xb)
        angle = (torch.rand(n, generator=generator) - 0.5) * math.radians(20)
        scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
        shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.1
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(xb.shape), align_corners=False)
        xb = F.grid_sample(xb, grid, padding_mode="border", align_corners=False)
    return xb


def train_torch(
    model, x, y, train, test, *, epochs, lr, batch_size, affine, seed, verbose=False
) -> dict:
    """Plain PyTorch loop (AdamW, cosine LR); returns the test AUC of the last epoch."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    # per-channel standardisation with training-set statistics
    axes = (0, *range(2, x.ndim))
    mean = x[train].mean(axis=axes, keepdims=True)
    std = x[train].std(axis=axes, keepdims=True) + 1e-6
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    t0 = time.perf_counter()
    history = []
    for _epoch in range(epochs):
        model.train()
        order = torch.from_numpy(train)[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:
                continue
            xb = _augment(xt[idx], affine, gen)
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        history.append(round(_auc(model, xt, y, test, roc_auc_score), 4))
        if verbose:
            print(f"    epoch {len(history)}: test auc {history[-1]}", flush=True)
    return {
        "auc": history[-1],
        "auc_by_epoch": history,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _auc(model, xt, y, test, roc_auc_score) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(xt[test[i : i + 64]]) for i in range(0, len(test), 64)])
    score = (logits[:, 1] - logits[:, 0]).numpy()
    return float(roc_auc_score(y[test], score))


def run_cnn(x, y, train, test, spatial_dims, seed, verbose=False) -> dict:
    width, epochs = (16, 20) if spatial_dims == 2 else (8, 25)
    model = small_cnn(x.shape[1], spatial_dims, width=width)
    result = train_torch(
        model,
        x,
        y,
        train,
        test,
        epochs=epochs,
        lr=3e-3,
        batch_size=32,
        affine=False,
        seed=seed,
        verbose=verbose,
    )
    result["model"] = (
        f"small_cnn(width={width}): 4 conv-BN-ReLU blocks, global avg+max pooling, linear"
    )
    return result


def run_resnet10t(x, y, train, test, seed) -> dict:
    import timm

    model = timm.create_model("resnet10t", in_chans=x.shape[1], num_classes=2)
    result = train_torch(
        model, x, y, train, test, epochs=10, lr=1e-3, batch_size=32, affine=True, seed=seed
    )
    result["model"] = "timm resnet10t, random init, flips + affine"
    return result


# --------------------------------------------------------------------------- figures

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def make_figures(seed: int = 0, per_class: int = 4) -> list[Path]:
    """Render ``docs/figures/demo_xray2d.png`` and ``docs/figures/demo_petct3d.png``.

    The first ``per_class`` cases of each class of the default-size datasets
    (generated with ``seed``), read back from their files, with the lesion mask
    drawn as a contour. 3D cases are shown in radiological convention (patient
    right on the image left, anterior up): CT axial slice through the lesion
    (lung window), PET axial slice, PET coronal maximum-intensity projection.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        # 2D
        spec = DEMO_DATASETS["demo-xray2d"]
        manifest = generate_demo_xray2d(Path(tmp) / "x", seed=seed, num_cases=4 * per_class + 8)
        rows = _rows_by_class(manifest, spec, per_class)
        fig, axes = plt.subplots(2, per_class, figsize=(2.0 * per_class, 4.4))
        for r, (label, picked) in enumerate(rows.items()):
            for c, row in enumerate(picked):
                ax = axes[r, c]
                image = _read(manifest.parent / row["image"])
                mask = _read(manifest.parent / row["mask"]) > 0
                ax.imshow(image, cmap="gray", vmin=0, vmax=255)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
                ax.set_title(f"{label} ({row['patient_id']})", fontsize=7)
                ax.set_axis_off()
        fig.suptitle(
            f"demo-xray2d (synthetic, {spec.size}x{spec.size}, seed {seed}); red: lesion mask",
            fontsize=9,
        )
        fig.tight_layout()
        written.append(FIGURES / "demo_xray2d.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

        # 3D
        spec = DEMO_DATASETS["demo-petct3d"]
        manifest = generate_demo_petct3d(Path(tmp) / "p", seed=seed, num_cases=4 * per_class + 4)
        per_class = min(per_class, 3)
        rows = _rows_by_class(manifest, spec, per_class)
        fig, axes = plt.subplots(2 * per_class, 3, figsize=(5.4, 1.9 * 2 * per_class))
        k = 0
        for label, picked in rows.items():
            for row in picked:
                ct, pet, mask = (_read(manifest.parent / row[col]) for col in ("ct", "pet", "mask"))
                z = int(np.argmax(mask.sum(axis=(0, 1))))

                # arrays are (x: patient right+, y: anterior+, z: superior+);
                # display: rows = anterior at top, columns = patient right at left
                def axial(vol, z=z):
                    return vol[::-1, :, z].T[::-1]

                def coronal_mip(vol):
                    return vol.max(axis=1)[::-1].T[::-1]

                ax = axes[k]
                ax[0].imshow(axial(ct), cmap="gray", vmin=-1000, vmax=300)
                ax[1].imshow(axial(pet), cmap="hot", vmin=0, vmax=6)
                for a in ax[:2]:
                    a.contour(axial(mask), levels=[0.5], colors="cyan", linewidths=0.7)
                ax[2].imshow(coronal_mip(pet), cmap="gray_r", vmin=0, vmax=6)
                suv = float(pet[mask > 0].max())
                ax[0].set_title(f"{label}: CT axial", fontsize=7)
                ax[1].set_title(f"PET (lesion SUVmax {suv:.1f})", fontsize=7)
                ax[2].set_title("PET coronal MIP", fontsize=7)
                for a in ax:
                    a.set_axis_off()
                k += 1
        fig.suptitle(
            f"demo-petct3d (synthetic, {spec.size}³, seed {seed}); cyan: lesion mask", fontsize=9
        )
        fig.tight_layout()
        written.append(FIGURES / "demo_petct3d.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def _rows_by_class(manifest: Path, spec, per_class: int) -> dict[str, list[dict[str, str]]]:
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        name: [r for r in rows if r[spec.label_column] == name][:per_class]
        for name in spec.class_names
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEMO_DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--models", nargs="+", default=["logreg", "cnn", "resnet10t"])
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override generator parameters (tuning); implies --no-save",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print the test AUC of every epoch")
    parser.add_argument(
        "--figures",
        action="store_true",
        help="only render docs/figures/demo_*.png (seed = first of --seeds)",
    )
    args = parser.parse_args(argv)
    if args.figures:
        for path in make_figures(seed=args.seeds[0]):
            print(f"wrote {path}")
        return 0

    import torch

    torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = int(value) if key in ("num_cases", "size") else float(value)
    results = []
    for name in args.datasets:
        spec = DEMO_DATASETS[name]
        own = {
            k: v
            for k, v in overrides.items()
            if k in {p for p, _ in spec.params} | {"num_cases", "size", "followup_fraction"}
        }
        spec = spec.replace(**own) if own else spec
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                manifest = GENERATORS[name](Path(tmp) / name, seed=seed, spec=spec)
                gen_s = time.perf_counter() - t0
                x, y, groups = load_dataset(manifest)
            train, test = grouped_split(y, groups, seed)
            if set(groups[train]) & set(groups[test]):
                raise RuntimeError("patient leak between train and test")
            entry = {
                "dataset": name,
                "seed": seed,
                "num_cases": len(y),
                "size": spec.size,
                "num_train": len(train),
                "num_test": len(test),
                "generation_seconds": round(gen_s, 1),
                "overrides": own,
            }
            print(f"{name} seed={seed}: generated {len(y)} cases in {gen_s:.1f}s", flush=True)
            if "logreg" in args.models:
                entry["logreg"] = run_logreg(x, y, groups, train, test)
                print(f"  logreg {entry['logreg']}", flush=True)
            if "cnn" in args.models:
                entry["cnn"] = run_cnn(x, y, train, test, spec.spatial_dims, seed, args.verbose)
                print(
                    f"  cnn auc={entry['cnn']['auc']} {entry['cnn']['auc_by_epoch']} ({entry['cnn']['seconds']}s)",
                    flush=True,
                )
            if "resnet10t" in args.models and spec.spatial_dims == 2:
                entry["resnet10t"] = run_resnet10t(x, y, train, test, seed)
                print(
                    f"  resnet10t auc={entry['resnet10t']['auc']} {entry['resnet10t']['auc_by_epoch']} ({entry['resnet10t']['seconds']}s)",
                    flush=True,
                )
            results.append(entry)
    if not args.no_save and not overrides:
        save_results(results, args.threads)
    return 0


def save_results(results: list[dict], threads: int) -> None:
    """Merge ``results`` into the results file (replacing the same dataset and seed)."""
    import sklearn
    import timm
    import torch

    command = "python benchmarks/demo_difficulty.py " + " ".join(sys.argv[1:])
    for entry in results:
        entry["command"] = command
        entry["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads={threads}"
    old = json.loads(RESULTS.read_text())["results"] if RESULTS.is_file() else []
    done = {(e["dataset"], e["seed"]) for e in results}
    kept = [
        e
        for e in old
        if (e["dataset"], e["seed"]) not in done and e.get("generator_version") == GENERATOR_VERSION
    ]
    for entry in results:
        entry["generator_version"] = GENERATOR_VERSION
    merged = sorted(kept + results, key=lambda e: (e["dataset"], e["seed"]))
    payload = {
        "description": "test ROC AUC on the demo datasets (patient-grouped 75/25 split); see docs/datasets.md",
        "criteria": {
            "logreg_auc_best_of_grid_max": 0.75,
            "cnn_auc_min": 0.9,
            "resnet10t_auc_min": 0.9,
        },
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
        "results": merged,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
