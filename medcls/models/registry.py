"""Name-keyed model registry: medcls's own entrypoints plus the zoo sources.

A model name means the same thing in the API, the config files and the CLI:

- ``"timm:<arch>"``: a 2D timm model (any ``timm.list_models()`` name);
- ``"timm3d:<arch>"``: a 3D timm_3d model;
- ``"monai:<net>"``: a MONAI classification network, 2D or 3D by ``spatial_dims``;
- ``"<name>"`` (no prefix): a medcls model registered with :func:`register_model`,
  or an alias registered with :func:`register_alias` (a table's name for a zoo model,
  e.g. ``"resnet50_3d"`` -> ``"monai:resnet50"``).

Native models register an entrypoint ``fn(*, in_chans, num_classes, spatial_dims,
**kwargs) -> nn.Module``. The zoo sources live in :mod:`medcls.models.zoo` and are
imported only when a name with their prefix is used, so listing native models does not
import timm or MONAI.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from medcls.errors import ModelError

__all__ = [
    "FAMILIES",
    "SOURCES",
    "ModelAlias",
    "ModelEntry",
    "ZooSource",
    "get_alias",
    "get_entry",
    "get_source",
    "is_model",
    "list_aliases",
    "list_models",
    "model_entrypoint",
    "parse_model_name",
    "register_alias",
    "register_model",
    "suggest_names",
]

FAMILIES = ("cnn", "transformer", "hybrid", "mlp")
NATIVE = "medcls"
# prefix -> module whose ``SOURCES_BY_PREFIX[prefix]`` is a ZooSource; imported on first use
_ZOO_MODULES = {
    "timm": "medcls.models.zoo.timm_zoo",
    "timm3d": "medcls.models.zoo.timm_zoo",
    "monai": "medcls.models.zoo.monai_zoo",
}
SOURCES = (*_ZOO_MODULES, NATIVE)
# packages whose modules define native models (imported once, on first registry query)
_NATIVE_PACKAGES = ("medcls.models.paper", "medcls.models.baselines")
# modules that register aliases (imported after the native packages, so aliases can be
# checked against the native names they must not shadow)
_ALIAS_MODULES = ("medcls.models.aliases",)


class ZooSource(Protocol):
    """A zoo adapter; its module maps prefixes to instances in ``SOURCES_BY_PREFIX``."""

    prefix: str

    def names(self) -> list[str]:
        """Architecture names (without prefix) that work, known-broken ones excluded."""
        ...

    def broken(self) -> dict[str, str]:
        """Known-broken architecture names -> the measured reason."""
        ...

    def dims(self, arch: str) -> tuple[int, ...]:
        """Spatial dims the architecture supports."""
        ...

    def create(self, arch: str, **kwargs: Any) -> Any:
        """Builds the model (already holding the contract attributes)."""
        ...


@dataclass(frozen=True)
class ModelEntry:
    """A native model registered with :func:`register_model`.

    Attributes:
        name: registry name (no prefix).
        fn: entrypoint ``fn(*, in_chans, num_classes, spatial_dims, **kwargs)``.
        dims: spatial dims the model supports.
        family: ``cnn``/``transformer``/``hybrid``/``mlp`` if known.
        paper: citation or URL.
        input_size: default spatial input size per spatial dims, e.g.
            ``{2: (224, 224), 3: (64, 64, 64)}``.
        mean: default normalisation mean (fitted to ``in_chans`` at creation).
        std: default normalisation std.
    """

    name: str
    fn: Callable[..., Any]
    dims: tuple[int, ...] = (2, 3)
    family: str | None = None
    paper: str | None = None
    input_size: dict[int, tuple[int, ...]] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @property
    def module(self) -> str:
        return self.fn.__module__


@dataclass(frozen=True)
class ModelAlias:
    """Another name for a registered model, registered with :func:`register_alias`.

    Attributes:
        name: the alias (no prefix), e.g. ``"resnet50_3d"``.
        target: the model it builds, e.g. ``"monai:resnet50"`` (never another alias).
        dims: spatial dims the alias stands for (a subset of the target's).
        note: why this target (shown by ``medcls models show`` and ``--aliases``).
    """

    name: str
    target: str
    dims: tuple[int, ...]
    note: str = ""


_ENTRIES: dict[str, ModelEntry] = {}
_ALIASES: dict[str, ModelAlias] = {}
_NATIVE_LOADED = False

DEFAULT_INPUT_SIZE = {2: (224, 224), 3: (64, 64, 64)}


def register_model(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    dims: Sequence[int] = (2, 3),
    family: str | None = None,
    paper: str | None = None,
    input_size: dict[int, Sequence[int]] | None = None,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
) -> Any:
    """Registers a native model entrypoint (usable bare or with arguments).

    Example::

        @register_model(family="hybrid", paper="Acta Optica Sinica 2024", dims=(2,))
        def ldtransformer_s(*, in_chans, num_classes, spatial_dims=2, **kwargs):
            return LDTransformer(in_chans=in_chans, num_classes=num_classes, ...)

    Args:
        fn: the entrypoint ``fn(*, in_chans, num_classes, spatial_dims, **kwargs)``.
        name: registry name; defaults to ``fn.__name__``. Must not contain ``":"``.
        dims: spatial dims the model supports.
        family: one of :data:`FAMILIES`, if known.
        paper: citation or URL of the paper.
        input_size: default spatial size per spatial dims (default 224² / 64³).
        mean: normalisation mean; std: normalisation std.

    Returns:
        ``fn`` unchanged (or a decorator when called with arguments only).

    Raises:
        ModelError: an invalid or already registered name, or an unknown family.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        model_name = name or func.__name__
        if ":" in model_name:
            raise ModelError(
                f"register_model: name {model_name!r} must not contain ':' "
                f"(prefixes {sorted(_ZOO_MODULES)} are reserved for the zoos)"
            )
        if family is not None and family not in FAMILIES:
            raise ModelError(f"register_model({model_name!r}): family {family!r} not in {FAMILIES}")
        bad_dims = [d for d in dims if d not in (2, 3)]
        if bad_dims or not dims:
            raise ModelError(
                f"register_model({model_name!r}): dims {tuple(dims)} must be 2 and/or 3"
            )
        if model_name in _ALIASES:
            raise ModelError(
                f"register_model: {model_name!r} is already an alias of "
                f"{_ALIASES[model_name].target!r}"
            )
        previous = _ENTRIES.get(model_name)
        if previous is not None and (previous.module, previous.fn.__qualname__) != (
            func.__module__,
            func.__qualname__,
        ):
            raise ModelError(
                f"register_model: {model_name!r} is already registered by "
                f"{previous.module}.{previous.fn.__qualname__}"
            )
        sizes = {int(d): tuple(int(s) for s in v) for d, v in (input_size or {}).items()}
        _ENTRIES[model_name] = ModelEntry(
            name=model_name,
            fn=func,
            dims=tuple(int(d) for d in dims),
            family=family,
            paper=paper,
            input_size={d: sizes.get(d, DEFAULT_INPUT_SIZE[d]) for d in dims},
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        )
        return func

    return decorate(fn) if fn is not None else decorate


def register_alias(name: str, target: str, *, dims: Sequence[int], note: str = "") -> ModelAlias:
    """Registers ``name`` as another name for the model ``target``.

    ``create_model(name, ...)`` then builds ``target`` (``spatial_dims`` defaults to
    the alias's first dims and must be one of ``dims``). Aliases are not listed by
    :func:`list_models` unless asked (``aliases=True``), so a model is never counted
    twice.

    Example::

        register_alias("resnet50_3d", "monai:resnet50", dims=(3,), note="3D-ResNet50")

    Args:
        name: the alias; no ``":"``, not a native model's name.
        target: a registry name (``"timm:..."``, ``"timm3d:..."``, ``"monai:..."`` or a
            native name); not an alias.
        dims: spatial dims the alias stands for.
        note: why this target.

    Returns:
        the :class:`ModelAlias`.

    Raises:
        ModelError: an invalid name or dims, a name that shadows a native model or is
            already an alias of another target, or a target that is an alias.
    """
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise ModelError(
            f"register_alias: alias {name!r} must be a non-empty name without ':' "
            f"(prefixes {sorted(_ZOO_MODULES)} are reserved for the zoos)"
        )
    dims = tuple(int(d) for d in dims)
    if not dims or any(d not in (2, 3) for d in dims):
        raise ModelError(f"register_alias({name!r}): dims {dims} must be 2 and/or 3")
    source, arch = parse_model_name(target)
    if name in _ENTRIES:
        raise ModelError(
            f"register_alias: {name!r} is a native model "
            f"({_ENTRIES[name].module}); an alias must not shadow it"
        )
    if source == NATIVE and arch in _ALIASES:
        raise ModelError(
            f"register_alias({name!r}): target {target!r} is itself an alias "
            f"(of {_ALIASES[arch].target!r}); point to that instead"
        )
    alias = ModelAlias(name=name, target=target, dims=dims, note=note)
    previous = _ALIASES.get(name)
    if previous is not None and previous.target != target:
        raise ModelError(
            f"register_alias: {name!r} is already an alias of {previous.target!r}, not {target!r}"
        )
    _ALIASES[name] = alias
    return alias


def get_alias(name: str) -> ModelAlias | None:
    """The :class:`ModelAlias` registered as ``name``, or None if it is no alias."""
    _load_native()
    return _ALIASES.get(name)


def list_aliases(
    pattern: str | Iterable[str] = "*", *, dims: int | None = None
) -> list[ModelAlias]:
    """Registered aliases whose name matches ``pattern`` (fnmatch), sorted by name.

    Args:
        pattern: wildcard(s) over the alias names; several are OR-ed.
        dims: keep aliases that stand for this many spatial dims.
    """
    _load_native()
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return [
        alias
        for name, alias in sorted(_ALIASES.items())
        if any(fnmatch.fnmatchcase(name, p) for p in patterns)
        and (dims is None or dims in alias.dims)
    ]


def _load_native() -> None:
    """Imports every module of the native model packages so their decorators run."""
    global _NATIVE_LOADED
    if _NATIVE_LOADED:
        return
    _NATIVE_LOADED = True
    for package_name in _NATIVE_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as exc:
            if exc.name == package_name:
                continue
            raise
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)
    for module_name in _ALIAS_MODULES:
        importlib.import_module(module_name)


def get_source(prefix: str) -> ZooSource:
    """Returns the zoo source for ``prefix`` (``timm``, ``timm3d`` or ``monai``)."""
    module_name = _ZOO_MODULES.get(prefix)
    if module_name is None:
        raise ModelError(
            f"unknown model source prefix {prefix!r}: expected one of "
            f"{', '.join(repr(p + ':') for p in _ZOO_MODULES)} or a medcls model name without prefix"
        )
    module = importlib.import_module(module_name)
    return module.SOURCES_BY_PREFIX[prefix]


def parse_model_name(name: str) -> tuple[str, str]:
    """Splits ``"prefix:arch"`` into ``(source, arch)``; no prefix -> ``("medcls", name)``."""
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    if ":" in name:
        prefix, arch = name.split(":", 1)
        if prefix not in _ZOO_MODULES:
            get_source(prefix)  # raises the unknown-prefix error
        if not arch:
            raise ModelError(f"model name {name!r} has an empty architecture after '{prefix}:'")
        return prefix, arch
    return NATIVE, name


def _excluded_native() -> dict[str, str]:
    """Native models excluded after the zoo health sweep -> reason."""
    from medcls.models.zoo import excluded_models

    return {k: v for k, v in excluded_models().items() if ":" not in k}


def get_entry(name: str) -> ModelEntry:
    """Returns the :class:`ModelEntry` of a native model (raises with suggestions)."""
    _load_native()
    entry = _ENTRIES.get(name)
    if entry is None:
        if name in _ALIASES:
            raise ModelError(
                f"{name!r} is an alias of {_ALIASES[name].target!r}, not a native model "
                "entry; create_model and model_info resolve it"
            )
        raise unknown_model_error(name)
    reason = _excluded_native().get(name)
    if reason is not None:
        raise ModelError(f"{name} is excluded (zoo health sweep): {reason}")
    return entry


def model_entrypoint(name: str) -> Callable[..., Any]:
    """Returns the entrypoint function of a native model."""
    return get_entry(name).fn


def _source_names(source: str) -> list[str]:
    if source == NATIVE:
        _load_native()
        excluded = _excluded_native()
        return sorted(n for n in _ENTRIES if n not in excluded)
    return [f"{source}:{arch}" for arch in get_source(source).names()]


def _name_dims(source: str, name: str) -> tuple[int, ...]:
    if source == NATIVE:
        return _ENTRIES[name].dims
    return get_source(source).dims(name.split(":", 1)[1])


def _name_family(source: str, name: str) -> str | None:
    if source == NATIVE:
        return _ENTRIES[name].family
    from medcls.models.zoo.families import index_entry

    return (index_entry(name) or {}).get("family")


def is_model(name: str) -> bool:
    """True if ``name`` is a known (and not known-broken) model name."""
    try:
        source, arch = parse_model_name(name)
    except ModelError:
        return False
    if source == NATIVE:
        _load_native()
        if arch in _ALIASES:
            return is_model(_ALIASES[arch].target)
        return arch in _ENTRIES and arch not in _excluded_native()
    return arch in set(get_source(source).names())


def list_models(
    pattern: str | Iterable[str] = "*",
    *,
    dims: int | None = None,
    family: str | None = None,
    source: str | None = None,
    aliases: bool = False,
) -> list[str]:
    """Lists model names (prefixed for zoo models) matching the filters.

    Known-broken zoo architectures (measured in ``notes/zoo-probe``) and the models the
    zoo health sweep excluded (``medcls/models/zoo/excluded.json``) are left out; see
    ``medcls.models.zoo.broken_models()`` for them and the reason.

    Args:
        pattern: fnmatch wildcard(s) over the full names, e.g. ``"timm3d:resnet*"``,
            ``"*vit*"``; several patterns are OR-ed.
        dims: keep models that support this many spatial dims (2 or 3).
        family: keep models of this family (``cnn``, ``transformer``, ``hybrid``,
            ``mlp``); zoo families come from the shipped index, so a model missing from
            it is left out by this filter.
        source: keep one source: ``timm``, ``timm3d``, ``monai`` or ``medcls``.
        aliases: also list the aliases (:func:`register_alias`; as source ``medcls``,
            family that of their target). Off by default, so that every model is
            listed, and counted, once.

    Returns:
        sorted names.

    Raises:
        ModelError: an unknown ``source``, ``family`` or ``dims``.
    """
    if source is not None and source not in SOURCES:
        raise ModelError(f"list_models: source {source!r} not in {SOURCES}")
    if family is not None and family not in FAMILIES:
        raise ModelError(f"list_models: family {family!r} not in {FAMILIES}")
    if dims is not None and dims not in (2, 3):
        raise ModelError(f"list_models: dims {dims!r} must be 2 or 3")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    sources = [source] if source else list(SOURCES)
    # skip sources no pattern can match (so "monai:*" does not import timm)
    sources = [
        s
        for s in sources
        if any(fnmatch.fnmatchcase(f"{s}:", p.split(":", 1)[0] + ":") for p in patterns if ":" in p)
        or any(":" not in p and (s == NATIVE or "*" in p or "?" in p or "[" in p) for p in patterns)
    ]
    if dims == 2:
        sources = [s for s in sources if s != "timm3d"]
    elif dims == 3:
        sources = [s for s in sources if s != "timm"]
    out: list[str] = []
    for src in sources:
        for name in _source_names(src):
            if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            if dims is not None and dims not in _name_dims(src, name):
                continue
            if family is not None and _name_family(src, name) != family:
                continue
            out.append(name)
    if aliases and source in (None, NATIVE):
        for alias in list_aliases([p for p in patterns if ":" not in p], dims=dims):
            target_source = parse_model_name(alias.target)[0]
            if family is not None and _name_family(target_source, alias.target) != family:
                continue
            out.append(alias.name)
    return sorted(out)


def suggest_names(name: str, n: int = 5) -> list[str]:
    """Returns up to ``n`` registered names closest to ``name`` (difflib)."""
    source, arch = parse_model_name(name) if ":" in name else (None, name)
    pool = list_models(source=source) if source else list_models(aliases=True)
    matches = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if not matches:  # compare architectures without their prefixes
        by_arch: dict[str, str] = {}
        for full in pool:
            by_arch.setdefault(full.split(":", 1)[-1], full)
        matches = [by_arch[a] for a in difflib.get_close_matches(arch, list(by_arch), n=n)]
    return matches


def unknown_model_error(name: str, reason: str | None = None) -> ModelError:
    """Builds the error for an unknown name, with the nearest names and how to list."""
    try:
        near = suggest_names(name)
    except ModelError:
        near = []
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    why = f" ({reason})" if reason else ""
    return ModelError(
        f"unknown model {name!r}{why}.{hint} List names with `medcls models PATTERN` "
        "or medcls.models.list_models('PATTERN'); zoo models need a prefix "
        "('timm:', 'timm3d:', 'monai:')."
    )
