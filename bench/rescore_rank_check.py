"""The rank check's networks rescored on the supernet with other split sizes: does a setting rank better?

``nasengine rank-check`` trains a run's candidates alone once (``report/rank_check.json``). Their standalone
test scores stay the truth; this rescores the same architectures on the run's trained supernet exactly as
the search would (``CandidateEvaluator``: BN recalibrated on the calib split, scored on the search split)
with the task's ``calib_size`` and/or ``search_size`` changed, and prints Kendall's tau and Spearman's rho
against the standalone scores for the run's own supernet scores and for each setting — and, for scale, for
a predictor with no supernet at all (fewer parameters ranked higher). No training: about 5 seconds per
network and setting on 2 cores at the demo's sizes.

    python bench/rescore_rank_check.py runs/fidelity3/seed0 --calib-size 256 --calib-size 1024
    python bench/rescore_rank_check.py runs/fidelity3/seed0 --search-size 500
    python bench/rescore_rank_check.py        # runs/fidelity/seed0 (bench/fidelity.py's), calib 256 and 1024
"""

from __future__ import annotations

import argparse

from fidelity import add_run_dir_argument
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau, spearmanr

from nasengine import distributed, registry
from nasengine.checkpoint import read_json
from nasengine.engine import Run
from nasengine.search import CandidateEvaluator


def rescored(run: Run, archs: list[tuple[int, ...]], options: dict) -> list[float]:
    """``archs`` scored on ``run``'s trained supernet with the search task rebuilt with ``options`` changed."""
    task = registry.create("task", run.config.task, **{**run.config.task_options, **options})
    supernet, model = run.trained_search_model()
    with distributed.local_batchnorm(model):
        evaluator = CandidateEvaluator.for_task(
            supernet, model, task, batch_size=run.config.search.batch_size, seed=run.config.seed
        )
        return [evaluator.evaluate(arch)["score"] for arch in archs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_dir_argument(parser, "a run with report/rank_check.json")
    parser.add_argument("--calib-size", type=int, action="append", default=[], help="calib_size to try")
    parser.add_argument("--search-size", type=int, action="append", default=[], help="search_size to try")
    args = parser.parse_args()
    path = args.run_dir / "report" / "rank_check.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run `nasengine rank-check {args.run_dir}` first")
    if not (args.calib_size or args.search_size):
        args.calib_size = [256, 1024]
    candidates = read_json(path)["candidates"]
    archs = [tuple(c["arch"]) for c in candidates]
    truth = [c["standalone_score"] for c in candidates]
    run = Run.open(args.run_dir)
    settings = [("run's own scores", None)]
    settings += [(f"calib_size={n}", {"calib_size": n}) for n in args.calib_size]
    settings += [(f"search_size={n}", {"search_size": n}) for n in args.search_size]
    own = run.config.task_options
    table = Table(
        title=f"{args.run_dir}: {len(archs)} rank-check networks, supernet score vs standalone test score "
        f"(run's calib_size={own.get('calib_size', 'default')}, search_size={own.get('search_size', 'default')})",
        title_justify="left",
    )
    for column in ("setting", "Kendall tau (p)", "Spearman rho (p)"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    rows = [
        (label, [c["supernet_score"] for c in candidates] if options is None else rescored(run, archs, options))
        for label, options in settings
    ]
    # a predictor with no supernet at all, for scale: fewer parameters ranked higher
    rows.append(("fewer parameters (no supernet)", [-c["params"] for c in candidates]))
    for label, scores in rows:
        tau, tau_p = kendalltau(scores, truth)
        rho, rho_p = spearmanr(scores, truth)
        table.add_row(label, f"{tau:+.2f} ({tau_p:.2f})", f"{rho:+.2f} ({rho_p:.2f})")
    Console().print(table)


if __name__ == "__main__":
    main()
