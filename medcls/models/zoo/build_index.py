"""Builds ``_index.json``: family, parameter count and input size of every zoo model.

Every model is described by :func:`medcls.models.model_info` (built on the ``meta``
device when possible, ``in_chans=1, num_classes=2``); the family comes from
:func:`medcls.models.zoo.families.classify_family`. Run::

    python -m medcls.models.zoo.build_index                  # all sources
    python -m medcls.models.zoo.build_index --source monai   # refresh one source

Entries of sources not rebuilt are kept. Models that fail to build are recorded under
``"failed"`` with the error.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from medcls.models.factory import model_info
from medcls.models.registry import list_models, parse_model_name
from medcls.models.zoo.families import INDEX_PATH

_LIBRARIES = {"timm": "timm", "timm3d": "timm_3d", "monai": "monai"}


def describe(name: str) -> dict[str, Any]:
    """Returns the index entry of ``name`` (from :func:`medcls.models.model_info`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = model_info(name)
    return {
        "family": info["family"],
        "params": info["params"],
        "input_size": info["input_size"][1:],
        "spatial_dims": info["spatial_dims"],
        "fixed_input_size": info["config"]["fixed_input_size"],
    }


def build(sources: list[str], out: Path, limit: int | None = None) -> dict[str, Any]:
    """Rebuilds the entries of ``sources`` in the index at ``out`` and writes it."""
    index: dict[str, Any] = {}
    if out.is_file():
        index = json.loads(out.read_text(encoding="utf-8"))
    models = index.setdefault("models", {})
    failed = index.setdefault("failed", {})
    versions = index.setdefault("versions", {})
    for source in sources:
        for table in (models, failed):
            for key in [k for k in table if parse_model_name(k)[0] == source]:
                del table[key]
        versions[source] = importlib.metadata.version(_LIBRARIES[source].replace("_", "-"))
        names = list_models(source=source)[:limit]
        start = time.perf_counter()
        for i, name in enumerate(names, 1):
            try:
                models[name] = describe(name)
            except Exception as exc:  # record and go on: the index is a survey
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            if i % 50 == 0 or i == len(names):
                elapsed = time.perf_counter() - start
                print(f"{source}: {i}/{len(names)} ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    from medcls.models.zoo import broken_models

    known = broken_models()  # failures since recorded as known-broken are not news
    failed = {k: v for k, v in failed.items() if k not in known}
    index["models"] = dict(sorted(models.items()))
    index["failed"] = dict(sorted(failed.items()))
    out.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medcls.models.zoo.build_index")
    parser.add_argument(
        "--source", action="append", choices=sorted(_LIBRARIES), help="source(s) to rebuild"
    )
    parser.add_argument("--out", type=Path, default=INDEX_PATH, help="index file to update")
    parser.add_argument("--limit", type=int, default=None, help="first N models per source")
    args = parser.parse_args(argv)
    index = build(args.source or sorted(_LIBRARIES), args.out, args.limit)
    print(f"{args.out}: {len(index['models'])} models, {len(index['failed'])} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
