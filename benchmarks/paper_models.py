"""Training throughput of the paper models against their papers' lightweight baselines.

Each group pits a paper model against the baselines of its paper's table, at the same
input, batch size, optimiser (AdamW) and precision, in one process. A training step is
forward + cross-entropy + backward + optimiser step on a fixed random batch (the data
pipeline is not measured). The models are timed in interleaved rounds (model A, B, C,
then again A, B, C, ...) after warm-up steps, so a change in machine load hits all of
them alike; the median step time gives samples/s. Parameters and MACs (FLOPs / 2 of
convolutions, linear layers and matrix products, counted on the ``meta`` device with
``torch.utils.flop_counter``) are recorded beside the speed.

    python benchmarks/paper_models.py                          # CPU, every group
    python benchmarks/paper_models.py --groups ldtransformer --rounds 5
    python benchmarks/paper_models.py --device cuda --steps 20 # bf16, cudnn.benchmark

Writes ``benchmarks/results/paper_models_<device>.json`` and prints a table. To add a
model, add a group to ``GROUPS`` (3D groups give a ``(C, D, H, W)`` input and
``spatial_dims: 3``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from medcls.models import create_model

RESULTS = Path(__file__).resolve().parent / "results"

GROUPS: dict[str, dict] = {
    "ldtransformer": {
        "paper": "LDTransformer (Acta Optica Sinica), Table 2 baselines",
        "models": ["ldtransformer_s", "timm:mobilenetv3_small_100", "timm:efficientnet_b0"],
        "input_size": (3, 224, 224),
        "spatial_dims": 2,
    },
    "drltransformer": {
        "paper": "DRLTransformer (J. Electronics & Information Technology), Table 2 baselines",
        "models": ["drltransformer_s", "timm:densenet121", "timm:ghostnet_100"],
        "input_size": (3, 224, 224),
        "spatial_dims": 2,
    },
}


def _size(model: torch.nn.Module, input_size: tuple[int, ...]) -> dict[str, int]:
    x = torch.empty(1, *input_size, device="meta")
    # the fused CPU attention kernel is invisible to the counter; the math one is not
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(x)
    return {"params": sum(p.numel() for p in model.parameters()), "macs": fc.get_total_flops() // 2}


def count_macs(name: str, input_size: tuple[int, ...], spatial_dims: int) -> dict[str, int]:
    """Parameters and MACs at batch 1 and 2 classes, built and run on the meta device.

    Models with ``reparameterize()`` are also counted in their fused inference form
    (``params_fused``, ``macs_fused``).
    """
    with torch.device("meta"):
        model = create_model(
            name, in_chans=input_size[0], num_classes=2, spatial_dims=spatial_dims
        ).eval()
    out = _size(model, input_size)
    if callable(getattr(model, "reparameterize", None)):
        fused = _size(model.reparameterize(), input_size)
        out.update(params_fused=fused["params"], macs_fused=fused["macs"])
    return out


class _Trainer:
    """One model, its optimiser and a fixed batch; :meth:`step` runs one training step."""

    def __init__(self, name: str, group: dict, batch: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.name = name
        self.device = device
        self.model = create_model(
            name,
            in_chans=group["input_size"][0],
            num_classes=2,
            spatial_dims=group["spatial_dims"],
        ).to(device)
        self.cuda = device.type == "cuda"
        if self.cuda:
            fmt = torch.channels_last if group["spatial_dims"] == 2 else torch.channels_last_3d
            self.model = self.model.to(memory_format=fmt)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(batch, *group["input_size"], device=device)
        self.y = torch.randint(0, 2, (batch,), device=device)
        self.times: list[float] = []

    def step(self) -> float:
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()
        )
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def run_group(
    key: str, batch: int, warmup: int, rounds: int, steps: int, device: torch.device
) -> dict:
    """Times every model of a group in interleaved rounds; returns the group's results."""
    group = GROUPS[key]
    trainers = [_Trainer(name, group, batch, device) for name in group["models"]]
    for trainer in trainers:
        for _ in range(warmup):
            trainer.step()
    for _ in range(rounds):
        for trainer in trainers:
            trainer.times += [trainer.step() for _ in range(steps)]
    rows = []
    for trainer in trainers:
        size = count_macs(trainer.name, group["input_size"], group["spatial_dims"])
        median = statistics.median(trainer.times)
        rows.append(
            {
                "model": trainer.name,
                **size,
                "step_seconds_median": round(median, 4),
                "step_seconds_all": [round(t, 4) for t in trainer.times],
                "samples_per_s": round(batch / median, 2),
            }
        )
        del trainer.model, trainer.optimizer
    return {
        "paper": group["paper"],
        "input_size": list(group["input_size"]),
        "batch_size": batch,
        "results": rows,
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per model per round")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    report = {
        "benchmark": "training throughput (forward + backward + AdamW step), fixed random batch",
        "device": args.device,
        "card": card or platform.machine(),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "warmup": args.warmup,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "groups": {},
    }
    for key in args.groups:
        report["groups"][key] = result = run_group(
            key, args.batch, args.warmup, args.rounds, args.steps, device
        )
        print(f"\n{key}: {result['paper']}, batch {args.batch}, input {result['input_size']}")
        print(f"{'model':32s} {'params':>10s} {'MACs':>12s} {'s/step':>8s} {'samples/s':>10s}")
        for row in result["results"]:
            print(
                f"{row['model']:32s} {row['params']:>10,d} {row['macs'] / 1e6:>10.1f} M "
                f"{row['step_seconds_median']:>8.3f} {row['samples_per_s']:>10.2f}"
            )
    report["load_average_at_end"] = list(os.getloadavg())
    out = args.out or RESULTS / f"paper_models_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return out


if __name__ == "__main__":
    main()
