"""Models: one registry and one factory for timm, timm_3d, MONAI and medcls's own models.

Example::

    from medcls.models import create_fusion_model, create_model, list_models
    model = create_model("timm:resnet18", in_chans=1, num_classes=2)
    list_models("timm3d:resnet*")
    create_fusion_model("timm3d:resnet10t", modalities=["ct", "pet"], fusion="late", num_classes=2)

Every returned model follows the contract in :mod:`medcls.models.contract`.
"""

from __future__ import annotations

from medcls.models.contract import (
    CamLayer,
    ClassifierModel,
    FeatureStage,
    ModelCfg,
    check_contract,
)
from medcls.models.factory import create_model, model_info, to_channels_last
from medcls.models.fusion import FUSION_MODES, create_fusion_model
from medcls.models.registry import (
    FAMILIES,
    SOURCES,
    is_model,
    list_aliases,
    list_models,
    parse_model_name,
    register_alias,
    register_model,
)
from medcls.models.weights import LoadReport, load_checkpoint

__all__ = [
    "FAMILIES",
    "FUSION_MODES",
    "SOURCES",
    "CamLayer",
    "ClassifierModel",
    "FeatureStage",
    "LoadReport",
    "ModelCfg",
    "check_contract",
    "create_fusion_model",
    "create_model",
    "is_model",
    "list_aliases",
    "list_models",
    "load_checkpoint",
    "model_info",
    "parse_model_name",
    "register_alias",
    "register_model",
    "to_channels_last",
]
