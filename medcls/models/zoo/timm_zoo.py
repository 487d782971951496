"""Adapters for timm (2D, prefix ``timm:``) and timm_3d (3D, prefix ``timm3d:``).

timm models already have ``forward_features``, ``forward_head``, ``reset_classifier``,
``num_features``, ``num_classes`` and ``feature_info``. They are returned *unwrapped*
with the missing contract attributes set on them (``in_chans``, ``spatial_dims``,
``model_cfg``, ``feature_stages``, ``cam_layer``), so their ``state_dict`` keys stay
timm's own and timm checkpoints load as they are.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import ModelCfg, adapt_norm_stats, attach_contract
from medcls.models.zoo import excluded_models
from medcls.models.zoo.families import classify_family

__all__ = ["SOURCES_BY_PREFIX", "BrokenRule", "TimmSource"]


@dataclass(frozen=True)
class BrokenRule:
    """Architectures measured to fail (``notes/zoo-probe``), left out of ``list_models``.

    Attributes:
        pattern: fnmatch pattern over architecture names.
        reason: what fails, as measured.
        only_if_not_rgb: the failure needs ``in_chans != 3`` (creation with 3 channels
            is still allowed).
    """

    pattern: str
    reason: str
    only_if_not_rgb: bool = False


_WINDOW_REASON = (
    "fails forward at every size up to 128^3 (windows / relative-position tables tied to "
    "the default size; measured in notes/zoo-probe/results_3d.csv)"
)
_BROKEN_2D = (
    BrokenRule(
        "*_enc",
        "an image encoder of a multimodal LLM: no classifier (no reset_classifier); "
        "measured with python -m medcls.models.zoo.build_index",
    ),
    BrokenRule(
        "csatv2*",
        "the stem assumes 3 input channels (reshape fails with in_chans != 3; "
        "notes/zoo-probe/results_2d.csv)",
        only_if_not_rgb=True,
    ),
)
# timm_3d's pruned variants whose channel lists (``_pruned/<name>.txt``) the package
# does not ship; timm ships the same lists, which only give channel counts, so they hold
# for 3D too (see _adapt_pruned_from_timm)
_PRUNED_FROM_TIMM = (
    "ecaresnet50d_pruned",
    "ecaresnet101d_pruned",
    "efficientnet_b1_pruned",
    "efficientnet_b2_pruned",
    "efficientnet_b3_pruned",
)
_BROKEN_3D = (
    *(
        BrokenRule(name, _WINDOW_REASON)
        for name in (
            "coatnet_rmlp_2_rw_384",
            "maxvit_nano_rw_256",
            "maxvit_pico_rw_256",
            "maxvit_rmlp_nano_rw_256",
            "maxvit_rmlp_pico_rw_256",
            "maxvit_rmlp_small_rw_256",
            "maxvit_rmlp_tiny_rw_256",
            "maxvit_tiny_pm_256",
            "maxvit_tiny_rw_256",
            "maxxvit_rmlp_nano_rw_256",
            "maxxvit_rmlp_small_rw_256",
            "maxxvit_rmlp_tiny_rw_256",
            "maxxvitv2_nano_rw_256",
            "maxxvitv2_rmlp_base_rw_384",
        )
    ),
)


def _pooled_forward_head(self: nn.Module, x: torch.Tensor, pre_logits: bool = False):
    """``global_pool -> head_drop -> classifier``: timm's head, for models lacking it."""
    x = self.head_drop(self.global_pool(x))
    return x if pre_logits else self.classifier(x)


@functools.cache
def _with_pooled_head(cls: type) -> type:
    """A subclass of ``cls`` that adds :func:`_pooled_forward_head`.

    timm_3d's DenseNet computes ``classifier(head_drop(global_pool(forward_features(x))))``
    in ``forward`` but has no ``forward_head``. The instance's class is swapped (not
    wrapped), so its ``state_dict`` keys are unchanged.
    """
    return type(
        cls.__name__, (cls,), {"forward_head": _pooled_forward_head, "__module__": __name__}
    )


class TimmSource:
    """A timm-like library (``timm`` or ``timm_3d``) as a model source.

    Args:
        prefix: registry prefix (``"timm"`` / ``"timm3d"``).
        library: importable module name (``"timm"`` / ``"timm_3d"``).
        spatial_dims: the only spatial dims the library's models take.
        broken_rules: known failures to leave out of :meth:`names`.
    """

    def __init__(
        self, prefix: str, library: str, spatial_dims: int, broken_rules: Sequence[BrokenRule]
    ) -> None:
        self.prefix = prefix
        self.library = library
        self.spatial_dims = spatial_dims
        self.broken_rules = tuple(broken_rules)

    @functools.cached_property
    def lib(self) -> Any:
        return importlib.import_module(self.library)

    @functools.cached_property
    def _all_names(self) -> tuple[str, ...]:
        return tuple(self.lib.list_models())

    def _broken_rule(self, arch: str) -> BrokenRule | None:
        base = arch.split(".", 1)[0]
        excluded = excluded_models().get(f"{self.prefix}:{base}")
        if excluded is not None:  # found by the zoo health sweep
            return BrokenRule(base, excluded)
        return next((r for r in self.broken_rules if fnmatch.fnmatchcase(base, r.pattern)), None)

    def broken(self) -> dict[str, str]:
        """Known-broken architectures -> reason."""
        out = {}
        for name in self._all_names:
            rule = self._broken_rule(name)
            if rule is not None:
                out[name] = rule.reason + (
                    " (works with in_chans=3)" if rule.only_if_not_rgb else ""
                )
        return out

    def names(self) -> list[str]:
        """Architecture names, known-broken ones left out."""
        return [n for n in self._all_names if self._broken_rule(n) is None]

    def dims(self, arch: str) -> tuple[int, ...]:
        return (self.spatial_dims,)

    def create(
        self,
        arch: str,
        *,
        in_chans: int,
        num_classes: int,
        pretrained: bool = False,
        spatial_dims: int | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        """Builds ``arch`` with the library's ``create_model`` and attaches the contract.

        Args:
            arch: architecture, optionally with a pretrained tag (``"resnet50.a1_in1k"``).
            in_chans: input channels.
            num_classes: classes (0 = no classifier; ``forward`` returns pooled features).
            pretrained: load the library's pretrained weights (downloads from the hub or
                uses the local cache).
            spatial_dims: must be None or the library's dims.
            **kwargs: passed to the library's ``create_model`` (``drop_rate``,
                ``img_size``, ``global_pool``, ...).

        Raises:
            ModelError: unknown or known-broken architecture, wrong ``spatial_dims``,
                arguments the architecture rejects, or weights that could not be fetched.
        """
        name = f"{self.prefix}:{arch}"
        if spatial_dims is not None and spatial_dims != self.spatial_dims:
            raise ModelError(
                f"{name}: spatial_dims={spatial_dims} but {self.library} models are "
                f"{self.spatial_dims}D; use the "
                f"{'timm3d:' if self.spatial_dims == 2 else 'timm:'} prefix for "
                f"{spatial_dims}D"
            )
        base = arch.split(".", 1)[0]
        if base not in set(self._all_names):
            from medcls.models.registry import unknown_model_error

            raise unknown_model_error(name)
        rule = self._broken_rule(arch)
        if rule is not None and not (rule.only_if_not_rgb and in_chans == 3):
            raise ModelError(f"{name} is known to fail: {rule.reason}")
        kwargs = {**self._default_kwargs(arch, pretrained, kwargs), **kwargs}
        if self.library == "timm_3d" and base in _PRUNED_FROM_TIMM:
            _install_pruned_lists()
        try:
            model = self.lib.create_model(
                arch, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes, **kwargs
            )
        except Exception as exc:  # the library raises many types; report them as one
            if pretrained:
                raise ModelError(
                    f"{name}: could not create the model with pretrained weights "
                    f"({type(exc).__name__}: {exc}). If the weights could not be fetched "
                    "(offline), pass checkpoint_path=<local .safetensors/.pth file> or put "
                    "the weights in the local Hugging Face / torch hub cache."
                ) from exc
            raise ModelError(
                f"{name}: {self.library}.create_model failed with arguments "
                f"{ {'in_chans': in_chans, 'num_classes': num_classes, **kwargs} }: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not callable(getattr(model, "forward_head", None)):
            missing = [
                a for a in ("global_pool", "head_drop", "classifier") if not hasattr(model, a)
            ]
            if missing:
                raise ModelError(f"{name} has no forward_head and no {missing} to build one")
            model.__class__ = _with_pooled_head(type(model))
        cfg = self.model_cfg(name, model, in_chans, kwargs)
        return attach_contract(model, cfg=cfg, in_chans=in_chans)

    def _default_kwargs(
        self, arch: str, pretrained: bool, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Architecture arguments medcls sets unless the caller does.

        timm_3d's fixed-size models (every CoAtNet / MaxViT / MaxxViT hybrid: relative
        position tables and windows tied to the size) default to 96³ or 128³, where one
        training step at batch 2 needs over 8 GiB and minutes on a CPU; without
        pretrained weights to match, they are built for medcls's standard 3D input
        (``img_size=64``) instead. Pass ``img_size`` to choose another size.
        """
        if self.spatial_dims != 3:
            return {}
        base = arch.split(".", 1)[0]
        if "aa" in base.split("_")[0] and "aa_layer" not in kwargs:
            # timm_3d's anti-aliased ResNets declare aa_layer=nn.AvgPool2d, which its 3D
            # blocks then call as aa_layer(channels=..., stride=...) and fail; timm's 2D
            # models pool with AvgPool2d(stride) there, the 3D equivalent is this
            return {"aa_layer": nn.AvgPool3d}
        if pretrained or "img_size" in kwargs:
            return {}
        from medcls.models.registry import DEFAULT_INPUT_SIZE

        getter = getattr(getattr(self.lib, "models", None), "get_pretrained_cfg", None)
        pcfg = getter(arch.split(".", 1)[0]) if callable(getter) else None
        standard = DEFAULT_INPUT_SIZE[3]
        if pcfg is None or not getattr(pcfg, "fixed_input_size", False):
            return {}
        if tuple(pcfg.input_size[1:]) == standard:
            return {}
        return {"img_size": standard[0]}

    def model_cfg(
        self, name: str, model: nn.Module, in_chans: int, kwargs: dict[str, Any]
    ) -> ModelCfg:
        """Builds the :class:`ModelCfg` from timm's ``pretrained_cfg``."""
        pcfg = dict(getattr(model, "pretrained_cfg", None) or {})
        spatial = tuple(pcfg.get("input_size", (3, *(224,) * self.spatial_dims)))[1:]
        img_size = kwargs.get("img_size")
        if img_size is not None:
            spatial = (
                tuple(img_size)
                if isinstance(img_size, Sequence)
                else (int(img_size),) * len(spatial)
            )
        classifier = pcfg.get("classifier") or ()
        first_conv = pcfg.get("first_conv")
        if isinstance(first_conv, (list, tuple)):
            first_conv = first_conv[0] if first_conv else None
        paper = pcfg.get("paper_ids") or pcfg.get("paper_name")
        return ModelCfg(
            name=name,
            source=self.prefix,
            spatial_dims=self.spatial_dims,
            input_size=(in_chans, *(int(s) for s in spatial)),
            mean=adapt_norm_stats(pcfg.get("mean", (0.485, 0.456, 0.406)), in_chans),
            std=adapt_norm_stats(pcfg.get("std", (0.229, 0.224, 0.225)), in_chans),
            first_conv=first_conv,
            classifier=(classifier,) if isinstance(classifier, str) else tuple(classifier),
            family=classify_family(model),
            paper=str(paper) if paper else None,
            fixed_input_size=bool(pcfg.get("fixed_input_size", False)),
        )


def _resize_layer(module: nn.Module, shape: list[int]) -> None:
    """Gives a convolution, batch norm or linear layer the channels of a pruned list.

    Changed in place and re-initialised (the pruned variants exist to load their own
    weights), so subclasses (``Conv3dSame``, ``BatchNormAct3d``) keep their extras.
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        out_chans, in_per_group = shape[0], shape[1]
        groups = out_chans if module.groups > 1 else 1  # the pruned lists keep depthwise
        module.in_channels, module.out_channels = in_per_group * groups, out_chans
        module.groups = groups
        module.weight = nn.Parameter(torch.empty(out_chans, in_per_group, *module.kernel_size))
        if module.bias is not None:
            module.bias = nn.Parameter(torch.empty(out_chans))
        module.reset_parameters()
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = shape[0]
        if module.affine:
            module.weight = nn.Parameter(torch.empty(shape[0]))
            module.bias = nn.Parameter(torch.empty(shape[0]))
        if module.track_running_stats:
            module.running_mean = torch.zeros(shape[0])
            module.running_var = torch.ones(shape[0])
        module.reset_parameters()
    elif isinstance(module, nn.Linear):
        module.in_features = shape[1]
        module.weight = nn.Parameter(torch.empty(module.out_features, shape[1]))
        module.reset_parameters()


def _adapt_pruned_from_timm(model: nn.Module, variant: str) -> nn.Module:
    """Replaces timm_3d's ``adapt_model_from_file`` for the lists timm_3d lacks.

    timm ships ``_pruned/<variant>.txt``: ``name.weight:[shape]`` entries joined by
    ``***``. Only channel counts are read, so the 2D lists describe the 3D models too;
    the first convolution keeps the model's own input channels (the lists are for
    RGB), and a classifier keeps its outputs.
    """
    import importlib.resources

    try:
        text = (importlib.resources.files("timm.models") / "_pruned" / f"{variant}.txt").read_text(
            encoding="utf-8"
        )
    except FileNotFoundError as exc:
        raise ModelError(f"timm3d:{variant}: no pruned channel list in timm either") from exc
    shapes = {}
    for entry in text.strip().split("***"):
        key, _, shape = entry.partition(":")
        dims = [int(v) for v in shape.strip().strip("[]").split(",") if v.strip()]
        if key.endswith(".weight") and dims:
            shapes[key[: -len(".weight")]] = dims
    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    for name, module in model.named_modules():
        shape = shapes.get(name)
        if shape is None:
            continue
        if name == first and isinstance(module, nn.modules.conv._ConvNd):
            shape = [shape[0], module.in_channels // module.groups]
        _resize_layer(module, shape)
        if isinstance(module, nn.Linear) and hasattr(model, "num_features"):
            model.num_features = shape[1]
    return model


def _install_pruned_lists() -> None:
    """Makes timm_3d's builder use :func:`_adapt_pruned_from_timm` for the variants
    whose lists it lacks (its own function for the others); idempotent."""
    from timm_3d.models import _builder

    original = _builder.adapt_model_from_file
    if getattr(original, "_medcls", False):
        return

    def adapt(model: nn.Module, variant: str) -> nn.Module:
        if variant in _PRUNED_FROM_TIMM:
            return _adapt_pruned_from_timm(model, variant)
        return original(model, variant)

    adapt._medcls = True
    _builder.adapt_model_from_file = adapt


SOURCES_BY_PREFIX = {
    "timm": TimmSource("timm", "timm", 2, _BROKEN_2D),
    "timm3d": TimmSource("timm3d", "timm_3d", 3, _BROKEN_3D),
}
