"""Grad-CAM time per image / volume: batched versus one by one, CPU and GPU.

Measures medcls's Grad-CAM (default layer from the model contract) on 2D 224² and
3D 96³ inputs for a CNN and a Transformer(-hybrid) each, with a batch explained at
once versus the same inputs one at a time; for the CNNs also pytorch-grad-cam's
``GradCAM`` on the same layer (the named baseline: NumPy on the CPU, OpenCV / SciPy
resizing). Random weights: the time does not depend on them.

Usage::

    python benchmarks/explain_speed.py                      # CPU, writes results/explain_speed_cpu.json
    python benchmarks/explain_speed.py --device cuda        # on a GPU: results/explain_speed_cuda.json
    python benchmarks/explain_speed.py --quick              # smaller inputs, for a smoke run

Timings on a shared machine are noisy; the JSON records the load average, the
number of threads and the exact settings next to every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from medcls.explain import explain
from medcls.models import create_model

# (label, model name, spatial dims, side, create kwargs, baseline-comparable)
CASES = [
    ("2D CNN", "timm:resnet50", 2, 224, {}, True),
    ("2D Transformer", "timm:vit_small_patch16_224", 2, 224, {}, False),
    ("3D CNN", "timm3d:resnet18", 3, 96, {}, True),
    ("3D Transformer (hybrid)", "timm3d:maxvit_tiny_tf_384", 3, 96, {}, False),
]
QUICK = {224: 64, 96: 32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up (allocations, cuDNN autotuning, lazy imports)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _baseline(model, layer_name: str, x: torch.Tensor):
    """pytorch-grad-cam's GradCAM on the same layer (predicted class)."""
    import pytorch_grad_cam as pgc

    layer = model.get_submodule(layer_name)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pgc.GradCAM(model, [layer]) as cam:
                cam(x, None)

    return run


def measure(case, *, device: torch.device, batch: int, repeats: int, quick: bool) -> dict:
    label, name, dims, side, kwargs, comparable = case
    side = QUICK[side] if quick else side
    if "maxvit" in name or "vit_" in name:
        kwargs = {**kwargs, "img_size": side}
    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=2, **kwargs).to(device).eval()
    x = torch.randn(batch, 1, *(side,) * dims, device=device)
    layers = explain(model, x[:1], "gradcam").layers

    def batched():
        explain(model, x, "gradcam", batch_size=batch)

    def one_by_one():
        for i in range(batch):
            explain(model, x[i : i + 1], "gradcam", batch_size=1)

    result = {
        "label": label,
        "model": name,
        "input": [1, *(side,) * dims],
        "batch": batch,
        "layer": list(layers),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    for key, fn in (("batched", batched), ("one_by_one", one_by_one)):
        times = _timed(fn, device, repeats)
        result[f"{key}_s_per_input"] = statistics.median(times) / batch
        result[f"{key}_runs_s"] = times
    result["speedup_batched"] = result["one_by_one_s_per_input"] / result["batched_s_per_input"]
    if comparable:
        times = _timed(_baseline(model, layers[0], x), device, repeats)
        result["pytorch_grad_cam_batched_s_per_input"] = statistics.median(times) / batch
        result["pytorch_grad_cam_runs_s"] = times
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-2d", type=int, default=8)
    parser.add_argument("--batch-3d", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up")
    parser.add_argument("--quick", action="store_true", help="64² / 32³ inputs")
    parser.add_argument("--only", help="comma-separated labels or model names to run")
    parser.add_argument(
        "-o", "--output", help="JSON path (default results/explain_speed_<device>.json)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cases = CASES
    if args.only:
        keep = {s.strip() for s in args.only.split(",")}
        cases = [c for c in CASES if c[0] in keep or c[1] in keep]
    rows = []
    for case in cases:
        batch = args.batch_2d if case[2] == 2 else args.batch_3d
        row = measure(case, device=device, batch=batch, repeats=args.repeats, quick=args.quick)
        rows.append(row)
        base = row.get("pytorch_grad_cam_batched_s_per_input")
        print(
            f"{row['label']:26s} {row['model']:28s} batched {row['batched_s_per_input']:.3f} s/input, "
            f"one by one {row['one_by_one_s_per_input']:.3f} s/input "
            f"(x{row['speedup_batched']:.2f})"
            + (f", pytorch-grad-cam {base:.3f} s/input" if base else ""),
            flush=True,
        )
    info = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "repeats": args.repeats,
        "quick": args.quick,
        "command": "python benchmarks/explain_speed.py "
        + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "note": "median of the timed runs after one warm-up, divided by the batch size",
    }
    out = (
        Path(args.output)
        if args.output
        else Path(__file__).parent / "results" / f"explain_speed_{device.type}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "results": rows}, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
