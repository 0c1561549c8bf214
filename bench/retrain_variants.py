"""Winner against baseline under other fine-tuning schedules: is the comparison stable, or the schedule's?

A run's retrained networks (``retrain/best``, ``retrain/<baseline>``) are fine-tuned again from their own
pre-trained weights (``retrain/<entry>/pretrain``, copied, not retrained) with the run's fine-tuning
schedule changed as ``--variant`` says, then tested; everything else (seeds, data, milestones as fractions) is
the run's. Each variant is a run directory of the bench's own, ``OUT/<run>/<tag>/`` (``--out``, default
``runs/bench/retrain_variants``; ``<run>`` is :func:`bench.common.run_key`), with the run's configuration and the
variant's schedule; its entries are in ``retrain/<entry>/`` as in the run, resumable like any phase (a finished
one is only read). The run itself is only read. The table gives each entry's test score per variant, with the
run's own retraining as the first row, and the winner's margin over the baseline.

    python -m bench.retrain_variants runs/demo --variant x2 --variant lr0.08 --variant b4-lr0.02-x2
    python -m bench.retrain_variants             # runs/fidelity/seed0 (bench.fidelity's), --variant x2

A variant is ``x<scale>`` (iterations), ``lr<value>``, ``b<batch>`` or several joined by ``-``. Cost: a
fine-tuning of each entry per variant, e.g. about 2 × 280 s at ``x2`` for the demo on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import add_out_argument, add_run_dir_argument, run_key
from nasengine.protocol.engine import Run
from nasengine.rundir.layout import SUMMARY, RunLayout
from nasengine.rundir.records import read_json
from nasengine.settings.config import Schedule


def parse_variant(tag: str, schedule: Schedule) -> Schedule:
    """The run's fine-tuning ``schedule`` changed as ``tag`` says (``x2``, ``lr0.08``, ``b4``, joined by ``-``)."""
    changes: dict[str, float | int] = {}
    for part in tag.split("-"):
        try:
            if part.startswith("x"):
                changes["iterations"] = max(1, round(schedule.iterations * float(part[1:])))
            elif part.startswith("lr"):
                changes["lr"] = float(part[2:])
            elif part.startswith("b"):
                changes["batch_size"] = int(part[1:])
            else:
                raise ValueError
        except ValueError:
            raise SystemExit(f"variant {tag!r}: part {part!r} is not x<scale>, lr<value> or b<batch>") from None
    return replace(schedule, **changes)


def variant_run(run: Run, tag: str, out: Path) -> Run:
    """The run directory ``out`` of variant ``tag``: ``run``'s configuration with the variant's fine-tuning."""
    return Run.create(out, replace(run.config, finetune_schedule=parse_variant(tag, run.config.finetune_schedule)))


def retrain_variant(run: Run, variant: Run, entry: str, tag: str) -> dict[str, Any]:
    """``entry`` of ``run`` fine-tuned again in ``variant`` (its pre-training copied from ``run``), tested."""
    arch = tuple(read_json(run.layout.retrain_test(entry))["arch"])
    pretrained = variant.layout.retrain_phase(entry, "pretrain")
    if not pretrained.exists():
        shutil.copytree(run.layout.retrain_phase(entry, "pretrain"), pretrained)
    return variant.train_standalone(arch, variant.layout.retrain_entry(entry), f"{entry} ({tag})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_dir_argument(parser, "a run whose retrain phase is done")
    parser.add_argument("--variant", action="append", help="x<scale>, lr<value>, b<batch>, joined by - (default x2)")
    add_out_argument(parser, "retrain_variants")
    args = parser.parse_args(argv)
    args.variant = args.variant or ["x2"]
    if not (RunLayout(args.run_dir).retrain / SUMMARY).exists():
        raise SystemExit(f"{args.run_dir}: no finished retrain phase (retrain/{SUMMARY}); run it first")
    run = Run.open(args.run_dir)
    summary = read_json(run.layout.retrain / SUMMARY)
    entries = list(summary)
    for tag in args.variant:
        parse_variant(tag, run.config.finetune_schedule)  # every tag checked before any training
    rows = [("run's own", {entry: summary[entry]["test"]["score"] for entry in entries})]
    for tag in args.variant:
        variant = variant_run(run, tag, args.out / run_key(args.run_dir) / tag)
        rows.append((tag, {entry: retrain_variant(run, variant, entry, tag)["test"]["score"] for entry in entries}))
    schedule = run.config.finetune_schedule
    table = Table(
        title=f"{args.run_dir}: test score per fine-tuning variant (the run's: {schedule.iterations} it. × "
        f"{schedule.batch_size}, lr {schedule.lr:g})",
        title_justify="left",
    )
    for column in ["variant", *entries] + (["winner − baseline"] if len(entries) == 2 else []):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for tag, scores in rows:
        cells = [f"{scores[entry]:.4f}" for entry in entries]
        if len(entries) == 2:
            cells.append(f"{scores[entries[0]] - scores[entries[1]]:+.4f}")
        table.add_row(tag, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
