"""Size and speed of a trained model: re-exported from :mod:`medcls.models.profile`.

Profiling is a model-level concept; the benchmark sweep uses it through this name.
"""

from __future__ import annotations

from medcls.models.profile import count_macs, measure_latency, profile_model

__all__ = ["count_macs", "measure_latency", "profile_model"]
