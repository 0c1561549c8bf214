"""Supernet pre-training recipes side by side: does the supernet learn, and do its paths work?

Runs the pre-training phase of the demo preset once per ``pretrain_schedule.sampling`` recipe
(``uniform``, ``fair``, ``distill``) in fresh run directories, then prints, per recipe, the mean
training loss of each block of 50 iterations (cross-entropy of the trained path; for ``distill`` its
end-to-end part, after the block-wise part), the images processed, the wall time, and the top-1
accuracy of the all-3×3 path and of five random paths on the held-out ``search`` split after BN
recalibration. The standalone baseline network on the same schedule is the ``distill`` run's teacher.
``fair`` trains four paths per iteration, so it runs a quarter of the iterations (the same images). The run
directories and ``recipes.json`` (the numbers) go to ``--out``.

    python -m bench.supernet_recipes [--iterations 600] [--out runs/recipes] [--recipes uniform,fair,distill]

About 6 minutes on 2 CPU cores at the defaults.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.common import output_folder
from nasengine.protocol.bn_calibration import recalibrate_bn
from nasengine.protocol.engine import Run
from nasengine.rundir.checkpoint import load_checkpoint
from nasengine.rundir.layout import DONE, LOG
from nasengine.rundir.records import read_json, strict_json, write_json
from nasengine.rundir.training_log import read_training_log
from nasengine.settings import config as configuration


def pretrain(out: Path, recipe: str, iterations: int, preset: str = "demo") -> Run:
    schedule = {"sampling": recipe, "iterations": iterations // 4 if recipe == "fair" else iterations}
    config = configuration.resolve(preset, overrides={"pretrain_schedule": schedule})
    run = Run.create(out / recipe, config)
    run.pretrain()
    return run


def per_50(values: list[float]) -> list[float]:
    """The mean of each block of 50 values."""
    return [statistics.fmean(values[i : i + 50]) for i in range(0, len(values), 50)]


def curve(log: Path, key: str = "loss") -> list[float]:
    """``key`` of a training log per 50 iterations."""
    return per_50([record[key] for record in read_training_log(log)])


def path_accuracies(run: Run, paths: int = 5) -> list[float]:
    supernet = run.space.build_supernet()
    model = run._model(run.pretrain_task, supernet)
    model.load_state_dict(load_checkpoint(run.layout.supernet("pretrain"))["model"])
    calib = run.pretrain_task.loader("calib", train=False, batch_size=64)
    scored = run.pretrain_task.loader("search", train=False, batch_size=256)
    rng = np.random.default_rng(123)
    archs = [run.space.named[run.space.baseline_name]]
    archs += [tuple(int(rng.integers(n)) for n in run.space.choices) for _ in range(paths)]
    accuracies = []
    for arch in archs:
        supernet.activate(arch)
        recalibrate_bn(model, run.pretrain_task, calib, seed=0)
        accuracies.append(run.pretrain_task.evaluate(model, scored)["score"])
    return accuracies


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--out", type=output_folder, default=Path("runs/recipes"))
    parser.add_argument("--recipes", default="uniform,fair,distill")
    parser.add_argument("--preset", default="demo", help="the preset whose pre-training is run")
    args = parser.parse_args(argv)
    batch = configuration.resolve(args.preset).pretrain_schedule.batch_size
    table = Table(
        title=f"supernet pre-training recipes ({args.preset} preset, {args.iterations} iterations of {batch} images)",
        title_justify="left",
    )
    for column in ("recipe", "loss per 50 iterations", "last 50", "seconds", "top-1 all-3x3 / 5 random paths"):
        table.add_column(column)
    results = {}
    for recipe in args.recipes.split(","):
        run = pretrain(args.out, recipe, args.iterations, args.preset)
        losses = curve(run.layout.log("pretrain"))
        done = read_json(run.layout.done("pretrain"))
        seconds = done["seconds"] + done.get("distill", {}).get("seconds", 0)
        accuracies = path_accuracies(run)
        results[recipe] = {"curve": losses, "seconds": seconds, "top1": accuracies}
        table.add_row(
            recipe,
            " ".join(f"{v:.2f}" for v in losses),
            f"{losses[-1]:.3f}",
            f"{seconds:.0f}",
            f"{accuracies[0]:.1f} / " + " ".join(f"{a:.1f}" for a in accuracies[1:]),
        )
        if recipe == "distill":
            teacher = curve(run.layout.teacher / LOG)
            teacher_seconds = read_json(run.layout.teacher / DONE)["seconds"]
            results["standalone"] = {"curve": teacher, "seconds": teacher_seconds}
            table.add_row(
                "standalone all-3x3",
                " ".join(f"{v:.2f}" for v in teacher),
                f"{teacher[-1]:.3f}",
                f"{teacher_seconds:.0f}",
                "",
            )
            results["distill"]["block_loss"] = curve(run.layout.distill / LOG, "distill_loss")
    Console().print(table)
    if "distill" in results:
        print(
            "distill, block-wise relative MSE per 50 iterations:",
            " ".join(f"{v:.3f}" for v in results["distill"]["block_loss"]),
        )
    write_json(strict_json(results), args.out / "recipes.json")


if __name__ == "__main__":
    main()
