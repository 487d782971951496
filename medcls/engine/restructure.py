"""Applying the ``model.restructure`` configuration section where the engine builds models.

:func:`build_settings` decides how the model is built (the weights' own channels when
they are adapted by ``in_chans_mode``, 2D when it is inflated), :func:`apply_restructure`
makes the changes in the documented order, and :func:`prepare_for_inference` fuses a
loaded run's model. Errors name the configuration key. See ``docs/restructure.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from medcls.config.schema import RestructureConfig
from medcls.errors import ConfigError, ModelError

__all__ = ["apply_restructure", "build_settings", "prepare_for_inference", "restructure_config"]

KEY = "model.restructure"


def restructure_config(value: RestructureConfig | Mapping[str, Any] | None) -> RestructureConfig:
    """The section as a :class:`RestructureConfig` (a checkpoint stores it as a dict)."""
    if value is None:
        return RestructureConfig()
    if isinstance(value, RestructureConfig):
        return value
    from medcls.config.loader import from_dict

    return from_dict(RestructureConfig, value, prefix=f"{KEY}.")


def build_settings(
    rs: RestructureConfig,
    *,
    name: str,
    in_chans: int,
    spatial_dims: int,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    fusion: str = "none",
    kwargs: Mapping[str, Any] | None = None,
) -> tuple[int, int]:
    """``(in_chans, spatial_dims)`` to build the model with before it is restructured.

    Raises:
        ConfigError: ``inflate`` for 2D data or with fusion, ``in_chans_mode`` with
            fusion or for weights whose channels cannot be known in advance.
    """
    build_dims = spatial_dims
    if rs.inflate != "none":
        if spatial_dims != 3:
            raise ConfigError(
                f"{KEY}.inflate={rs.inflate!r} turns a 2D model into a 3D one; the data "
                f"is {spatial_dims}D"
            )
        if fusion != "none":
            raise ConfigError(f"{KEY}.inflate is not supported with model.fusion={fusion!r}")
        build_dims = 2
    build_chans = in_chans
    weights = pretrained or checkpoint_path is not None
    if rs.in_chans_mode != "auto" and weights:
        if fusion != "none":
            raise ConfigError(
                f"{KEY}.in_chans_mode={rs.in_chans_mode!r} is not supported with "
                f"model.fusion={fusion!r}; use auto"
            )
        from medcls.models.restructure import weights_in_chans

        try:
            build_chans = weights_in_chans(
                name,
                pretrained=pretrained,
                checkpoint_path=checkpoint_path,
                spatial_dims=build_dims,
                **dict(kwargs or {}),
            )
        except ModelError as exc:
            raise ConfigError(f"{KEY}.in_chans_mode={rs.in_chans_mode!r}: {exc}") from exc
    return int(build_chans or in_chans), build_dims


def _step(key: str, value: Any, fn, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except ModelError as exc:
        raise ConfigError(f"{KEY}.{key}={value!r}: {exc}") from exc


def apply_restructure(
    model: nn.Module, rs: RestructureConfig, *, in_chans: int, for_training: bool
) -> nn.Module:
    """Makes the configured changes to a freshly built model, in place.

    Order: input channels, inflation, norm swap, activation swap, padding mode, head,
    then (for training only) freezing. A model rebuilt to load a run's checkpoint gets the
    structural changes only; its weights come from the checkpoint.

    Raises:
        ConfigError: an operation the model does not allow, naming the key.
    """
    from medcls.models.restructure import (
        freeze,
        inflate,
        replace_head,
        set_in_chans,
        set_padding_mode,
        swap_act,
        swap_norm,
    )

    built_chans = getattr(model, "in_chans", in_chans)  # a dict for fusion models
    if isinstance(built_chans, int) and built_chans != in_chans:
        _step("in_chans_mode", rs.in_chans_mode, set_in_chans, model, in_chans, rs.in_chans_mode)
    if rs.inflate != "none":
        _step("inflate", rs.inflate, inflate, model, mode=rs.inflate, check=for_training)
    if rs.norm is not None:
        _step("norm", rs.norm, swap_norm, model, rs.norm)
    if rs.act is not None:
        _step("act", rs.act, swap_act, model, rs.act)
    if rs.padding is not None:
        _step("padding", rs.padding, set_padding_mode, model, rs.padding)
    if rs.head_hidden is not None or rs.head_drop_rate > 0:
        _step(
            "head_hidden" if rs.head_hidden is not None else "head_drop_rate",
            rs.head_hidden if rs.head_hidden is not None else rs.head_drop_rate,
            replace_head,
            model,
            drop_rate=rs.head_drop_rate,
            hidden=rs.head_hidden,
        )
    if for_training and rs.freeze is not None:
        _step("freeze", rs.freeze, freeze, model, rs.freeze, norm_stats=rs.freeze_norm_stats)
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"{KEY}.freeze={rs.freeze!r} leaves no parameter to train")
    return model


def prepare_for_inference(model: nn.Module, rs: RestructureConfig) -> nn.Module:
    """``reparameterize`` (and ``fold_bn``) a run's model after its weights are loaded."""
    if rs.reparameterize:
        from medcls.models.restructure import reparameterize

        _step("reparameterize", True, reparameterize, model, fold_bn=rs.fold_bn)
    return model
