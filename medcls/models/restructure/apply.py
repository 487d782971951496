"""Applying several restructuring operations in one call, in a fixed order."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from medcls.models.restructure.channels import set_in_chans
from medcls.models.restructure.freeze import freeze as freeze_parts
from medcls.models.restructure.head import replace_head
from medcls.models.restructure.inflate import inflate as inflate_model
from medcls.models.restructure.padding import set_padding_mode
from medcls.models.restructure.swap import swap_act, swap_norm

__all__ = ["restructure_model"]


def restructure_model(
    model: nn.Module,
    *,
    in_chans: int | None = None,
    in_chans_mode: str = "mean",
    inflate: str | None = None,
    norm: str | None = None,
    act: str | None = None,
    padding: str | None = None,
    num_classes: int | None = None,
    head_drop_rate: float = 0.0,
    head_hidden: int | None = None,
    freeze: str | int | Sequence[str] | None = None,
    freeze_norm_stats: bool = True,
) -> nn.Module:
    """Restructures ``model`` in place; each argument left at its default does nothing.

    The order is: input channels (:func:`set_in_chans`), inflation to 3D
    (:func:`inflate`, mode ``centre``/``mean``), norm swap (:func:`swap_norm`,
    batch norms), activation swap (:func:`swap_act`), padding mode
    (:func:`set_padding_mode`), head (:func:`replace_head`),
    freezing (:func:`freeze`), so a swapped or new layer is frozen like the rest.

    Example::

        restructure_model(model, in_chans=2, inflate="centre", norm="group",
                          head_hidden=256, freeze="all-but-head")

    Returns:
        ``model``.

    Raises:
        ModelError: from the operation that cannot be applied (it names the module).
    """
    if in_chans is not None and in_chans != int(model.in_chans):
        set_in_chans(model, in_chans, in_chans_mode)
    if inflate is not None:
        inflate_model(model, mode=inflate)
    if norm is not None:
        swap_norm(model, norm)
    if act is not None:
        swap_act(model, act)
    if padding is not None:
        set_padding_mode(model, padding)
    if num_classes is not None or head_drop_rate or head_hidden is not None:
        replace_head(model, num_classes, drop_rate=head_drop_rate, hidden=head_hidden)
    if freeze is not None:
        freeze_parts(model, freeze, norm_stats=freeze_norm_stats)
    return model
