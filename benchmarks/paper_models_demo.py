"""Do the paper models learn? Each one against a zoo baseline of similar size, on the demo data.

For every paper preset in ``configs/`` (LDTransformer, DRLTransformer, MADenseNet,
DDSF-Net on ``demo-xray2d``; Light-3Dformer, 3D-CConvFormer on ``demo-petct3d``) the
script trains twice with ``medcls train``, each run in its own process:

* the paper model, exactly as the preset says;
* a zoo model of similar parameter count (``BASELINES``), with the **same** preset
  (data, split, preprocessing, augmentation, loss, optimiser, schedule, epochs): only
  ``model.name`` is overridden (and, for the 3D presets, ``model.kwargs={}``, since the
  paper models' ``modalities`` argument means nothing to a zoo model; the zoo model gets
  the PET/CT channels concatenated, as in ``configs/demo-petct3d.yaml``).

For each run it records the test AUC and accuracy of the best checkpoint
(``metrics.json``), its parameters (``checkpoints/best.json``), the fit seconds and
epochs (``timing.json``), and the user/system CPU seconds of the training process
(``getrusage`` of the child, the number ``/usr/bin/time -f %U`` prints).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/paper_models_demo.py
    .venv/bin/python benchmarks/paper_models_demo.py --only ldtransformer madensenet
    .venv/bin/python benchmarks/paper_models_demo.py --only ddsfnet --roles paper \\
        --set optimizer.lr=0.0005 --tag lr5e-4        # a variant, stored beside the preset's

Runs go to ``--run-root`` (default ``/tmp/paper_runs``: ``<preset>`` and
``<preset>_baseline``); a finished run (``metrics.json`` and the script's
``cpu_seconds.json`` present) is read back instead of retrained unless ``--rerun``.
Results are merged into ``benchmarks/results/paper_models_demo_cpu.json`` (one entry per
preset and tag) and printed as a Markdown table. Run it on an idle machine, one training
at a time: the CPU seconds are the comparable number, the fit seconds depend on the load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "paper_models_demo_cpu.json"

# preset -> the zoo model of similar parameter count trained with it as the baseline
# (parameters at the preset's input and 2 classes, `medcls profile NAME --input ...`)
BASELINES: dict[str, str] = {
    "ldtransformer": "timm:lcnet_035",  # 0.24 M vs 0.37 M
    "drltransformer": "timm:lcnet_035",  # 0.20 M vs 0.37 M
    "madensenet": "timm:densenet121",  # 5.97 M vs 6.95 M
    "ddsfnet": "timm:resnet14t",  # 8.63 M vs 8.04 M
    "light3dformer": "timm3d:mobilenetv2_035",  # 0.39 M vs 0.45 M (2x32^3)
    "cconvformer": "timm3d:densenet121",  # 11.29 M vs 11.27 M (2x32^3)
}
# overrides a zoo model needs on top of model.name, per preset
BASELINE_OVERRIDES: dict[str, list[str]] = {
    "light3dformer": ["model.kwargs={}"],
    "cconvformer": ["model.kwargs={}"],
}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _preset(key: str) -> dict:
    import yaml

    return yaml.safe_load((REPO / "configs" / f"{key}.yaml").read_text())


def train_args(key: str, role: str, run_dir: Path, extra: list[str]) -> list[str]:
    """The ``medcls train`` arguments of one run (without the program)."""
    args = ["train", f"configs/{key}.yaml"]
    if role == "baseline":
        args += [f"model.name={BASELINES[key]}", *BASELINE_OVERRIDES.get(key, [])]
        extra = [kv for kv in extra if not kv.startswith("model.name=")]
    return [*args, f"run_dir={run_dir}", "trainer.progress=false", *extra]


def run_one(
    key: str,
    role: str,
    run_dir: Path,
    extra: list[str],
    *,
    threads: int,
    niceness: int,
    rerun: bool,
) -> dict:
    """Trains one run (or reads a finished one back) and returns its row."""
    args = train_args(key, role, run_dir, extra)
    shown = f"OMP_NUM_THREADS={threads} nice -n {niceness} medcls " + shlex.join(args)
    cpu_file = run_dir / "cpu_seconds.json"
    done = (run_dir / "metrics.json").is_file() and cpu_file.is_file()
    if rerun or not done:
        cmd = [sys.executable, "-m", "medcls.cli.main", *args]
        if run_dir.exists():
            cmd.append("--overwrite")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        print(f"[{key}/{role}] {shown}", flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=env,
            preexec_fn=lambda: os.nice(niceness),
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:  # recorded, so that one failing model does not stop the rest
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
            print(f"[{key}/{role}] failed: {lines[-1]}", flush=True)
            return {
                "model": BASELINES[key] if role == "baseline" else _preset(key)["model"]["name"],
                "error": lines[-1],
                "cpu_user_seconds": round(after.ru_utime - before.ru_utime, 1),
                "run_dir": str(run_dir),
                "command": shown,
            }
        cpu = {
            "user": round(after.ru_utime - before.ru_utime, 1),
            "system": round(after.ru_stime - before.ru_stime, 1),
            "wall": round(wall, 1),
            "threads": threads,
        }
        cpu_file.write_text(json.dumps(cpu, indent=2) + "\n")
    else:
        print(f"[{key}/{role}] finished run read back from {run_dir}", flush=True)
    cpu = _read_json(cpu_file)
    metrics = _read_json(run_dir / "metrics.json")
    meta = _read_json(run_dir / "checkpoints" / "best.json")
    timing = _read_json(run_dir / "timing.json")
    test = metrics["test"]
    return {
        "model": meta["model"]["name"],
        "params": meta["num_parameters"],
        "test_auc": round(test["auc"], 4),
        "test_accuracy": round(test["accuracy"], 4),
        "test_balanced_accuracy": round(test["balanced_accuracy"], 4),
        "test_samples": test["num_samples"],
        "val_auc": round(metrics["val"]["auc"], 4),
        "best_epoch": meta.get("epoch"),
        "epochs_run": timing.get("epochs_run"),
        "fit_seconds": round(timing.get("fit_seconds", float("nan")), 1),
        "cpu_user_seconds": cpu.get("user"),
        "cpu_system_seconds": cpu.get("system"),
        "threads": cpu.get("threads"),
        "run_dir": str(run_dir),
        "command": shown,
    }


def table(entries: dict[str, dict]) -> str:
    """Markdown table of the stored entries."""
    lines = [
        "| preset | paper model | params | baseline | params | test AUC paper / baseline "
        "| test acc. paper / baseline | epochs | CPU s paper / baseline |",
        "|---|---|---:|---|---:|---|---|---:|---|",
    ]
    for name, entry in entries.items():
        p, b = entry.get("paper"), entry.get("baseline")
        if not p or not b:
            continue
        if "error" in p or "error" in b:
            bad = p if "error" in p else b
            lines.append(
                f"| {name} | `{p['model']}` | | `{b['model']}` | | failed: {bad['error']} |"
            )
            continue
        lines.append(
            f"| {name} | `{p['model']}` | {p['params'] / 1e6:.2f} M | `{b['model']}` "
            f"| {b['params'] / 1e6:.2f} M | {p['test_auc']:.3f} / {b['test_auc']:.3f} "
            f"| {p['test_accuracy']:.3f} / {b['test_accuracy']:.3f} | {entry['epochs']} "
            f"| {p['cpu_user_seconds']:.0f} / {b['cpu_user_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BASELINES), help="presets to run")
    parser.add_argument("--roles", nargs="+", choices=["paper", "baseline"], default=None)
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        dest="extra",
        help="overrides for every run (a variant; give it a --tag)",
    )
    parser.add_argument("--tag", default="", help="name suffix of a variant's runs and entry")
    parser.add_argument("--run-root", type=Path, default=Path("/tmp/paper_runs"))
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--nice", type=int, default=5, help="niceness of each run")
    parser.add_argument("--rerun", action="store_true", help="retrain finished runs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument(
        "--baseline", default=None, help="another baseline model for --only's presets (with --tag)"
    )
    args = parser.parse_args()
    if (args.extra or args.baseline) and not args.tag:
        parser.error("--set and --baseline change the recipe: name the variant with --tag")
    if args.baseline:
        for key in args.only or list(BASELINES):
            BASELINES[key] = args.baseline

    import timm
    import torch

    from medcls.data.synthetic import GENERATOR_VERSION

    stored = _read_json(args.output) if not args.no_save else {}
    entries: dict[str, dict] = stored.get("entries", {})
    for key in args.only or list(BASELINES):
        name = key + (f"@{args.tag}" if args.tag else "")
        preset = _preset(key)
        entry = entries.get(name, {})
        entry.update(
            preset=f"configs/{key}.yaml",
            dataset=preset["data"]["source"],
            spatial_size=preset["preprocess"]["spatial_size"],
            epochs=preset["trainer"]["max_epochs"],
            overrides=args.extra,
        )
        for role in args.roles or ["paper", "baseline"]:
            suffix = "" if role == "paper" else "_baseline"
            run_dir = args.run_root / f"{key}{suffix}{'_' + args.tag if args.tag else ''}"
            entry[role] = run_one(
                key,
                role,
                run_dir,
                args.extra,
                threads=args.threads,
                niceness=args.nice,
                rerun=args.rerun,
            )
            for kv in args.extra:  # a variant's epochs, if it changed them
                if kv.startswith("trainer.max_epochs="):
                    entry["epochs"] = int(kv.partition("=")[2])
        entries[name] = entry
        if not args.no_save:
            out = {
                "benchmark": "paper models vs a zoo baseline of similar size, trained with "
                "the paper's preset on the demo data (medcls train, CPU)",
                "generator_version": GENERATOR_VERSION,
                "device": "cpu",
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "timm": timm.__version__,
                "python": platform.python_version(),
                "updated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "entries": entries,
            }
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(table({k: v for k, v in entries.items() if k.split("@")[0] in (args.only or BASELINES)}))


if __name__ == "__main__":
    main()
