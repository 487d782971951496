"""Model restructuring: operations that work on any model keeping the contract.

They apply to timm, timm_3d, MONAI and medcls models alike, 2D and 3D, and change
the model in place:

- :func:`set_in_chans`: other input channels, first-conv weights kept (``mean`` or
  ``repeat``); :func:`weights_in_chans` tells the channels of the weights a name loads;
- :func:`replace_head`: classes, dropout, an optional hidden layer (:class:`HeadMLP`);
- :func:`freeze` / :func:`unfreeze`: stages, module names, ``"all-but-head"``, with
  the batch-norm statistics of frozen parts kept;
- :func:`swap_act` / :func:`swap_norm`: activation or normalisation layers;
- :func:`inflate`: a 2D model becomes 3D (I3D-style kernels, ``centre`` or ``mean``);
- :func:`set_padding_mode`: convolutions pad with ``replicate`` instead of zeros (no
  artificial edge where anatomy reaches the border);
- :func:`reparameterize`, :func:`fuse_blocks`, :func:`fold_batchnorm`: inference-time
  fusion; every model from :func:`medcls.models.create_model` has
  ``model.reparameterize()``;
- :func:`restructure_model`: several of them in one call (what the ``model.restructure``
  configuration section applies).

See ``docs/restructure.md``.
"""

from __future__ import annotations

from medcls.models.restructure.apply import restructure_model
from medcls.models.restructure.channels import (
    IN_CHANS_MODES,
    adapt_weight,
    set_in_chans,
    weights_in_chans,
)
from medcls.models.restructure.freeze import FREEZE_WORDS, freeze, frozen_parameters, unfreeze
from medcls.models.restructure.fuse import (
    ensure_reparameterize,
    fold_batchnorm,
    fuse_blocks,
    reparameterize,
)
from medcls.models.restructure.head import HeadMLP, replace_head
from medcls.models.restructure.inflate import INFLATE_MODES, inflate
from medcls.models.restructure.padding import PADDING_MODES, set_padding_mode
from medcls.models.restructure.swap import (
    ACT_SOURCES,
    NORM_SOURCES,
    NORM_TARGETS,
    NormAct,
    swap_act,
    swap_norm,
)

__all__ = [
    "ACT_SOURCES",
    "FREEZE_WORDS",
    "INFLATE_MODES",
    "IN_CHANS_MODES",
    "NORM_SOURCES",
    "NORM_TARGETS",
    "PADDING_MODES",
    "HeadMLP",
    "NormAct",
    "adapt_weight",
    "ensure_reparameterize",
    "fold_batchnorm",
    "freeze",
    "frozen_parameters",
    "fuse_blocks",
    "inflate",
    "reparameterize",
    "replace_head",
    "restructure_model",
    "set_in_chans",
    "set_padding_mode",
    "swap_act",
    "swap_norm",
    "unfreeze",
    "weights_in_chans",
]
