"""The paper's random baseline (Table 5): N random architectures within the FLOPs constraint, each
trained the full way (pre-training + fine-tuning, standalone) and tested; mean ± std of their scores.

Each architecture trains in its own folder, so an interrupted baseline resumes where it stopped; a run of
several processes trains them side by side (:func:`nasengine.protocol.distributed.share_out`). The folder
gets ``random_baseline.json`` and ``random_models.png`` (the paper's Fig. 3: each model's test score against
its FLOPs, their mean, and with ``--compare RUN_DIR`` the searched network); ``nasengine report RUN_DIR
--random-baseline DIR`` draws the same figure into the run's report.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from nasengine import console, registry
from nasengine.arch import format_arch
from nasengine.errors import NasEngineError
from nasengine.protocol import distributed
from nasengine.protocol.engine import Run
from nasengine.report.build import FIGURES, RANDOM_BASELINE, reference_networks
from nasengine.report.figures import plot_random_models
from nasengine.report.markdown import SEARCHED
from nasengine.rundir.layout import TEST, RunLayout
from nasengine.rundir.records import read_json, write_json
from nasengine.settings.config import RunConfig
from nasengine.settings.defaults import RANDOM_STRATEGY


def sample_architectures(run: Run, count: int) -> list[tuple[int, ...]]:
    """``count`` distinct architectures inside the run's limits from the random strategy
    (``defaults.RANDOM_STRATEGY``), seeded by the run's seed."""
    strategy = registry.create(
        "strategy",
        RANDOM_STRATEGY,
        choices=run.space.choices,
        constraint=run.limits.legal,
        seed=run.config.seed,
        population=count,
        generations=1,
    )
    return strategy.ask()[:count]


def run_random_baseline(config: RunConfig, directory: Path, count: int, compare: Path | None) -> dict[str, Any]:
    """Train ``count`` random architectures standalone into ``directory`` and write their summary and figure;
    ``compare``: a run directory whose retrained networks (the searched one first) are set beside them."""
    if compare is not None:
        check_compare(compare)  # before hours of training
    run = Run.create(directory, config)
    archs = sample_architectures(run, count)

    def train(indexed: tuple[int, tuple[int, ...]]) -> dict[str, Any]:
        index, arch = indexed
        console.log(f"random baseline {index + 1}/{len(archs)}: {format_arch(arch)}")
        return run.train_standalone(arch, directory / f"arch-{index:03d}", f"random {index + 1}/{len(archs)}")

    results = distributed.share_out(list(enumerate(archs)), train)  # side by side with several processes
    if not distributed.is_main():
        return {}
    title = f"random baseline ({config.space}, {config.task}, {len(results)} architectures)"
    return write_baseline(results, directory, compare, title)


def check_compare(compare: Path) -> None:
    """``--compare`` names a run whose found architecture has been retrained and tested."""
    if not RunLayout(compare).retrain_test(SEARCHED).is_file():
        raise NasEngineError(
            f"--compare {compare} has no tested searched network ({SEARCHED}/{TEST} under its retrain folder); "
            f"finish it with 'nasengine retrain {compare}'"
        )


def write_baseline(results: list[dict[str, Any]], directory: Path, compare: Path | None, title: str) -> dict[str, Any]:
    """``random_baseline.json`` (count, mean, std, every result, ``searched``: the compared run's tested
    network) and ``random_models.png`` (Fig. 3) in ``directory``; the table on the console."""
    scores = [r["test"]["score"] for r in results]
    summary: dict[str, Any] = {
        "count": len(scores),
        "mean": statistics.fmean(scores),
        "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "results": results,
    }
    table = Table(title=title, title_justify="left")
    table.add_column("network")
    table.add_column("FLOPs", justify="right")
    table.add_column("test score", justify="right")
    table.add_row(
        "random (mean ± std)",
        f"{statistics.fmean(r['flops'] for r in results):,.0f}",
        f"{summary['mean']:.4f} ± {summary['std']:.4f}",
    )
    references = reference_networks(compare) if compare is not None else {}
    if compare is not None:
        searched = read_json(RunLayout(compare).retrain_test(SEARCHED))
        summary["searched"] = searched
        table.add_row(
            f"searched ({format_arch(searched['arch'])})", f"{searched['flops']:,}", f"{searched['test']['score']:.4f}"
        )
    write_json(summary, directory / RANDOM_BASELINE)
    plot_random_models(results, directory / FIGURES["random_models"], references)
    console.console.print(table)
    return summary
