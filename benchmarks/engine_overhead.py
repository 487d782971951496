"""Training throughput of the medcls engine versus a hand-written PyTorch loop.

Both train the same model on the same preprocessed samples (already in memory),
with the same batch size, precision, optimiser (AdamW) and per-step schedule, in
one process, one after the other, and alternating over several repeats. The
engine is timed from the start of each training epoch to the end of its last
batch (validation excluded); the hand loop likewise per epoch. The first epoch of
each is a warm-up and is not counted.

    python benchmarks/engine_overhead.py                 # 2D and 3D, CPU (or the GPU if present)
    python benchmarks/engine_overhead.py --cases 2d --epochs 4

Writes ``benchmarks/results/engine_overhead_<device>.json`` and prints a table.
The ratio engine/hand >= 0.9 on CPU (>= 0.95 on GPU) is the target. Each run also
records samples per second of process CPU time (``time.process_time``): on a shared
machine whose other jobs steal cores, that ratio is the steadier one (the wall-clock
ratio swings with the other jobs' load).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from medcls.config import load_config
from medcls.data.datamodule import ClassificationDataModule
from medcls.engine.api import _precision, train
from medcls.engine.optim import build_optimizer, build_scheduler

RESULTS = Path(__file__).resolve().parent / "results"

CASES = {
    "2d": {
        "description": "timm:resnet10t, demo-xray2d 1x64x64, batch 32",
        "overrides": [
            "data.source=demo-xray2d",
            "data.classes=[normal, pneumonia]",
            "preprocess.spatial_size=[64, 64]",
            "model.name=timm:resnet10t",
            "data.batch_size=32",
            "data.demo.num_cases=800",
        ],
    },
    "3d": {
        "description": "timm3d:resnet10t, demo-petct3d 2x32x32x32 (CT+PET), batch 8",
        "overrides": [
            "data.source=demo-petct3d",
            "data.modalities=[ct, pet]",
            "data.classes=[benign, malignant]",
            "preprocess.spatial_size=[32, 32, 32]",
            "model.name=timm3d:resnet10t",
            "data.batch_size=8",
            "data.demo.num_cases=200",
        ],
    },
}


class TrainTimer(pl.Callback):
    """Wall and process-CPU seconds from each training epoch's start to its last batch."""

    def __init__(self) -> None:
        self.epochs: list[tuple[float, float, int]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._cpu, self._samples = time.perf_counter(), time.process_time(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += int(batch["target"].shape[0])
        self._end, self._cpu_end = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append((self._end - self._start, self._cpu_end - self._cpu, self._samples))


def engine_throughput(overrides: list[str], epochs: int, workdir: Path) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) of the engine, warm-up excluded."""
    timer = TrainTimer()
    train(
        None,
        [*overrides, f"trainer.max_epochs={epochs}", f"run_dir={workdir}"],
        callbacks=[timer],
        overwrite=True,
    )
    timed = timer.epochs[1:]
    samples = sum(n for _, _, n in timed)
    return samples / sum(w for w, _, _ in timed), samples / sum(c for _, c, _ in timed)


def hand_throughput(overrides: list[str], epochs: int) -> tuple[float, float]:
    """The same training written as a plain loop over in-memory tensors."""
    from medcls.engine.api import _build_model
    from medcls.engine.module import seed_all

    cfg = load_config(None, overrides)
    dm = ClassificationDataModule(cfg, None, progress=False)
    dm.setup_data()
    dataset = dm.datasets["train"]
    xs = torch.stack(
        [torch.cat([dataset.prepare(i)[m] for m in dm.modalities]) for i in range(len(dataset))]
    )
    ys = torch.tensor([dm.table.target(c) for c in dataset.cases])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed_all(cfg.seed)
    model = _build_model(
        cfg.model.name,
        in_chans=dm.in_chans,
        num_classes=len(dm.classes),
        spatial_dims=dm.spatial_dims,
        kwargs={},
    ).to(device)
    xs, ys = xs.to(device), ys.to(device)
    batch = cfg.data.batch_size
    # like the engine's loader: a last batch of one sample is dropped (BatchNorm)
    steps = -(-len(xs) // batch) - int(len(xs) > batch and len(xs) % batch == 1)
    used = min(len(xs), steps * batch)
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(
        optimizer, cfg.scheduler, total_steps=steps * epochs, steps_per_epoch=steps
    )
    criterion = torch.nn.CrossEntropyLoss()
    precision = _precision(cfg)
    autocast = precision.startswith(("bf16", "16"))
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    times, cpu_times = [], []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(epoch)).to(device)
        start, cpu = time.perf_counter(), time.process_time()
        for k in range(steps):
            idx = order[k * batch : (k + 1) * batch]
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                loss = criterion(model(xs[idx]).float(), ys[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
    samples = used * (epochs - 1)
    return samples / sum(times[1:]), samples / sum(cpu_times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per measurement (first is warm-up)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating repeats of each measurement"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    common = [
        "trainer.progress=false",
        "augment.flip_prob=0",
        "data.num_workers=0",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
    ]
    results = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            overrides = common + CASES[name]["overrides"]
            engine, hand = [], []
            for r in range(args.repeats):
                hand.append(hand_throughput(overrides, args.epochs))
                engine.append(engine_throughput(overrides, args.epochs, Path(tmp) / f"{name}{r}"))
            e = statistics.median(w for w, _ in engine)
            h = statistics.median(w for w, _ in hand)
            ec = statistics.median(c for _, c in engine)
            hc = statistics.median(c for _, c in hand)
            results["cases"][name] = {
                "description": CASES[name]["description"],
                "precision": _precision(load_config(None, overrides)),
                "engine_samples_per_s": e,
                "hand_loop_samples_per_s": h,
                "ratio": e / h,
                "engine_samples_per_cpu_s": ec,
                "hand_loop_samples_per_cpu_s": hc,
                "ratio_cpu_time": ec / hc,
                "engine_runs": engine,
                "hand_runs": hand,
            }
            print(
                f"{name}: engine {e:.1f} samples/s, hand loop {h:.1f} samples/s, ratio {e / h:.3f}; "
                f"per CPU second {ec:.1f} vs {hc:.1f}, ratio {ec / hc:.3f}",
                file=sys.stderr,
            )
    tag = "cpu" if device == "cpu" else device.lower().replace(" ", "-")
    out = args.output or RESULTS / f"engine_overhead_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
