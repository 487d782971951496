"""``create_model`` and ``model_info``: one factory for every model name."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import (
    ModelCfg,
    adapt_norm_stats,
    attach_contract,
    check_contract,
)
from medcls.models.registry import (
    NATIVE,
    ModelAlias,
    get_alias,
    get_entry,
    get_source,
    parse_model_name,
)
from medcls.models.weights import load_checkpoint
from medcls.models.zoo.families import classify_family, index_entry

__all__ = ["create_model", "model_info", "to_channels_last"]

logger = logging.getLogger(__name__)


def _check_int(value: Any, arg: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(f"create_model: {arg}={value!r}, expected an integer >= {minimum}")
    return value


def _first_conv_name(model: nn.Module) -> str | None:
    return next(
        (n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None
    )


def _alias_dims(alias: ModelAlias, spatial_dims: int | None) -> int:
    """The spatial dims to build an alias with (its first by default), checked."""
    dims = alias.dims[0] if spatial_dims is None else spatial_dims
    if dims not in alias.dims:
        raise ModelError(
            f"{alias.name} (alias of {alias.target}): spatial_dims={dims} not supported; "
            f"it stands for {'/'.join(f'{d}D' for d in alias.dims)}"
        )
    return dims


def _create_native(
    arch: str, *, in_chans: int, num_classes: int, spatial_dims: int | None, **kwargs: Any
) -> nn.Module:
    entry = get_entry(arch)
    dims = entry.dims[0] if spatial_dims is None else spatial_dims
    if dims not in entry.dims:
        raise ModelError(f"{arch}: spatial_dims={dims} not supported; it supports {entry.dims}")
    try:
        model = entry.fn(in_chans=in_chans, num_classes=num_classes, spatial_dims=dims, **kwargs)
    except TypeError as exc:
        raise ModelError(f"{arch}: rejected the arguments {sorted(kwargs)}: {exc}") from exc
    if not isinstance(getattr(model, "model_cfg", None), ModelCfg):
        cfg = ModelCfg(
            name=arch,
            source=NATIVE,
            spatial_dims=dims,
            input_size=(in_chans, *entry.input_size[dims]),
            mean=adapt_norm_stats(entry.mean, in_chans),
            std=adapt_norm_stats(entry.std, in_chans),
            first_conv=_first_conv_name(model),
            classifier=tuple(getattr(model, "classifier_names", ()) or ()),
            family=entry.family or classify_family(model),
            paper=entry.paper,
        )
        attach_contract(
            model,
            cfg=cfg,
            in_chans=in_chans,
            feature_stages=getattr(model, "feature_stages", None),
            cam_layer=getattr(model, "cam_layer", None),
        )
    return model


def create_model(
    name: str,
    *,
    in_chans: int,
    num_classes: int,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    spatial_dims: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Creates a model by registry name; every model follows the medcls contract.

    Examples::

        create_model("timm:convnext_tiny", in_chans=1, num_classes=2)
        create_model("timm3d:resnet18", in_chans=2, num_classes=2)   # e.g. PET + CT
        create_model("monai:densenet121", in_chans=1, num_classes=3, spatial_dims=2)
        create_model("resnet50_3d", in_chans=2, num_classes=2)   # alias of monai:resnet50, 3D

    Args:
        name: ``"timm:<arch>"``, ``"timm3d:<arch>"``, ``"monai:<net>"``, a native name or
            an alias (:func:`~medcls.models.registry.register_alias`), which builds its
            target (the returned model's ``model_cfg.name`` is the target).
        in_chans: input channels ``C`` of ``(B, C, *spatial)``.
        num_classes: number of logits (0: no classifier, ``forward`` returns the
            pooled features).
        pretrained: load the library's pretrained weights through its own mechanism
            (hub download or local cache). Ignored when ``checkpoint_path`` is given.
        checkpoint_path: local weights file (``.safetensors`` or a torch state dict,
            read with ``weights_only=True``). The first conv is adapted when its input
            channels differ and a classifier of another size is skipped.
        spatial_dims: 2 or 3. ``timm:`` is 2D and ``timm3d:`` 3D only; ``monai:``
            defaults to 3; native models default to the first dims they support.
        **kwargs: architecture arguments for the library / entrypoint; ``None`` values
            are dropped (so config files can leave them unset).

    Returns:
        the model: ``forward(x)`` maps ``(B, in_chans, *spatial)`` to ``(B, num_classes)``;
        ``model.reparameterize()`` switches it to its inference form (see
        :mod:`medcls.models.restructure`).

    Raises:
        ModelError: unknown name (with the nearest names), bad arguments, or
            pretrained weights that could not be fetched.
        CheckpointError: an unreadable, unsafe or non-matching ``checkpoint_path``.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    in_chans = _check_int(in_chans, "in_chans", 1)
    num_classes = _check_int(num_classes, "num_classes", 0)
    if spatial_dims is not None and spatial_dims not in (2, 3):
        raise ModelError(f"create_model({name!r}): spatial_dims={spatial_dims!r}, expected 2 or 3")
    source, arch = parse_model_name(name)
    alias = get_alias(arch) if source == NATIVE else None
    if alias is not None:
        return create_model(
            alias.target,
            in_chans=in_chans,
            num_classes=num_classes,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            spatial_dims=_alias_dims(alias, spatial_dims),
            **kwargs,
        )
    use_library_weights = bool(pretrained) and checkpoint_path is None
    if source == NATIVE:
        if use_library_weights:
            raise ModelError(
                f"{name}: medcls models have no downloadable weights; pass checkpoint_path"
            )
        model = _create_native(
            arch, in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **kwargs
        )
    else:
        model = get_source(source).create(
            arch,
            in_chans=in_chans,
            num_classes=num_classes,
            pretrained=use_library_weights,
            spatial_dims=spatial_dims,
            **kwargs,
        )
    check_contract(model)
    from medcls.models.restructure.fuse import ensure_reparameterize

    ensure_reparameterize(model)  # model.reparameterize() for every model
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model


def model_info(name: str, *, spatial_dims: int | None = None) -> dict[str, Any]:
    """Describes a model, built on the ``meta`` device (no weights allocated) when possible.

    Args:
        name: a registry name.
        spatial_dims: for models that take 2 or 3 (``monai:``, native); default as in
            :func:`create_model`.

    Returns:
        ``{"name", "source", "dims", "spatial_dims", "family", "params", "input_size",
        "config", "feature_stages", "cam_layer", "paper", "alias_of", "note"}``;
        ``params`` is the parameter count at ``in_chans=1, num_classes=2`` (the medical
        default), and ``config`` is :meth:`ModelCfg.to_dict`. For an alias, the
        description of its target with ``name``, ``dims`` and ``note`` of the alias and
        ``alias_of`` the target (None for other names).

    Raises:
        ModelError: an unknown name or a model that cannot be built.
    """
    source, arch = parse_model_name(name)
    alias = get_alias(arch) if source == NATIVE else None
    if alias is not None:
        info = model_info(alias.target, spatial_dims=_alias_dims(alias, spatial_dims))
        info.update(name=name, dims=list(alias.dims), alias_of=alias.target, note=alias.note)
        return info
    dims = get_entry(arch).dims if source == NATIVE else get_source(source).dims(arch)
    try:
        with torch.device("meta"):
            model = create_model(name, in_chans=1, num_classes=2, spatial_dims=spatial_dims)
    except ModelError:
        # a few constructors read tensor values (impossible on meta): build for real
        model = create_model(name, in_chans=1, num_classes=2, spatial_dims=spatial_dims)
    cfg: ModelCfg = model.model_cfg
    cached = index_entry(name) or {}
    return {
        "name": name,
        "source": source,
        "dims": list(dims),
        "spatial_dims": cfg.spatial_dims,
        "family": cfg.family or cached.get("family"),
        "params": sum(p.numel() for p in model.parameters()),
        "input_size": list(cfg.input_size),
        "paper": cfg.paper,
        "config": cfg.to_dict(),
        "feature_stages": [vars(s) for s in model.feature_stages],
        "cam_layer": vars(model.cam_layer),
        "alias_of": None,
        "note": None,
    }


def to_channels_last(model: nn.Module, spatial_dims: int) -> nn.Module:
    """Stores the convolution weights of ``model`` channels-last, in place; returns it.

    ``nn.Module.to(memory_format=...)`` converts every 4-D and 5-D parameter and fails
    on a tensor of the other rank (a 2D model with 5-D expert kernels, a 3D model with
    4-D ones). Here only parameters and buffers of rank ``spatial_dims + 2`` change.
    """
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(spatial_dims)
    if fmt is None:
        raise ModelError(f"to_channels_last: spatial_dims={spatial_dims}, expected 2 or 3")
    rank = spatial_dims + 2
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.ndim == rank:
                tensor.data = tensor.data.contiguous(memory_format=fmt)
    return model
