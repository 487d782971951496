"""Cost per FLOP of the 3D convolutions light models are built from (GPU first).

Light 3D models spend most of their time in depthwise ``3^3`` convolutions, which
cuDNN runs far below its dense-convolution speed. This benchmark times one training
step of a single convolution (forward, input gradient and weight gradient) for the
shapes a 96^3 volume produces in the light paper models, in both memory formats, and
compares:

- ``depthwise``: ``Conv3d(C, C, 3, groups=C)``, what the models declare;
- ``dense``: ``Conv3d(C, C, 3)``, ``C`` times the FLOPs of the depthwise one;
- ``pointwise``: ``Conv3d(C, C, 1)``;
- ``gate``: ``x * sigmoid(y)``, an element-wise op, for the memory-bound floor.

The baseline is the dense convolution of the same shape, timed in the same process:
``ratio_to_dense`` is depthwise time / dense time, so a ratio near 1 says the
depthwise kernel costs as much as one with ``C`` times its arithmetic.

    python benchmarks/conv3d_cost.py --device cuda       # bf16 autocast, cudnn.benchmark
    python benchmarks/conv3d_cost.py --quick             # CPU smoke run, small shapes

Writes ``benchmarks/results/conv3d_cost_<device>[_<card>].json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from paper_models import card_slug  # benchmarks/ is on the path when run as a script
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"

# (channels, side): the grids of light3dformer_s (stem stride 2, widths = dims / 4 in the
# token mixers) and of timm_3d's EfficientNet stages at a 96^3 input, batch 16.
SHAPES = [(2, 48), (8, 48), (32, 48), (6, 24), (24, 24), (144, 24), (16, 12), (64, 12), (32, 6)]
QUICK_SHAPES = [(2, 16), (8, 16), (16, 8)]


def _timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of ``fn()`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _case(
    kind: str, channels: int, side: int, batch: int, fmt: torch.memory_format, device
) -> tuple:
    """The module (or None), the input and the MACs of one training step's forward."""
    x = torch.randn(batch, channels, side, side, side, device=device)
    x = x.to(memory_format=fmt).requires_grad_(True)
    voxels = batch * side**3
    if kind == "gate":
        return None, x, 0
    if kind == "depthwise":
        conv, macs = (
            nn.Conv3d(channels, channels, 3, padding=1, groups=channels),
            voxels * channels * 27,
        )
    elif kind == "dense":
        conv, macs = nn.Conv3d(channels, channels, 3, padding=1), voxels * channels**2 * 27
    else:
        conv, macs = nn.Conv3d(channels, channels, 1), voxels * channels**2
    return conv.to(device).to(memory_format=fmt), x, macs


def measure(
    kind: str, channels: int, side: int, batch: int, fmt_name: str, device, warmup: int, iters: int
) -> dict:
    """One row: median seconds of forward + backward, and the achieved TFLOP/s."""
    fmt = torch.channels_last_3d if fmt_name == "channels_last_3d" else torch.contiguous_format
    conv, x, macs = _case(kind, channels, side, batch, fmt, device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    y = torch.randn_like(x) if conv is None else None

    def step() -> None:
        with autocast:
            out = x * torch.sigmoid(y) if conv is None else conv(x)
        out.float().sum().backward()

    seconds = _timed(step, device, warmup, iters)
    flops = 3 * 2 * macs  # forward, input gradient, weight gradient
    return {
        "kind": kind,
        "channels": channels,
        "side": side,
        "format": fmt_name,
        "seconds": round(seconds, 6),
        "gmacs_forward": round(macs / 1e9, 4),
        "tflops": round(flops / seconds / 1e12, 3) if macs else None,
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rows = []
    print(
        f"{'kind':10s} {'C':>4s} {'side':>4s} {'format':18s} {'ms':>9s} {'TFLOP/s':>8s} {'vs dense':>8s}"
    )
    for channels, side in shapes:
        for fmt_name in ("contiguous", "channels_last_3d"):
            found = {
                kind: measure(
                    kind, channels, side, args.batch, fmt_name, device, args.warmup, args.iters
                )
                for kind in ("dense", "depthwise", "pointwise", "gate")
            }
            for kind, row in found.items():
                row["ratio_to_dense"] = round(row["seconds"] / found["dense"]["seconds"], 3)
                rows.append(row)
                tflops = "" if row["tflops"] is None else f"{row['tflops']:.3f}"
                print(
                    f"{kind:10s} {channels:>4d} {side:>4d} {fmt_name:18s} "
                    f"{row['seconds'] * 1e3:>9.3f} {tflops:>8s} {row['ratio_to_dense']:>8.2f}"
                )
    report = {
        "benchmark": "one Conv3d training step (forward + input and weight gradients)",
        "device": args.device,
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "cudnn_benchmark": device.type == "cuda",
        "torch": torch.__version__,
        "batch": args.batch,
        "rows": rows,
    }
    out = args.out or RESULTS / f"conv3d_cost_{card_slug(device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
