"""Progress display for long work (rich), quiet when disabled or not on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["console", "track"]


def console():
    """The shared rich console (stderr, so that stdout stays parseable)."""
    from rich.console import Console

    global _CONSOLE
    if _CONSOLE is None:
        _CONSOLE = Console(stderr=True)
    return _CONSOLE


_CONSOLE = None


@contextmanager
def track(description: str, total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Show a progress bar for ``total`` steps; yields ``advance(n)``.

    On a non-interactive stream (CI logs) a bar is not drawn; a line is printed
    when the work is done instead.
    """
    if not enabled or total <= 0:
        yield lambda n=1: None
        return
    if not sys.stderr.isatty():
        yield lambda n=1: None
        console().print(f"{description}: {total} done")
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(),
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
