"""How a model's convolutions pad their input: zeros (the default) or replicate.

A convolution with zero padding sees an edge wherever anatomy reaches the border of
its input, which in 3D is the rule rather than the exception: a chest CT is cut at
the top and bottom of its scan range, a crop of a volume cuts through the body on
every side. Early layers respond to that artificial edge like to any other, and a
class activation map of such a layer can peak on the border (measured on the 3D demo:
``docs/explain.md``). Replicate padding continues the border voxels outward, so a cut
through the body makes no edge.

Only convolution modules (``nn.Conv1d/2d/3d`` and subclasses, which timm, timm_3d,
MONAI and medcls use) with a non-zero padding are changed: a convolution called as a
function in a ``forward`` is out of reach, as are layers that pad themselves before
an unpadded convolution (timm's ``Conv2dSame``). Transposed convolutions only support
zeros and are left alone. The change is not stored in a state dict: a run's model
gets it again when it is rebuilt from its configuration (``model.restructure.padding``).
"""

from __future__ import annotations

from torch import nn

from medcls.errors import ModelError
from medcls.models.restructure._common import model_label

__all__ = ["PADDING_MODES", "set_padding_mode"]

#: padding modes offered. torch's ``reflect`` is left out because it fails on a map
#: of one cell per axis (the last stage of a small 3D input), ``circular`` because it
#: joins opposite borders of the body.
PADDING_MODES: tuple[str, ...] = ("zeros", "replicate")


def set_padding_mode(model: nn.Module, mode: str) -> list[str]:
    """Sets the padding mode of every padded convolution module of ``model``, in place.

    Example::

        set_padding_mode(model, "replicate")   # no artificial edge at the border

    Args:
        model: any module.
        mode: ``zeros`` or ``replicate``.

    Returns:
        the names of the convolutions whose padding now uses ``mode``.

    Raises:
        ModelError: an unknown mode, or a model without any padded convolution module.
    """
    if mode not in PADDING_MODES:
        raise ModelError(f"padding mode {mode!r}: expected one of {PADDING_MODES}")
    changed: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.conv._ConvNd) or module.transposed:
            continue
        if not any(module._reversed_padding_repeated_twice):
            continue  # no padding: nothing to change
        module.padding_mode = mode
        changed.append(name)
    if not changed:
        raise ModelError(
            f"{model_label(model)}: no padded convolution module to set padding mode "
            f"{mode!r} on (convolutions called as functions or unpadded ones are out of reach)"
        )
    return changed
