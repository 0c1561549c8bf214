"""The run's report in ``RUN_DIR/report/``: ``summary.json``, the paper's figures, ``summary.md`` and a table.

Written at the end of ``nasengine run`` and by ``nasengine report RUN_DIR [--compare OTHER_RUN]
[--random-baseline DIR]``. The figures (drawn by :mod:`nasengine.report.figures` and
:mod:`nasengine.report.arch_figure`):

- ``search_curve.png`` (Fig. 2): the top-k mean of every search on the supernet, a comparison search's
  (``search-random/``) beside the run's own;
- ``search_progress.png``: every candidate's score and the best so far;
- ``flops_vs_score.png``: every candidate, the Pareto front and the FLOPs constraint;
- ``architecture.png`` (Figs. 4–5): the found backbone block by block, and ``--compare``'s beside it;
- ``training_curves.png``: loss and learning rate of every training phase;
- ``random_models.png`` (Fig. 3, with ``--random-baseline``): random architectures against the searched one;
- ``rank_check.png``: drawn by ``nasengine rank-check`` (:mod:`nasengine.studies.rank_check`).

``summary.md`` (:mod:`nasengine.report.markdown`) embeds them beside the configuration, phase times and results.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

from nasengine import console, registry
from nasengine.arch import format_arch
from nasengine.errors import NasEngineError
from nasengine.protocol import distributed
from nasengine.report.arch_figure import Layout, plot_architectures, space_layout
from nasengine.report.constraints import collect_constraints, compared_costs, draw_cost_figures
from nasengine.report.figures import (
    plot_flops_vs_score,
    plot_random_models,
    plot_search_curve,
    plot_search_progress,
    plot_training_curves,
    score_name,
)
from nasengine.report.markdown import SEARCHED, format_mflops, protocol_order, write_summary_md
from nasengine.rundir.history import read_history
from nasengine.rundir.layout import DONE, LOG, PHASES, SUMMARY, RunLayout
from nasengine.rundir.lock import hold_run_lock
from nasengine.rundir.manifest import check_inputs, verify_run, write_done
from nasengine.rundir.records import read_json, write_json
from nasengine.rundir.training_log import read_training_log
from nasengine.settings import config as configuration
from nasengine.settings.config import RunConfig
from nasengine.studies.search_compare import comparison_k, search_comparison

RANDOM_BASELINE = "random_baseline.json"  # written by `nasengine random-baseline` into its folder
FIGURES = {
    "search_curve": "search_curve.png",
    "search_progress": "search_progress.png",
    "flops_vs_score": "flops_vs_score.png",
    "architecture": "architecture.png",
    "training_curves": "training_curves.png",
    "random_models": "random_models.png",
}


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
    rank_check = layout.rank_check_result
    if rank_check.exists():  # written by `nasengine rank-check`
        summary["rank_check"] = read_json(rank_check)
    constraints = collect_constraints(directory, configuration.load(layout.config), history, summary["retrain"])
    if constraints:  # a run limited by more than FLOPs
        summary["constraints"] = constraints
    comparison = search_comparison(directory)
    if comparison:  # after `nasengine search RUN_DIR --strategy random --budget-like evolution`
        summary["search_vs_random"] = comparison
    return summary


def open_run(directory: str | Path, option: str = "RUN_DIR") -> tuple[Path, RunConfig]:
    """A run directory and its configuration; a one-line error when it is not one."""
    directory = Path(directory)
    layout = RunLayout(directory)
    if not layout.config.is_file():
        raise NasEngineError(
            f"{option} {directory} is not a run directory (no {layout.config.name}); "
            "give the --out folder of a 'nasengine run'"
        )
    return directory, configuration.load(layout.config)


def read_random_baseline(directory: str | Path) -> dict[str, Any]:
    """``random_baseline.json`` of a ``nasengine random-baseline`` folder; a one-line error when it has none."""
    path = Path(directory) / RANDOM_BASELINE
    if not path.is_file():
        raise NasEngineError(
            f"--random-baseline {directory} has no {RANDOM_BASELINE}; give the --out folder of a finished "
            "'nasengine random-baseline'"
        )
    baseline = read_json(path)
    if not isinstance(baseline, dict) or not isinstance(baseline.get("results"), list):
        raise NasEngineError(f"{path} has no 'results' list; run 'nasengine random-baseline' again into that folder")
    return baseline


def report_run(
    directory: str | Path, compare: str | Path | None = None, random_baseline: str | Path | None = None
) -> Path:
    """``nasengine report``: check the folders and the run's files, take the run's lock (a run another process
    is writing is refused: it writes its report itself), write the report of the run in ``directory``, return
    the path of its ``summary.md``."""
    directory, config = open_run(directory)
    if compare is not None:
        found_architecture(*open_run(compare, "--compare"))  # fails early when it has none
    if random_baseline is not None:
        read_random_baseline(random_baseline)
        _check_same_problem(config, Path(random_baseline))
    with hold_run_lock(directory):
        verify_run(directory, report=False)
        # what the last report was made from is still there: a phase's deleted done.json is not noticed otherwise
        check_inputs(RunLayout(directory).report / DONE)
        write_report(
            directory,
            config.search.flops_max,
            compare=Path(compare) if compare is not None else None,
            random_baseline=Path(random_baseline) if random_baseline is not None else None,
        )
    return RunLayout(directory).report / "summary.md"


def _check_same_problem(config: RunConfig, baseline_dir: Path) -> None:
    path = RunLayout(baseline_dir).config
    if not path.is_file():
        return
    other = configuration.load(path)
    if (other.space, other.task) != (config.space, config.task):
        raise NasEngineError(
            f"--random-baseline {baseline_dir} trained {other.space} on {other.task}, but this run searched "
            f"{config.space} on {config.task}; give a baseline of the same space and task"
        )


def write_report(
    directory: Path,
    flops_max: float | None,
    *,
    compare: Path | None = None,
    random_baseline: Path | None = None,
) -> dict[str, Any]:
    """``report/summary.json``, the figures, ``report/summary.md`` and the summary table of the run in
    ``directory``; ``flops_max`` is the search's FLOPs limit, drawn on the FLOPs–score plot. ``compare``:
    another run whose architecture is drawn beside this one's; ``random_baseline``: a ``nasengine
    random-baseline`` folder whose models are plotted against the searched network (Fig. 3)."""
    layout = RunLayout(directory)
    if distributed.is_main():  # until the new report is whole, no manifest vouches for a file of it
        (layout.report / DONE).unlink(missing_ok=True)
    distributed.barrier()
    summary = collect(directory)
    if random_baseline is not None:
        baseline = read_random_baseline(random_baseline)
        summary["random_baseline"] = {**baseline, "folder": str(random_baseline)}
    if compare is not None:
        other, other_config = open_run(compare, "--compare")
        summary["compare"] = {
            "run": str(other),
            "search_on": other_config.search.on,
            **found_architecture(other, other_config),
        }
        if summary.get("constraints"):  # the other winner costed as this run's search costs its candidates
            costs = compared_costs(directory, configuration.load(layout.config), summary["compare"]["arch"])
            if costs is not None:
                summary["compare"]["costs"] = costs
    if distributed.is_main():
        out = layout.report
        write_json(summary, out / SUMMARY)
        figures = draw_figures(directory, flops_max, summary)
        write_summary_md(directory, summary, figures)
        made_from = [layout.done(folder.name) for folder in [*map(layout.folder, PHASES), *layout.search_folders()]]
        write_done(out, {"report": "summary.md"}, [done for done in dict.fromkeys(made_from) if done.is_file()])
        console.console.print(summary_table(directory, summary))
    return summary


def draw_figures(directory: Path, flops_max: float | None, summary: Mapping[str, Any]) -> dict[str, Path]:
    """Every figure the run's results allow, into ``report/``; ``{name: path}`` of those drawn."""
    layout = RunLayout(directory)
    config = configuration.load(layout.config)
    out = layout.report
    figures: dict[str, Path] = {}
    history = read_history(layout.history())
    if history:
        figures["search_progress"] = plot_search_progress(history, out / FIGURES["search_progress"])
        figures["flops_vs_score"] = plot_flops_vs_score(
            history,
            out / FIGURES["flops_vs_score"],
            config.search.flops_min,
            flops_max,
            config.search.flops_image_size,
        )
        if summary.get("constraints"):
            figures.update(draw_cost_figures(history, summary["constraints"], out))
        searches = search_histories(directory, config)
        k = comparison_k(config.search, *map(len, searches.values()))
        figures["search_curve"] = plot_search_curve(searches, k, out / FIGURES["search_curve"])
    rows = architecture_rows(directory, config, summary.get("compare"))
    if rows:
        figures["architecture"] = plot_architectures(rows, out / FIGURES["architecture"])
    logs = {label: read_training_log(path) for label, path in training_logs(directory).items()}
    logs = {label: records for label, records in logs.items() if records}
    if logs:
        figures["training_curves"] = plot_training_curves(logs, out / FIGURES["training_curves"])
    baseline = summary.get("random_baseline")
    if baseline is not None:
        figures["random_models"] = plot_random_models(
            baseline["results"], out / FIGURES["random_models"], reference_networks(directory)
        )
    return figures


def search_histories(directory: Path, config: RunConfig) -> dict[str, list[dict[str, Any]]]:
    """The candidates of every search on the run's supernet that has some, the run's own first, labelled by
    strategy (``search-<strategy>/`` folders by their suffix)."""
    layout = RunLayout(directory)
    searches = {}
    for folder in layout.search_folders():
        label = f"{config.search.strategy}, the run's search" if folder.name == "search" else _strategy(folder)
        history = read_history(folder / layout.history().name)
        if history:
            searches[label] = history
    return searches


def _strategy(folder: Path) -> str:
    """The strategy of a comparison search's folder (``search-random`` → ``random``)."""
    return folder.name.removeprefix("search-")


def found_architecture(directory: Path, config: RunConfig) -> dict[str, Any]:
    """The run's found architecture: ``arch``, ``flops`` and ``score`` (search split) from its search's
    ``best.json``, else the retrained ``best`` entry (a run given ``--arch``); ``test`` when retrained."""
    layout = RunLayout(directory)
    tests = layout.retrain_tests()
    found: dict[str, Any] = {}
    if layout.best().is_file():
        best = read_json(layout.best())
        found = {"arch": best["arch"], "flops": best["flops"], "score": best["score"], "metrics": best.get("metrics")}
    if SEARCHED in tests:
        tested = read_json(tests[SEARCHED])
        found = {"arch": tested["arch"], "flops": tested["flops"], **found, "test": tested["test"]}
    if not found:
        raise NasEngineError(
            f"{directory} has no found architecture yet (no search best.json, no retrained '{SEARCHED}'); "
            f"run 'nasengine search {directory}' first"
        )
    return found


def _space(config: RunConfig) -> Any:
    """The run's space, or None when its plugin cannot be loaded here (the drawing falls back)."""
    try:
        return registry.create("space", config.space, **config.space_options)
    except NasEngineError:
        return None


def architecture_rows(
    directory: Path, config: RunConfig, compare: Mapping[str, Any] | None
) -> dict[str, tuple[list[int], Layout]]:
    """The architectures to draw: the run's found one (if any) and ``compare``'s, each labelled."""
    try:
        found = found_architecture(directory, config)
    except NasEngineError:
        return {}
    if compare is None:
        return {_row_label(directory.name, config, found): (found["arch"], space_layout(_space(config), found["arch"]))}
    other = Path(compare["run"])
    other_config = configuration.load(RunLayout(other).config)
    names = [directory.name, other.name]
    if names[0] == names[1]:  # e.g. runs/detection/seed0 and runs/classification/seed0
        names = ["/".join(path.resolve().parts[-2:]) for path in (directory, other)]
    return {
        _row_label(names[0], config, found): (found["arch"], space_layout(_space(config), found["arch"])),
        _row_label(names[1], other_config, compare): (
            compare["arch"],
            space_layout(_space(other_config), compare["arch"]),
        ),
    }


def _row_label(name: str, config: RunConfig, found: Mapping[str, Any]) -> str:
    on = config.task if config.search.on == "detection" else config.pretrain_task
    parts = [f"{name}: searched on {config.search.on} ({on})"]
    parts.append(f"{format_mflops(found['flops'])} MFLOPs")
    if "score" in found:
        parts.append(f"search {score_name(found)} {found['score']:.4f}")
    if "test" in found:
        parts.append(f"test {score_name({'test': found['test']})} {found['test']['score']:.4f}")
    return ", ".join(parts)


def training_logs(directory: Path) -> dict[str, Path]:
    """``{phase folder relative to the run: its log.jsonl}`` of every training phase (supernet phases, the
    distillation teacher, retrained networks), in protocol order."""
    layout = RunLayout(directory)
    found = [path for phase in PHASES if layout.folder(phase).is_dir() for path in layout.folder(phase).rglob(LOG)]
    folders = sorted((path.parent.relative_to(layout.root) for path in found), key=lambda f: protocol_order(f.parts))
    return {folder.as_posix(): layout.log(folder.as_posix()) for folder in folders}


def reference_networks(directory: Path) -> dict[str, dict[str, Any]]:
    """The run's retrained networks to set beside random models, the searched one first (``searched``)."""
    tests = RunLayout(directory).retrain_tests()
    labelled = {("searched" if label == SEARCHED else label): read_json(path) for label, path in tests.items()}
    return dict(sorted(labelled.items(), key=lambda item: item[0] != "searched"))


def summary_table(directory: Path, summary: dict[str, Any]) -> Table:
    """The retrained networks side by side; architectures and all test metrics in the caption."""
    table = Table(title=f"nasengine run {directory}", title_justify="left", caption_justify="left")
    constraints = summary.get("constraints") or {"limits": {}, "retrained_text": {}}
    measured = [name for name in constraints["limits"] if name != "flops"]
    for column in ("network", "MFLOPs", "params (M)", *(f"{name} measured" for name in measured)):
        table.add_column(column, justify="left" if column == "network" else "right")
    for column in ("search score", "test score"):
        table.add_column(column, justify="right")
    best = summary.get("search_best")
    notes = []
    for label, result in summary.get("retrain", {}).items():
        search_score = f"{best['score']:.4f}" if label == SEARCHED and best else ""
        texts = constraints["retrained_text"].get(label, {})
        table.add_row(
            label,
            f"{result['flops'] / 1e6:.1f}",
            f"{result['params'] / 1e6:.2f}",
            *(texts.get(name, {}).get("measured", "") for name in measured),
            search_score,
            f"{result['test']['score']:.4f}",
        )
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in result["test"].items() if k != "score")
        notes.append(f"{label}: {result['arch_text']}\n  test {metrics}")
    if best and not summary.get("retrain"):
        blank = ["" for _ in measured]
        table.add_row(
            "best (search)",
            f"{best['flops'] / 1e6:.1f}",
            f"{best['params'] / 1e6:.2f}",
            *blank,
            f"{best['score']:.4f}",
            "",
        )
        notes.append(f"best (search): {format_arch(best['arch'])}")
    table.caption = "\n".join(notes)
    return table
