"""The paper's random baseline (Table 5): N random architectures within the FLOPs constraint, each
trained the full way (pre-training + fine-tuning, standalone) and tested; mean ± std of their scores.

Each architecture trains in its own folder, so an interrupted baseline resumes where it stopped.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from nasengine import console, registry
from nasengine.arch import format_arch
from nasengine.checkpoint import read_json, write_json
from nasengine.config import RunConfig
from nasengine.defaults import RANDOM_STRATEGY
from nasengine.engine import Run
from nasengine.run_layout import TEST, RunLayout
from nasengine.search import flops_constraint


def sample_architectures(run: Run, count: int) -> list[tuple[int, ...]]:
    """``count`` distinct legal architectures from the random strategy (``defaults.RANDOM_STRATEGY``), seeded
    by the run's seed."""
    strategy = registry.create(
        "strategy",
        RANDOM_STRATEGY,
        choices=run.space.choices,
        constraint=flops_constraint(run.space, run.config.search),
        seed=run.config.seed,
        population=count,
        generations=1,
    )
    return strategy.ask()[:count]


def run_random_baseline(config: RunConfig, directory: Path, count: int, compare: Path | None) -> dict[str, Any]:
    run = Run.create(directory, config)
    archs = sample_architectures(run, count)
    results = []
    for index, arch in enumerate(archs):
        console.log(f"random baseline {index + 1}/{len(archs)}: {format_arch(arch)}")
        results.append(run.train_standalone(arch, directory / f"arch-{index:03d}", f"random {index + 1}/{len(archs)}"))
    scores = [r["test"]["score"] for r in results]
    summary = {
        "count": len(scores),
        "mean": statistics.fmean(scores),
        "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "results": results,
    }
    table = Table(
        title=f"random baseline ({config.space}, {config.task}, {len(scores)} architectures)", title_justify="left"
    )
    table.add_column("network")
    table.add_column("FLOPs", justify="right")
    table.add_column("test score", justify="right")
    table.add_row(
        "random (mean ± std)",
        f"{statistics.fmean(r['flops'] for r in results):,.0f}",
        f"{summary['mean']:.4f} ± {summary['std']:.4f}",
    )
    if compare is not None:
        searched = read_json(RunLayout(compare).retrain_entry("best") / TEST)
        summary["searched"] = searched
        table.add_row(
            f"searched ({format_arch(searched['arch'])})", f"{searched['flops']:,}", f"{searched['test']['score']:.4f}"
        )
    write_json(summary, directory / "random_baseline.json")
    console.console.print(table)
    return summary
