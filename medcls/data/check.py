"""The pre-training scan's result: problems, leaks and a summary of the dataset.

:meth:`medcls.data.datamodule.ClassificationDataModule.scan` reads every case
once (through the same preprocessing training uses, filling the cache) and
returns a :class:`DataReport`. Training stops on its errors before any step;
``medcls data check CONFIG`` prints it without training.

Problems are one line each, starting with the file to look at:

    /data/ct/case07.nii.gz: 12 NaN and 0 infinite values among 4096 (...)
    /data/manifest.csv: line 9: case 'c9' has label(s) ['tumor'] not in data.classes [...]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from medcls.data.cases import CaseProblem, CaseTable
from medcls.data.dataset import CaseRecord
from medcls.errors import DataError

__all__ = ["DataReport", "format_problems", "render_report"]

SPLITS = ("train", "val", "test")


def format_problems(lines: list[str], *, header: str, limit: int = 50) -> str:
    """One message for several problems: the problem itself when there is one,
    else ``header`` and one indented line per problem (at most ``limit``)."""
    if len(lines) == 1:
        return lines[0]
    shown = "\n  ".join(lines[:limit])
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"{header}:\n  {shown}{more}"


@dataclass
class DataReport:
    """What the scan found.

    Attributes:
        table: the cases (after dropping rows that could not become cases).
        assignment: case id -> split.
        problems: cases that cannot be used (rows and files), one per case.
        leaks: patients or identical images found in more than one split.
        warnings: findings that do not stop a run (constant images, duplicates
            within one split).
        records: case id -> facts about its raw and preprocessed images.
        on_bad_case: ``error`` or ``skip`` (``data.on_bad_case``).
        leakage: ``error`` or ``warn`` (``data.leakage``).
    """

    table: CaseTable
    assignment: dict[str, str]
    problems: list[CaseProblem] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: dict[str, CaseRecord] = field(default_factory=dict)
    on_bad_case: str = "error"
    leakage: str = "error"

    @property
    def errors(self) -> list[str]:
        """The findings that stop a run under the configured policies."""
        lines = [str(p) for p in self.problems] if self.on_bad_case == "error" else []
        if self.leakage == "error":
            lines += self.leaks
        return lines

    @property
    def skipped(self) -> list[CaseProblem]:
        """Cases left out under ``on_bad_case: skip``."""
        return list(self.problems) if self.on_bad_case == "skip" else []

    def raise_for_errors(self) -> None:
        """Raise one :class:`DataError` listing every error (nothing when there is none).

        One error gives a one-line message (the file, the problem, what to set to
        go on); several give a header line and one line per error.
        """
        bad = [str(p) for p in self.problems] if self.on_bad_case == "error" else []
        leaks = self.leaks if self.leakage == "error" else []
        if not bad and not leaks:
            return
        skip = "set data.on_bad_case=skip to leave bad cases out"
        warn = "set data.leakage=warn to continue anyway"
        if len(bad) + len(leaks) == 1:
            line = (bad + leaks)[0]
            raise DataError(f"{line} ({skip if bad else warn})")
        parts = []
        if bad:
            parts.append(f"{len(bad)} case(s) cannot be used ({skip})")
        if leaks:
            parts.append(f"{len(leaks)} leak(s) between splits ({warn})")
        raise DataError(format_problems(bad + leaks, header="; ".join(parts)))

    def usable(self, split: str | None = None) -> list[str]:
        """Ids of the cases that can be used (of ``split``, or all)."""
        bad = {p.case_id for p in self.problems}
        return [
            c.id
            for c in self.table.cases
            if c.id not in bad and (split is None or self.assignment.get(c.id) == split)
        ]

    def summary(self) -> dict:
        """Counts and ranges of the usable cases, as plain data (JSON-serialisable).

        Returns:
            ``cases``, ``patients`` and ``classes`` per split, ``task``,
            ``modalities``, and per modality the raw ``shapes`` and ``spacings``
            (counts of each), the intensity ``range`` (min, max over cases) and the
            ``output_shape`` after preprocessing.
        """
        cases = {c.id: c for c in self.table.cases}
        result: dict = {
            "source": self.table.source,
            "task": self.table.task,
            "classes": list(self.table.classes),
            "modalities": list(self.table.modalities),
            "splits": {},
            "problems": len(self.problems),
            "leaks": len(self.leaks),
        }
        for split in SPLITS:
            ids = self.usable(split)
            if not ids:
                continue
            members = [cases[i] for i in ids]
            counts = self.table.class_counts(members)
            result["splits"][split] = {
                "cases": len(ids),
                "patients": len({c.patient_id or c.id for c in members}),
                "classes": counts,
                "unlabelled": sum(1 for c in members if not c.labels),
            }
        result["images"] = {}
        records = [self.records[i] for i in self.usable() if i in self.records]
        for name in self.table.modalities:
            shapes = Counter(tuple(r.shapes[name]) for r in records if name in r.shapes)
            spacings = Counter(
                tuple(round(s, 3) for s in r.spacings[name]) for r in records if name in r.spacings
            )
            lows = [r.ranges[name][0] for r in records if name in r.ranges]
            highs = [r.ranges[name][1] for r in records if name in r.ranges]
            outputs = Counter(
                tuple(r.output_shape[name]) for r in records if name in r.output_shape
            )
            result["images"][name] = {
                "shapes": {str(list(k)): v for k, v in shapes.most_common()},
                "spacings": {str(list(k)): v for k, v in spacings.most_common()},
                "range": [min(lows), max(highs)] if lows else None,
                "output_shape": {str(list(k)): v for k, v in outputs.most_common()},
            }
        return result


def _counts(mapping: dict, limit: int = 3) -> str:
    items = list(mapping.items())
    text = ", ".join(f"{k} x{v}" for k, v in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def render_report(report: DataReport, console) -> None:
    """Print the summary of ``report`` as rich tables on ``console``."""
    from rich.table import Table

    summary = report.summary()
    total = len(report.table.cases) + len(report.table.problems)
    console.print(
        f"[bold]{summary['source']}[/bold]: {summary['task']} task, "
        f"{len(summary['classes'])} classes, modalities {', '.join(summary['modalities'])}; "
        f"{total} cases, {len(report.usable())} usable, {len(report.problems)} with problems, "
        f"{len(report.leaks)} leak(s)",
        highlight=False,
        soft_wrap=True,
    )
    splits = Table(title="Cases per split")
    splits.add_column("split")
    splits.add_column("cases", justify="right")
    splits.add_column("patients", justify="right")
    for name in summary["classes"]:
        splits.add_column(name, justify="right")
    if report.table.task == "multilabel":
        splits.add_column("no label", justify="right")
    for split, row in summary["splits"].items():
        cells = [split, str(row["cases"]), str(row["patients"])]
        cells += [str(row["classes"][c]) for c in summary["classes"]]
        if report.table.task == "multilabel":
            cells.append(str(row["unlabelled"]))
        splits.add_row(*cells)
    console.print(splits)
    images = Table(title="Images")
    for column in (
        "modality",
        "shapes (C, *spatial)",
        "spacings (mm)",
        "intensity range",
        "after preprocessing",
    ):
        images.add_column(column)
    for name, row in summary["images"].items():
        low_high = "-" if row["range"] is None else f"{row['range'][0]:g} .. {row['range'][1]:g}"
        images.add_row(
            name,
            _counts(row["shapes"]),
            _counts(row["spacings"]),
            low_high,
            _counts(row["output_shape"]),
        )
    console.print(images)
