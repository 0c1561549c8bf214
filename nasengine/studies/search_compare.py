"""Evolution against random search on the same trained supernet (the DetNAS paper's Fig. 2).

``nasengine search RUN_DIR --strategy random --budget-like evolution`` runs a second search on the run's
trained supernet — same FLOPs window, seed and search settings, as many candidates as the run's own
search — into ``RUN_DIR/search-random/``. This module compares the two histories by the curve the
paper plots: the mean of the top-k search-split scores found so far, after each candidate evaluated.

Conventions:

- :func:`topk_curve` is NaN until k scored candidates exist, so a curve never "reaches" a top-k mean on
  fewer than k candidates. A NaN score (a failed evaluation) counts as a candidate evaluated but never
  enters the top k.
- k is the run's ``top_k`` strategy option when set (evolution's parents), else 10, capped at the
  number of candidates of the shorter history.
- Both searches draw from the same seed, and evolution's first generation is uniformly random, so with
  the built-in strategies the two curves share their first ``population`` candidates and part ways
  after that.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.interfaces import Strategy
from nasengine.rundir.history import read_history
from nasengine.rundir.layout import RunLayout
from nasengine.settings.config import SearchConfig
from nasengine.settings.defaults import RANDOM_STRATEGY

DEFAULT_TOP_K = 10
COMPARED_STRATEGY = RANDOM_STRATEGY  # the comparison the report draws: the run's search against random search


def comparison_folder(strategy: str) -> str:
    """The run-directory folder of a second search with ``strategy`` (``search-random`` for random)."""
    return f"search-{strategy}"


def topk_curve(scores_in_evaluation_order: Sequence[float], k: int) -> list[float]:
    """The mean of the ``k`` best scores among the first ``i`` candidates, for ``i`` = 1 … n.

    The entry is NaN while fewer than ``k`` non-NaN scores exist. The curve never decreases. The mean
    is ``math.fsum`` of the k scores / k, so equal sets give bit-identical means.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    best: list[float] = []  # min-heap of the k best scores so far
    curve: list[float] = []
    for score in scores_in_evaluation_order:
        score = float(score)
        if not math.isnan(score):
            if len(best) < k:
                heapq.heappush(best, score)
            elif score > best[0]:
                heapq.heapreplace(best, score)
        curve.append(math.fsum(best) / k if len(best) == k else math.nan)
    return curve


def candidates_to_reach(curve: Sequence[float], target: float) -> int | None:
    """The first number of candidates (1-based) at which ``curve`` is at least ``target``; None if never.

    NaN entries never reach anything, and a NaN target is never reached.
    """
    for count, value in enumerate(curve, 1):
        if value >= target:  # False for NaN on either side
            return count
    return None


def compare_scores(scores: Mapping[str, Sequence[float]], k: int) -> dict[str, Any]:
    """Compare two searches by their top-``k`` curves.

    ``scores`` maps two labels (e.g. ``evolution``, ``random``) to their scores in evaluation order.
    For each label: ``candidates``, ``final_top_k_mean`` (the curve's last value; None when NaN),
    ``to_reach_other_final`` (candidates it needed to reach the other search's final top-k mean) and
    ``to_reach_lower_final`` (candidates it needed to reach the lower of the two finals); None means
    never. ``lower_final`` is that lower final.
    """
    if len(scores) != 2:
        raise ValueError(f"compare_scores compares two searches, not {len(scores)}")
    curves = {label: topk_curve(values, k) for label, values in scores.items()}
    finals = {label: (curve[-1] if curve else math.nan) for label, curve in curves.items()}
    known = [value for value in finals.values() if not math.isnan(value)]
    lower = min(known) if len(known) == 2 else math.nan
    first, second = curves
    other = {first: second, second: first}
    strategies = {
        label: {
            "candidates": len(curve),
            "final_top_k_mean": _number(finals[label]),
            "to_reach_other_final": candidates_to_reach(curve, finals[other[label]]),
            "to_reach_lower_final": candidates_to_reach(curve, lower),
        }
        for label, curve in curves.items()
    }
    return {"k": k, "strategies": strategies, "lower_final": _number(lower)}


def comparison_k(search: SearchConfig, *lengths: int) -> int:
    """The run's ``top_k`` strategy option (else 10), capped at the shortest of ``lengths``."""
    k = search.strategy_options.get("top_k", DEFAULT_TOP_K)
    return max(1, min(int(k), *lengths))


def _histories(directory: Path, strategy: str) -> tuple[SearchConfig, dict[str, list[float]]]:
    """The run's search settings and the scores of its own search and of ``search-<strategy>/``."""
    from nasengine.settings import config as configuration

    layout = RunLayout(directory)
    search = configuration.load(layout.config).search
    folders = {search.strategy: "search", strategy: comparison_folder(strategy)}
    scores = {label: [r["score"] for r in read_history(layout.history(folder))] for label, folder in folders.items()}
    return search, scores


def search_comparison(directory: Path, strategy: str = COMPARED_STRATEGY) -> dict[str, Any] | None:
    """The run's own search against ``search-<strategy>/`` (see :func:`compare_scores`).

    None unless both have candidates. Adds ``folder`` and ``finished`` (its ``done.json`` exists) to
    each search's entry.
    """
    directory = Path(directory)
    layout = RunLayout(directory)
    if not layout.config.exists():
        return None
    search, scores = _histories(directory, strategy)
    if len(scores) != 2 or not all(scores.values()):  # one label: the run's own search uses ``strategy``
        return None
    comparison = compare_scores(scores, comparison_k(search, *map(len, scores.values())))
    for label in scores:
        folder = "search" if label == search.strategy else comparison_folder(strategy)
        comparison["strategies"][label]["folder"] = folder
        comparison["strategies"][label]["finished"] = layout.done(folder).exists()
    return comparison


def comparison_table(comparison: dict[str, Any]) -> Table:
    """The comparison as a table: final top-k means and the candidates each search needed."""
    k = comparison["k"]
    labels = list(comparison["strategies"])
    table = Table(
        title=f"{' vs '.join(labels)} search: mean of the top-{k} search-split scores",
        title_justify="left",
        caption_justify="left",
    )
    for column in (
        "search",
        "candidates",
        f"final top-{k} mean",
        "to reach the other's final",
        "to reach the lower final",
    ):
        table.add_column(column, justify="left" if column == "search" else "right")
    for label, entry in comparison["strategies"].items():
        status = "" if entry.get("finished", True) else " (unfinished)"
        table.add_row(
            f"{label}{status}",
            str(entry["candidates"]),
            _text(entry["final_top_k_mean"]),
            _count(entry["to_reach_other_final"]),
            _count(entry["to_reach_lower_final"]),
        )
    table.caption = (
        f"lower final top-{k} mean: {_text(comparison['lower_final'])}; "
        "'to reach' = candidates evaluated until the top-k mean first got there"
    )
    return table


def budget_matched_options(
    choices: Sequence[int], search: SearchConfig, strategy: str, budget_like: str, seed: int
) -> dict[str, Any]:
    """Options for ``strategy`` that give it the budget of the run's ``budget_like`` search.

    ``budget_like`` must be the run's configured strategy, built with its options to read its ``budget``
    and ``batch_size``; ``strategy`` states in its own terms the options that plan that budget in batches of
    that size (``Strategy.options_for_budget``). The run's ``max_tries`` carries over when both take it.
    """
    if budget_like != search.strategy:
        raise NasEngineError(
            f"--budget-like {budget_like}: this run's search uses {search.strategy}, so only "
            f"--budget-like {search.strategy} has a configured budget"
        )
    if strategy == search.strategy:
        raise NasEngineError(
            f"strategy {strategy} is this run's own search; leave --strategy out to run (or --redo) that one"
        )
    reference = registry.create(
        "strategy", search.strategy, choices=tuple(choices), constraint=_any_arch, seed=seed, **search.strategy_options
    )
    budget = reference.budget
    if not budget:
        raise NasEngineError(f"strategy {search.strategy} does not state its budget, so --budget-like cannot match it")
    strategy_cls: type[Strategy] = registry.get("strategy", strategy)
    options = dict(strategy_cls.options_for_budget(budget, reference.batch_size))
    declared = registry.declared_options(strategy_cls, "strategy")
    if "max_tries" in search.strategy_options and (declared is None or "max_tries" in declared):
        options["max_tries"] = search.strategy_options["max_tries"]
    matched = registry.create("strategy", strategy, choices=tuple(choices), constraint=_any_arch, seed=seed, **options)
    if matched.budget != budget:
        raise NasEngineError(
            f"strategy {strategy} with options {options} plans {matched.budget} candidates, not the {budget} of "
            f"{search.strategy}; its options_for_budget must give exactly the budget it is asked for"
        )
    return options


def _any_arch(arch: Sequence[int]) -> bool:
    return True


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _text(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _count(value: int | None) -> str:
    return "never" if value is None else str(value)
