"""Models: one registry and one factory for timm, timm_3d, MONAI and medcls's own models.

Example::

    from medcls.models import create_model, list_models
    model = create_model("timm:resnet18", in_chans=1, num_classes=2)
    list_models("timm3d:resnet*")

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
from medcls.models.factory import create_model, model_info
from medcls.models.registry import (
    FAMILIES,
    SOURCES,
    is_model,
    list_models,
    parse_model_name,
    register_model,
)
from medcls.models.weights import LoadReport, load_checkpoint

__all__ = [
    "FAMILIES",
    "SOURCES",
    "CamLayer",
    "ClassifierModel",
    "FeatureStage",
    "LoadReport",
    "ModelCfg",
    "check_contract",
    "create_model",
    "is_model",
    "list_models",
    "load_checkpoint",
    "model_info",
    "parse_model_name",
    "register_model",
]
