"""Names of the explanation methods (no heavy imports: the CLI reads them at start-up)."""

from __future__ import annotations

from medcls.errors import ConfigError

__all__ = [
    "CAM_METHODS",
    "GRADIENT_METHODS",
    "METHODS",
    "METHOD_HELP",
    "PERTURBATION_METHODS",
    "canonical_method",
]

#: class-activation-map methods: a map on the grid of a target layer, upsampled
CAM_METHODS = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "hirescam",
    "layercam",
    "scorecam",
    "eigencam",
    "ablationcam",
)
#: gradient maps: a map on the input's own grid, one per modality
GRADIENT_METHODS = ("gradients", "smoothgrad", "guided-backprop", "integrated-gradients")
#: perturbation maps: the drop of the class score when a patch of the input is hidden
PERTURBATION_METHODS = ("occlusion",)
METHODS = (*CAM_METHODS, *GRADIENT_METHODS, *PERTURBATION_METHODS)

METHOD_HELP = {
    "gradcam": "Grad-CAM (Selvaraju et al. 2017): channels weighted by their mean gradient",
    "gradcam++": "Grad-CAM++ (Chattopadhay et al. 2018): higher-order gradient weights",
    "xgradcam": "XGrad-CAM (Fu et al. 2020): activation-normalised gradient weights",
    "hirescam": "HiRes-CAM (Draelos & Carin 2020): element-wise gradient x activation",
    "layercam": "Layer-CAM (Jiang et al. 2021): positive gradients x activation, per cell",
    "scorecam": "Score-CAM (Wang et al. 2020): channels weighted by the score of the "
    "input masked by each channel (one forward pass per channel)",
    "eigencam": "Eigen-CAM (Muhammad & Yeasin 2020): first principal component of the "
    "activations (class-agnostic, no gradients)",
    "ablationcam": "Ablation-CAM (Desai & Ramaswamy 2020): score drop when a channel is "
    "zeroed (one forward pass per channel)",
    "gradients": "vanilla gradients (Simonyan et al. 2014): |d score / d input|",
    "smoothgrad": "SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies",
    "guided-backprop": "guided backpropagation (Springenberg et al. 2015): only positive "
    "gradients pass each activation",
    "integrated-gradients": "integrated gradients (Sundararajan et al. 2017): gradients "
    "integrated from a zero baseline",
    "occlusion": "occlusion sensitivity (Zeiler & Fergus 2014): score drop when a patch "
    "is set to zero",
}

_ALIASES = {
    "gradcampp": "gradcam++",
    "gradcamplusplus": "gradcam++",
    "vanilla": "gradients",
    "vanillagradients": "gradients",
    "saliency": "gradients",
    "gradient": "gradients",
    "guidedbackprop": "guided-backprop",
    "guidedbackpropagation": "guided-backprop",
    "gbp": "guided-backprop",
    "integratedgradients": "integrated-gradients",
    "ig": "integrated-gradients",
    "occlusionsensitivity": "occlusion",
}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


def canonical_method(name: str) -> str:
    """The canonical name of an explanation method.

    Case, ``-``, ``_`` and spaces are ignored and common aliases are accepted
    (``grad-cam``, ``GradCAM++``, ``ig``, ``saliency``).

    Raises:
        ConfigError: an unknown method (the known ones are listed).
    """
    if not isinstance(name, str):
        raise ConfigError(f"method: expected a method name, got {name!r}")
    key = _key(name)
    for method in METHODS:
        if _key(method) == key:
            return method
    if key in _ALIASES:
        return _ALIASES[key]
    raise ConfigError(
        f"method: unknown explanation method {name!r}; expected one of {', '.join(METHODS)}"
    )
