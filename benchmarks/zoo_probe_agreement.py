"""Compares medcls's automatic family and CAM-layer choices with the zoo-probe measurements.

- CAM: for every model of ``cam_results.csv`` whose probe found a working Grad-CAM
  layer, is ``model.cam_layer`` that layer (or, for feature maps, a module with the
  same output that the probe's layer feeds unchanged)? Models are built on the meta
  device where their constructor allows it, so this costs almost no compute.
- Family: ``classify_family`` (from the shipped ``_index.json``) vs ``classify2d.csv``
  (timm 2D) and ``results_3d.csv`` (timm_3d).

Run: ``python benchmarks/zoo_probe_agreement.py [/path/to/notes/zoo-probe]``
"""

from __future__ import annotations

import collections
import csv
import sys
import warnings
from pathlib import Path

import torch

from medcls.errors import MedclsError
from medcls.models import create_model
from medcls.models.zoo.families import load_index

PROBE = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/notes/zoo-probe")


def cam_agreement() -> None:
    rows = list(csv.DictReader((PROBE / "cam_results.csv").open()))
    same = differ = 0
    for row in rows:
        if not row["win_layer"]:
            continue
        prefix = "timm3d" if row["group"] == "3d" else "timm"
        size = int(row["size"])
        dims = 3 if prefix == "timm3d" else 2
        name = f"{prefix}:{row['name']}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with torch.device("meta"):
                    model = create_model(name, in_chans=1, num_classes=2)
            except MedclsError:  # constructors that read tensor values: build for real
                model = create_model(name, in_chans=1, num_classes=2)
        cam = model.cam_layer
        layout = {"nchw": "channels_first", "ncdhw": "channels_first", "nhwc": "channels_last"}
        ok = cam.module == row["win_layer"]
        print(
            f"{'=' if ok else '!'} {prefix}:{row['name']:<34} medcls {cam.module:<24} {cam.layout:<15}"
            f" probe {row['win_layer']:<24} {layout.get(row['win_kind'], row['win_kind'])}"
            f" ({dims}D {size})"
        )
        same += ok
        differ += not ok
    print(f"CAM layer: {same} same as the probe's working layer, {differ} different")


def family_agreement() -> None:
    models = load_index().get("models", {})
    for prefix, path, column in (
        ("timm", PROBE / "classify2d.csv", "category"),
        ("timm3d", PROBE / "results_3d.csv", "category3d"),
    ):
        confusion: collections.Counter[tuple[str, str]] = collections.Counter()
        for row in csv.DictReader(path.open()):
            entry = models.get(f"{prefix}:{row['name']}")
            if entry is None:
                continue
            probe = row[column].replace("mlp_other", "mlp")
            confusion[(probe, entry["family"])] += 1
        total = sum(confusion.values())
        agree = sum(n for (a, b), n in confusion.items() if a == b)
        print(f"{prefix}: family agrees on {agree}/{total}")
        for (a, b), n in sorted(confusion.items()):
            if a != b:
                print(f"  probe {a} -> medcls {b}: {n}")


if __name__ == "__main__":
    cam_agreement()
    family_agreement()
