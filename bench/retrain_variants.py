"""Winner against baseline under other fine-tuning schedules: is the comparison stable, or the schedule's?

A run's retrained networks (``retrain/best``, ``retrain/<baseline>``) are fine-tuned again from their own
pre-trained weights (``retrain/<entry>/pretrain``, copied, not retrained) with the run's fine-tuning
schedule changed by ``--iterations-scale``, ``--lr`` and ``--batch-size``, then tested; everything else
(seeds, data, milestones as fractions) is the run's. Each variant goes to
``RUN/retrain-variants/<tag>/<entry>/`` and is resumable like any phase (a finished one is only read).
The table gives each entry's test score per variant, with the run's own retraining as the first row,
and the winner's margin over the baseline.

    python bench/retrain_variants.py runs/demo --variant x2 --variant lr0.08 --variant b4-lr0.02-x2
    python bench/retrain_variants.py             # runs/fidelity/seed0 (bench/fidelity.py's), --variant x2

A variant is ``x<scale>`` (iterations), ``lr<value>``, ``b<batch>`` or several joined by ``-``. Cost: a
fine-tuning of each entry per variant, e.g. about 2 × 280 s at ``x2`` for the demo on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace

from fidelity import add_run_dir_argument
from rich.console import Console
from rich.table import Table

from nasengine.protocol.engine import Run
from nasengine.rundir.layout import SUMMARY, TEST
from nasengine.rundir.records import read_json
from nasengine.settings.config import Schedule

FOLDER = "retrain-variants"


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


def retrain_variant(run: Run, entry: str, tag: str) -> dict:
    """``entry`` of ``run`` fine-tuned again under variant ``tag`` (its pre-training copied), tested."""
    source = run.layout.retrain_entry(entry)
    result = read_json(source / TEST)
    out = run.dir / FOLDER / tag / entry
    if not (out / "pretrain").exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / "pretrain", out / "pretrain")
    original = run.config
    run.config = replace(original, finetune_schedule=parse_variant(tag, original.finetune_schedule))
    try:
        return run.train_standalone(tuple(result["arch"]), out, f"{entry} ({tag})")
    finally:
        run.config = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_dir_argument(parser, "a run whose retrain phase is done")
    parser.add_argument("--variant", action="append", help="x<scale>, lr<value>, b<batch>, joined by - (default x2)")
    args = parser.parse_args()
    args.variant = args.variant or ["x2"]
    if not (args.run_dir / "retrain" / SUMMARY).exists():
        raise SystemExit(f"{args.run_dir}: no finished retrain phase (retrain/{SUMMARY}); run it first")
    run = Run.open(args.run_dir)
    summary = read_json(run.layout.retrain / SUMMARY)
    entries = list(summary)
    for tag in args.variant:
        parse_variant(tag, run.config.finetune_schedule)  # every tag checked before any training
    rows = [("run's own", {entry: summary[entry]["test"]["score"] for entry in entries})]
    for tag in args.variant:
        rows.append((tag, {entry: retrain_variant(run, entry, tag)["test"]["score"] for entry in entries}))
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
