"""Building blocks written once for 2D and 3D (``spatial_dims`` = 2 or 3).

- factories: ``conv_type``, ``conv_fn``, ``make_norm``, ``make_act``, pooling helpers;
- :class:`ConvNormAct` and batch-norm folding (``fuse_conv_bn``, ``reparameterize_model``);
- :class:`DirectionalConv`: per-axis line kernels plus a dilated kernel in parallel;
- :class:`DynamicConv`: a kernel dedicated to each sample, the batch run as one grouped
  convolution (:class:`ExpertRouter` computes the per-sample mixture);
- :class:`RepConv`: multi-branch convolution fused into one for inference;
- attention on channel-first maps: :class:`SpatialReductionAttention`,
  :class:`TransformerBlock`, :class:`ConvMlp`;
- :class:`ClassifierHead`: pool, dropout, linear, with ``reset(num_classes)``.

Blocks that change form for inference have ``reparameterize()``;
``reparameterize_model(model)`` applies all of them.
"""

from __future__ import annotations

from medcls.models.layers.attention import ConvMlp, SpatialReductionAttention, TransformerBlock
from medcls.models.layers.conv import (
    ConvNormAct,
    bn_scale_shift,
    fuse_conv_bn,
    reparameterize_model,
)
from medcls.models.layers.directional import DirectionalConv
from medcls.models.layers.dynamic import DynamicConv, ExpertRouter
from medcls.models.layers.factories import (
    adaptive_avg_pool,
    avg_pool,
    check_spatial_dims,
    conv_fn,
    conv_type,
    make_act,
    make_norm,
    same_padding,
    sum_outputs,
    to_tuple,
)
from medcls.models.layers.head import ClassifierHead
from medcls.models.layers.reparam import RepConv

__all__ = [
    "ClassifierHead",
    "ConvMlp",
    "ConvNormAct",
    "DirectionalConv",
    "DynamicConv",
    "ExpertRouter",
    "RepConv",
    "SpatialReductionAttention",
    "TransformerBlock",
    "adaptive_avg_pool",
    "avg_pool",
    "bn_scale_shift",
    "check_spatial_dims",
    "conv_fn",
    "conv_type",
    "fuse_conv_bn",
    "make_act",
    "make_norm",
    "reparameterize_model",
    "same_padding",
    "sum_outputs",
    "to_tuple",
]
