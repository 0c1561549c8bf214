"""Search throughput in the demo preset: candidates evaluated per minute and where the time goes.

Each candidate costs a BatchNorm recalibration on the ``calib`` split plus scoring on the ``search``
split. With a run directory (``python -m bench.search_throughput runs/demo``) the figures come from its
``search/history.jsonl``; without one, ``--candidates`` (4) candidates are evaluated on a freshly initialised
supernet with the ``--preset`` (demo) preset's task settings (the time per candidate hardly depends on the
weights), and the BN recalibration of the calib split is also timed both ways, the whole detector's forward pass
against the search's pass that stops after the backbone (``recalibrate_bn(..., stop_after=supernet)``),
alternating, median of 3 each. It writes nothing.

    python -m bench.search_throughput [RUN_DIR] [--preset demo] [--candidates 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from nasengine import registry
from nasengine.protocol.bn_calibration import recalibrate_bn
from nasengine.protocol.limits import input_size, run_limits
from nasengine.protocol.search import evaluate_candidate
from nasengine.rundir.history import read_history
from nasengine.rundir.layout import RunLayout
from nasengine.settings import config as configuration


def calibration_both_ways(supernet: Any, model: Any, task: Any, calib: Any, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of recalibrating on ``calib`` with the whole forward pass and stopping after the backbone."""
    whole, stopped = [], []
    for _ in range(repeats):
        tick = time.perf_counter()
        recalibrate_bn(model, task, calib)
        whole.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        recalibrate_bn(model, task, calib, stop_after=supernet)
        stopped.append(time.perf_counter() - tick)
    return statistics.median(whole), statistics.median(stopped)


def measure_fresh(preset: str = "demo", candidates: int = 4) -> tuple[list[dict], tuple[float, float, int]]:
    config = configuration.resolve(preset)
    space = registry.create("space", config.space, **config.space_options)
    config.search.flops_max = space.default_flops_max
    task = registry.create("task", config.task, **config.task_options)
    supernet = space.build_supernet()
    model = task.build_model(supernet, space.out_channels).to(memory_format=torch.channels_last)
    legal = run_limits(space, config.search, input_size=input_size(task, config.search)).legal
    strategy = registry.create(
        "strategy",
        "random",
        choices=space.choices,
        constraint=legal,
        seed=0,
        population=candidates,
        generations=1,
    )
    calib = task.loader("calib", train=False, batch_size=config.search.batch_size)
    search = task.loader("search", train=False, batch_size=config.search.batch_size)
    evaluate_candidate(strategy.ask()[0], supernet, model, task, calib, search, seed=0)  # warm-up
    strategy = registry.create(
        "strategy",
        "random",
        choices=space.choices,
        constraint=legal,
        seed=1,
        population=candidates,
        generations=1,
    )
    records = [evaluate_candidate(arch, supernet, model, task, calib, search, seed=0) for arch in strategy.ask()]
    return records, (*calibration_both_ways(supernet, model, task, calib), len(calib.dataset))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="a run whose search history to read (default: none)")
    parser.add_argument("--preset", default="demo", help="whose task settings a fresh supernet is measured with")
    parser.add_argument("--candidates", type=int, default=4, help="candidates measured on a fresh supernet")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    both_ways = None
    if args.run_dir is not None:
        history = RunLayout(args.run_dir).history()
        records = read_history(history)
        if not records:
            raise SystemExit(f"{history} has no candidates")
        source = f"history of {args.run_dir}"
    else:
        records, both_ways = measure_fresh(args.preset, args.candidates)
        source = f"fresh supernet, {args.preset} preset task settings"
    calib = [r["calib_seconds"] for r in records]
    score = [r["score_seconds"] for r in records]
    total = [r["seconds"] for r in records]
    table = Table(
        title=f"search throughput ({len(records)} candidates, {source}, {torch.get_num_threads()} threads)",
        title_justify="left",
    )
    for column in ("figure", "value"):
        table.add_column(column)
    table.add_row(
        "candidates per minute (mean / median time)",
        f"{60 / statistics.fmean(total):.2f} / {60 / statistics.median(total):.2f}",
    )
    table.add_row(
        "seconds per candidate (mean / median)", f"{statistics.fmean(total):.2f} / {statistics.median(total):.2f}"
    )
    table.add_row(
        "BN recalibration (calib split), mean / median",
        f"{statistics.fmean(calib):.2f} / {statistics.median(calib):.2f} s  ({100 * sum(calib) / sum(total):.0f}% of all)",
    )
    table.add_row(
        "scoring (search split + COCOeval), mean / median",
        f"{statistics.fmean(score):.2f} / {statistics.median(score):.2f} s  ({100 * sum(score) / sum(total):.0f}% of all)",
    )
    if both_ways is not None:
        whole, stopped, images = both_ways
        table.add_row(
            f"BN recalibration of {images} images: whole detector / stopped after the backbone",
            f"{whole:.2f} / {stopped:.2f} s  ({whole / stopped:.1f}x)",
        )
    Console().print(table)
    print(f"bench wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
