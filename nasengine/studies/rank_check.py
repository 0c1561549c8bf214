"""Does the supernet rank like standalone training? (``nasengine rank-check RUN_DIR``)

One-shot NAS rests on one assumption: a path's score in the trained supernet predicts the score the same
architecture reaches when it is trained alone. This module tests it on a finished run: it picks a few
candidates from the search history, spread evenly over the score range (the best and the worst always
among them), trains each standalone with the run's schedules (or a ``schedule_scale`` fraction of their
iterations), tests it on the test split, and measures the rank agreement of the two scores with Kendall's
tau and Spearman's rho.

The space's baseline (its ``baseline_name``, the network the winner is retrained beside) joins the check
unless ``with_baseline`` is off: scored on the supernet exactly as the search scores a candidate when the
search did not meet it, and trained alone the same way (its retraining is reused at full schedules). So
the check also says whether the supernet sees the baseline where standalone training puts it.

Each network trains in ``RUN_DIR/rank_check/<arch>-s<scale>/`` (resumable, trained once; the baseline's
supernet score is kept there as ``supernet_score.json``); the result is ``RUN_DIR/report/rank_check.json``
and ``RUN_DIR/report/rank_check.png``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from nasengine import console
from nasengine.arch import compact_arch, format_arch
from nasengine.errors import NasEngineError
from nasengine.protocol import distributed
from nasengine.report.drawing import pyplot, save_figure
from nasengine.rundir.history import read_history
from nasengine.rundir.layout import RunLayout
from nasengine.rundir.records import read_json, strict_json, write_json
from nasengine.settings.config import check_schedule_scale

DEFAULT_COUNT = 8


# --- choosing candidates ------------------------------------------------------------------------
def select_candidates(history_records: Sequence[dict[str, Any]], n: int = DEFAULT_COUNT) -> list[dict[str, Any]]:
    """``n`` records of distinct architectures, spread evenly over the ranks of the scores, best first.

    The records are ranked by score (ties: the earlier evaluated first) and the ones at rank quantiles
    0, 1/(n-1), ..., 1 are taken, so the best and the worst are always among them. With fewer than ``n``
    distinct architectures, all are returned. Records without a finite score are ignored.
    """
    if n < 2:
        raise NasEngineError(f"a rank check needs at least 2 candidates, not {n}")
    ranked = _ranked_distinct(history_records)
    if len(ranked) <= n:
        return ranked
    last = len(ranked) - 1
    positions = [int(i * last / (n - 1) + 0.5) for i in range(n)]  # strictly increasing: last > n - 1
    return [ranked[p] for p in positions]


def _ranked_distinct(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[int, ...]] = set()
    distinct = []
    for order, record in enumerate(records):
        arch = tuple(int(c) for c in record["arch"])
        if arch in seen or not math.isfinite(float(record["score"])):
            continue
        seen.add(arch)
        distinct.append((order, record))
    distinct.sort(key=lambda item: (-float(item[1]["score"]), item[0]))
    return [record for _, record in distinct]


# --- statistics ---------------------------------------------------------------------------------
def rank_statistics(supernet_scores: Sequence[float], standalone_scores: Sequence[float]) -> dict[str, Any]:
    """Kendall's tau (tau-b) and Spearman's rho of the two score lists, with their two-sided p-values.

    Returns ``n``, ``tau``, ``tau_p``, ``rho``, ``rho_p``, ``degenerate`` and ``message``. When the
    statistics are undefined (fewer than 3 points, a non-finite score, or one list constant) the four
    figures are NaN, ``degenerate`` is True and ``message`` says why; it never raises for such input.
    """
    if len(supernet_scores) != len(standalone_scores):
        raise ValueError(f"{len(supernet_scores)} supernet scores but {len(standalone_scores)} standalone scores")
    x = [float(v) for v in supernet_scores]
    y = [float(v) for v in standalone_scores]
    result: dict[str, Any] = {
        "n": len(x),
        "tau": math.nan,
        "tau_p": math.nan,
        "rho": math.nan,
        "rho_p": math.nan,
        "degenerate": True,
        "message": _degenerate_reason(x, y),
    }
    if result["message"] is not None:
        return result
    from scipy import stats

    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    result.update(
        tau=float(tau.statistic),
        tau_p=float(tau.pvalue),
        rho=float(rho.statistic),
        rho_p=float(rho.pvalue),
        degenerate=False,
    )
    return result


def _degenerate_reason(x: list[float], y: list[float]) -> str | None:
    if len(x) < 3:
        return f"only {len(x)} candidate(s): rank correlation needs at least 3"
    if not all(math.isfinite(v) for v in x + y):
        return "a score is not finite"
    if len(set(x)) == 1:
        return "the supernet scores are all equal: no ranking to compare"
    if len(set(y)) == 1:
        return "the standalone scores are all equal: no ranking to compare"
    return None


def rank_agreement_line(statistics: dict[str, Any]) -> str:
    """One line: Kendall's tau, Spearman's rho, their p-values and n (or why they are undefined)."""
    n = statistics.get("n")
    if statistics.get("degenerate") or _missing(statistics.get("tau")):
        return f"Kendall tau n/a, Spearman rho n/a (n={n}): {statistics.get('message') or 'undefined'}"
    return (
        f"Kendall tau {statistics['tau']:+.3f} (p {statistics['tau_p']:.3g}), "
        f"Spearman rho {statistics['rho']:+.3f} (p {statistics['rho_p']:.3g}), n={n}"
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def ranks(scores: Sequence[float]) -> list[int]:
    """Competition ranks, 1 = highest score; equal scores share the best rank."""
    return [1 + sum(other > score for other in scores) for score in scores]


# --- the driver ---------------------------------------------------------------------------------
def candidate_dir(run_dir: Path, arch: Sequence[int], schedule_scale: float) -> Path:
    """Where the standalone network of ``arch`` trained at ``schedule_scale`` lives."""
    return RunLayout(run_dir).rank_check(f"{compact_arch(arch)}-s{schedule_scale:g}")


def run_rank_check(
    run_dir: str | Path, count: int = DEFAULT_COUNT, schedule_scale: float = 1.0, with_baseline: bool = True
) -> dict[str, Any]:
    """Train ``count`` candidates of a finished search (and the space's baseline, with ``with_baseline``)
    standalone, compare the rankings, write the report."""
    from nasengine.protocol.engine import Run
    from nasengine.report.build import write_report

    schedule_scale = check_schedule_scale(schedule_scale)
    run = Run.open(run_dir)
    if not run.done("search"):
        raise NasEngineError(f"{run.dir} has no finished search; run 'nasengine search {run.dir}' first")
    run.start()
    history = read_history(run.layout.history())
    candidates = select_candidates(history, count)
    baseline = _baseline_record(run, history, candidates, schedule_scale) if with_baseline else None
    if baseline is not None:
        candidates.append(baseline)

    def train(indexed: tuple[int, dict[str, Any]]) -> dict[str, Any]:
        index, record = indexed
        arch = tuple(int(c) for c in record["arch"])
        label = f"rank-check {index}/{len(candidates)}" + (" (baseline)" if record is baseline else "")
        console.log(f"{label}: {format_arch(arch)}")
        reused = run.layout.retrain_test(run.space.baseline_name or "")
        if record is baseline and schedule_scale == 1.0 and reused.is_file():
            return read_json(reused)  # the baseline's retraining: the same network trained the same way
        return run.train_standalone(arch, candidate_dir(run.dir, arch, schedule_scale), label, schedule_scale)

    results = distributed.share_out(list(enumerate(candidates, 1)), train)  # side by side with several processes
    entries = [
        {**_entry(record, result), **({"baseline": run.space.baseline_name} if record is baseline else {})}
        for record, result in zip(candidates, results)
    ]
    summary = _summary(entries, schedule_scale, run.config.search.on)
    if distributed.is_main():
        write_json(strict_json(summary), run.layout.rank_check_result)
        plot_rank_check(summary, run.layout.rank_check_figure)
    write_report(run.dir, run.config.search.flops_max)  # the report's rank-check section, and its manifest
    if distributed.is_main():
        console.console.print(rank_check_table(run.dir, summary))
    return summary


def _baseline_record(
    run: Any, history: list[dict[str, Any]], chosen: list[dict[str, Any]], schedule_scale: float
) -> dict[str, Any] | None:
    """The space's baseline as a candidate record (None without one, or when it is already chosen): its
    search record if the search met it, else scored on the supernet now (once; kept beside its network)."""
    arch = run.space.named.get(run.space.baseline_name or "")
    if arch is None or any(tuple(r["arch"]) == tuple(arch) for r in chosen):
        return None
    for record in history:
        if tuple(record["arch"]) == tuple(arch):
            return record
    path = candidate_dir(run.dir, arch, schedule_scale) / "supernet_score.json"
    if path.is_file():
        return read_json(path)
    console.log(f"rank-check: scoring the baseline {run.space.baseline_name} on the supernet, as the search would")
    record = {"arch": list(arch), **run.score_on_supernet(tuple(arch))}
    if distributed.is_main():
        write_json(record, path)
    return record


def _entry(record: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {
        "arch": list(result["arch"]),
        "arch_text": result["arch_text"],
        "flops": result["flops"],
        "params": result["params"],
        "supernet_score": float(record["score"]),
        "standalone_score": float(result["test"]["score"]),
        "standalone_test": result["test"],
    }


def _summary(entries: list[dict[str, Any]], schedule_scale: float, search_on: str) -> dict[str, Any]:
    supernet = [e["supernet_score"] for e in entries]
    standalone = [e["standalone_score"] for e in entries]
    for entry, a, b in zip(entries, ranks(supernet), ranks(standalone)):
        entry["supernet_rank"], entry["standalone_rank"] = a, b
    statistics = rank_statistics(supernet, standalone)
    return {
        **statistics,
        "schedule_scale": schedule_scale,
        "supernet_split": f"search ({search_on})",
        "candidates": entries,
    }


# --- output -------------------------------------------------------------------------------------
def rank_check_table(run_dir: Path, summary: dict[str, Any]) -> Table:
    """Candidates with both scores and both ranks; the statistics in the caption."""
    title = f"rank check {run_dir} (schedules x{summary['schedule_scale']:g})"
    table = Table(title=title, title_justify="left", caption_justify="left")
    widest = max((len(compact_arch(e["arch"])) + 2 for e in summary["candidates"]), default=9)
    table.add_column("candidate", no_wrap=True, min_width=widest)
    for column in ("MFLOPs", "supernet (rank)", "standalone (rank)"):
        table.add_column(column, justify="right", no_wrap=True)
    for entry in summary["candidates"]:
        table.add_row(
            compact_arch(entry["arch"]) + (" *" if entry.get("baseline") else ""),
            f"{entry['flops'] / 1e6:.1f}",
            f"{entry['supernet_score']:.4g} ({entry['supernet_rank']})",
            f"{entry['standalone_score']:.4g} ({entry['standalone_rank']})",
        )
    baseline = next((e["baseline"] for e in summary["candidates"] if e.get("baseline")), None)
    table.caption = (
        rank_agreement_line(summary)
        + "\n(supernet: search-split score; standalone: test-split score)"
        + (f"\n* the space's baseline, {baseline}" if baseline else "")
    )
    return table


def plot_rank_check(summary: dict[str, Any], path: Path) -> None:
    """Scatter of standalone test score against supernet search score, each point labelled by its
    supernet rank; Kendall's tau and its p-value in the title."""
    plt = pyplot()
    entries = summary["candidates"]
    x = [e["supernet_score"] for e in entries]
    y = [e["standalone_score"] for e in entries]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(x, y, s=24)
    for entry, xi, yi in zip(entries, x, y):
        ax.annotate(str(entry["supernet_rank"]), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if entry.get("baseline"):
            ax.scatter([xi], [yi], s=120, marker="*", color="C2", zorder=3, label=f"baseline {entry['baseline']}")
            ax.legend(fontsize=8, loc="best")
    if summary.get("degenerate") or _missing(summary.get("tau")):
        title = f"Kendall τ n/a (n={summary['n']}): {summary.get('message')}"
    else:
        title = f"Kendall τ = {summary['tau']:.3f} (p = {summary['tau_p']:.3g}), n = {summary['n']}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("supernet score (search split)")
    ax.set_ylabel(f"standalone test score (schedules x{summary['schedule_scale']:g})")
    save_figure(fig, path)
