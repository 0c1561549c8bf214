"""A run's retrained networks: which entries of ``RUN_DIR/retrain/`` are finished, and one loaded with its weights.

An entry (``best``, the baseline's name, ...) is finished when its ``test.json`` and its fine-tuned detector's
checkpoint exist. :func:`load_retrained` rebuilds the detector the run trained — ``task.build_model`` around
``space.build_network(arch)`` — and loads that checkpoint, so the standalone backbone it returns carries the
trained weights whatever the task's detector looks like. ``nasengine export`` and ``nasengine.backbone(run=...)``
both start here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from nasengine.arch import format_arch, parse_arch
from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch
from nasengine.rundir.checkpoint import load_checkpoint
from nasengine.rundir.layout import RunLayout
from nasengine.rundir.records import read_json

if TYPE_CHECKING:
    from nasengine.protocol.engine import Run


@dataclass
class Retrained:
    """One retrained entry: its run, test result (``test.json``), standalone backbone and detector (eval mode).

    ``backbone`` is the module inside ``detector``: they share their weights."""

    run: Run
    entry: str
    arch: Arch
    result: dict[str, Any]
    backbone: nn.Module
    detector: nn.Module


def retrained_entries(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{entry: test.json}`` of every finished retrained network of the run, in name order."""
    layout = RunLayout(run_dir)
    return {
        name: read_json(test)
        for name, test in layout.retrain_tests().items()
        if layout.retrained_checkpoint(name).is_file()
    }


def pick_entry(run: Run, entry: str | None = None, arch: str | None = None) -> str:
    """The entry named ``entry`` (default ``best``), or the one whose architecture is ``arch`` (as ``--arch``
    takes it); a one-line error names what is retrained otherwise."""
    if entry is not None and arch is not None:
        raise NasEngineError("give an entry or an architecture, not both")
    entries = retrained_entries(run.dir)
    if not entries:
        raise NasEngineError(
            f"{run.dir} has no retrained network yet; run 'nasengine retrain {run.dir}' first "
            f"(or 'nasengine run --out {run.dir}' for the whole protocol)"
        )
    listed = ", ".join(f"{name} ({format_arch(result['arch'])})" for name, result in entries.items())
    if arch is not None:
        wanted = parse_arch(arch, run.space.choices, run.space.named)
        for name, result in entries.items():
            if tuple(result["arch"]) == wanted:
                return name
        raise NasEngineError(
            f"architecture {format_arch(wanted)} is not retrained in {run.dir}; retrained: {listed}; train it in a run "
            f"of its own: 'nasengine run --config {run.layout.config} --arch {format_arch(wanted)} --out NEW_DIR'"
        )
    entry = entry or "best"
    if entry not in entries:
        raise NasEngineError(f"{run.dir} has no retrained entry {entry!r}; retrained: {listed}")
    return entry


def load_retrained(run_dir: str | Path, entry: str | None = None, arch: str | None = None) -> Retrained:
    """The retrained detector of ``entry`` (or of ``arch``) of the run in ``run_dir``, on the CPU, in eval mode."""
    from nasengine.protocol.engine import Run

    run = Run.open(run_dir)
    name = pick_entry(run, entry, arch)
    result = retrained_entries(run.dir)[name]
    chosen = tuple(int(c) for c in result["arch"])
    backbone = run.space.build_network(chosen)
    detector = run.task.build_model(backbone, run.space.out_channels)
    state = load_checkpoint(run.layout.retrained_checkpoint(name), phase="retrain")
    detector.load_state_dict(state["model"])
    detector.eval()
    return Retrained(run, name, chosen, result, backbone, detector)
