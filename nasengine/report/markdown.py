"""``report/summary.md``: the run's report as one Markdown page, its figures embedded by relative links.

Sections: the found architecture beside the baseline (test metrics of every retrained network), the
search (Fig. 2, the comparison with random search, every candidate and the Pareto front), the random
models (Fig. 3), the rank check, the training curves with each phase's time, and the configuration.
A section whose results do not exist yet is left out. Numbers are formatted as in the summary table:
scores and metrics to 4 decimals, MFLOPs to 1, parameters in millions to 2, seconds to 1.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasengine.arch import compact_arch
from nasengine.report.constraints import cost_formatter, figure_name
from nasengine.report.figures import pareto_front, score_name
from nasengine.rundir.atomic import atomic_write
from nasengine.rundir.history import generation_label, read_history
from nasengine.rundir.layout import DONE, PHASES, RunLayout
from nasengine.rundir.records import read_json
from nasengine.settings import config as configuration

SEARCHED = "best"  # the retrain entry of the found architecture (the engine's name for it)

CAPTIONS = {
    "architecture": "The found backbone block by block (DetNAS Figs. 4–5): box colour and height give each "
    "block's choice, stages are set apart.",
    "search_curve": "Mean of the top-k search-split scores found so far after each candidate (DetNAS Fig. 2); "
    "dots end a generation.",
    "search_progress": "Every candidate's search-split score in evaluation order, and the best so far.",
    "flops_vs_score": "Every candidate's FLOPs against its search-split score, the Pareto front (circled) "
    "and the FLOPs constraint (dashed).",
    "random_models": "Random architectures trained standalone: test score against FLOPs, their mean "
    "(± std band) and the searched network (DetNAS Fig. 3).",
    "training_curves": "Loss per iteration (light), smoothed (dark) and learning rate (dashed) of every "
    "training phase.",
    "rank_check": "Standalone test score against supernet search score of the rank-checked candidates.",
}


def score(value: Any) -> str:
    """A score or metric, 4 decimals (``n/a`` when missing or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def format_mflops(flops: float) -> str:
    """FLOPs in millions, one decimal."""
    return f"{flops / 1e6:.1f}"


def seconds(value: float) -> str:
    return f"{value:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return [*lines, ""]


def figure(name: str, figures: Mapping[str, Path], title: str, caption: str | None = None) -> list[str]:
    if name not in figures:
        return []
    return [f"![{title}]({figures[name].name})", "", f"*{caption or CAPTIONS[name]}*", ""]


def write_summary_md(directory: Path, summary: Mapping[str, Any], figures: Mapping[str, Path]) -> Path:
    """Write ``report/summary.md`` of the run in ``directory`` from its ``summary`` (see
    :func:`nasengine.report.build.collect`) and the ``figures`` drawn (``{name: path}`` inside ``report/``)."""
    layout = RunLayout(directory)
    config = configuration.load(layout.config)
    figures = dict(figures)
    if layout.rank_check_figure.is_file():
        figures["rank_check"] = layout.rank_check_figure
    lines = [
        f"# nasengine report: {directory.name or directory}",
        "",
        f"Space `{config.space}`, task `{config.task}`, pre-training task `{config.pretrain_task}`, "
        f"searched on {config.search.on} with `{config.search.strategy}`, seed {config.seed}, "
        f"preset `{config.preset}`.",
        "",
    ]
    lines += found_section(summary, figures)
    lines += constraints_section(summary, figures)
    lines += search_section(directory, summary, figures)
    lines += random_section(summary, figures)
    lines += rank_check_section(summary, figures)
    lines += training_section(directory, figures)
    lines += ["## Configuration", "", f"From `{layout.config.name}`.", ""]
    lines += table(("setting", "value"), list(flatten(config.to_dict()).items()))
    path = layout.report / "summary.md"
    text = "\n".join(lines).rstrip("\n") + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return path


def found_section(summary: Mapping[str, Any], figures: Mapping[str, Path]) -> list[str]:
    best, retrain = summary.get("search_best"), summary.get("retrain") or {}
    if not best and not retrain:
        return []
    lines = ["## The found architecture", ""]
    metrics = list(dict.fromkeys(k for result in retrain.values() for k in result["test"] if k != "score"))
    header = ["network", "architecture", "MFLOPs", "params (M)", "search score", "test score", *metrics]
    rows = []
    for label, result in retrain.items():
        search = score(best["score"]) if label == SEARCHED and best else ""
        rows.append(
            [
                label,
                f"`{compact_arch(result['arch'])}`",
                format_mflops(result["flops"]),
                f"{result['params'] / 1e6:.2f}",
                search,
                score(result["test"]["score"]),
                *(score(result["test"].get(k)) for k in metrics),
            ]
        )
    if best and SEARCHED not in retrain:
        arch, params = f"`{compact_arch(best['arch'])}`", f"{best['params'] / 1e6:.2f}"
        rows.insert(0, ["best (search)", arch, format_mflops(best["flops"]), params, score(best["score"]), ""])
        rows[0] += ["" for _ in metrics]
    lines += table(header, rows)
    if best:
        lines += [f"Search-split score is {score_name(best)}; test scores are on the test split.", ""]
    compare = summary.get("compare")
    if compare:
        lines += [f"Compared with `{compare['run']}` (searched on {compare['search_on']}):", ""]
        lines += table(
            ("run", "architecture", "MFLOPs", "search score", "test score"),
            [
                [
                    compare["run"],
                    f"`{compact_arch(compare['arch'])}`",
                    format_mflops(compare["flops"]),
                    score(compare.get("score")),
                    score((compare.get("test") or {}).get("score")),
                ]
            ],
        )
    return lines + figure("architecture", figures, "architecture")


def constraints_section(summary: Mapping[str, Any], figures: Mapping[str, Path]) -> list[str]:
    constraints = summary.get("constraints")
    if not constraints:
        return []
    names = list(constraints["limits"])
    lines = [
        "## Constraints",
        "",
        "Searched under "
        + " and ".join(f"{name} {bounds['text']}" for name, bounds in constraints["limits"].items())
        + ".",
    ]
    measured = constraints.get("latency_table")
    if measured:
        lines[-1] += (
            f" Latency from a per-block table measured on {measured['device']} ({measured['device_name']}), "
            f"{measured['threads']} thread(s), {measured['image_size']} px, batch {measured['batch']}, torch "
            f"{measured['torch']} ({measured['timing']}; whole-network overhead {measured['overhead_ms']:+.2f} ms)."
        )
    lines.append("")
    rows = []
    for label, costs in constraints["retrained"].items():
        texts = constraints["retrained_text"][label]
        for name in names:
            entry = costs[name]
            rows.append(
                [
                    label,
                    name,
                    texts[name]["predicted"],
                    texts[name]["measured"],
                    constraints["limits"][name]["text"],
                    "yes" if entry["within"] else "**no**",
                ]
            )
    if rows:
        lines += ["The retrained networks, measured on the real network after retraining:", ""]
        lines += table(("network", "constraint", "predicted", "measured", "limit", "within"), rows)
    agreement = constraints.get("flops_rank_agreement") or {}
    for name, rho in agreement.items():
        lines += [
            f"Over the {summary.get('candidates_evaluated', 'evaluated')} candidates, FLOPs and {name} rank the "
            f"networks with Spearman's ρ = {rho:+.2f} (1: FLOPs alone would order them alike).",
            "",
        ]
    compare = summary.get("compare")
    if compare and compare.get("costs"):
        formats = {
            name: cost_formatter(name, bounds.get("options", {})) for name, bounds in constraints["limits"].items()
        }
        best = summary.get("search_best") or {}
        tested = (summary.get("retrain") or {}).get(SEARCHED, {})
        rows = [
            [
                f"this run ({' and '.join(b['text'] for b in constraints['limits'].values())})",
                f"`{compact_arch(best.get('arch', tested.get('arch', [])))}`",
                *(formats[n](best.get("costs", tested.get("costs", {})).get(n, math.nan)) for n in names),
                score(best.get("score")),
                score((tested.get("test") or {}).get("score")),
            ],
            [
                f"`{compare['run']}`",
                f"`{compact_arch(compare['arch'])}`",
                *(formats[n](compare["costs"][n]) if n in compare["costs"] else "" for n in names),
                score(compare.get("score")),
                score((compare.get("test") or {}).get("score")),
            ],
        ]
        lines += [
            f"The winner beside `{compare['run']}`'s, both costed as this run's search costs them:",
            "",
        ]
        lines += table(("run", "architecture", *names, "search score", "test score"), rows)
    for name in names[1:]:  # FLOPs have their figure in the search section
        caption = (
            f"Every candidate's {name} (as the search predicted it) against its search-split score, the Pareto "
            f"front (circled) and the {name} limit (dashed)."
        )
        lines += figure(figure_name(name), figures, f"{name} vs score", caption)
    return lines


def search_section(directory: Path, summary: Mapping[str, Any], figures: Mapping[str, Path]) -> list[str]:
    history = read_history(RunLayout(directory).history())
    if not history:
        return []
    best = max((r for r in history if not math.isnan(r["score"])), key=lambda r: r["score"], default=None)
    lines = ["## The search", "", f"{len(history)} candidates evaluated on the supernet"]
    lines[-1] += f"; best search-split score {score(best['score'])}." if best else "."
    lines += [""] + figure("search_curve", figures, "search curve")
    comparison = summary.get("search_vs_random")
    if comparison:
        k = comparison["k"]
        lines += [f"### Against random search on the same supernet (top-{k} mean)", ""]
        lines += table(
            ("search", "candidates", f"final top-{k} mean", "candidates to reach the other's final"),
            [
                [label, entry["candidates"], score(entry["final_top_k_mean"]), entry["to_reach_other_final"] or "never"]
                for label, entry in comparison["strategies"].items()
            ],
        )
    lines += figure("search_progress", figures, "search progress")
    lines += figure("flops_vs_score", figures, "FLOPs vs score")
    front = sorted((history[i] for i in pareto_front(history)), key=lambda r: (r["flops"], -r["score"]))
    lines += ["### Pareto front (fewer FLOPs, higher score)", ""]
    lines += table(
        ("architecture", "MFLOPs", "search score", "generation (1 = first)"),
        [
            [f"`{compact_arch(r['arch'])}`", format_mflops(r["flops"]), score(r["score"]), generation_label(r)]
            for r in front
        ],
    )
    return lines


def random_section(summary: Mapping[str, Any], figures: Mapping[str, Path]) -> list[str]:
    baseline = summary.get("random_baseline")
    if not baseline:
        return []
    scores = [r["test"]["score"] for r in baseline["results"]]
    lines = ["## Random models", "", f"From `{baseline['folder']}`: {len(scores)} random architectures within the "]
    lines[-1] += "FLOPs constraint, each trained standalone the full way and tested."
    lines.append("")
    rows = []
    if scores:
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        rows.append(["random (mean ± std)", f"{score(statistics.fmean(scores))} ± {score(std)}", ""])
        rows.append(["random (min – max)", f"{score(min(scores))} – {score(max(scores))}", ""])
    for label, result in (summary.get("retrain") or {}).items():
        beaten = sum(s < result["test"]["score"] for s in scores)
        rows.append([label, score(result["test"]["score"]), f"{beaten} of {len(scores)}"])
    lines += table(("network", "test score", "random models it beats"), rows)
    return lines + figure("random_models", figures, "random models")


def rank_check_section(summary: Mapping[str, Any], figures: Mapping[str, Path]) -> list[str]:
    check = summary.get("rank_check")
    if not check:
        return []
    if check.get("degenerate") or check.get("tau") is None:
        result = f"Kendall tau and Spearman rho n/a ({check.get('message') or 'undefined'})"
    else:
        result = (
            f"Kendall tau {check['tau']:+.3f} (p {check['tau_p']:.3g}), "
            f"Spearman rho {check['rho']:+.3f} (p {check['rho_p']:.3g})"
        )
    lines = [
        "## Rank check",
        "",
        f"{check['n']} candidates trained standalone (schedules x{check['schedule_scale']:g}): ",
    ]
    lines[-1] += f"{result}."
    return [*lines, ""] + figure("rank_check", figures, "rank check")


def training_section(directory: Path, figures: Mapping[str, Path]) -> list[str]:
    rows = phase_times(directory)
    if not rows and "training_curves" not in figures:
        return []
    lines = ["## Training and phase times", ""] + figure("training_curves", figures, "training curves")
    if rows:
        total = sum(value for _, _, value in rows)
        shown = [(name, work, seconds(value)) for name, work, value in rows]
        lines += table(("phase", "work", "seconds"), [*shown, ("total", "", seconds(total))])
    return lines


def phase_times(directory: Path) -> list[tuple[str, str, float]]:
    """``(phase folder, work done, seconds)`` of every finished phase with a ``seconds`` in its
    ``done.json`` (the distillation of pre-training too), in protocol order."""
    layout = RunLayout(directory)
    folders = [layout.folder(phase) for phase in PHASES[:2]] + layout.search_folders() + [layout.retrain]
    rows: list[tuple[str, str, float]] = []
    for folder in folders:
        found = folder.rglob(DONE) if folder.is_dir() else []
        for done in sorted(found, key=lambda path: protocol_order(path.parent.relative_to(layout.root).parts)):
            info = read_json(done)
            name = done.parent.relative_to(layout.root).as_posix()
            if isinstance(info.get("seconds"), (int, float)):
                rows.append((name, _work(info), info["seconds"]))
            distill = info.get("distill")
            if isinstance(distill, dict) and isinstance(distill.get("seconds"), (int, float)):
                rows.append((f"{name}/distill", _work(distill), distill["seconds"]))
    return rows


def protocol_order(parts: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """Sort key of a phase folder's path parts: phases in protocol order (a retrained network's
    ``pretrain`` before its ``finetune``), other names alphabetically."""
    return tuple((PHASES.index(part), "") if part in PHASES else (len(PHASES), part) for part in parts)


def _work(info: Mapping[str, Any]) -> str:
    work = ""
    if "iterations" in info:
        work = f"{info['iterations']} iterations"
    elif "candidates" in info:
        work = f"{info['candidates']} candidates"
    if info.get("reused"):
        work += f" (copied from {info['reused']})"
    return work


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"search.flops_max": "300000000.0", ...}``: nested settings as dotted keys, values as in TOML
    (strings bare, lists and the rest as JSON); empty tables as ``{}``."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat
