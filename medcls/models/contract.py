"""The contract every model returned by :func:`medcls.models.create_model` satisfies.

A model is a plain :class:`torch.nn.Module` (no wrapper around timm models, so their
``state_dict`` keys stay the library's own) that has:

- ``forward(x)``: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
- ``forward_features(x)``: ``(B, in_chans, *spatial)`` -> unpooled features: a map
  ``(B, num_features, *grid)`` (channels first), ``(B, *grid, num_features)``
  (channels last, e.g. Swin) or tokens ``(B, N, num_features)``;
- ``forward_head(features, pre_logits=False)``: features -> logits ``(B, num_classes)``,
  or the pooled ``(B, num_features)`` vector when ``pre_logits=True`` (``(B,
  head_hidden_size)`` for timm models with a hidden pre-logits layer);
  ``forward_head(forward_features(x)) == forward(x)``;
- ``reset_classifier(num_classes)``: replaces the classifier (``0`` removes it);
- ``reparameterize()``: switches re-parameterisable blocks to their inference form (set
  by :func:`create_model` when the class has none; see :mod:`medcls.models.restructure`);
- attributes ``num_classes``, ``num_features``, ``in_chans``, ``spatial_dims``;
- ``model_cfg``: a :class:`ModelCfg` (input size, normalisation, first conv, classifier,
  family, source, paper) read by the data pipeline and the checkpoint loader;
- ``feature_stages``: a list of :class:`FeatureStage` (module name, channels, stride);
- ``cam_layer``: a :class:`CamLayer` naming the default class-activation-map layer and
  how its output is laid out, so explain code can reshape it without special cases.

:func:`describe_model` derives ``feature_stages`` and ``cam_layer`` from one forward pass
on the ``meta`` device (no memory, no compute), so the same rule serves timm, timm_3d,
MONAI and native models. :func:`check_contract` verifies a model against the contract.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from medcls.errors import ModelError

__all__ = [
    "CAM_LAYOUTS",
    "CamLayer",
    "ClassifierModel",
    "FeatureStage",
    "ModelCfg",
    "adapt_norm_stats",
    "attach_contract",
    "check_contract",
    "describe_model",
    "trace_modules",
]

CamLayout = Literal["channels_first", "channels_last", "tokens"]
CAM_LAYOUTS: tuple[str, ...] = ("channels_first", "channels_last", "tokens")


@dataclass(frozen=True)
class ModelCfg:
    """Metadata that lives beside a model's architecture (like timm's ``pretrained_cfg``).

    Attributes:
        name: the registry name the model was created from, e.g. ``"timm:resnet18"``.
        source: ``"timm"``, ``"timm3d"``, ``"monai"`` or ``"medcls"``.
        spatial_dims: 2 or 3.
        input_size: default input ``(C, *spatial)``; ``C`` is the model's ``in_chans``.
        mean: per-channel normalisation mean (length ``C``).
        std: per-channel normalisation standard deviation (length ``C``).
        first_conv: module name of the first convolution / patch projection (whose
            weight is adapted when a checkpoint has another channel count), or None.
        classifier: module names of the classifier(s) (skipped when a checkpoint has
            another number of classes).
        family: ``"cnn"``, ``"transformer"``, ``"hybrid"`` or ``"mlp"``; None if unknown.
        paper: citation or URL of the paper that introduced the model, if known.
        fixed_input_size: True if the model only accepts ``input_size`` (position
            embeddings or windows tied to the size).
    """

    name: str
    source: str
    spatial_dims: int
    input_size: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    first_conv: str | None = None
    classifier: tuple[str, ...] = ()
    family: str | None = None
    paper: str | None = None
    fixed_input_size: bool = False

    def replace(self, **changes: Any) -> ModelCfg:
        """Returns a copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class FeatureStage:
    """One stage of a model's feature hierarchy (like an entry of timm's ``feature_info``).

    Attributes:
        module: module name (as in ``model.named_modules()``).
        num_chs: channels of its output.
        reduction: input pixels per output cell along each spatial axis (its stride).
    """

    module: str
    num_chs: int
    reduction: int


@dataclass(frozen=True)
class CamLayer:
    """The default layer for class activation maps and how to read its output.

    Attributes:
        module: module name whose forward output is the activation to explain.
        layout: ``"channels_first"`` (``(B, C, *grid)``), ``"channels_last"``
            (``(B, *grid, C)``, e.g. Swin) or ``"tokens"`` (``(B, N, C)``: drop the first
            ``num_prefix_tokens`` tokens, then reshape the rest to the grid).
        num_prefix_tokens: class/register/distillation tokens before the patch tokens.
        reduction: input pixels per grid cell along each spatial axis, so the grid of an
            input of spatial size ``S`` is ``S // reduction`` (needed for ``"tokens"``).
    """

    module: str
    layout: CamLayout
    num_prefix_tokens: int = 0
    reduction: int | None = None

    def grid(self, spatial_size: Sequence[int]) -> tuple[int, ...]:
        """Returns the feature grid for an input of spatial size ``spatial_size``."""
        if not self.reduction:
            raise ModelError(f"cam layer {self.module!r} has no known reduction to derive a grid")
        return tuple(max(1, math.ceil(s / self.reduction)) for s in spatial_size)


@runtime_checkable
class ClassifierModel(Protocol):
    """Structural type of a medcls model (see the module docstring)."""

    num_classes: int
    num_features: int
    in_chans: int
    spatial_dims: int
    model_cfg: ModelCfg
    feature_stages: list[FeatureStage]
    cam_layer: CamLayer

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def reset_classifier(self, num_classes: int) -> None: ...


CONTRACT_ATTRIBUTES = (
    "num_classes",
    "num_features",
    "in_chans",
    "spatial_dims",
    "model_cfg",
    "feature_stages",
    "cam_layer",
)
CONTRACT_METHODS = ("forward", "forward_features", "forward_head", "reset_classifier")


def adapt_norm_stats(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """Fits per-channel normalisation statistics to ``in_chans`` channels.

    Statistics of the right length are kept; otherwise every channel gets their mean
    (e.g. ImageNet RGB mean -> one grey-level mean for ``in_chans=1``).
    """
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    return (sum(values) / len(values),) * in_chans


def attach_contract(
    model: nn.Module,
    *,
    cfg: ModelCfg,
    in_chans: int,
    feature_stages: Sequence[FeatureStage] | None = None,
    cam_layer: CamLayer | None = None,
) -> nn.Module:
    """Sets the contract attributes on ``model`` (in place) and returns it.

    ``feature_stages`` and ``cam_layer`` that are not given are derived with
    :func:`describe_model` at ``cfg.input_size``.
    """
    model.in_chans = in_chans
    model.spatial_dims = cfg.spatial_dims
    model.model_cfg = cfg
    if feature_stages is None or cam_layer is None:
        try:
            stages, cam = describe_model(model, cfg.input_size, stage_modules=feature_stages)
        except ModelError:
            # the meta trace failed (a data-dependent op): fall back to declared stages
            stages = feature_stages or _declared_stages(model)
            if not stages:
                raise
            last = stages[-1]
            cam = CamLayer(last.module, "channels_first", 0, last.reduction)
        feature_stages = stages if feature_stages is None else feature_stages
        cam_layer = cam if cam_layer is None else cam_layer
    model.feature_stages = list(feature_stages)
    model.cam_layer = cam_layer
    return model


# --------------------------------------------------------------------------- tracing


@dataclass
class _Record:
    name: str
    shape: tuple[int, ...]
    calls: int = 1
    order: int = 0
    kind: str = ""


@dataclass
class Trace:
    """Output shapes of the modules run by ``forward_features`` (from :func:`trace_modules`).

    Attributes:
        records: one per module that returned a tensor, in the order the modules
            *finished* (a parent finishes after its children).
        features: shape of the ``forward_features`` output (``()`` if it is not one
            tensor, e.g. a list of branch outputs).
        input_size: the traced input ``(C, *spatial)``.
    """

    records: list[_Record] = field(default_factory=list)
    features: tuple[int, ...] = ()
    input_size: tuple[int, ...] = ()


class _FeaturesCall(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m.forward_features(x)


def trace_modules(model: nn.Module, input_size: Sequence[int], batch: int = 2) -> Trace:
    """Runs ``model.forward_features`` on the ``meta`` device and records module outputs.

    Parameters and buffers are swapped for ``meta`` tensors with
    :func:`torch.func.functional_call`, so nothing is computed or allocated and the
    model itself is untouched.

    Args:
        model: a model with ``forward_features``.
        input_size: ``(C, *spatial)``.
        batch: batch size of the traced input.

    Returns:
        a :class:`Trace`.

    Raises:
        ModelError: the forward pass failed on the meta device.
    """
    wrapper = _FeaturesCall(model)
    state = {
        f"m.{name}": torch.empty_like(t, device="meta")
        for name, t in [
            *model.named_parameters(),
            *model.named_buffers(),
        ]
    }
    by_name: dict[str, _Record] = {}
    counter = [0]

    def hook(name: str):
        def fn(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            counter[0] += 1
            if name in by_name:
                rec = by_name[name]
                rec.calls += 1
                rec.shape, rec.order = tuple(output.shape), counter[0]
            else:
                by_name[name] = _Record(
                    name, tuple(output.shape), 1, counter[0], type(_module).__name__
                )

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    # functional_call does not restore every tensor of a submodule registered under two
    # parents (timm's CoaT shares its cpe/crpe modules): put each one back ourselves
    originals = [
        (table, key, tensor)
        for module in model.modules()
        for table in (module._parameters, module._buffers)
        for key, tensor in table.items()
    ]
    was_training = model.training
    model.eval()
    try:
        x = torch.empty((batch, *input_size), device="meta")
        with torch.no_grad():
            out = torch.func.functional_call(wrapper, state, (x,), strict=False)
    except Exception as exc:  # any failure of a third-party forward on meta
        raise ModelError(
            f"could not trace {type(model).__name__}.forward_features on the meta device "
            f"at input size {tuple(input_size)}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        for table, key, tensor in originals:
            if table.get(key) is not tensor:
                table[key] = tensor
        model.train(was_training)
    records = sorted(by_name.values(), key=lambda r: r.order)
    # multi-branch models (CrossViT) return a list: no single feature shape
    features = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
    return Trace(records, features, tuple(input_size))


_BLOCK_NAME = re.compile(r"^(.*)\.(\d+)$")


def _reduction(spatial_in: Sequence[int], grid: Sequence[int]) -> int:
    """Stride of a grid: exact when it divides the input, else the nearest power of 2."""
    size, cells = int(spatial_in[0]), max(1, int(grid[0]))
    if size % cells == 0:
        return size // cells
    return 2 ** max(0, round(math.log2(size / cells)))


def _class_token_head(model: nn.Module) -> bool:
    """True if the head reads only the prefix (class) tokens of the final tokens."""
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    pool = getattr(model, "global_pool", None)
    reads_token = getattr(model, "head_reads_class_token", None)
    if reads_token is not None:
        return bool(reads_token)
    return prefix > 0 and (pool == "token" or pool is None)


# module classes that only transform values in place of a layer: never a CAM layer
# for tokens (a norm or dropout inside a block is not where the block's output lives)
_NOT_A_LAYER = re.compile(r"(Norm|Drop|Identity|Linear|Act|ReLU|GELU|SiLU|Softmax)")
_BLOCK_KEY = re.compile(r"^(.*\.\d+)(?:\..*)?$")


def _token_reduction(spatial_in: Sequence[int], cells: int) -> int:
    side = (
        max(1, cells) ** (1 / len(spatial_in))
        * spatial_in[0]
        / math.prod(spatial_in) ** (1 / len(spatial_in))
    )
    return _reduction(spatial_in, (max(1, round(side)),))


def _infer_prefix(n_tokens: int, spatial_in: Sequence[int]) -> int:
    """Prefix tokens = the fewest leading tokens leaving a grid that tiles the input."""
    for prefix in range(0, 9):
        cells = n_tokens - prefix
        red = _token_reduction(spatial_in, cells)
        if cells > 0 and math.prod(math.ceil(s / red) for s in spatial_in) == cells:
            return prefix
    return 0


def _pick_token_block(
    cands: list[_Record], n_total: int, prefix: int, class_head: bool
) -> _Record | None:
    """The last (or, for class-token heads, penultimate) block holding the tokens."""
    keyed = [(m.group(1), r) for r in cands if (m := _BLOCK_KEY.match(r.name))]
    if not keyed:
        return cands[-1] if cands else None
    parent = keyed[-1][0].rsplit(".", 1)[0]
    blocks: list[str] = []
    for key, _ in keyed:
        if key.rsplit(".", 1)[0] == parent and key not in blocks:
            blocks.append(key)
    in_block = {b: [r for k, r in keyed if k == b] for b in blocks}

    def output_of(block: str) -> _Record:
        own = [r for r in in_block[block] if r.name == block]
        if own:
            return own[-1]
        depth = min(r.name.count(".") for r in in_block[block])
        return [r for r in in_block[block] if r.name.count(".") == depth][-1]

    pick = output_of(blocks[-1])
    if class_head and prefix and pick.shape[1] == n_total and len(blocks) >= 2:
        pick = output_of(blocks[-2])
    return pick


def choose_cam_layer(model: nn.Module, trace: Trace) -> CamLayer:
    """Picks the default CAM layer from a :class:`Trace` of ``forward_features``.

    Rules (measured in ``notes/zoo-probe``):

    - feature maps (rank ``spatial_dims + 2``): the last module, in finishing order,
      whose output has the final feature shape and that runs once (an activation module
      shared by several layers would be hooked several times); channels first or last
      is read from where ``num_features`` sits;
    - tokens ``(B, N, C)``: the output of the last token block (a ``name.<i>`` module,
      or its outermost sub-module returning the tokens when the block itself returns a
      tuple) that still holds the patch tokens; the *penultimate* block when the head
      reads only the class token, because the last block then passes no gradient to
      the patch tokens;
    - several branch outputs (CrossViT): the last token block of any branch.
    """
    spatial_dims = int(model.spatial_dims)
    num_features = int(model.num_features)
    spatial_in = trace.input_size[1:]
    feat = trace.features
    once = [r for r in trace.records if r.calls == 1]
    if len(feat) == spatial_dims + 2:
        if feat[1] == num_features:
            layout, grid = "channels_first", feat[2:]
        elif feat[-1] == num_features:
            layout, grid = "channels_last", feat[1:-1]
        else:
            layout, grid = "channels_first", feat[2:]
        same = [r for r in once if r.shape == feat]
        if same:
            return CamLayer(same[-1].name, layout, 0, _reduction(spatial_in, grid))
    tokens = [
        r for r in once if len(r.shape) == 3 and r.shape[1] > 1 and not _NOT_A_LAYER.search(r.kind)
    ]
    pick, n_prefix = None, 0
    if len(feat) == 3:
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        counts = {feat[1], feat[1] - prefix}
        cands = [r for r in tokens if r.shape[-1] == feat[-1] and r.shape[1] in counts]
        pick = _pick_token_block(cands, feat[1], prefix, _class_token_head(model))
        n_prefix = prefix if pick is not None and pick.shape[1] == feat[1] else 0
    elif not feat:
        pick = _pick_token_block([r for r in tokens if _BLOCK_NAME.match(r.name)], 0, 0, False)
        n_prefix = 0 if pick is None else _infer_prefix(pick.shape[1], spatial_in)
    if pick is not None:
        cells = pick.shape[1] - n_prefix
        return CamLayer(pick.name, "tokens", n_prefix, _token_reduction(spatial_in, cells))
    # fallback: the last channel-first spatial map of the trace
    maps = [r for r in once if len(r.shape) == spatial_dims + 2 and not _NOT_A_LAYER.search(r.kind)]
    if not maps:
        raise ModelError(
            f"{type(model).__name__}: no module outputs a spatial map or tokens; "
            "set model.cam_layer explicitly"
        )
    last = maps[-1]
    return CamLayer(last.name, "channels_first", 0, _reduction(spatial_in, last.shape[2:]))


def _declared_stages(model: nn.Module) -> list[FeatureStage]:
    """Stages from a timm-style ``feature_info`` list of dicts ([] if there is none)."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and isinstance(info[0], dict):
        return [
            FeatureStage(str(d["module"]), int(d["num_chs"]), int(d["reduction"])) for d in info
        ]
    return []


def _stages_from_trace(
    model: nn.Module, trace: Trace, stage_modules: Sequence[FeatureStage] | None
) -> list[FeatureStage]:
    spatial_dims = int(model.spatial_dims)
    spatial_in = trace.input_size[1:]
    if stage_modules is not None:
        return list(stage_modules)
    declared = _declared_stages(model)
    if declared:
        return declared
    # derive: per stride, the last module (at most two name levels deep) that outputs a
    # channel-first map of that stride
    stages: dict[int, FeatureStage] = {}
    for r in trace.records:
        if r.calls != 1 or len(r.shape) != spatial_dims + 2 or r.name.count(".") > 1:
            continue
        red = _reduction(spatial_in, r.shape[2:])
        if red == 1 and r.shape[1] == trace.input_size[0]:
            continue  # an input transform (padding, normalisation), not a feature stage
        stages[red] = FeatureStage(r.name, int(r.shape[1]), red)
    return [stages[k] for k in sorted(stages)]


def describe_model(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    stage_modules: Sequence[FeatureStage] | None = None,
) -> tuple[list[FeatureStage], CamLayer]:
    """Derives ``feature_stages`` and ``cam_layer`` from a meta-device trace.

    Args:
        model: a model with ``forward_features``, ``num_features`` and ``spatial_dims``.
        input_size: ``(C, *spatial)`` to trace at.
        stage_modules: stages to keep instead of deriving them.

    Returns:
        ``(feature_stages, cam_layer)``.
    """
    trace = trace_modules(model, input_size)
    return _stages_from_trace(model, trace, stage_modules), choose_cam_layer(model, trace)


def check_contract(model: nn.Module, x: torch.Tensor | None = None) -> None:
    """Verifies that ``model`` satisfies the medcls model contract.

    Args:
        model: the model to check.
        x: optional input ``(B, in_chans, *spatial)``; when given, ``forward`` must
            return ``(B, num_classes)`` and equal ``forward_head(forward_features(x))``
            (the model is put in eval mode for the comparison and restored after).

    Raises:
        ModelError: naming every missing attribute or violated rule.
    """
    problems = [f"missing attribute {a!r}" for a in CONTRACT_ATTRIBUTES if not hasattr(model, a)]
    problems += [
        f"missing method {m}()" for m in CONTRACT_METHODS if not callable(getattr(model, m, None))
    ]
    if not problems:
        if not isinstance(model.model_cfg, ModelCfg):
            problems.append(f"model_cfg is {type(model.model_cfg).__name__}, expected ModelCfg")
        if not isinstance(model.cam_layer, CamLayer):
            problems.append(f"cam_layer is {type(model.cam_layer).__name__}, expected CamLayer")
        else:
            names = dict(model.named_modules())
            if model.cam_layer.module not in names:
                problems.append(f"cam_layer.module {model.cam_layer.module!r} is not a submodule")
            if model.cam_layer.layout not in CAM_LAYOUTS:
                problems.append(f"cam_layer.layout {model.cam_layer.layout!r} not in {CAM_LAYOUTS}")
        if model.spatial_dims not in (2, 3):
            problems.append(f"spatial_dims is {model.spatial_dims}, expected 2 or 3")
    if not problems and x is not None:
        expected = (x.shape[0], int(model.num_classes))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(x)
                composed = model.forward_head(model.forward_features(x))
                pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        finally:
            model.train(was_training)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            problems.append(f"forward returned {shape}, expected {expected}")
        elif not torch.allclose(out, composed, atol=1e-5, rtol=1e-4):
            problems.append("forward(x) != forward_head(forward_features(x))")
        # timm models with a hidden head layer pool to head_hidden_size, not num_features
        width = int(getattr(model, "head_hidden_size", None) or model.num_features)
        if not isinstance(pooled, torch.Tensor) or tuple(pooled.shape) != (x.shape[0], width):
            problems.append(
                f"forward_head(pre_logits=True) returned {tuple(pooled.shape)}, "
                f"expected {(x.shape[0], width)}"
            )
    if problems:
        raise ModelError(
            f"{type(model).__name__} breaks the model contract: " + "; ".join(problems)
        )
