"""What a benchmark runs: the models, the folds and seeds, and the report's options.

A benchmark is every model trained on every (seed, fold) of one experiment
configuration: the *slots*. Models are registry names, optionally with
constructor arguments and a display label in YAML flow-mapping braces::

    timm:resnet18
    timm:vit_tiny_patch16_224{img_size: 64}
    ldtransformer_s{label: LDTransformer}

Standard library and PyYAML only (no torch), so worker processes and the CLI
start fast.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from medcls.errors import ConfigError

__all__ = [
    "THRESHOLD_RULES",
    "BenchmarkSpec",
    "ModelSpec",
    "ReportOptions",
    "Slot",
    "parse_models",
    "parse_seeds",
    "parse_threshold",
]

THRESHOLD_RULES = ("youden", "sensitivity", "fixed")
"""How the decision threshold of a binary model is chosen on validation data."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of a benchmark.

    Attributes:
        name: the registry name (``timm:resnet18``).
        kwargs: constructor arguments (``{"img_size": 64}``).
        label: the name shown in tables and figures.
        slug: a file-system-safe unique name (folder of its runs).
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    slug: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        return cls(
            name=str(data["name"]),
            kwargs=dict(data.get("kwargs") or {}),
            label=str(data.get("label") or data["name"]),
            slug=str(data.get("slug") or _slug(str(data["name"]), dict(data.get("kwargs") or {}))),
        )


def _slug(name: str, kwargs: Mapping[str, Any]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
    if kwargs:
        digest = hashlib.sha1(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()
        base += f"-{digest[:8]}"
    return base


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside braces or brackets."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"--models: unbalanced braces in {text!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise ConfigError(f"--models: unbalanced braces in {text!r}")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _parse_one(item: str) -> ModelSpec:
    name, brace, rest = item.partition("{")
    name = name.strip()
    kwargs: dict[str, Any] = {}
    if brace:
        try:
            parsed = yaml.safe_load("{" + rest)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"--models: the arguments of {name!r} are not a YAML mapping: {{{rest} ({exc})"
            ) from None
        if not isinstance(parsed, dict):
            raise ConfigError(f"--models: expected {name}{{key: value, ...}}; got {item!r}")
        kwargs = {str(k): v for k, v in parsed.items()}
    if not name:
        raise ConfigError(f"--models: empty model name in {item!r}")
    label = str(kwargs.pop("label", "") or "")
    if not label:
        label = (
            name if not kwargs else f"{name} ({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        )
    return ModelSpec(name=name, kwargs=kwargs, label=label, slug=_slug(name, kwargs))


def parse_models(models: str | Iterable[str | ModelSpec | Mapping[str, Any]]) -> list[ModelSpec]:
    """Model specs from ``"a,b{k: v},c"`` or a list of names, specs or mappings.

    Raises:
        ConfigError: no model, malformed arguments, or two models with one label.
    """
    items: list[ModelSpec] = []
    raw = [models] if isinstance(models, str) else list(models)
    for entry in raw:
        if isinstance(entry, ModelSpec):
            items.append(entry)
        elif isinstance(entry, Mapping):
            items.append(ModelSpec.from_dict(entry))
        elif isinstance(entry, str):
            items.extend(_parse_one(part) for part in _split_top_level(entry))
        else:
            raise ConfigError(f"--models: expected names, got {type(entry).__name__} {entry!r}")
    if not items:
        raise ConfigError("--models: give at least one model name, e.g. --models timm:resnet18")
    for attr in ("label", "slug"):
        values = [getattr(spec, attr) for spec in items]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ConfigError(f"--models: {twice[0]!r} is listed twice; give each model once")
    return items


def parse_seeds(seeds: str | int | Sequence[int]) -> list[int]:
    """Seeds from ``"0,1,2"``, one integer, or a list of integers."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        values = [seeds]
    elif isinstance(seeds, str):
        try:
            values = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(
                f"--seeds: expected integers separated by commas; got {seeds!r}"
            ) from None
    else:
        values = [int(s) for s in seeds]
    if not values:
        raise ConfigError("--seeds: give at least one seed, e.g. --seeds 0,1,2")
    if len(set(values)) != len(values):
        raise ConfigError(f"--seeds: a seed is listed twice in {values}")
    return values


def parse_threshold(text: str | float) -> tuple[str, float | None]:
    """``youden``, ``sensitivity:0.9`` (or ``sensitivity=0.9``) or a fixed number like ``0.5``.

    Returns:
        ``(rule, value)``: ``("youden", None)``, ``("sensitivity", 0.9)`` or ``("fixed", 0.5)``.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        rule = "fixed"
    else:
        raw = str(text).strip().lower()
        head, _, tail = raw.replace("=", ":").partition(":")
        if head == "youden" and not tail:
            return "youden", None
        if head == "sensitivity":
            rule = "sensitivity"
            try:
                value = float(tail)
            except ValueError:
                raise ConfigError(
                    f"--threshold: expected sensitivity:<target in (0, 1]> such as sensitivity:0.9; "
                    f"got {text!r}"
                ) from None
            if not 0.0 < value <= 1.0:
                raise ConfigError(
                    f"--threshold: the sensitivity target must be in (0, 1]; got {value}"
                )
            return rule, value
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(
                f"--threshold: expected 'youden', 'sensitivity:0.9' or a probability such as 0.5; "
                f"got {text!r}"
            ) from None
        rule = "fixed"
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--threshold: a fixed threshold must be in [0, 1]; got {value}")
    return rule, value


@dataclass(frozen=True)
class Slot:
    """One training run of a benchmark: a model on one fold with one seed."""

    model: ModelSpec
    seed: int
    fold: int

    @property
    def key(self) -> str:
        """Unique, file-system-safe id: ``<slug>__seed<seed>__fold<fold>``."""
        return f"{self.model.slug}__seed{self.seed}__fold{self.fold}"

    @property
    def run_name(self) -> str:
        return f"seed{self.seed}-fold{self.fold}"

    def describe(self) -> str:
        return f"{self.model.label} seed {self.seed} fold {self.fold}"


@dataclass
class ReportOptions:
    """How results are summarised (can be changed later with ``medcls report``).

    Attributes:
        threshold: ``youden``, ``sensitivity:<target>`` or a fixed probability:
            the decision threshold of a binary model, chosen on each run's
            validation predictions and applied to its evaluation split.
        reference: the model every other one is compared with (DeLong, McNemar):
            a model name or label, or ``best`` (highest mean AUC).
        preset: the table layout (see :data:`medcls.reports.tables.PRESETS`).
        eval_split: ``auto`` (``test`` when the runs have a test split, else the
            out-of-fold ``val`` predictions), ``test`` or ``val``.
        n_bootstrap: bootstrap resamples for the confidence intervals.
        confidence: confidence level of the intervals.
        alpha: significance level of the (Holm-adjusted) tests.
        heatmap_method: explanation method of the heatmap grid (``none``: no grid).
        heatmap_images: images in the heatmap grid.
        seed: seed of the bootstrap resampling.
    """

    threshold: str = "youden"
    reference: str = "best"
    preset: str = "full"
    eval_split: str = "auto"
    n_bootstrap: int = 2000
    confidence: float = 0.95
    alpha: float = 0.05
    heatmap_method: str = "gradcam"
    heatmap_images: int = 4
    seed: int = 0

    def validate(self) -> ReportOptions:
        parse_threshold(self.threshold)
        if self.eval_split not in ("auto", "test", "val"):
            raise ConfigError(f"eval_split: expected auto, test or val; got {self.eval_split!r}")
        if int(self.n_bootstrap) < 100:
            raise ConfigError(
                f"n_bootstrap: expected at least 100 resamples; got {self.n_bootstrap}"
            )
        if not 0.5 <= float(self.confidence) < 1.0:
            raise ConfigError(
                f"confidence: expected a level in [0.5, 1) such as 0.95; got {self.confidence}"
            )
        if not 0.0 < float(self.alpha) < 0.5:
            raise ConfigError(f"alpha: expected a level in (0, 0.5) such as 0.05; got {self.alpha}")
        if int(self.heatmap_images) < 1:
            raise ConfigError(f"heatmap_images: expected at least 1; got {self.heatmap_images}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ReportOptions:
        known = {f for f in cls.__dataclass_fields__}
        data = dict(data or {})
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"report options: unknown key(s) {unknown}; expected {sorted(known)}")
        return cls(**data).validate()


@dataclass
class BenchmarkSpec:
    """Everything that defines a benchmark folder (stored as ``benchmark.json``).

    Attributes:
        config: the resolved experiment configuration (a plain dict) every run
            starts from; each run sets its model, seed, fold and run folder.
        models: the models.
        folds: cross-validation folds (each fold is the validation split once).
        seeds: training seeds; every (model, fold) is trained once per seed.
        split_seed: seed of the test split and the folds (the configuration's seed).
        resplit: draw new folds for every seed (repeated cross-validation) instead
            of keeping one split for all seeds; the test split never changes.
        report: how results are summarised.
    """

    config: dict[str, Any]
    models: list[ModelSpec]
    folds: int = 5
    seeds: list[int] = field(default_factory=lambda: [0])
    split_seed: int = 0
    resplit: bool = False
    report: ReportOptions = field(default_factory=ReportOptions)

    def __post_init__(self) -> None:
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"--folds: expected an integer >= 2; got {self.folds!r}")

    def slots(self) -> list[Slot]:
        """All runs, fold-major (every model's fold 0 first), so partial results compare."""
        return [
            Slot(model, seed, fold)
            for seed in self.seeds
            for fold in range(self.folds)
            for model in self.models
        ]

    def model(self, key: str) -> ModelSpec:
        """The model whose name, label or slug is ``key``."""
        for spec in self.models:
            if key in (spec.name, spec.label, spec.slug):
                return spec
        raise ConfigError(
            f"model {key!r} is not in this benchmark; its models are "
            f"{', '.join(m.label for m in self.models)}"
        )

    def identity(self) -> dict[str, Any]:
        """What must agree between processes sharing a folder (models and seeds may grow)."""
        config = json.loads(json.dumps(self.config, default=str))
        config.pop("model", None)
        for key in ("seed", "name", "output_dir", "run_dir", "resume"):
            config.pop(key, None)
        config.get("data", {}).pop("fold", None)
        config.get("data", {}).pop("num_folds", None)
        return {
            "config": config,
            "folds": self.folds,
            "split_seed": self.split_seed,
            "resplit": self.resplit,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "config": self.config,
            "models": [m.to_dict() for m in self.models],
            "folds": self.folds,
            "seeds": list(self.seeds),
            "split_seed": self.split_seed,
            "resplit": self.resplit,
            "report": self.report.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkSpec:
        try:
            return cls(
                config=dict(data["config"]),
                models=[ModelSpec.from_dict(m) for m in data["models"]],
                folds=int(data["folds"]),
                seeds=[int(s) for s in data["seeds"]],
                split_seed=int(data.get("split_seed", 0)),
                resplit=bool(data.get("resplit", False)),
                report=ReportOptions.from_dict(data.get("report")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"benchmark.json: missing or invalid field ({exc})") from None
