"""The ``medcls`` command: one sub-command per module of :mod:`medcls.cli`.

Each sub-command module defines ``add_parser(subparsers)`` and ``run(args) -> int``.
Modules import heavy libraries inside ``run`` only, so ``medcls --help`` is fast.
A :class:`~medcls.errors.MedclsError` is printed as one line, without traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medcls import __version__
from medcls.errors import MedclsError

# sub-command name -> module under medcls.cli (order = order in --help)
COMMANDS = (
    "train",
    "tune",
    "evaluate",
    "predict",
    "explain",
    "demo",
    "models",
    "profile",
    "data",
    "benchmark",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medcls",
        description="Train, compare and explain 2D and 3D (multimodal) medical image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"medcls {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"medcls.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medcls.cli.{name}":
                continue  # sub-command not built yet
            raise
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def _quiet_library_warnings() -> None:
    """Silence import-time deprecation chatter of dependencies (not medcls's own warnings)."""
    import warnings

    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning
    )


def main(argv: list[str] | None = None) -> int:
    _quiet_library_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except MedclsError as exc:
        print(f"medcls {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medcls {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
