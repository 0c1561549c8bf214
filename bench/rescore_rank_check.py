"""The rank check's networks rescored on the supernet with other split sizes: does a setting rank better?

``nasengine rank-check`` trains a run's candidates alone once (``report/rank_check.json``). Their standalone
test scores stay the truth; this rescores the same architectures on the run's trained supernet exactly as
the search would (``CandidateEvaluator``: BN recalibrated on the calib split, scored on the search split)
with the task's ``calib_size`` and/or ``search_size`` changed, or after ``--adapt-iterations K`` steps of
path-wise fine-tuning of the candidate's own path on the training split (SGD at ``--adapt-lr``, momentum 0.9,
weight decay 1e-4, the run's fine-tuning batch; the supernet's weights restored before the next network),
and prints Kendall's tau and Spearman's rho against the standalone scores for the run's own supernet scores
and for each setting — and, for scale, for a predictor with no supernet at all (fewer parameters ranked
higher). Without adaptation no training: about 5 seconds per network and setting on 2 cores at the demo's
sizes; each adaptation step adds about 0.15 s. It only reads the run and writes nothing.

    python -m bench.rescore_rank_check runs/fidelity3/seed0 --calib-size 256 --calib-size 1024
    python -m bench.rescore_rank_check runs/fidelity3/seed0 --search-size 500
    python -m bench.rescore_rank_check runs/fidelity4/seed0 --adapt-iterations 10 --adapt-iterations 25
    python -m bench.rescore_rank_check        # runs/fidelity/seed0 (bench.fidelity's), calib 256 and 1024
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from itertools import cycle, islice

import torch
from rich.console import Console
from rich.table import Table

from bench.common import add_run_dir_argument, agreement_cells, rank_check_candidates
from nasengine import registry
from nasengine.interfaces import Task
from nasengine.protocol import distributed
from nasengine.protocol.engine import Run
from nasengine.protocol.search import CandidateEvaluator
from nasengine.protocol.seeds import arch_salt, derived_seed

ADAPT_SEED = 71  # salt of the adaptation's data order and augmentation, per network (not a run phase)


def rescored(
    run: Run, archs: list[tuple[int, ...]], options: dict, *, adapt_iterations: int = 0, adapt_lr: float = 0.01
) -> list[float]:
    """``archs`` scored on ``run``'s trained supernet with the search task rebuilt with ``options`` changed,
    each after ``adapt_iterations`` SGD steps on its own path (the supernet restored between networks)."""
    task = registry.create("task", run.config.task, **{**run.config.task_options, **options})
    supernet, model = run.trained_search_model()
    trained = copy.deepcopy(model.state_dict())
    scores = []
    with distributed.local_batchnorm(model):
        evaluator = CandidateEvaluator.for_task(
            supernet, model, task, batch_size=run.config.search.batch_size, seed=run.config.seed
        )
        for arch in archs:
            model.load_state_dict(trained)
            supernet.activate(arch)
            if adapt_iterations:
                adapt(run, model, task, arch, adapt_iterations, adapt_lr)
            scores.append(evaluator.evaluate(arch)["score"])
    return scores


def adapt(run: Run, model: torch.nn.Module, task: Task, arch: tuple[int, ...], iterations: int, lr: float) -> None:
    """``iterations`` SGD steps of ``model`` with ``arch`` active, on the task's training split."""
    seed = derived_seed(run.config.seed, ADAPT_SEED, arch_salt(arch))
    torch.manual_seed(seed)
    loader = task.loader("train", train=True, batch_size=run.config.finetune_schedule.batch_size, seed=seed)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9, weight_decay=1e-4
    )
    model.train()
    for batch in islice(cycle(loader), iterations):
        optimizer.zero_grad(set_to_none=True)  # the inactive choices get no gradient, so no decay either
        task.loss(model, batch).backward()
        optimizer.step()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_dir_argument(parser, "a run with report/rank_check.json")
    parser.add_argument("--calib-size", type=int, action="append", default=[], help="calib_size to try")
    parser.add_argument("--search-size", type=int, action="append", default=[], help="search_size to try")
    parser.add_argument(
        "--adapt-iterations", type=int, action="append", default=[], help="path-wise fine-tuning steps to try"
    )
    parser.add_argument("--adapt-lr", type=float, default=0.01, help="learning rate of the adaptation (0.01)")
    args = parser.parse_args(argv)
    if not (args.calib_size or args.search_size or args.adapt_iterations):
        args.calib_size = [256, 1024]
    candidates = rank_check_candidates(args.run_dir)
    archs = [tuple(c["arch"]) for c in candidates]
    truth = [c["standalone_score"] for c in candidates]
    run = Run.open(args.run_dir)
    settings = [("run's own scores", None)]
    settings += [(f"calib_size={n}", {"calib_size": n}) for n in args.calib_size]
    settings += [(f"search_size={n}", {"search_size": n}) for n in args.search_size]
    settings += [(f"adapted {k} it. (lr {args.adapt_lr:g})", {"adapt": k}) for k in args.adapt_iterations]
    own = run.config.task_options
    table = Table(
        title=f"{args.run_dir}: {len(archs)} rank-check networks, supernet score vs standalone test score "
        f"(run's calib_size={own.get('calib_size', 'default')}, search_size={own.get('search_size', 'default')})",
        title_justify="left",
    )
    for column in ("setting", "Kendall tau (p)", "Spearman rho (p)"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    rows = []
    for label, options in settings:
        if options is None:
            rows.append((label, [c["supernet_score"] for c in candidates]))
        elif "adapt" in options:
            rows.append((label, rescored(run, archs, {}, adapt_iterations=options["adapt"], adapt_lr=args.adapt_lr)))
        else:
            rows.append((label, rescored(run, archs, options)))
    # a predictor with no supernet at all, for scale: fewer parameters ranked higher
    rows.append(("fewer parameters (no supernet)", [-c["params"] for c in candidates]))
    for label, scores in rows:
        table.add_row(label, *agreement_cells(scores, truth))
    Console().print(table)


if __name__ == "__main__":
    main()
