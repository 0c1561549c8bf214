"""The run's report: a summary table, ``report/summary.json`` and plots of the search.

Plots: ``search_progress.png`` (every candidate's score in evaluation order with the best so far) and
``flops_vs_score.png`` (the FLOPs–score trade-off the constraint cuts through), and, after a random
search on the same supernet, ``search_vs_random.png`` (see :mod:`nasengine.search_compare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from nasengine import console, distributed
from nasengine.checkpoint import read_json, write_json
from nasengine.history import read_history
from nasengine.run_layout import PHASES, RunLayout
from nasengine.search_compare import plot_comparison, search_comparison


def collect(directory: Path) -> dict[str, Any]:
    """Everything a run directory says about itself (phases done, search, retrain results)."""
    layout = RunLayout(directory)
    summary: dict[str, Any] = {"phases": {}}
    for phase in PHASES:
        done = layout.done(phase)
        summary["phases"][phase] = read_json(done) if done.exists() else None
    history = read_history(layout.history())
    summary["candidates_evaluated"] = len(history)
    best_path = layout.best()
    summary["search_best"] = read_json(best_path) if best_path.exists() else None
    if history:
        scores = sorted(r["score"] for r in history)
        summary["search_median_score"] = scores[len(scores) // 2]
    summary["retrain"] = {label: read_json(path) for label, path in layout.retrain_tests().items()}
    rank_check = layout.report / "rank_check.json"
    if rank_check.exists():  # written by `nasengine rank-check`
        summary["rank_check"] = read_json(rank_check)
    comparison = search_comparison(directory)
    if comparison:  # after `nasengine search RUN_DIR --strategy random --budget-like evolution`
        summary["search_vs_random"] = comparison
    return summary


def write_report(directory: Path, flops_max: float | None) -> dict[str, Any]:
    """``report/summary.json``, the plots and the summary table of the run in ``directory``; ``flops_max`` is
    the search's FLOPs limit, drawn on the FLOPs–score plot."""
    summary = collect(directory)
    if distributed.is_main():
        layout = RunLayout(directory)
        out = layout.report
        write_json(summary, out / "summary.json")
        history = read_history(layout.history())
        if history:
            plot_search(history, out, flops_max)
        plot_comparison(directory, out)  # search_vs_random.png, when search-random/ has candidates
        console.console.print(summary_table(directory, summary))
    return summary


def summary_table(directory: Path, summary: dict[str, Any]) -> Table:
    """The retrained networks side by side; architectures and all test metrics in the caption."""
    table = Table(title=f"nasengine run {directory}", title_justify="left", caption_justify="left")
    for column in ("network", "MFLOPs", "params (M)", "search score", "test score"):
        table.add_column(column, justify="left" if column == "network" else "right")
    best = summary.get("search_best")
    notes = []
    for label, result in summary.get("retrain", {}).items():
        search_score = f"{best['score']:.4f}" if label == "best" and best else ""
        table.add_row(
            label,
            f"{result['flops'] / 1e6:.1f}",
            f"{result['params'] / 1e6:.2f}",
            search_score,
            f"{result['test']['score']:.4f}",
        )
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in result["test"].items() if k != "score")
        notes.append(f"{label}: {result['arch_text']}\n  test {metrics}")
    if best and not summary.get("retrain"):
        table.add_row(
            "best (search)", f"{best['flops'] / 1e6:.1f}", f"{best['params'] / 1e6:.2f}", f"{best['score']:.4f}", ""
        )
        notes.append(f"best (search): {best['arch_text']}")
    table.caption = "\n".join(notes)
    return table


def plot_search(history: list[dict[str, Any]], out: Path, flops_max: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    scores = [r["score"] for r in history]
    best_so_far = [max(scores[: i + 1]) for i in range(len(scores))]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(range(1, len(scores) + 1), scores, s=10, alpha=0.6, label="candidate")
    ax.plot(range(1, len(scores) + 1), best_so_far, color="C3", label="best so far")
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("search-split score")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "search_progress.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["flops"] / 1e6 for r in history], scores, s=10, alpha=0.6)
    if flops_max and flops_max != float("inf"):
        ax.axvline(flops_max / 1e6, color="C3", linestyle="--", label="FLOPs limit")
        ax.legend()
    ax.set_xlabel("backbone MFLOPs (MACs at 224px)")
    ax.set_ylabel("search-split score")
    fig.tight_layout()
    fig.savefig(out / "flops_vs_score.png", dpi=120)
    plt.close(fig)
