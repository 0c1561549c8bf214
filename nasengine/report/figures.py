"""The report's plots of the search, the training and the random models (the DetNAS paper's Figs. 2 and 3).

Each function draws one PNG that reads on its own (title, axis labels with units, legend) with matplotlib's
Agg backend and returns its path:

- :func:`plot_search_progress`: every candidate's score in evaluation order and the best so far;
- :func:`plot_search_curve` (Fig. 2): the mean of the top-k scores found so far, per candidate evaluated,
  generations marked, one curve per search on the supernet (the run's own, ``search-random/``, ...);
- :func:`plot_flops_vs_score`: every candidate's FLOPs against its score, the Pareto front and the
  FLOPs constraint;
- :func:`plot_training_curves`: loss and learning rate of every training phase, from its ``log.jsonl``;
- :func:`plot_random_models` (Fig. 3): standalone-trained random architectures' test scores against
  their FLOPs, their mean, and the searched (and baseline) network beside them.

The architecture drawing (Figs. 4–5) is :mod:`nasengine.report.arch_figure`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasengine.report.drawing import pyplot, save_figure
from nasengine.studies.search_compare import topk_curve

MAX_POINTS = 2000  # a training curve is thinned to about this many points (paper schedules log 300k lines)


def score_name(record: Mapping[str, Any]) -> str:
    """The metric a record's ``score`` is (``AP`` when ``metrics['AP'] == score``), else ``score``."""
    metrics = record.get("metrics") or record.get("test") or {}
    score = record.get("score", metrics.get("score"))
    for name, value in metrics.items():
        if name != "score" and value == score:
            return str(name)
    return "score"


def to_mflops(flops: float) -> float:
    """FLOPs in millions, for an axis."""
    return flops / 1e6


def pareto_front(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices (ascending) of the records no other record beats: none has FLOPs <= and score >= with one
    of the two strictly better. Records with a NaN score are never on the front."""
    scored = [(r["flops"], float(r["score"]), i) for i, r in enumerate(records) if not math.isnan(float(r["score"]))]
    scored.sort(key=lambda item: (item[0], -item[1]))
    front, best_below = [], -math.inf  # best_below: the best score among strictly fewer FLOPs
    group_flops, group_best = None, -math.inf
    for flops, score, index in scored:
        if flops != group_flops:
            best_below = max(best_below, group_best)
            group_flops, group_best = flops, score  # sorted: the group's first is its best
        if score == group_best and score > best_below:
            front.append(index)
    return sorted(front)


def plot_search_progress(history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Every candidate's search-split score in evaluation order, and the best so far."""
    plt = pyplot()
    scores = [r["score"] for r in history]
    best_so_far = [max(scores[: i + 1]) for i in range(len(scores))]
    x = range(1, len(scores) + 1)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.scatter(x, scores, s=12, alpha=0.6, label="candidate")
    ax.plot(x, best_so_far, color="C3", drawstyle="steps-post", label="best so far")
    ax.set_title(f"Search progress: {len(scores)} candidates on the supernet")
    ax.set_xlabel("candidates evaluated (count)")
    ax.set_ylabel(f"search-split {score_name(history[0]) if history else 'score'}")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def generation_ends(history: Sequence[Mapping[str, Any]]) -> list[int]:
    """The number of candidates evaluated when each generation ended (records carry ``generation``)."""
    ends = []
    for count, (record, following) in enumerate(zip(history, [*history[1:], None]), 1):
        if following is None or following.get("generation") != record.get("generation"):
            ends.append(count)
    return ends


def plot_search_curve(searches: Mapping[str, Sequence[Mapping[str, Any]]], k: int, path: Path) -> Path:
    """Fig. 2: the mean of the top-``k`` search-split scores so far, one curve per search (label → history,
    the run's own search first); its generations are marked on the top axis and by dots on its curve."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = next(iter(searches.values()))
    name = score_name(first[0]) if first else "score"
    for index, (label, history) in enumerate(searches.items()):
        curve = topk_curve([r["score"] for r in history], k)
        x = range(1, len(curve) + 1)
        ax.plot(
            x,
            curve,
            drawstyle="steps-post",
            color=f"C{index}",
            zorder=3 if index == 0 else 2,  # the run's own search stays visible where the curves coincide
            label=f"{label} ({len(curve)} candidates)",
        )
        ends = [end for end in generation_ends(history) if not math.isnan(curve[end - 1])]
        ax.plot(ends, [curve[end - 1] for end in ends], "o", color=f"C{index}", markersize=4)
    ends = generation_ends(first)
    if len(ends) > 1:
        top = ax.secondary_xaxis("top")
        step = max(1, len(ends) // 12)  # at most about 12 labels
        shown = list(range(0, len(ends), step))
        top.set_xticks([ends[i] for i in shown], [str(i + 1) for i in shown])
        top.set_xlabel("generation (end of)")
    ax.set_xlim(left=1)
    ax.set_title(f"Search curve: mean of the top-{k} search-split {name} found so far")
    ax.set_xlabel("candidates evaluated (count)")
    ax.set_ylabel(f"top-{k} mean search-split {name}")
    ax.legend(loc="lower right", title="search (dots: end of a generation)", fontsize=8, title_fontsize=8)
    return save_figure(fig, path)


def plot_flops_vs_score(
    history: Sequence[Mapping[str, Any]],
    path: Path,
    flops_min: float = 0.0,
    flops_max: float | None = None,
    image_size: int = 224,
) -> Path:
    """Every candidate's FLOPs against its score (coloured by generation), the Pareto front (fewer FLOPs,
    higher score), the best candidate and the FLOPs constraint ``[flops_min, flops_max]``."""
    limits = []
    if flops_max is not None and math.isfinite(flops_max):
        limits.append((to_mflops(flops_max), "--", f"FLOPs limit {to_mflops(flops_max):g} M"))
    if flops_min > 0:
        limits.append((to_mflops(flops_min), ":", f"FLOPs floor {to_mflops(flops_min):g} M"))
    return plot_cost_vs_score(
        history,
        [to_mflops(r["flops"]) for r in history],
        path,
        "FLOPs",
        f"backbone FLOPs (M multiply-adds at {image_size}×{image_size} px)",
        limits,
    )


def plot_cost_vs_score(
    history: Sequence[Mapping[str, Any]],
    costs: Sequence[float],
    path: Path,
    name: str,
    xlabel: str,
    limits: Sequence[tuple[float, str, str]] = (),
) -> Path:
    """Every candidate's cost (``costs``, in ``history``'s order) against its score (coloured by generation), the
    Pareto front (cheaper, higher score), the best candidate and each limit ``(x, line style, label)``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = list(costs)
    y = [r["score"] for r in history]
    generations = [r.get("generation", 0) + 1 for r in history]  # 1-based, as on the search curve
    count = max(generations, default=1)
    cmap = plt.get_cmap("viridis", count)
    points = ax.scatter(x, y, c=generations, cmap=cmap, vmin=0.5, vmax=count + 0.5, s=14, alpha=0.8, label="candidate")
    if count > 1:
        bar = fig.colorbar(points, ax=ax, label="generation")
        bar.set_ticks(range(1, count + 1, max(1, count // 10)))
    front = sorted(pareto_front([{"flops": c, "score": s} for c, s in zip(x, y)]), key=lambda i: (x[i], y[i]))
    if front:
        fx, fy = [x[i] for i in front], [y[i] for i in front]
        ax.plot(fx, fy, drawstyle="steps-post", color="C3", linewidth=1.2)
        ax.scatter(fx, fy, s=40, facecolors="none", edgecolors="C3", label=f"Pareto front ({len(front)})")
    finite = [i for i, score in enumerate(y) if not math.isnan(score)]
    if finite:
        best = max(finite, key=lambda i: y[i])
        ax.scatter([x[best]], [y[best]], marker="*", s=160, color="C1", edgecolors="black", zorder=3, label="best")
    for value, style, label in limits:
        ax.axvline(value, color="C3", linestyle=style, label=label)
    ax.set_title(f"{name} vs search-split {score_name(history[0]) if history else 'score'}, every candidate")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"search-split {score_name(history[0]) if history else 'score'}")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def _thinned(values: Sequence[Any]) -> Sequence[Any]:
    return values[:: max(1, len(values) // MAX_POINTS)]


def _smoothed(values: Sequence[float]) -> list[float]:
    """The exponential moving average the training loop shows (0.9 old, 0.1 new)."""
    out: list[float] = []
    for value in values:
        out.append(value if not out or math.isnan(out[-1]) else 0.9 * out[-1] + 0.1 * value)
    return out


def plot_training_curves(logs: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """One panel per phase (label → its log records): every ``*loss`` field per iteration (light) and
    smoothed (dark), the learning rate on the right axis."""
    plt = pyplot()
    columns = 2 if len(logs) > 1 else 1
    rows = max(1, math.ceil(len(logs) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.2 * rows), squeeze=False)
    for ax, (label, records) in zip(axes.flat, logs.items()):
        iterations = [r["iteration"] for r in records]
        keys = sorted({key for r in records for key in r if key.endswith("loss")})
        handles = []
        for index, key in enumerate(keys):
            values = [float(r.get(key, math.nan)) for r in records]
            ax.plot(_thinned(iterations), _thinned(values), color=f"C{index}", alpha=0.25, linewidth=0.8)
            (line,) = ax.plot(_thinned(iterations), _thinned(_smoothed(values)), color=f"C{index}", label=key)
            handles.append(line)
        if any("lr" in r for r in records):
            right = ax.twinx()
            (line,) = right.plot(
                _thinned(iterations),
                _thinned([r.get("lr", math.nan) for r in records]),
                color="grey",
                linestyle="--",
                linewidth=1,
                label="learning rate",
            )
            right.set_ylabel("learning rate", fontsize=8)
            right.tick_params(labelsize=7)
            handles.append(line)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("iteration (count)", fontsize=8)
        ax.set_ylabel("loss (light: per iteration)", fontsize=8)
        ax.tick_params(labelsize=7)
        if handles:
            ax.legend(handles=handles, loc="upper right", fontsize=7)
    for ax in list(axes.flat)[len(logs) :]:
        ax.axis("off")
    fig.suptitle("Training curves of every phase")
    return save_figure(fig, path)


def plot_random_models(
    results: Sequence[Mapping[str, Any]], path: Path, references: Mapping[str, Mapping[str, Any]] | None = None
) -> Path:
    """Fig. 3: each random architecture's test score against its FLOPs, their mean (± std band), and one
    line per reference network (label → a ``test.json``: the searched one, the baseline)."""
    plt = pyplot()
    references = references or {}
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    x = [to_mflops(r["flops"]) for r in results]
    y = [r["test"]["score"] for r in results]
    ax.scatter(x, y, s=24, color="C0", alpha=0.8, label=f"random architecture ({len(y)})")
    if y:
        mean = statistics.fmean(y)
        std = statistics.stdev(y) if len(y) > 1 else 0.0
        ax.axhline(mean, color="C0", linestyle="--", label=f"random mean {mean:.4f} (± std {std:.4f})")
        if std > 0:
            ax.axhspan(mean - std, mean + std, color="C0", alpha=0.1)
    for index, (label, result) in enumerate(references.items(), 1):
        colour, score = f"C{index}", result["test"]["score"]
        ax.axhline(score, color=colour, linestyle="-" if index == 1 else ":", label=f"{label} {score:.4f}")
        ax.scatter([to_mflops(result["flops"])], [score], marker="*", s=150, color=colour, edgecolors="black", zorder=3)
    sample = results[0] if results else next(iter(references.values()), {})
    name = score_name(sample) if sample else "score"
    ax.set_title(f"Random architectures vs the searched one: test {name}")
    ax.set_xlabel("backbone FLOPs (M multiply-adds)")
    ax.set_ylabel(f"test {name} (trained standalone)")
    # beside the axes: the reference lines span the plot, so a legend inside covers some point
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    return save_figure(fig, path)
