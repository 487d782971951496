"""Adapters that expose timm (``timm:``), timm_3d (``timm3d:``) and MONAI (``monai:``)
models through the medcls registry and model contract.

Each adapter module defines ``SOURCES_BY_PREFIX``; the registry imports it on first use
of its prefix, so importing :mod:`medcls.models` does not import timm or MONAI.
"""

from __future__ import annotations

__all__ = ["broken_models"]


def broken_models() -> dict[str, str]:
    """Known-broken zoo models (left out of ``list_models``) -> the measured reason."""
    from medcls.models.registry import get_source

    return {
        f"{prefix}:{arch}": reason
        for prefix in ("timm", "timm3d", "monai")
        for arch, reason in sorted(get_source(prefix).broken().items())
    }
