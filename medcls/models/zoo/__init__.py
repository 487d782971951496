"""Adapters that expose timm (``timm:``), timm_3d (``timm3d:``) and MONAI (``monai:``)
models through the medcls registry and model contract.

Each adapter module defines ``SOURCES_BY_PREFIX``; the registry imports it on first use
of its prefix, so importing :mod:`medcls.models` does not import timm or MONAI.

Models that the zoo health sweep (:mod:`medcls.models.zoo.health`) found broken and that
no adapter fix repairs are listed with the measured reason in ``excluded.json`` beside
this file; :func:`medcls.models.list_models` leaves them out and ``create_model`` refuses
them, like the known-broken rules of the adapters.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

__all__ = ["EXCLUDED_PATH", "broken_models", "excluded_models"]

EXCLUDED_PATH = Path(__file__).with_name("excluded.json")


@functools.cache
def excluded_models() -> dict[str, str]:
    """Models excluded after the health sweep (``excluded.json``): full name -> reason."""
    if not EXCLUDED_PATH.is_file():
        return {}
    with EXCLUDED_PATH.open(encoding="utf-8") as fh:
        data = json.load(fh)
    return {str(k): str(v) for k, v in data.get("models", {}).items()}


def broken_models() -> dict[str, str]:
    """Known-broken zoo models (left out of ``list_models``) -> the measured reason.

    The adapters' rules (measured in ``notes/zoo-probe``) and the health sweep's
    exclusions (``excluded.json``), one dict.
    """
    from medcls.models.registry import get_source

    out = {
        f"{prefix}:{arch}": reason
        for prefix in ("timm", "timm3d", "monai")
        for arch, reason in sorted(get_source(prefix).broken().items())
    }
    out.update(excluded_models())  # native models too
    return dict(sorted(out.items()))
