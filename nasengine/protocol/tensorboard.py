"""TensorBoard event files of one training phase or search, under ``RUN_DIR/tb/<phase>/`` (optional extra).

::

    with Board(run.layout.tensorboard_of(phase_dir), first_step=start + 1) as board:
        board.scalars(step, loss=0.7, lr=0.1, images_per_s=850.0)

A ``Board`` writes nothing when its folder is None, on ranks other than the main one, or without the
``tensorboard`` package (``pip install 'nasengine[tensorboard]'``; one line says so, once per process). Its
writer is opened at the first ``scalars``, so a phase that has nothing left to do leaves no event file.
Steps from ``first_step`` on that an interrupted process wrote are dropped on resume (SummaryWriter's
``purge_step``), so a resumed phase shows each step once.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from rich.markup import escape

from nasengine import console
from nasengine.protocol import distributed

FLUSH_SECONDS = 10  # how stale `tensorboard --logdir runs/` may be while a phase runs
OFF = "TensorBoard off: pip install 'nasengine[tensorboard]' to write RUN_DIR/tb/"

_writer_class: Any = None  # SummaryWriter once imported, False when tensorboard is missing


def _summary_writer() -> Any:
    """``SummaryWriter``, or None without the tensorboard package (said once per process)."""
    global _writer_class
    if _writer_class is None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            _writer_class = SummaryWriter
        except ImportError:
            _writer_class = False
            console.log(escape(OFF))  # not a markup tag: [tensorboard]
    return _writer_class or None


class Board:
    """Scalars of one phase, one step at a time, for TensorBoard; ``close`` (or the ``with`` block) ends it."""

    def __init__(self, folder: Path | None, first_step: int = 1):
        self.folder = folder if distributed.is_main() else None
        self.first_step = first_step
        self._writer: Any = None

    def scalars(self, step: int, **values: float) -> None:
        """Record ``values`` (tag: number) at ``step``."""
        if self.folder is None:
            return
        if self._writer is None:
            writer_class = _summary_writer()
            if writer_class is None:
                self.folder = None
                return
            self._writer = writer_class(str(self.folder), purge_step=self.first_step, flush_secs=FLUSH_SECONDS)
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        """Put everything recorded so far on disk (before a checkpoint, so a resume never misses a step)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Board:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
