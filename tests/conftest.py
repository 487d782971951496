"""Shared fixtures: a session-wide dataset cache and tiny experiment configs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session", autouse=True)
def medcls_cache(tmp_path_factory):
    """Generate demo datasets once per test session, outside the user's cache."""
    path = tmp_path_factory.mktemp("medcls-cache")
    old = os.environ.get("MEDCLS_CACHE")
    os.environ["MEDCLS_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MEDCLS_CACHE", None)
    else:
        os.environ["MEDCLS_CACHE"] = old


def tiny_xray_overrides(run_dir, *, epochs: int = 3, batch_size: int = 16) -> list[str]:
    """A demo-xray2d experiment small enough for a CPU test (~10 s)."""
    return [
        "data.source=demo-xray2d",
        "data.demo.num_cases=96",
        "data.demo.size=32",
        "data.classes=[normal, pneumonia]",
        f"data.batch_size={batch_size}",
        "preprocess.spatial_size=[32, 32]",
        "preprocess.intensity={image: {mode: range, a_min: 0, a_max: 255}}",
        "augment.flip_prob=0.5",
        "augment.affine_prob=0.5",
        "augment.rotate_deg=5",
        "model.name=timm:test_resnet",
        f"trainer.max_epochs={epochs}",
        "trainer.progress=false",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        f"run_dir={run_dir}",
    ]
