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
    python benchmarks/paper_models.py --device cuda --steps 10 --profile
                                        # bf16 autocast, channels-last, cudnn.benchmark

Batch sizes and the 3D volume side default per device (``BATCHES``, ``VOLUME``): on
a GPU the 2D groups run at batch 64 and 256 and the 3D groups at 96^3, batch 16 (the
issue's reference setting); on the CPU at batch 16 and 32^3, batch 4. ``reference3d``
times the issue's reference points (timm_3d EfficientNet-B0 and ResNet-18); with
``--no-cudnn-benchmark`` it shows the cost of cuDNN's default algorithm choice.
``--profile`` adds each paper model's top CUDA kernels (``torch.profiler``) to a text
file next to the JSON.

Writes ``benchmarks/results/paper_models_<device>[_<card>].json`` and prints a table.
To add a model, add a group to ``GROUPS`` (3D groups give ``spatial_dims: 3`` and the
number of input channels; their side comes from ``--volume``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from medcls.models import create_model, to_channels_last

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
    "light3dformer": {
        "paper": "Cross-modal Light-3Dformer (Acta Electronica Sinica), 3D baselines of the issue",
        "models": ["light3dformer_s", "timm3d:efficientnet_b3", "timm3d:resnet50"],
        "input_size": (2,),  # PET + CT; the side comes from --volume
        "spatial_dims": 3,
    },
    "cconvformer": {
        "paper": "3D-CConvFormer (PET/CT), 3D baselines of the issue",
        "models": ["cconvformer_s", "timm3d:efficientnet_b3", "timm3d:resnet50"],
        "input_size": (2,),
        "spatial_dims": 3,
    },
    "reference3d": {
        "paper": "the issue's reference points (timm_3d EfficientNet-B0 and ResNet-18)",
        "models": ["timm3d:efficientnet_b0", "timm3d:resnet18"],
        "input_size": (2,),
        "spatial_dims": 3,
    },
}

# default batch sizes and 3D volume side per device type
BATCHES = {"cpu": {2: [16], 3: [4]}, "cuda": {2: [64, 256], 3: [16]}}
VOLUME = {"cpu": 32, "cuda": 96}


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"name?key=value&key=value"`` -> ``(name, kwargs)``; values are parsed as YAML.

    Lets one run time a model option against the default, e.g.
    ``--models ldtransformer_s ldtransformer_s?dynamic=false``.
    """
    name, _, query = spec.partition("?")
    kwargs = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--models: {spec!r}: expected key=value after '?', got {item!r}")
        kwargs[key] = yaml.safe_load(value)
    return name, kwargs


def card_slug(device: torch.device) -> str:
    """``cpu`` or the GPU's name made file-safe, e.g. ``cuda_nvidia_h100_80gb_hbm3``."""
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    return "cuda_" + re.sub(r"[^a-z0-9]+", "_", name).strip("_")


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
    model_name, kwargs = parse_spec(name)
    with torch.device("meta"):
        model = create_model(
            model_name, in_chans=input_size[0], num_classes=2, spatial_dims=spatial_dims, **kwargs
        ).eval()
    out = _size(model, input_size)
    if callable(getattr(model, "reparameterize", None)):
        fused = _size(model.reparameterize(), input_size)
        out.update(params_fused=fused["params"], macs_fused=fused["macs"])
    return out


# metadata-only aten operations: no kernel is launched for them
_VIEW_OPS = {
    "_reshape_alias",
    "_unsafe_view",
    "alias",
    "as_strided",
    "detach",
    "expand",
    "permute",
    "select",
    "slice",
    "split",
    "split_with_sizes",
    "squeeze",
    "t",
    "transpose",
    "unbind",
    "unsqueeze",
    "view",
}


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in _VIEW_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(name: str, input_size: tuple[int, ...], spatial_dims: int) -> int:
    """Tensor operations (views not counted) of one forward + backward at batch 2.

    Counted on the ``meta`` device, so it costs no compute. In eager mode each one is
    a dispatch from Python and usually a kernel launch: when a GPU step is bound by
    launch cost, its time follows this count rather than the MACs.
    """
    model_name, kwargs = parse_spec(name)
    with torch.device("meta"):
        model = create_model(
            model_name, in_chans=input_size[0], num_classes=2, spatial_dims=spatial_dims, **kwargs
        ).train()
        x = torch.empty(2, *input_size)
    with sdpa_kernel(SDPBackend.MATH), _OpCounter() as counter:
        model(x).float().sum().backward()
    return counter.count


class _Trainer:
    """One model, its optimiser and a fixed batch; :meth:`step` runs one training step.

    ``mode="graph"`` (CUDA only) captures the whole step (forward, backward, AdamW) in a
    CUDA graph after warm-up, and a step replays it: the time the GPU needs, without
    Python's per-operation launch cost (what ``torch.compile(mode="reduce-overhead")``
    also removes, without its kernel fusion). ``mode="compile"`` runs the model through
    ``torch.compile(mode="reduce-overhead")`` (fusion and CUDA graphs; the optimiser
    step stays eager), as ``trainer.compile: reduce-overhead`` does in training.
    """

    def __init__(
        self,
        name: str,
        input_size: tuple[int, ...],
        spatial_dims: int,
        batch: int,
        device: torch.device,
        channels_last: bool,
        mode: str = "eager",
    ) -> None:
        torch.manual_seed(0)
        self.name = name
        self.mode = mode
        self.graph: torch.cuda.CUDAGraph | None = None
        self.device = device
        model_name, kwargs = parse_spec(name)
        self.model = create_model(
            model_name, in_chans=input_size[0], num_classes=2, spatial_dims=spatial_dims, **kwargs
        ).to(device)
        self.cuda = device.type == "cuda"
        self.model.train()
        self.forward = (
            torch.compile(self.model, mode="reduce-overhead") if mode == "compile" else self.model
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-3, capturable=mode == "graph"
        )
        self.x = torch.randn(batch, *input_size, device=device)
        if channels_last:
            to_channels_last(self.model, spatial_dims)
            fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
            self.x = self.x.contiguous(memory_format=fmt)
        self.y = torch.randint(0, 2, (batch,), device=device)
        self.times: list[float] = []

    def _train_step(self, zero_grad: bool = True) -> None:
        autocast = (
            # a captured graph must not reuse casts cached outside it
            torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=self.mode != "graph")
            if self.cuda
            else contextlib.nullcontext()
        )
        with autocast:
            loss = F.cross_entropy(self.forward(self.x).float(), self.y)
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _capture(self) -> None:
        """Warm-up on a side stream, then capture one step (gradients allocated inside)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._train_step()
        torch.cuda.current_stream().wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._train_step(zero_grad=False)  # replays overwrite the graph's own gradients

    def step(self) -> float:
        if self.mode == "graph" and self.graph is None:
            self._capture()
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        if self.graph is not None:
            self.graph.replay()
        else:
            self._train_step()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def profile(self, steps: int = 3, top: int = 25) -> str:
        """The top CUDA kernels of ``steps`` training steps, as ``torch.profiler``'s table."""
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                self._train_step()
            torch.cuda.synchronize()
        return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=top)


def run_group(
    key: str,
    batch: int,
    warmup: int,
    rounds: int,
    steps: int,
    device: torch.device,
    volume: int,
    profile: dict[str, str] | None = None,
    channels_last: bool = False,
    models: list[str] | None = None,
    modes: tuple[str, ...] = ("eager",),
) -> dict:
    """Times every model of a group in interleaved rounds; returns the group's results.

    With ``profile`` (a dict), the first model of the group (the paper model) is also
    profiled and its kernel table stored under ``"<group> batch <batch>"``.
    """
    group = GROUPS[key]
    n = group["spatial_dims"]
    input_size = tuple(group["input_size"]) if n == 2 else (group["input_size"][0],) + (volume,) * 3
    names = models or group["models"]
    trainers = [
        _Trainer(name, input_size, n, batch, device, channels_last, mode)
        for name in names
        for mode in modes
    ]
    failed: dict[int, str] = {}
    for i, trainer in enumerate(trainers):
        try:
            for _ in range(warmup):
                trainer.step()
        except RuntimeError as exc:  # e.g. an operation that cannot be captured in a graph
            failed[i] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    for _ in range(rounds):
        for i, trainer in enumerate(trainers):
            if i not in failed:
                trainer.times += [trainer.step() for _ in range(steps)]
    if profile is not None and device.type == "cuda":
        profile[f"{key} ({trainers[0].name}) batch {batch}"] = trainers[0].profile()
    rows = []
    for i, trainer in enumerate(trainers):
        size = count_macs(trainer.name, input_size, n)
        size["ops_per_step"] = count_ops(trainer.name, input_size, n)
        if i in failed:
            rows.append({"model": trainer.name, "mode": trainer.mode, **size, "error": failed[i]})
            continue
        median = statistics.median(trainer.times)
        rows.append(
            {
                "model": trainer.name,
                "mode": trainer.mode,
                **size,
                "step_seconds_median": round(median, 4),
                "step_seconds_all": [round(t, 4) for t in trainer.times],
                "samples_per_s": round(batch / median, 2),
                # forward MACs x 3 (forward and two backward products) x 2 FLOPs per MAC
                "effective_tflops": round(6 * size["macs"] * batch / median / 1e12, 3),
            }
        )
        del trainer.model, trainer.optimizer, trainer.forward, trainer.graph
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "paper": group["paper"],
        "input_size": list(input_size),
        "batch_size": batch,
        "results": rows,
    }


def _write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=None, choices=list(GROUPS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=None, help="batch sizes (default: per device)"
    )
    parser.add_argument("--volume", type=int, default=None, help="side of the 3D input")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per model per round")
    parser.add_argument("--no-cudnn-benchmark", action="store_true")
    parser.add_argument(
        "--memory-format",
        choices=["auto", "channels_last", "contiguous"],
        default="auto",
        help="auto: channels-last on CUDA, contiguous on the CPU",
    )
    parser.add_argument(
        "--models", nargs="+", help="replace the group's models (one group); name?key=value"
    )
    parser.add_argument("--profile", action="store_true", help="kernel tables (CUDA only)")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["eager", "graph", "compile"],
        default=["eager"],
        help="graph: replay the step as a captured CUDA graph (CUDA only); "
        "compile: torch.compile(mode='reduce-overhead')",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cudnn_benchmark = device.type == "cuda" and not args.no_cudnn_benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    groups = args.groups or [k for k in GROUPS if k != "reference3d" or device.type == "cuda"]
    if "graph" in args.modes and device.type != "cuda":
        parser.error("--modes graph needs --device cuda")
    if args.models and len(groups) != 1:
        parser.error("--models needs exactly one --groups")
    channels_last = args.memory_format == "channels_last" or (
        args.memory_format == "auto" and device.type == "cuda"
    )
    volume = args.volume or VOLUME[device.type]
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    report = {
        "benchmark": "training throughput (forward + backward + AdamW step), fixed random batch",
        "device": args.device,
        "card": card or platform.machine(),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "memory_format": "channels_last" if channels_last else "contiguous",
        "cudnn_benchmark": cudnn_benchmark,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "warmup": args.warmup,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "modes": args.modes,
        "groups": {},
    }
    suffix = "" if cudnn_benchmark or device.type != "cuda" else "_no_cudnn_benchmark"
    if args.memory_format != "auto":
        suffix += f"_{args.memory_format}"
    out = args.out or RESULTS / f"paper_models_{card_slug(device)}{suffix}.json"
    profile: dict[str, str] | None = {} if args.profile else None
    for key in groups:
        batches = args.batch or BATCHES[device.type][GROUPS[key]["spatial_dims"]]
        for batch in batches:
            label = key if len(batches) == 1 else f"{key}@{batch}"
            report["groups"][label] = result = run_group(
                key,
                batch,
                args.warmup,
                args.rounds,
                args.steps,
                device,
                volume,
                profile,
                channels_last,
                args.models,
                tuple(args.modes),
            )
            stamp = time.strftime("%H:%M:%S")
            print(f"\n[{stamp}] {label}: {result['paper']}, batch {batch}, {result['input_size']}")
            print(
                f"{'model':36s} {'mode':6s} {'params':>10s} {'MACs':>12s} {'s/step':>8s} "
                f"{'samples/s':>10s} {'TFLOP/s':>8s}"
            )
            for row in result["results"]:
                head = f"{row['model']:36s} {row['mode']:6s} {row['params']:>10,d} "
                if "error" in row:
                    print(head + row["error"])
                    continue
                print(
                    head + f"{row['macs'] / 1e6:>10.1f} M {row['step_seconds_median']:>8.3f} "
                    f"{row['samples_per_s']:>10.2f} {row['effective_tflops']:>8.3f}"
                )
            _write(out, report)  # after every group: a killed run keeps what it measured
    report["load_average_at_end"] = list(os.getloadavg())
    _write(out, report)
    print(f"\nwrote {out}")
    if profile:
        text = "\n\n".join(f"## {label}\n{table}" for label, table in profile.items())
        out.with_suffix(".profile.txt").write_text(text + "\n")
        print(f"wrote {out.with_suffix('.profile.txt')}")
    return out


if __name__ == "__main__":
    main()
