"""How reliable is the rank check's truth? Its networks trained alone again with another seed.

``nasengine rank-check`` trains each network alone once, and Kendall's tau between the supernet's scores and
those standalone test scores is the fidelity measure. But one standalone training is itself a noisy measure
of a network: another seed changes the initial weights, the data order and the sampled RoIs. This trains
the same networks (``report/rank_check.json``) again with the run's schedules, the rank check's
``schedule_scale`` and the run's seed replaced by ``--seed``, into ``OUT/<run>/seed<S>/`` (``--out``, default
``runs/bench/rank_check_reliability``; ``<run>`` is :func:`bench.common.run_key`): a run directory of the bench's
own, with the run's configuration and the other seed, whose ``rank_check/<arch>-s<scale>/`` folders are laid out as
``nasengine rank-check``'s and resumable (a trained network is only read). The run itself is only read. It prints
Kendall's tau and Spearman's rho between

- the two standalone trainings: the ceiling any predictor's agreement with one training can reach;
- the supernet's scores and each training, and the mean of the two;

with the networks' scores, so that the supernet's tau can be read against the truth's own.

    python -m bench.rank_check_reliability runs/fidelity4/seed0              # --seed: the run's seed + 1000
    python -m bench.rank_check_reliability runs/fidelity4/seed0 --seed 7

Cost: one standalone training per network, e.g. about 9 × 150 s at the demo's half schedules on one core.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import add_out_argument, add_run_dir_argument, agreement_cells, rank_check_result, run_key
from nasengine.protocol.engine import Run
from nasengine.studies.rank_check import candidate_dir

SEED_OFFSET = 1000


def retrained(run: Run, candidates: list[dict[str, Any]], seed: int, scale: float, out: Path) -> list[float]:
    """Each candidate's standalone test score with the run's seed replaced by ``seed``, trained in ``out``: a
    run directory with the run's configuration and that seed (no distillation teacher of its own, so none
    trained with the run's seed is reused)."""
    reseeded = Run.create(out, replace(run.config, seed=seed))
    scores = []
    for index, candidate in enumerate(candidates, 1):
        arch = tuple(candidate["arch"])
        folder = candidate_dir(reseeded.dir, arch, scale)
        result = reseeded.train_standalone(arch, folder, f"reseeded {index}/{len(candidates)}", schedule_scale=scale)
        scores.append(float(result["test"]["score"]))
    return scores


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_dir_argument(parser, "a run with report/rank_check.json")
    parser.add_argument("--seed", type=int, help=f"the other training seed (default: the run's + {SEED_OFFSET})")
    add_out_argument(parser, "rank_check_reliability")
    args = parser.parse_args(argv)
    result = rank_check_result(args.run_dir)
    candidates = result["candidates"]
    run = Run.open(args.run_dir)
    seed = args.seed if args.seed is not None else run.config.seed + SEED_OFFSET
    if seed == run.config.seed:
        raise SystemExit(f"--seed {seed} is the run's own seed: pick another")
    scale = float(result.get("schedule_scale") or 1.0)
    first = [float(c["standalone_score"]) for c in candidates]
    second = retrained(run, candidates, seed, scale, args.out / run_key(args.run_dir) / f"seed{seed}")
    supernet = [float(c["supernet_score"]) for c in candidates]
    mean = [statistics.fmean(pair) for pair in zip(first, second)]

    networks = Table(title=f"{args.run_dir}: rank-check networks trained alone twice (x{scale:g} schedules)")
    for column in ("network", "supernet", f"seed {run.config.seed}", f"seed {seed}"):
        networks.add_column(column, justify="left" if column == "network" else "right")
    for candidate, a, b in sorted(zip(candidates, first, second), key=lambda row: -row[0]["supernet_score"]):
        networks.add_row(candidate["arch_text"], f"{candidate['supernet_score']:.4f}", f"{a:.4f}", f"{b:.4f}")
    Console().print(networks)

    table = Table(title=f"agreement over {len(candidates)} networks", title_justify="left")
    for column in ("between", "Kendall tau (p)", "Spearman rho (p)"):
        table.add_column(column, justify="left" if column == "between" else "right")
    table.add_row(f"training seed {run.config.seed} and seed {seed}", *agreement_cells(first, second))
    table.add_row(f"supernet and seed {run.config.seed} (the rank check)", *agreement_cells(supernet, first))
    table.add_row(f"supernet and seed {seed}", *agreement_cells(supernet, second))
    table.add_row("supernet and the mean of both", *agreement_cells(supernet, mean))
    Console().print(table)
    differences = [abs(a - b) for a, b in zip(first, second)]
    print(
        f"standalone score: mean |seed {run.config.seed} − seed {seed}| {statistics.fmean(differences):.4f}; "
        f"spread (std over networks) {statistics.stdev(first):.4f} and {statistics.stdev(second):.4f}"
    )


if __name__ == "__main__":
    main()
