"""The search phase: a strategy proposes, the trained supernet scores, the history remembers.

For each candidate the supernet's path is activated, its BatchNorm statistics recomputed on the
``calib`` split and the task's metrics computed on the ``search`` split. Candidates are evaluated at
most once (the history is the cache), and a resumed search replays the history through a fresh
strategy with the same seed, reproducing the same sequence of proposals. With several ranks the candidates of
each round are shared out across ranks and their results gathered, so every rank tells the strategy
the same scores.

What a strategy asks for is checked before anything is evaluated (``check_asked``): every architecture
must be legal, inside every limit of the run (``nasengine.protocol.limits``: FLOPs and any other constraint)
and not asked before in this search, or the search stops with
one line naming the strategy. (A resumed search's fresh strategy asks the history's architectures again,
by design: they are replayed, not re-evaluated, so "before" means earlier in this process.)
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from nasengine import console, registry
from nasengine.arch import format_arch
from nasengine.errors import ConstraintUnsatisfiable, NasEngineError
from nasengine.flops import cost_of, flops_range
from nasengine.interfaces import Arch, Space, Supernet, Task
from nasengine.protocol import distributed
from nasengine.protocol.bn_calibration import recalibrate_bn
from nasengine.protocol.limits import Limits
from nasengine.protocol.tensorboard import Board
from nasengine.rundir.history import History
from nasengine.rundir.layout import BEST, HISTORY
from nasengine.rundir.records import write_json
from nasengine.settings.config import SearchConfig


def known_flops_range(space: Space, image_size: int) -> tuple[int, int] | None:
    """The space's FLOPs range, or None for a space without a lookup table (``cost_parts``)."""
    try:
        return flops_range(space, image_size)
    except NasEngineError:
        return None


def check_asked(
    strategy: str,
    candidates: Any,
    choices: Sequence[int],
    constraint: Callable[[Arch], bool],
    asked: set[Arch],
    constraint_text: str = "the constraint",
) -> list[Arch]:
    """``candidates`` (what ``strategy``'s ``ask`` returned) as tuples, once each is checked: a sequence of
    ``len(choices)`` ints in range, ``constraint(arch)`` True, and neither in ``asked`` nor twice in the batch.
    The first that is not gives a one-line NasEngineError naming the strategy."""
    if not isinstance(candidates, (list, tuple)):
        raise NasEngineError(
            f"strategy {strategy!r}: ask() returned a {type(candidates).__name__}, not a list of "
            "architectures; return a list (empty when nothing is left)"
        )
    batch: list[Arch] = []
    for candidate in candidates:
        arch = _legal_arch(strategy, candidate, choices)
        if arch in asked or arch in batch:
            raise NasEngineError(
                f"strategy {strategy!r} asked for {format_arch(arch)} twice; a strategy must never "
                "propose an architecture it proposed before (keep a set of everything asked)"
            )
        if not constraint(arch):
            raise NasEngineError(
                f"strategy {strategy!r} asked for {format_arch(arch)}, which breaks "
                f"{constraint_text}; a strategy must only propose archs for which constraint(arch) "
                "is True"
            )
        batch.append(arch)
    return batch


def _legal_arch(strategy: str, candidate: Any, choices: Sequence[int]) -> Arch:
    """``candidate`` as a tuple if it is a list or tuple of ``len(choices)`` ints in range; else a one-line error."""
    fix = "an architecture is a tuple of one choice index per position, 0 <= arch[i] < choices[i]"
    if not isinstance(candidate, (list, tuple)) or not all(
        isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in candidate
    ):
        raise NasEngineError(f"strategy {strategy!r} asked for {candidate!r}, which is not a tuple of ints; {fix}")
    arch = tuple(int(c) for c in candidate)
    if len(arch) != len(choices):
        raise NasEngineError(
            f"strategy {strategy!r} asked for {format_arch(arch)}, {len(arch)} positions where the "
            f"space has {len(choices)}; {fix}"
        )
    for position, (choice, count) in enumerate(zip(arch, choices)):
        if not 0 <= choice < count:
            raise NasEngineError(
                f"strategy {strategy!r} asked for {format_arch(arch)}, whose choice {choice} at "
                f"position {position} is outside 0..{count - 1}; {fix}"
            )
    return arch


@dataclass
class CandidateEvaluator:
    """Everything scoring a candidate needs, held together: ``evaluate(arch)`` activates ``arch`` in the
    ``supernet`` (inside ``model``, the task's full model), recomputes BatchNorm statistics on the
    ``calib_loader`` batches (seeded with ``seed``) and scores the model on ``search_loader`` with
    ``task.evaluate``."""

    supernet: Supernet
    model: nn.Module
    task: Task
    calib_loader: Any
    search_loader: Any
    seed: int

    @classmethod
    def for_task(
        cls, supernet: Supernet, model: nn.Module, task: Task, *, batch_size: int, seed: int
    ) -> CandidateEvaluator:
        """The evaluator over the task's ``calib`` and ``search`` splits, in batches of ``batch_size``."""
        calib_loader = task.loader("calib", train=False, batch_size=batch_size)
        search_loader = task.loader("search", train=False, batch_size=batch_size)
        return cls(supernet, model, task, calib_loader, search_loader, seed)

    def evaluate(self, arch: Arch) -> dict[str, Any]:
        """``arch``'s record: ``score``, every metric, and the seconds spent calibrating and scoring."""
        self.supernet.activate(arch)
        tick = time.perf_counter()
        recalibrate_bn(self.model, self.task, self.calib_loader, seed=self.seed, stop_after=self.supernet)
        calibrated = time.perf_counter()
        metrics = self.task.evaluate(self.model, self.search_loader)
        done = time.perf_counter()
        return {
            "score": float(metrics["score"]),
            "metrics": {k: float(v) for k, v in metrics.items()},
            "calib_seconds": round(calibrated - tick, 3),
            "score_seconds": round(done - calibrated, 3),
            "seconds": round(done - tick, 3),
        }


def evaluate_candidate(
    arch: Arch, supernet: Supernet, model: nn.Module, task: Task, calib_loader, search_loader, seed: int
) -> dict[str, Any]:
    """Activate ``arch``, recalibrate BN on the calib split, score on the search split
    (``CandidateEvaluator(...).evaluate(arch)`` in one call)."""
    return CandidateEvaluator(supernet, model, task, calib_loader, search_loader, seed).evaluate(arch)


def run_search(
    space: Space,
    task: Task,
    supernet: Supernet,
    model: nn.Module,
    search: SearchConfig,
    out_dir: Path,
    *,
    limits: Limits,
    seed: int,
    tensorboard: Path | None = None,
) -> dict[str, Any]:
    """Search until the strategy is finished, every candidate inside ``limits``; writes ``history.jsonl`` and
    ``best.json`` in ``out_dir`` (each record with its ``costs`` under every constraint), and each candidate's
    score, costs and the best score so far to TensorBoard in the folder ``tensorboard`` if given (step: the
    candidate's line in the history)."""
    strategy = registry.create(
        "strategy",
        search.strategy,
        choices=space.choices,
        constraint=limits.legal,
        seed=seed,
        **search.strategy_options,
    )
    history = History(out_dir / HISTORY)
    if len(history):
        console.log(f"search: replaying {len(history)} evaluated candidates from {out_dir / HISTORY}")
    evaluator = CandidateEvaluator.for_task(supernet, model, task, batch_size=search.batch_size, seed=seed)
    asked: list[Arch] = []
    generation = 0
    with (
        console.progress(strategy.budget or 0, f"search ({search.strategy})", log_every=1) as bar,
        Board(tensorboard, first_step=len(history) + 1) as board,
    ):
        while not strategy.finished:
            try:
                candidates = strategy.ask()
            except ConstraintUnsatisfiable as exc:
                raise NasEngineError(
                    f"{exc}; {space.name} spans {limits.ranges_text()}, the limits are {limits.text()}"
                ) from None
            candidates = check_asked(
                search.strategy, candidates, space.choices, limits.legal, set(asked), f"the limits {limits.text()}"
            )
            pending = [arch for arch in candidates if arch not in history]
            for start in range(0, len(pending), distributed.world_size()):
                chunk = pending[start : start + distributed.world_size()]
                for arch, result in _evaluate_chunk(chunk, evaluator):
                    record = {
                        "arch": list(arch),
                        "flops": cost_of(space, arch, search.flops_image_size).flops,
                        "params": cost_of(space, arch).params,
                        "costs": limits.costs(arch),
                        **result,
                        "generation": generation,
                    }
                    if distributed.is_main():
                        _to_board(board, len(history) + 1, record, history.best())
                        history.append(record)
                    else:
                        history.records[arch] = record
                    best = history.best()
                    bar.update(
                        len(asked) + len(candidates) - len(pending) + start + len(chunk),
                        best=f"{best['score']:.4g}",  # type: ignore[index]
                        last=f"{record['score']:.4g}",
                    )
            strategy.tell([(arch, history[arch]["score"]) for arch in candidates])
            if not candidates and not strategy.finished:
                raise NasEngineError(
                    f"strategy {search.strategy!r} asked for no candidates but is not finished; "
                    "a strategy must be finished once an empty batch is told"
                )
            asked.extend(candidates)
            generation += 1
            bar.update(len(asked), best=f"{max(history[a]['score'] for a in asked):.4g}")
    best = max((history[arch] for arch in asked), key=lambda r: r["score"])
    summary = {
        "arch": best["arch"],
        "arch_text": format_arch(best["arch"]),
        "score": best["score"],
        "flops": best["flops"],
        "params": best["params"],
        "costs": best.get("costs", {}),
        "metrics": best["metrics"],
        "candidates": len(asked),
        "strategy": search.strategy,
    }
    if distributed.is_main():
        write_json(summary, out_dir / BEST)
    return summary


def _to_board(board: Board, step: int, record: dict[str, Any], best_before: dict[str, Any] | None) -> None:
    """A candidate's score, FLOPs and the best score so far, on disk before its history line is: a resumed
    search starts its steps after the history's last line and so misses none."""
    best = record if best_before is None or record["score"] > best_before["score"] else best_before
    costs = {f"cost/{name}": value for name, value in record.get("costs", {}).items() if name != "flops"}
    board.scalars(step, score=record["score"], flops=record["flops"], best_score=best["score"], **costs)
    board.flush()


def _evaluate_chunk(chunk: list[Arch], evaluator: CandidateEvaluator) -> list[tuple[Arch, dict[str, Any]]]:
    """Evaluate up to one candidate per rank; every rank gets every result, in chunk order."""
    if not distributed.is_distributed():
        return [(arch, evaluator.evaluate(arch)) for arch in chunk]  # a chunk of one
    mine = chunk[distributed.rank()] if distributed.rank() < len(chunk) else None
    result = evaluator.evaluate(mine) if mine else None
    gathered = distributed.all_gather_object((mine, result))
    return [(tuple(arch), res) for arch, res in gathered if arch is not None]
