"""Data-loading throughput of the medcls pipeline, without and with the cache.

Three pipelines, each timed as samples per second through a ``DataLoader`` with
the number of worker processes given:

* ``3d``: CT-like ``.nii.gz`` volumes, 160^3 int16 at 1 mm, resampled to 96^3
  (``preprocess.spatial_size``), lung window, then the ``ct`` augmentation preset
  (flips, affine with probability 0.3, intensity jitter, noise, blur);
* ``3d-affine``: the same volumes with flips and a random affine (rotation, zoom)
  on every sample, plus noise: the heaviest per-sample CPU work;
* ``2d``: 8-bit gray PNG files (512^2) resized to 224^2, scaled to [0, 1], with
  the ``xray`` augmentation preset (affine, intensity jitter, noise, blur).

Each is run with ``cache=none`` (decode + preprocess + augment every time),
``cache=disk`` (entries written by a first pass, then read back + augment) and
``cache=memory`` (preprocessed tensors in RAM + augment). The files are
synthetic (smooth shapes plus noise, so compression is realistic) and written
to a temporary folder. The first batch of each pass is not timed; the best of
``--repeats`` passes is kept. The main process runs torch with ``--threads``
threads (default 1, as in each loader worker): on a machine whose cores are
busy with other work, more threads than free cores slow small tensor operations
down by an order of magnitude.

    python benchmarks/data_throughput.py                      # all, workers 0 and 2
    python benchmarks/data_throughput.py --pipelines 3d --workers 0 2 4 --cases 16

Writes ``benchmarks/results/data_throughput.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from medcls.config import config_to_dict, load_config
from medcls.data.cache import DiskCache
from medcls.data.cases import Case, CaseTable
from medcls.data.dataset import CaseDataset
from medcls.data.transforms import build_augment, build_preprocess

RESULTS = Path(__file__).resolve().parent / "results"

_CT_3D = ["preprocess.spatial_size=[96, 96, 96]", "preprocess.intensity={image: {preset: ct_lung}}"]

PIPELINES = {
    "3d": {
        "description": "160^3 int16 .nii.gz -> resample to 96^3, lung window; augment: preset "
        "ct (flips p=0.5 per axis, affine p=0.3, intensity jitter, noise, blur p=0.1)",
        "spatial_dims": 3,
        "overrides": [*_CT_3D, "augment.preset=ct"],
        "batch_size": 2,
    },
    "3d-affine": {
        "description": "as 3d, with a random affine on every sample (flips p=0.5 per axis, "
        "affine p=1: rotate 10 deg, zoom 0.1; noise 0.02)",
        "spatial_dims": 3,
        "overrides": [
            *_CT_3D,
            "augment.flip_prob=0.5",
            "augment.affine_prob=1.0",
            "augment.rotate_deg=10",
            "augment.scale=0.1",
            "augment.noise_std=0.02",
        ],
        "batch_size": 2,
    },
    "2d": {
        "description": "512^2 8-bit PNG -> resize to 224^2, range [0, 255] -> [0, 1]; "
        "augment: preset xray (affine p=0.5, intensity jitter, noise, blur p=0.1)",
        "spatial_dims": 2,
        "overrides": [
            "preprocess.spatial_size=[224, 224]",
            "preprocess.intensity={image: {mode: range, a_min: 0, a_max: 255}}",
            "augment.preset=xray",
        ],
        "batch_size": 32,
    },
}


def _blobs(shape: tuple[int, ...], rng: np.random.Generator, count: int = 6) -> np.ndarray:
    """Smooth ellipsoids on a background, in [0, 1]."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    out = np.zeros(shape, np.float32)
    for _ in range(count):
        centre = rng.uniform(-0.6, 0.6, len(shape))
        radii = rng.uniform(0.1, 0.5, len(shape))
        r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True))
        out += rng.uniform(0.3, 1.0) * (r2 < 1)
    return np.clip(out, 0, 1)


def write_volumes(folder: Path, count: int, size: int = 160) -> list[Path]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        body = _blobs((size, size, size), rng)
        hu = -1000 + 1100 * body + rng.normal(0, 20, body.shape)
        path = folder / f"ct{k}.nii.gz"
        nib.save(nib.Nifti1Image(hu.astype(np.int16), np.eye(4)), str(path))
        paths.append(path)
    return paths


def write_pngs(folder: Path, count: int, size: int = 512) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(1)
    paths = []
    for k in range(count):
        image = 40 + 180 * _blobs((size, size), rng) + rng.normal(0, 8, (size, size))
        path = folder / f"cxr{k}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _dataset(spec: dict, files: list[Path], cache: str, cache_dir: Path) -> CaseDataset:
    cfg = load_config(None, spec["overrides"])
    dims = spec["spatial_dims"]
    cases = [Case(p.name, {"image": str(p)}, ("a" if i % 2 else "b",)) for i, p in enumerate(files)]
    table = CaseTable(cases, ["a", "b"], "binary", ["image"])
    pre = build_preprocess(cfg.preprocess, ["image"], dims, with_mask=True)
    aug = build_augment(cfg.augment, ["image"], dims)
    disk = (
        DiskCache(cache_dir, {"preprocess": config_to_dict(cfg.preprocess)})
        if cache == "disk"
        else None
    )
    return CaseDataset(
        table, cases, pre, aug, spatial_dims=dims, cache=cache, disk_cache=disk, seed=0
    )


def _time_pass(dataset: CaseDataset, batch_size: int, workers: int, epoch: int) -> dict:
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    it = iter(loader)
    first = next(it)
    timed, start = 0, time.perf_counter()
    for batch in it:
        timed += int(batch["image"].shape[0])
    seconds = time.perf_counter() - start
    del first
    return {
        "samples": timed,
        "seconds": round(seconds, 3),
        "samples_per_s": round(timed / seconds, 2),
    }


def run(pipelines: list[str], workers: list[int], cases: int, repeats: int) -> dict:
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "note": "CPU only; shared machine, timings are noisy. First batch of each pass untimed.",
        "pipelines": {},
    }
    with tempfile.TemporaryDirectory(prefix="medcls-throughput-") as tmp:
        tmp = Path(tmp)
        for name in pipelines:
            spec = PIPELINES[name]
            folder = tmp / name
            folder.mkdir()
            started = time.perf_counter()
            writer = write_volumes if spec["spatial_dims"] == 3 else write_pngs
            files = writer(folder, cases if spec["spatial_dims"] == 3 else cases * 8)
            print(f"[{name}] wrote {len(files)} files in {time.perf_counter() - started:.1f} s")
            entry = {
                "description": spec["description"],
                "cases": len(files),
                "batch_size": spec["batch_size"],
                "runs": [],
            }
            for w in workers:
                row = {"workers": w}
                for cache in ("none", "disk", "memory"):
                    ds = _dataset(spec, files, cache, tmp / f"cache-{name}")
                    if cache != "none":  # fill the cache first (as the pre-training scan does)
                        fill = time.perf_counter()
                        ds.scan(num_workers=w)
                        row[f"{cache}_fill_seconds"] = round(time.perf_counter() - fill, 3)
                    passes = [_time_pass(ds, spec["batch_size"], w, e) for e in range(repeats)]
                    best = max(p["samples_per_s"] for p in passes)
                    row[cache] = {"samples_per_s": best, "passes": passes}
                    print(f"[{name}] workers={w} cache={cache}: {best:.2f} samples/s", flush=True)
                row["disk_vs_none"] = round(
                    row["disk"]["samples_per_s"] / row["none"]["samples_per_s"], 1
                )
                row["memory_vs_none"] = round(
                    row["memory"]["samples_per_s"] / row["none"]["samples_per_s"], 1
                )
                entry["runs"].append(row)
            results["pipelines"][name] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument(
        "--cases", type=int, default=8, help="volumes per 3D pipeline (8x as many 2D images)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed passes (best is kept)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the main process (loader workers always use 1); more than the "
        "free cores makes small tensor operations wait for each other",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "data_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run(args.pipelines, args.workers, args.cases, args.repeats)
    results["command"] = "python benchmarks/data_throughput.py " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in (
            ("threads", args.threads),
            ("pipelines", args.pipelines),
            ("workers", args.workers),
            ("cases", args.cases),
            ("repeats", args.repeats),
        )
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{'pipeline':8} {'workers':>7} {'none':>10} {'disk':>10} {'memory':>10} {'disk/none':>10}"
    )
    for name, entry in results["pipelines"].items():
        for row in entry["runs"]:
            print(
                f"{name:8} {row['workers']:>7} {row['none']['samples_per_s']:>10.2f} "
                f"{row['disk']['samples_per_s']:>10.2f} {row['memory']['samples_per_s']:>10.2f} "
                f"{row['disk_vs_none']:>9.1f}x"
            )
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
