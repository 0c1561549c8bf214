"""The report under constraints other than FLOPs: the limits, the retrained networks' predicted and measured
costs against them, the same-FLOPs and same-latency winners, and a cost-against-score figure per constraint.

A run limited by FLOPs alone has no such section (its report is as before).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.protocol.limits import configured_limits
from nasengine.report.figures import plot_cost_vs_score
from nasengine.rundir.layout import LATENCY_TABLE, RunLayout
from nasengine.rundir.records import read_json
from nasengine.settings.config import RunConfig


def figure_name(name: str) -> str:
    return f"{name}_vs_score"


def cost_formatter(name: str, options: Mapping[str, Any]):
    """The constraint's ``format`` (``12.30 ms``), or a plain number when its plugin is gone."""
    try:
        return registry.create("constraint", name, **options).format
    except NasEngineError:
        return lambda value: f"{value:.4g}"


def collect_constraints(
    directory: Path, config: RunConfig, history: Sequence[Mapping[str, Any]], retrain: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The section's facts (``summary.json``'s ``constraints``), or None for a run limited by FLOPs alone."""
    if not config.search.constraints:
        return None
    limits = configured_limits(config.search)
    formats = {name: cost_formatter(name, bounds["options"]) for name, bounds in limits.items()}

    def within(name: str, value: float) -> bool:
        return limits[name]["min"] <= value <= limits[name]["max"]

    def text(name: str, value: float | None) -> str:
        return "" if value is None else formats[name](value)

    retrained = {}
    for label, result in retrain.items():
        predicted, measured = result.get("costs", {}), result.get("measured", {})
        retrained[label] = {
            name: {
                "predicted": predicted.get(name),
                "measured": measured.get(name),
                "within": within(name, measured.get(name, predicted.get(name, math.nan))),
            }
            for name in limits
        }
    table = RunLayout(directory).folder("search") / LATENCY_TABLE
    return {
        "limits": {
            name: {
                **bounds,
                "max": bounds["max"] if math.isfinite(bounds["max"]) else None,
                "text": _limit_text(bounds, formats[name]),
            }
            for name, bounds in limits.items()
        },
        "retrained": retrained,
        "retrained_text": {
            label: {
                name: {k: text(name, v) for k, v in entry.items() if k != "within"} for name, entry in costs.items()
            }
            for label, costs in retrained.items()
        },
        "flops_rank_agreement": _rank_agreement(history, list(limits)),
        "latency_table": _table_info(table) if table.is_file() else None,
    }


def _limit_text(bounds: Mapping[str, Any], format_value) -> str:
    high = bounds["max"]
    text = f"≤ {format_value(high)}" if high is not None and math.isfinite(high) else "unlimited"
    return f"{format_value(bounds['min'])} to {format_value(high)}" if bounds["min"] else text


def _table_info(path: Path) -> dict[str, Any]:
    data = read_json(path)
    keys = ("device", "device_name", "threads", "image_size", "batch", "torch", "timing", "overhead_ms", "built")
    return {key: data.get(key) for key in keys}


def _rank_agreement(history: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, float]:
    """Spearman's rank correlation of FLOPs with each other constraint's cost over the evaluated candidates: how
    differently the two order the same networks (1: alike, so FLOPs would have chosen the same)."""
    from scipy.stats import spearmanr

    if len(history) < 3 or "costs" not in history[0]:
        return {}
    flops = [r["flops"] for r in history]
    found = {}
    for name in names:
        values = [r["costs"].get(name, math.nan) for r in history]
        if name != "flops" and len(set(values)) > 1 and len(set(flops)) > 1:
            found[name] = round(float(spearmanr(flops, values).statistic), 3)
    return found


def compared_costs(directory: Path, config: RunConfig, arch: Sequence[int]) -> dict[str, float] | None:
    """``arch``'s costs under this run's constraints as its search saw them (a latency from the table kept in its
    search folder), for another run's winner set beside this one's; None before the search finished."""
    from nasengine.protocol.limits import input_size, run_limits

    layout = RunLayout(directory)
    search = layout.folder("search")
    if not layout.done("search").is_file():  # a finished search keeps whatever its constraints measured
        return None
    space = registry.create("space", config.space, **config.space_options)
    task = registry.create("task", config.task, **config.task_options)
    try:
        limits = run_limits(
            space, config.search, input_size=input_size(task, config.search), folder=search, check=False
        )
    except NasEngineError:
        return None
    return limits.costs(tuple(arch))


def draw_cost_figures(
    history: Sequence[Mapping[str, Any]], constraints: Mapping[str, Any], out: Path
) -> dict[str, Path]:
    """One cost-against-score figure per constraint other than FLOPs, with its limits."""
    figures = {}
    for name, bounds in constraints["limits"].items():
        if name == "flops" or not history or name not in history[0].get("costs", {}):
            continue
        lines = []
        if bounds["max"] is not None and math.isfinite(bounds["max"]):
            lines.append((bounds["max"], "--", f"{name} limit {bounds['text']}"))
        if bounds["min"]:
            lines.append((bounds["min"], ":", f"{name} floor"))
        figures[figure_name(name)] = plot_cost_vs_score(
            history,
            [r["costs"][name] for r in history],
            out / f"{figure_name(name)}.png",
            name,
            f"backbone {name} (predicted, as the search saw it)",
            lines,
        )
    return figures
