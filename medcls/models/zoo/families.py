"""Model family (cnn / transformer / hybrid / mlp) from the modules a model contains.

The rule (the one measured in ``notes/zoo-probe/classify2d.csv``):

- *attention*: a module whose class computes softmax or scaled-dot-product attention
  over tokens (its source calls ``softmax`` / ``scaled_dot_product_attention``, or it
  is a known softmax-free token attention such as EfficientViT's ``LiteMLA``); channel
  attention (SE, ECA, CBAM, gather-excite, global context, split / selective-kernel
  attention) does not count;
- *spatial convolution*: a convolution with a kernel larger than 1 that is neither a
  patchify convolution (kernel == stride) nor the stem (the first spatial convolution,
  e.g. Hiera's or TNT's overlapping patch embedding);
- ``transformer`` = attention and no spatial convolution; ``hybrid`` = attention and
  spatial convolutions; ``cnn`` = spatial convolutions and no attention; ``mlp`` = none.

Families of the zoo models are cached in ``_index.json`` beside this file (written by
``python -m medcls.models.zoo.build_index``), so ``list_models(family=...)`` needs no
model construction.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["INDEX_PATH", "classify_family", "family_evidence", "index_entry", "load_index"]

INDEX_PATH = Path(__file__).with_name("_index.json")

_SOFTMAX = re.compile(r"softmax\s*\(|scaled_dot_product_attention|\bsdpa\b")
# token attention that normalises without softmax (linear / additive attention)
_SOFTMAX_FREE_ATTENTION = frozenset(
    {"LiteMLA", "EfficientAdditiveAttention", "BilinearAttnTransform"}
)
# channel / branch attention: softmax over channels or paths, not over tokens
_CHANNEL_ATTENTION = re.compile(
    r"(SqueezeExcite|SEModule|SEBlock|EffectiveSE|EcaModule|CecaModule|GatherExcite|"
    r"GlobalContext|SplitAttn|RadixSoftmax|SelectiveKernel|CbamModule|LightCbamModule|"
    r"ChannelAttn|SpatialAttn|SqueezeExcitation|ChannelSELayer|ResidualSELayer|"
    # EfficientViM's state-space mixer normalises with softmax; the probe counts it as cnn
    r"HSMSSD)"
)
_BASES = frozenset({nn.Module, object})


@functools.cache
def _class_computes_attention(cls: type) -> bool:
    """True if ``cls`` (or a base class of it) computes token attention."""
    if issubclass(cls, nn.MultiheadAttention):
        return True
    for klass in cls.__mro__:
        # torch's own modules (nn.Softmax, ...) are not attention by themselves
        if klass in _BASES or klass.__module__.startswith("torch."):
            continue
        if _CHANNEL_ATTENTION.search(klass.__name__):
            return False
        if klass.__name__ in _SOFTMAX_FREE_ATTENTION:
            return True
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if _SOFTMAX.search(source):
            return True
    return False


def family_evidence(model: nn.Module) -> dict[str, Any]:
    """Returns the module counts the family is decided from.

    Returns:
        ``{"attention_classes": sorted class names, "n_spatial_conv": int}``, where
        ``n_spatial_conv`` counts convolutions with a kernel larger than 1, except
        patchify ones (kernel == stride) and the stem (the first such convolution).
    """
    attention: set[str] = set()
    n_conv = 0
    stem_seen = False
    for name, module in model.named_modules():
        # the root is the whole network (its head may softmax-weight branches, as
        # EfficientViM's does); attention lives in submodules
        if name and _class_computes_attention(type(module)):
            attention.add(type(module).__name__)
        if isinstance(module, nn.modules.conv._ConvNd) and max(module.kernel_size) > 1:
            if stem_seen and tuple(module.kernel_size) != tuple(module.stride):
                n_conv += 1
            stem_seen = True
    return {"attention_classes": sorted(attention), "n_spatial_conv": n_conv}


def classify_family(model: nn.Module) -> str:
    """Returns ``"cnn"``, ``"transformer"``, ``"hybrid"`` or ``"mlp"`` for ``model``.

    Works on a model built on the ``meta`` device (only module types and conv shapes
    are read).
    """
    ev = family_evidence(model)
    has_attention, has_conv = bool(ev["attention_classes"]), ev["n_spatial_conv"] > 0
    if has_attention:
        return "hybrid" if has_conv else "transformer"
    return "cnn" if has_conv else "mlp"


@functools.cache
def load_index() -> dict[str, Any]:
    """Returns the shipped zoo index (``{}`` if it has not been built)."""
    if not INDEX_PATH.is_file():
        return {}
    with INDEX_PATH.open(encoding="utf-8") as fh:
        return json.load(fh)


def index_entry(name: str) -> dict[str, Any] | None:
    """Returns the cached ``{family, params, input_size, dims, ...}`` of a prefixed name."""
    return load_index().get("models", {}).get(name)
