"""Multimodal fusion wrappers: any registered backbone, one input per modality.

:func:`create_fusion_model` builds a classifier that takes a dict
``{modality: (B, C_m, *spatial)}`` (what the training engine passes to models with a
``modalities`` attribute) from any registry name, 2D or 3D:

- ``none``: the plain backbone with ``in_chans = sum C_m``; the engine concatenates
  the modalities along channels (no wrapper, so state-dict keys are the library's);
- ``early`` (:class:`EarlyFusion`): the same network behind the dict interface: the
  modalities are concatenated along channels inside the wrapper;
- ``late`` (:class:`LateFusion`): one backbone per modality (built with that
  modality's channels); the pooled features of the branches
  (``forward_head(..., pre_logits=True)``) are concatenated and one linear head maps
  them to logits;
- ``cross_attention`` (:class:`CrossAttentionFusion`): one backbone per modality;
  before pooling, the features of each modality (a channels-first or channels-last
  map flattened to its grid cells, or tokens) attend to those of the other
  modalities (:class:`~medcls.models.layers.cross_modal.TokenCrossAttention`:
  multi-head, residual + layer norm), are put back in the backbone's layout and
  pooled by the branch's own head; then as ``late``.

Every wrapper keeps the model contract (:mod:`medcls.models.contract`): ``forward``,
``forward_features``, ``forward_head``, ``reset_classifier``, ``num_features``,
``spatial_dims``, ``model_cfg``, ``feature_stages``, ``cam_layer``, plus
``modalities`` (names in input order), ``modality_chans`` and ``fusion``. Branch
models also declare ``cam_layers`` (modality -> :class:`CamLayer` of that branch), so
:mod:`medcls.explain` gives one class activation map per modality.

A tensor ``(B, sum C_m, *spatial)`` (the modalities concatenated in order) is accepted
too, so profiling and contract checks work on one tensor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import CamLayer, FeatureStage, ModelCfg
from medcls.models.factory import create_model
from medcls.models.layers.cross_modal import TokenCrossAttention
from medcls.models.layers.head import ClassifierHead

__all__ = [
    "FUSION_MODES",
    "CrossAttentionFusion",
    "EarlyFusion",
    "FusionModel",
    "LateFusion",
    "create_fusion_model",
    "feature_layout",
    "from_tokens",
    "to_tokens",
]

#: the values of ``model.fusion``
FUSION_MODES: tuple[str, ...] = ("none", "early", "late", "cross_attention")
_HEADS = (8, 4, 2, 1)


def _prefixed_stages(prefix: str, stages: Sequence[FeatureStage]) -> list[FeatureStage]:
    return [FeatureStage(f"{prefix}.{s.module}", s.num_chs, s.reduction) for s in stages]


def _prefixed_cam(prefix: str, cam: CamLayer) -> CamLayer:
    return dataclasses.replace(cam, module=f"{prefix}.{cam.module}")


def _modality_chans(
    modalities: Sequence[str], in_chans: int | Mapping[str, int], where: str
) -> dict[str, int]:
    """``{modality: channels}`` in input order, validated."""
    if isinstance(modalities, str) or not isinstance(modalities, Sequence):
        raise ModelError(f"{where}: modalities={modalities!r}, expected a list of names")
    names = list(modalities)
    bad = [m for m in names if not isinstance(m, str) or not m or "." in m]
    if bad:
        raise ModelError(
            f"{where}: modality name {bad[0]!r} is not usable (expected a non-empty name "
            "without '.')"
        )
    if len(set(names)) != len(names):
        raise ModelError(f"{where}: modalities={names} repeats a name")
    if isinstance(in_chans, Mapping):
        if set(in_chans) != set(names):
            raise ModelError(
                f"{where}: in_chans names {sorted(in_chans)} differ from modalities {names}"
            )
        chans = {m: in_chans[m] for m in names}
    else:
        chans = dict.fromkeys(names, in_chans)
    for m, c in chans.items():
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ModelError(f"{where}: in_chans of modality {m!r} is {c!r}, expected >= 1")
    return chans


class FusionModel(nn.Module):
    """Base of the fusion wrappers: modality bookkeeping and input checks.

    Args:
        modality_chans: ``{modality: channels}`` in input order.
        fusion: the mode's name (``early``, ``late``, ``cross_attention``).
    """

    def __init__(self, modality_chans: Mapping[str, int], fusion: str) -> None:
        super().__init__()
        self.modalities: tuple[str, ...] = tuple(modality_chans)
        self.modality_chans: dict[str, int] = dict(modality_chans)
        self.in_chans = sum(self.modality_chans.values())
        self.fusion = fusion

    def split_inputs(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], same_grid: bool = False
    ) -> list[torch.Tensor]:
        """One tensor ``(B, C_m, *spatial)`` per modality, in ``modalities`` order.

        Args:
            x: a dict ``{modality: (B, C_m, *spatial)}`` with exactly the model's
                modalities, or a tensor ``(B, sum C_m, *spatial)``.
            same_grid: require every modality on the same spatial grid.

        Raises:
            ModelError: a missing or unexpected modality (named, with the expected
                ones), a wrong channel count or mismatched batch sizes / grids.
        """
        where = type(self).__name__
        expected = list(self.modalities)
        if isinstance(x, Mapping):
            missing = [m for m in expected if m not in x]
            if missing:
                raise ModelError(
                    f"{where}: input modality {missing[0]!r} is missing; the model takes "
                    f"{expected}, got {list(x)}"
                )
            extra = [k for k in x if k not in self.modality_chans]
            if extra:
                raise ModelError(
                    f"{where}: unexpected input modality {extra[0]!r}; the model takes {expected}"
                )
            parts = [x[m] for m in expected]
            for m, part in zip(expected, parts):
                chans = self.modality_chans[m]
                if not isinstance(part, torch.Tensor) or part.ndim < 3 or part.shape[1] != chans:
                    shape = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part)
                    raise ModelError(
                        f"{where}: modality {m!r} has shape {shape}, expected "
                        f"(B, {chans}, *spatial)"
                    )
        elif isinstance(x, torch.Tensor):
            if x.ndim < 3 or x.shape[1] != self.in_chans:
                raise ModelError(
                    f"{where}: a tensor input must be (B, {self.in_chans}, *spatial): the "
                    f"modalities {self.modality_chans} concatenated along channels; got "
                    f"{tuple(x.shape)}"
                )
            parts = list(x.split(list(self.modality_chans.values()), dim=1))
        else:
            raise ModelError(
                f"{where}: expected a dict {{modality: tensor}} or a tensor, got {type(x).__name__}"
            )
        batch = {p.shape[0] for p in parts}
        grids = {tuple(p.shape[2:]) for p in parts}
        if len(batch) != 1 or (same_grid and len(grids) != 1):
            raise ModelError(
                f"{where}: the modalities must share the batch size"
                + (" and the grid" if same_grid else "")
                + ", got "
                + ", ".join(f"{m}: {tuple(p.shape)}" for m, p in zip(expected, parts))
            )
        return parts

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{modality: (B, C_m, *spatial)}`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))


class EarlyFusion(FusionModel):
    """Channel concatenation behind the dict interface.

    ``forward_features`` concatenates the modalities along channels and runs
    ``backbone.forward_features``; the contract attributes are the backbone's (module
    names prefixed with ``backbone.``). One CAM layer sees every modality, so
    explanations give one map shared by all modalities.

    Args:
        backbone: a model following the contract, built with ``sum C_m`` channels.
        modality_chans: ``{modality: channels}`` in concatenation order.
    """

    def __init__(self, backbone: nn.Module, modality_chans: Mapping[str, int]) -> None:
        super().__init__(modality_chans, "early")
        if int(backbone.in_chans) != self.in_chans:
            raise ModelError(
                f"EarlyFusion: the backbone takes {backbone.in_chans} channels, the "
                f"modalities {dict(modality_chans)} have {self.in_chans}"
            )
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        self.num_classes = int(backbone.num_classes)
        self.spatial_dims = int(backbone.spatial_dims)
        if getattr(backbone, "head_hidden_size", None):
            self.head_hidden_size = int(backbone.head_hidden_size)
        cfg: ModelCfg = backbone.model_cfg
        self.model_cfg = cfg.replace(
            first_conv=f"backbone.{cfg.first_conv}" if cfg.first_conv else None,
            classifier=tuple(f"backbone.{c}" for c in cfg.classifier),
        )
        self.feature_stages = _prefixed_stages("backbone", backbone.feature_stages)
        self.cam_layer = _prefixed_cam("backbone", backbone.cam_layer)

    def forward_features(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Modalities -> the backbone's unpooled features of their concatenation."""
        parts = self.split_inputs(x, same_grid=True)
        joined = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.backbone.forward_features(joined)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The backbone's head: features -> ``(B, num_classes)`` (pooled with ``pre_logits``)."""
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the backbone's classifier (``0`` removes it)."""
        self.backbone.reset_classifier(num_classes)
        self.num_classes = num_classes


class LateFusion(FusionModel):
    """One backbone per modality; pooled branch features concatenated, one linear head.

    ``forward_features`` returns ``{modality: unpooled features of its branch}``;
    ``forward_head`` pools each branch with its own head (``pre_logits=True``),
    concatenates the vectors ``(B, num_features)`` and applies dropout and a linear
    layer (``head.fc``).

    Args:
        branches: ``{modality: backbone}`` built without a classifier
            (``num_classes=0``), each with its modality's channels.
        modality_chans: ``{modality: channels}`` in input order.
        num_classes: logits (``0``: ``forward`` returns the pooled features).
        drop_rate: dropout before the linear head.
        name: registry name of the backbones (for ``model_cfg``).
    """

    def __init__(
        self,
        branches: Mapping[str, nn.Module],
        modality_chans: Mapping[str, int],
        num_classes: int,
        *,
        drop_rate: float = 0.0,
        name: str = "",
        fusion: str = "late",
    ) -> None:
        super().__init__(modality_chans, fusion)
        if list(branches) != list(self.modalities):
            raise ModelError(
                f"{type(self).__name__}: branches {list(branches)} differ from the "
                f"modalities {list(self.modalities)}"
            )
        self.branches = nn.ModuleDict(dict(branches))
        first = next(iter(branches.values()))
        self.spatial_dims = int(first.spatial_dims)
        # width of each branch's pooled vector (timm's hidden pre-logits layer included)
        self.pooled_widths = {
            m: int(getattr(b, "head_hidden_size", None) or b.num_features)
            for m, b in branches.items()
        }
        self.num_features = sum(self.pooled_widths.values())
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
        self.num_classes = num_classes
        self.model_cfg = self._fused_cfg(name or first.model_cfg.name)
        self.feature_stages = [
            stage
            for m, b in branches.items()
            for stage in _prefixed_stages(f"branches.{m}", b.feature_stages)
        ]
        self.cam_layers = {
            m: _prefixed_cam(f"branches.{m}", b.cam_layer) for m, b in branches.items()
        }
        self.cam_layer = self.cam_layers[self.modalities[0]]

    def _fused_cfg(self, name: str) -> ModelCfg:
        cfgs = [b.model_cfg for b in self.branches.values()]
        first = cfgs[0]
        return ModelCfg(
            name=name,
            source=first.source,
            spatial_dims=self.spatial_dims,
            input_size=(self.in_chans, *first.input_size[1:]),
            mean=tuple(v for c in cfgs for v in c.mean),
            std=tuple(v for c in cfgs for v in c.std),
            first_conv=None,
            classifier=("head.fc",),
            family=first.family,
            paper=first.paper,
            fixed_input_size=first.fixed_input_size,
        )

    def branch_features(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """``{modality: the branch's unpooled features}`` (before any exchange)."""
        parts = self.split_inputs(x)
        return {m: self.branches[m].forward_features(p) for m, p in zip(self.modalities, parts)}

    def forward_features(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Modalities -> ``{modality: unpooled features of its branch}``."""
        return self.branch_features(x)

    def forward_head(self, x: Mapping[str, Any], pre_logits: bool = False) -> torch.Tensor:
        """Branch features -> ``(B, num_classes)``, or ``(B, num_features)`` with ``pre_logits``."""
        if not isinstance(x, Mapping):
            raise ModelError(
                f"{type(self).__name__}.forward_head: expected the dict of branch features "
                f"returned by forward_features, got {type(x).__name__}"
            )
        pooled = [self.branches[m].forward_head(x[m], pre_logits=True) for m in self.modalities]
        return self.head(torch.cat(pooled, dim=1), pre_logits=pre_logits)

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the fused linear head (``0`` removes it)."""
        self.head.reset(num_classes)
        self.num_classes = num_classes


def feature_layout(model: nn.Module, features: torch.Tensor) -> str:
    """How ``model.forward_features`` lays out ``features``.

    ``"channels_first"`` ``(B, C, *grid)``, ``"channels_last"`` ``(B, *grid, C)`` or
    ``"tokens"`` ``(B, N, C)``, from the shape, ``num_features`` and, when both map
    layouts fit, the contract's ``cam_layer.layout``.

    Raises:
        ModelError: the features are not one tensor of those shapes.
    """
    where = f"{type(model).__name__}.forward_features"
    if not isinstance(features, torch.Tensor):
        raise ModelError(
            f"{where} returns {type(features).__name__}; cross-attention fusion needs one "
            "feature tensor per branch"
        )
    width, dims = int(model.num_features), int(model.spatial_dims)
    if features.ndim == 3:
        return "tokens"
    if features.ndim == dims + 2:
        first, last = features.shape[1] == width, features.shape[-1] == width
        declared = getattr(getattr(model, "cam_layer", None), "layout", None)
        if last and (not first or declared == "channels_last"):
            return "channels_last"
        if first:
            return "channels_first"
    raise ModelError(
        f"{where} returns shape {tuple(features.shape)}: not a map with {width} channels "
        f"and {dims} spatial axes or tokens (B, N, {width})"
    )


def to_tokens(features: torch.Tensor, layout: str) -> torch.Tensor:
    """Features in ``layout`` -> tokens ``(B, N, C)`` (a map's grid cells, flattened)."""
    if layout == "channels_first":
        return features.flatten(2).transpose(1, 2)
    if layout == "channels_last":
        return features.flatten(1, -2)
    return features


def from_tokens(tokens: torch.Tensor, layout: str, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_tokens`: tokens ``(B, N, C)`` back to the shape of ``like``."""
    if layout == "channels_first":
        return tokens.transpose(1, 2).reshape(like.shape)
    if layout == "channels_last":
        return tokens.reshape(like.shape)
    return tokens


class CrossAttentionFusion(LateFusion):
    """Per-modality backbones whose features attend to each other before pooling.

    Each branch's features (tokens, or a map flattened to its grid cells) are the
    queries of a :class:`TokenCrossAttention` whose keys and values are the tokens of
    every *other* modality (concatenated); the result (residual + layer norm) is put
    back in the branch's layout and pooled by the branch's own head, then the pooled
    vectors are concatenated and classified as in :class:`LateFusion`. All modalities
    attend to the others' features as the backbones produced them (one exchange, in
    parallel).

    Args:
        branches: ``{modality: backbone}`` built with ``num_classes=0``.
        modality_chans: ``{modality: channels}`` in input order.
        num_classes: logits.
        num_heads: attention heads (divides the backbones' ``num_features``); None:
            the largest of 8, 4, 2, 1 that does.
        drop_rate: dropout on the attention output and before the linear head.
        name: registry name of the backbones.
    """

    def __init__(
        self,
        branches: Mapping[str, nn.Module],
        modality_chans: Mapping[str, int],
        num_classes: int,
        *,
        num_heads: int | None = None,
        drop_rate: float = 0.0,
        name: str = "",
    ) -> None:
        super().__init__(
            branches,
            modality_chans,
            num_classes,
            drop_rate=drop_rate,
            name=name,
            fusion="cross_attention",
        )
        if len(self.modalities) < 2:
            raise ModelError(
                f"CrossAttentionFusion: needs at least two modalities, got {list(self.modalities)}"
            )
        widths = {m: int(b.num_features) for m, b in branches.items()}
        if len(set(widths.values())) != 1:
            raise ModelError(
                f"CrossAttentionFusion: the branches' feature widths differ ({widths}); "
                "use one backbone for every modality"
            )
        dim = next(iter(widths.values()))
        if num_heads is None:
            num_heads = next(h for h in _HEADS if dim % h == 0)
        elif isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ModelError(f"CrossAttentionFusion: num_heads={num_heads!r}, expected >= 1")
        elif dim % num_heads:
            raise ModelError(
                f"CrossAttentionFusion: num_heads={num_heads} must divide the backbone's "
                f"num_features={dim}"
            )
        self.num_heads = num_heads
        self.attn = nn.ModuleDict(
            {m: TokenCrossAttention(dim, num_heads=num_heads, drop_rate=drop_rate) for m in widths}
        )

    def forward_features(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Modalities -> ``{modality: branch features after the cross-modal exchange}``.

        Each value keeps its backbone's layout (``(B, C, *grid)``, ``(B, *grid, C)`` or
        ``(B, N, C)``).
        """
        feats = self.branch_features(x)
        layouts = {m: feature_layout(self.branches[m], f) for m, f in feats.items()}
        tokens = {m: to_tokens(f, layouts[m]) for m, f in feats.items()}
        fused = {}
        for m in self.modalities:
            context = [tokens[o] for o in self.modalities if o != m]
            context_tokens = context[0] if len(context) == 1 else torch.cat(context, dim=1)
            out = self.attn[m](tokens[m], context_tokens)
            fused[m] = from_tokens(out, layouts[m], feats[m])
        return fused


def create_fusion_model(
    name: str,
    *,
    modalities: Sequence[str],
    fusion: str,
    num_classes: int,
    in_chans: int | Mapping[str, int] = 1,
    spatial_dims: int | None = None,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    fusion_heads: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds a multimodal classifier from any registered backbone.

    Examples::

        create_fusion_model("timm3d:resnet10t", modalities=["ct", "pet"], fusion="late",
                            num_classes=2)
        create_fusion_model("timm:vit_small_patch16_224", modalities=["t1", "t2"],
                            fusion="cross_attention", in_chans={"t1": 1, "t2": 1},
                            num_classes=3)

    Args:
        name: a registry name (as in :func:`~medcls.models.create_model`).
        modalities: modality names, in input (and concatenation) order.
        fusion: ``none`` (the plain backbone over the concatenated channels),
            ``early``, ``late`` or ``cross_attention`` (see the module docstring).
        num_classes: logits.
        in_chans: channels of every modality, or ``{modality: channels}``.
        spatial_dims: 2 or 3 (as in ``create_model``).
        pretrained: every backbone loads the library's pretrained weights.
        checkpoint_path: a backbone weights file loaded into every backbone (first
            conv adapted to each modality's channels, classifier skipped).
        fusion_heads: ``cross_attention`` only: heads of the fusion's attention
            (default: the largest of 8, 4, 2, 1 dividing the backbone's width).
        **kwargs: architecture arguments of the backbone (``num_heads`` too: it is the
            backbone's); ``drop_rate`` also sets the dropout of the fused head and of
            the attention output.

    Returns:
        ``none``: the backbone; otherwise a :class:`FusionModel` whose ``forward`` takes
        ``{modality: (B, C_m, *spatial)}`` and returns ``(B, num_classes)``.

    Raises:
        ModelError: an unknown mode, fewer than two modalities for a fusing mode, a
            bad modality name or channel count, or a backbone error.
    """
    where = f"create_fusion_model({name!r}, fusion={fusion!r})"
    if fusion not in FUSION_MODES:
        raise ModelError(f"{where}: unknown fusion mode; expected one of {list(FUSION_MODES)}")
    chans = _modality_chans(modalities, in_chans, where)
    if fusion_heads is not None and fusion != "cross_attention":
        raise ModelError(f"{where}: fusion_heads applies to fusion='cross_attention' only")
    common = {
        "spatial_dims": spatial_dims,
        "pretrained": pretrained,
        "checkpoint_path": checkpoint_path,
        **kwargs,
    }
    if fusion == "none":
        return create_model(name, in_chans=sum(chans.values()), num_classes=num_classes, **common)
    if len(chans) < 2:
        raise ModelError(
            f"{where}: fusion needs at least two modalities, got {list(chans)}; "
            "use fusion='none' for one"
        )
    if fusion == "early":
        backbone = create_model(
            name, in_chans=sum(chans.values()), num_classes=num_classes, **common
        )
        return EarlyFusion(backbone, chans)
    branches = {
        m: create_model(name, in_chans=c, num_classes=0, **common) for m, c in chans.items()
    }
    drop_rate = float(kwargs.get("drop_rate") or 0.0)
    if fusion == "late":
        return LateFusion(branches, chans, num_classes, drop_rate=drop_rate, name=name)
    return CrossAttentionFusion(
        branches, chans, num_classes, num_heads=fusion_heads, drop_rate=drop_rate, name=name
    )
