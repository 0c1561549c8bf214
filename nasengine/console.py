"""Console output: rich progress bars for long work, or plain log lines with ``--quiet``.

Only rank 0 prints. ``progress(total, description)`` returns a context manager whose ``update`` takes
the iteration count and the figures to show (loss, images/s).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nasengine.protocol import distributed

console = Console(stderr=False, highlight=False)
_quiet = False
_silenced = 0  # nesting depth of ``silenced()`` blocks


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    """A line on the console of the current group's rank 0 (networks trained side by side each log theirs)."""
    if distributed.is_main() and not _silenced:
        console.print(message)


@contextmanager
def silenced() -> Iterator[None]:
    """No log lines inside the block: for checks that drive plugins and report in their own words."""
    global _silenced
    _silenced += 1
    try:
        yield
    finally:
        _silenced -= 1


class _Bar:
    def __init__(self, total: int, description: str, progress: Progress | None, log_every: int):
        self.total = total
        self.description = description
        self.progress = progress
        self.task_id = progress.add_task(description, total=total, info="") if progress else None
        self.log_every = max(1, log_every)
        self.started = time.perf_counter()

    def update(self, completed: int, **figures: float | str) -> None:
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        if self.progress is not None:
            self.progress.update(self.task_id, completed=completed, info=info)  # type: ignore[arg-type]
        elif distributed.is_main() and (completed % self.log_every == 0 or completed == self.total):
            elapsed = time.perf_counter() - self.started
            console.print(f"{self.description} {completed}/{self.total}  {info}  [{elapsed:.0f}s]")


@contextmanager
def progress(total: int, description: str, log_every: int = 50) -> Iterator[_Bar]:
    """A progress bar (or, when quiet or not a terminal, periodic log lines) for ``total`` steps."""
    # one live bar per terminal: global rank 0's; networks side by side on other ranks log lines instead
    live = distributed.global_rank() == 0 and not _quiet and sys.stdout.isatty()
    if not live:
        yield _Bar(total, description, None, log_every)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar_progress:
        yield _Bar(total, description, bar_progress, log_every)
