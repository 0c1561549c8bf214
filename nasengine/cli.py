"""The ``nasengine`` command line (click + rich).

Every user-facing problem is a :class:`NasEngineError`, printed as one ``error:`` line with exit code 2.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from nasengine import console as out
from nasengine import registry
from nasengine.arch import compact_arch, format_arch, parse_arch
from nasengine.errors import NasEngineError
from nasengine.protocol import distributed
from nasengine.rundir.layout import CONFIG, PHASES, RunLayout
from nasengine.settings import defaults
from nasengine.settings.key_values import parse_pairs

print_ = out.console.print


def _space(name: str, options: tuple[str, ...]):
    from nasengine.testing import check_space_attributes

    space = registry.create("space", name, **parse_pairs(options, "--space-option"))
    check_space_attributes(space)  # a plugin without `named` (say) is one line, not an AttributeError
    return space


def _task(name: str, data_root: str | None, options: tuple[str, ...]):
    kwargs = parse_pairs(options, "--task-option")
    if data_root:
        kwargs["data_root"] = data_root
    return registry.create("task", name, **kwargs)


space_option = click.option(
    "--space-option",
    "space_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the space, e.g. width=3.8G (repeatable).",
)
task_option = click.option(
    "--task-option",
    "task_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the task, e.g. min_size=800 (repeatable).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nasengine")
def cli() -> None:
    """Neural-architecture search for object-detection backbones (the DetNAS protocol)."""


# --- plugins ------------------------------------------------------------------------------------
@cli.command("list")
def list_plugins() -> None:
    """Every registered space, task and strategy, with its description and where it comes from."""
    for kind in registry.GROUPS:
        table = Table(title=registry.PLURALS[kind], title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        table.add_column("from")
        for name, plugin in registry.plugins(kind).items():
            description = plugin.description if plugin.cls else f"[red]{plugin.description}[/red]"
            table.add_row(name, description, f"{plugin.source} ({plugin.target})")
        print_(table)


@cli.command()
@click.option("--space", "space_name", required=True, help="Search space name (see 'nasengine list').")
@click.option("--arch", required=True, help="Choice indices '2,1,2,...' or a named architecture.")
@click.option(
    "--image-size", default=224, show_default=True, type=click.IntRange(min=32), help="Square input size for the count."
)
@click.option("--json", "as_json", is_flag=True, help='Print {"flops": int, "params": int} only.')
@space_option
def flops(space_name: str, arch: str, image_size: int, as_json: bool, space_options: tuple[str, ...]) -> None:
    """FLOPs (multiply-accumulates of the backbone, via fvcore) and parameters of one architecture."""
    from nasengine.flops import cost_of

    space = _space(space_name, space_options)
    parsed = parse_arch(arch, space.choices, space.named)
    count, params = cost_of(space, parsed, image_size).flops, cost_of(space, parsed).params
    if as_json:
        click.echo(json.dumps({"flops": count, "params": params}))
        return
    print_(f"{space.name} {format_arch(parsed)}")
    print_(f"FLOPs (MACs at {image_size}x{image_size}): {count:,}  ({count / 1e6:.1f}M)")
    print_(f"parameters: {params:,}  ({params / 1e6:.2f}M)")


@cli.command("space")
@click.argument("name")
@click.option(
    "--image-size", default=224, show_default=True, type=click.IntRange(min=32), help="Input size for the FLOPs range."
)
@space_option
def show_space(name: str, image_size: int, space_options: tuple[str, ...]) -> None:
    """Positions, choices, size, FLOPs range and named architectures of a space."""
    from nasengine.flops import cost_of
    from nasengine.protocol.search import known_flops_range

    space = _space(name, space_options)
    known = known_flops_range(space, image_size)
    print_(f"[bold]{space.name}[/bold] — {space.description}")
    counts = sorted(set(space.choices))
    choice_text = f"{counts[0]}" if len(counts) == 1 else "/".join(map(str, counts))
    exponent = f"{counts[0]}^{len(space.choices)} ≈ " if len(counts) == 1 else ""
    print_(f"positions: {len(space.choices)}, choices per position: {choice_text}")
    print_(f"space size: {exponent}{float(space.size):.2e} architectures")
    print_(f"feature maps: {space.out_channels} channels")
    if known:
        low, high = known
        print_(f"FLOPs at {image_size}px: min {low:,} ({low / 1e6:.1f}M), max {high:,} ({high / 1e6:.1f}M)")
    else:
        print_(f"FLOPs at {image_size}px: range unknown (the space does not implement cost_parts)")
    table = Table(title="named architectures", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("architecture")
    table.add_column("FLOPs", justify="right")
    for arch_name, arch in space.named.items():
        table.add_row(arch_name, compact_arch(arch), f"{cost_of(space, arch, image_size).flops:,}")
    print_(table)


@cli.command("check")
@click.option("--space", "space_name", default=None, help="Check this space (nasengine.testing.check_space).")
@space_option
@click.option("--task", "task_name", default=None, help="Check this task (nasengine.testing.check_task).")
@task_option
@click.option(
    "--strategy", "strategy_name", default=None, help="Check this strategy (nasengine.testing.check_strategy)."
)
@click.option(
    "--constraint",
    "constraint_name",
    default=None,
    help="Check this constraint on --space (nasengine.testing.check_constraint).",
)
def check(
    space_name: str | None,
    space_options: tuple[str, ...],
    task_name: str | None,
    task_options: tuple[str, ...],
    strategy_name: str | None,
    constraint_name: str | None,
) -> None:
    """Conformance checks of registered plugins: one line per check passed, or one error line.

    A space is checked for detection (four feature maps at strides 4/8/16/32) unless --task names a
    classification task; with --space, the task is checked on the space's baseline network.
    """
    from nasengine import testing
    from nasengine.interfaces import implements

    for given, option, name in (
        (space_options, "--space-option", space_name),
        (task_options, "--task-option", task_name),
    ):
        if given and not name:
            raise NasEngineError(f"{option} needs the plugin it is for: add {option.rsplit('-', 1)[0]} NAME")
    if not (space_name or task_name or strategy_name or constraint_name):
        raise NasEngineError(
            "nothing to check; give --space S, --task T, --strategy G and/or --constraint C (see 'nasengine list')"
        )
    if constraint_name and not space_name:
        raise NasEngineError(f"--constraint {constraint_name} is checked on a space: add --space S")
    space = _space(space_name, space_options) if space_name else None
    task = _task(task_name, None, task_options) if task_name else None
    if space is not None:
        detection = task is None or task.kind == "detection"
        testing.check_space(space, detection=detection)
        maps = "4 feature maps at strides 4/8/16/32" if detection else f"{len(space.out_channels)} feature maps"
        flops = "FLOPs table = full trace" if implements(space, "cost_parts") else "FLOPs by full trace"
        _passed(f"space {space.name}: attributes, supernet = extracted network, {maps}, {flops}")
    if task is not None:
        backbone = out_channels = None
        if space is not None:
            baseline = space.named.get(space.baseline_name or "", (0,) * len(space.choices))
            backbone, out_channels = space.build_network(baseline), space.out_channels
        testing.check_task(task, backbone=backbone, out_channels=out_channels)
        on = f"{space.name}'s baseline network" if space is not None else "a tiny backbone"
        _passed(f"task {task.name} ({task.kind}): batches, loss with gradient, evaluate's score, on {on}")
    if strategy_name:
        testing.check_strategy(registry.get("strategy", strategy_name))
        _passed(f"strategy {strategy_name}: legal, new, constrained asks; finishes; replays exactly; seeded")
    if constraint_name and space is not None:
        testing.check_constraint(registry.create("constraint", constraint_name), space)
        _passed(f"constraint {constraint_name} on {space.name}: costs finite, deterministic, kept across a resume")


def _passed(line: str) -> None:
    print_(f"[green]✓[/green] {line}", soft_wrap=True)


# --- data ---------------------------------------------------------------------------------------
@cli.group()
def data() -> None:
    """Look at a task's data."""


@data.command("show")
@click.argument("task_name")
@click.option("--split", default="train", show_default=True, help="train, search, test or calib.")
@click.option("--out", "out_path", default=None, help="PNG to write (default: <task>-<split>.png).")
@click.option("--count", default=16, show_default=True, type=click.IntRange(min=1), help="Number of images to draw.")
@click.option("--data-root", default=None, help="The task's data folder (default: its embedded data).")
@task_option
def data_show(
    task_name: str, split: str, out_path: str | None, count: int, data_root: str | None, task_options
) -> None:
    """Draw a grid of images with their boxes and class names."""
    from nasengine.report.data_grid import draw_detection_grid

    task = _task(task_name, data_root, task_options)
    _check_split(task, split)
    path = draw_detection_grid(task, split, Path(out_path or f"{task_name}-{split}.png"), count=count)
    print_(f"wrote {path}")


@data.command("stats")
@click.argument("task_name")
@click.option("--data-root", default=None, help="The task's data folder (default: its embedded data).")
@task_option
def data_stats(task_name: str, data_root: str | None, task_options) -> None:
    """Counts of images (and objects) per split and class."""
    from nasengine.interfaces import implements

    task = _task(task_name, data_root, task_options)
    if not implements(task, "split_stats"):
        raise NasEngineError(f"task {task_name!r} does not report split statistics (it does not implement split_stats)")
    stats = {split: task.split_stats(split) for split in task.splits}
    keys = list(dict.fromkeys(key for counts in stats.values() for key in counts))
    table = Table(title=f"{task_name}", title_justify="left")
    table.add_column("")
    for split in stats:
        table.add_column(split, justify="right")
    for key in keys:
        table.add_row(key, *(f"{stats[s].get(key, 0):,}" for s in stats))
    print_(table)


def _check_split(task, split: str) -> None:
    if split not in task.splits:
        raise NasEngineError(f"unknown split {split!r}; {task.name} has: {', '.join(task.splits)}")


# --- the protocol -------------------------------------------------------------------------------
def _presets_help() -> str:
    """``paper, demo (default) or smoke``, from the presets table."""
    names = [f"{name} (default)" if name == defaults.DEFAULT_PRESET else name for name in defaults.PRESETS]
    return (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]) + "."


def _run_options(function):
    options = [
        click.option("--space", "space", default=None, help=f"Search space [default: {defaults.DEFAULT_SPACE}]."),
        click.option(
            "--task", "task", default=None, help=f"Detection task to search for [default: {defaults.DEFAULT_TASK}]."
        ),
        click.option("--strategy", default=None, help=f"Search strategy [default: {defaults.DEFAULT_STRATEGY}]."),
        click.option(
            "--pretrain-task",
            default=None,
            help=f"Classification task for supernet pre-training [default: {defaults.DEFAULT_PRETRAIN_TASK}].",
        ),
        click.option("--data-root", default=None, help="Detection data folder (default: embedded data)."),
        click.option("--pretrain-data-root", default=None, help="Pre-training data folder."),
        click.option(
            "--flops-max",
            type=float,
            default=None,
            help="Max backbone MACs at 224px [default: the space's default_flops_max].",
        ),
        click.option("--flops-min", type=float, default=None, help="Min backbone MACs at 224px [default: 0]."),
        click.option(
            "--latency-max",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Max backbone latency in ms (search.constraints.latency.max), beside the FLOPs limit.",
        ),
        click.option(
            "--latency-table",
            type=click.Path(),
            default=None,
            help="Latency table measured on another device ('nasengine latency build') [default: measured here].",
        ),
        click.option("--preset", default=None, help=_presets_help()),
        click.option(
            "--config", "config_file", default=None, type=click.Path(), help="TOML file with any config values."
        ),
        click.option("--seed", type=int, default=None, help="Seed of everything random [default: 0]."),
        click.option(
            "--no-pretrain", is_flag=True, default=False, help="DetNAS-scratch: no pre-training, 2x fine-tuning."
        ),
        click.option(
            "--search-on",
            type=click.Choice(["detection", "classification"]),
            default=None,
            help="classification gives the ClsNASNet variant.",
        ),
        click.option(
            "--set",
            "settings",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any config value, e.g. search.strategy_options.population=20.",
        ),
        click.option(
            "--procs",
            type=click.IntRange(min=1),
            default=None,
            help="Processes the run spans, all nodes together [default: one per GPU, 1 on a CPU].",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help="Torch threads per process [default: the cores shared out over the processes].",
        ),
        space_option,
        task_option,
    ]
    function = _launch_options(function)  # listed after --procs and --threads
    for option in reversed(options):
        function = option(function)
    return function


def _launch_options(function):
    """How the ranks of a command are started (every command that trains or searches a run)."""
    options = [
        click.option(
            "--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes the processes span."
        ),
        click.option("--rdzv-endpoint", default=None, metavar="HOST:PORT", help="Rendezvous of several nodes."),
        click.option("--rdzv-id", default=None, help="The job's name at the rendezvous (the same on every node)."),
        click.option(
            "--max-restarts",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Restart the processes this often after one is lost; they continue from the last checkpoint.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _launched(directory: Path, config, kw: dict[str, Any], redo: str | None = None) -> bool:
    """Start this very command as the run's ranks (then True: the caller is done) unless this process is one of
    them or the run has one process. The layout is the run's (``procs`` and ``threads`` in its config.toml)
    or, for a new run, what was asked for or the machine's default; a conflicting one, and any input the run's
    checks refuse, is one line here, before any rank starts. ``redo``: the phase the command redoes."""
    from nasengine import launch
    from nasengine.protocol.engine import Run, settle_config
    from nasengine.settings import config as configuration

    if launch.inside_launcher():
        return False
    how = launch.Launch(kw["nodes"], kw["rdzv_endpoint"], kw["rdzv_id"], kw["max_restarts"])
    saved = configuration.load(Path(directory) / CONFIG) if (Path(directory) / CONFIG).is_file() else None
    if config.procs is None:
        config.procs = saved.procs if saved is not None and saved.procs else launch.default_procs() * how.nodes
    if config.procs == 1 and how.nodes == 1:
        return False  # this process is the run (its configuration is completed and checked by Run.create)
    if config.threads is None:
        config.threads = saved.threads if saved is not None else launch.default_threads(config.procs // how.nodes)
    settle_config(Path(directory), config)
    Run(directory, config).check(redo)  # bad input is one line here, not one per rank after the launch
    launch.launch(sys.argv[1:], config.procs, config.threads, how)
    return True


def _overrides(kw: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = parse_pairs(kw.get("settings", ()), "--set")
    for key in ("space", "task", "pretrain_task", "preset", "seed", "procs", "threads"):
        if kw.get(key) is not None:
            overrides[key] = kw[key]
    search = overrides.setdefault("search", {})
    if not isinstance(search, dict):
        raise NasEngineError(
            f"config key search must be a table of settings (e.g. --set search.batch_size=8), not {search!r}"
        )
    for key, value in (
        ("strategy", kw.get("strategy")),
        ("flops_max", kw.get("flops_max")),
        ("flops_min", kw.get("flops_min")),
        ("on", kw.get("search_on")),
    ):
        if value is not None:
            search[key] = value
    latency = {"max": kw.get("latency_max"), "table": kw.get("latency_table")}
    if any(value is not None for value in latency.values()):
        constraints = search.setdefault("constraints", {})
        if not isinstance(constraints, dict) or not isinstance(constraints.setdefault("latency", {}), dict):
            raise NasEngineError(
                "search.constraints.latency must be a table (e.g. --set search.constraints.latency.max=12)"
            )
        constraints["latency"].update({k: v for k, v in latency.items() if v is not None})
    if kw.get("no_pretrain"):
        overrides["pretrain"] = False
    if kw.get("space_options"):
        overrides["space_options"] = parse_pairs(kw["space_options"], "--space-option")
    task_options = parse_pairs(kw.get("task_options", ()), "--task-option")
    if kw.get("data_root"):
        task_options["data_root"] = kw["data_root"]
    if task_options:
        overrides["task_options"] = task_options
    if kw.get("pretrain_data_root"):
        overrides.setdefault("pretrain_task_options", {})["data_root"] = kw["pretrain_data_root"]
    return overrides


def _default_out(config) -> Path:
    return Path("runs") / f"{config.space}-{config.task}-{config.search.strategy}-{config.preset}-seed{config.seed}"


@cli.command()
@_run_options
@click.option(
    "--out",
    "out_dir",
    default=None,
    help="Run directory; rerunning continues it (--out alone: with its own config.toml) [default: runs/<space>-...].",
)
@click.option("--arch", default=None, help="Skip the search and retrain this architecture.")
@click.option(
    "--redo",
    default=None,
    type=click.Choice(PHASES),
    metavar="PHASE",
    help=f"Redo PHASE ({', '.join(PHASES)}) and what depends on it, e.g. after a corrupt checkpoint.",
)
@click.option("--quiet", is_flag=True, help="Log lines instead of progress bars.")
def run(out_dir: str | None, arch: str | None, redo: str | None, quiet: bool, **kw: Any) -> None:
    """The whole protocol: pre-train → fine-tune → search → retrain and test → report."""
    from nasengine.protocol.engine import Run
    from nasengine.settings import config as configuration

    out.set_quiet(quiet)
    overrides = _overrides(kw)
    saved = Path(out_dir) / CONFIG if out_dir else None
    if saved is not None and saved.is_file() and not kw.get("config_file") and overrides == {"search": {}}:
        config = configuration.load(saved)  # `nasengine run --out RUN_DIR` alone continues that run as it began
    else:
        config = configuration.resolve(overrides=overrides, file=kw.get("config_file"))
    directory = out_dir or _default_out(config)
    space = registry.create("space", config.space, **config.space_options)
    parsed = parse_arch(arch, space.choices, space.named) if arch else None
    if _launched(Path(directory), config, kw, redo):
        return
    run_ = Run.create(directory, config, redo)
    if redo:
        run_.redo(redo)
    out.log(f"run directory: {run_.dir}")
    run_.run_all(parsed)
    if distributed.is_main():
        board = f"tensorboard --logdir {run_.dir.parent}"
        print_(f"report: {run_.layout.report / 'summary.md'} (figures beside it; TensorBoard: {board})", soft_wrap=True)


def _phase_command(phase: str, help_text: str):
    @click.argument("run_dir", type=click.Path())
    @click.option("--redo", is_flag=True, help=f"Redo the {phase} phase even if it finished, and what depends on it.")
    @click.option("--quiet", is_flag=True, help="Log lines instead of progress bars.")
    def command(run_dir: str, redo: bool, quiet: bool, **kw: Any) -> None:
        from nasengine.protocol.engine import Run

        out.set_quiet(quiet)
        run_ = Run.open(run_dir)
        arch = kw.get("arch")
        parsed = parse_arch(arch, run_.space.choices, run_.space.named) if arch else None
        if _launched(run_.dir, run_.config, kw, phase if redo else None):
            return
        run_.start(phase if redo else None)
        if redo:
            run_.redo(phase)
        if phase == "retrain":
            run_.retrain(parsed)
            from nasengine.report.build import write_report

            write_report(run_.dir, run_.config.search.flops_max)
        else:
            getattr(run_, phase)()

    command.__doc__ = help_text
    command = _launch_options(command)
    if phase == "retrain":
        command = click.option("--arch", default=None, help="Retrain this architecture instead of the search's best.")(
            command
        )
    return cli.command(phase)(command)


_phase_command("pretrain", "Phase 1: pre-train the supernet of RUN_DIR on its classification task.")
_phase_command("finetune", "Phase 2: fine-tune the supernet of RUN_DIR on its detection task.")
_phase_command("retrain", "Phase 4: retrain the best (or --arch) architecture alone and test it.")


@cli.command("search")
@click.argument("run_dir", type=click.Path())
@click.option(
    "--strategy",
    default=None,
    help=f"A second search with this strategy (e.g. {defaults.RANDOM_STRATEGY}) on the same trained supernet, into "
    "RUN_DIR/search-<strategy>/; the run's own search/ is left alone. Needs --budget-like.",
)
@click.option(
    "--budget-like",
    default=None,
    metavar="STRATEGY",
    help=f"Give --strategy as many candidates as the run's own STRATEGY search (e.g. {defaults.DEFAULT_STRATEGY}).",
)
@click.option("--redo", is_flag=True, help="Redo the search even if it finished, and what depends on it.")
@click.option("--quiet", is_flag=True, help="Log lines instead of progress bars.")
@_launch_options
def search(run_dir: str, strategy: str | None, budget_like: str | None, redo: bool, quiet: bool, **kw: Any) -> None:
    """Phase 3: search on the trained supernet of RUN_DIR (or, with --strategy, a comparison search)."""
    from nasengine.protocol.engine import Run

    out.set_quiet(quiet)
    run_ = Run.open(run_dir)
    redoing = "search" if redo and strategy is None else None
    if _launched(run_.dir, run_.config, kw, redoing):
        return
    run_.start(redoing)
    if strategy is None:
        if budget_like is not None:
            raise NasEngineError(
                f"--budget-like sizes a second search; give it with --strategy (e.g. --strategy "
                f"{defaults.RANDOM_STRATEGY})"
            )
        if redo:
            run_.redo("search")
        run_.search()
        return
    if redo:
        raise NasEngineError(
            f"--redo redoes the run's own search; delete {run_.dir}/search-{strategy} to redo that one"
        )
    if budget_like is None:
        raise NasEngineError(
            f"--strategy {strategy} needs --budget-like STRATEGY to set its number of candidates "
            f"(this run searches with {run_.config.search.strategy})"
        )
    from nasengine.protocol import distributed
    from nasengine.report.build import FIGURES, write_report
    from nasengine.studies.search_compare import budget_matched_options, comparison_table, search_comparison

    options = budget_matched_options(run_.space.choices, run_.config.search, strategy, budget_like, run_.config.seed)
    run_.search(strategy, options)
    write_report(run_.dir, run_.config.search.flops_max)  # its search curve draws every search on the supernet
    if not distributed.is_main():
        return
    plot = run_.layout.report / FIGURES["search_curve"]
    comparison = search_comparison(run_.dir, strategy)
    if comparison:
        print_(comparison_table(comparison))
        print_(f"plot: {plot}")
    else:
        print_(f"no comparison yet: {run_.dir / 'search'} has no candidates; run 'nasengine search {run_.dir}'")


@cli.command("random-baseline")
@_run_options
@click.option("-n", "count", default=20, show_default=True, help="Number of random architectures.")
@click.option(
    "--out", "out_dir", default=None, help="Folder for the baseline [default: runs/random-baseline-<space>-<task>-...]."
)
@click.option(
    "--compare",
    "compare_dir",
    default=None,
    type=click.Path(),
    help="A run directory whose searched network to set beside it.",
)
@click.option("--quiet", is_flag=True, help="Log lines instead of progress bars.")
def random_baseline(count: int, out_dir: str | None, compare_dir: str | None, quiet: bool, **kw: Any) -> None:
    """The paper's Table 5 baseline: N random architectures in the constraint, each trained fully and tested."""
    from nasengine.settings import config as configuration
    from nasengine.studies.random_baseline import run_random_baseline

    out.set_quiet(quiet)
    config = configuration.resolve(overrides=_overrides(kw), file=kw.get("config_file"))
    directory = Path(out_dir) if out_dir else Path("runs") / f"random-baseline-{_default_out(config).name}"
    if _launched(directory, config, kw):
        return
    run_random_baseline(config, directory, count, Path(compare_dir) if compare_dir else None)


@cli.command("rank-check")
@click.argument("run_dir", type=click.Path())
@click.option(
    "-n",
    "--count",
    default=8,
    show_default=True,
    type=click.IntRange(min=2),
    help="Candidates to train alone, spread over the search's score range (best and worst included).",
)
@click.option(
    "--schedule-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Fraction of the run's pre-training and fine-tuning iterations to train each candidate for.",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also check the space's baseline (scored on the supernet as the search would, trained alone the same way).",
)
@click.option("--quiet", is_flag=True, help="Log lines instead of progress bars.")
@_launch_options
def rank_check(run_dir: str, count: int, schedule_scale: float, baseline: bool, quiet: bool, **kw: Any) -> None:
    """Does the supernet rank like standalone training? Kendall's tau and Spearman's rho of N candidates
    (and the space's baseline)."""
    from nasengine.protocol.engine import Run
    from nasengine.studies.rank_check import run_rank_check

    out.set_quiet(quiet)
    if _launched(Path(run_dir), Run.open(run_dir).config, kw):
        return
    run_rank_check(run_dir, count, schedule_scale, with_baseline=baseline)


@cli.command("report")
@click.argument("run_dir", type=click.Path())
@click.option(
    "--compare",
    "compare_dir",
    default=None,
    type=click.Path(),
    help="Another run whose found architecture to draw beside this one's (e.g. searched on classification).",
)
@click.option(
    "--random-baseline",
    "baseline_dir",
    default=None,
    type=click.Path(),
    help="A 'nasengine random-baseline' folder: plot its models against this run's searched network.",
)
def report(run_dir: str, compare_dir: str | None, baseline_dir: str | None) -> None:
    """The run's report and the paper's figures in RUN_DIR/report/ (summary.md embeds them)."""
    from nasengine.report.build import report_run

    summary = report_run(run_dir, compare_dir, baseline_dir)
    print_(f"report: {summary} (figures beside it in {summary.parent})", soft_wrap=True)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--top", default=10, show_default=True, help="How many of the best candidates to list.")
def show(run_dir: str, top: int) -> None:
    """Phases done, best candidates and test metrics of a run."""
    from nasengine.report.build import collect, summary_table
    from nasengine.rundir.history import generation_label, read_history
    from nasengine.rundir.manifest import verify_run

    directory = Path(run_dir)
    layout = RunLayout(directory)
    if not layout.config.exists():
        raise NasEngineError(f"{directory} is not a run directory (no config.toml)")
    verify_run(directory)
    summary = collect(directory)
    print_(_layout_line(directory))
    print_(_limits_line(directory))
    phases = Table(title="phases", title_justify="left")
    phases.add_column("phase")
    phases.add_column("status")
    for phase, info in summary["phases"].items():
        status = "not done"
        if info is not None:
            status = "done" + (f" in {info['seconds']}s" if "seconds" in info else "")
        elif layout.folder(phase).exists():
            status = "started"
        phases.add_row(phase, status)
    print_(phases)
    history = sorted(read_history(layout.history()), key=lambda r: -r["score"])
    if history:
        table = Table(title=f"best {min(top, len(history))} of {len(history)} candidates", title_justify="left")
        others = [name for name in history[0].get("costs", {}) if name != "flops"]
        units = {name: getattr(registry.plugins("constraint").get(name), "cls", None) for name in others}
        headers = [f"{name} ({getattr(units[name], 'unit', '')})".replace(" ()", "") for name in others]
        for column in ("rank", "architecture", "FLOPs", *headers, "score", "generation (1 = first)"):
            table.add_column(column)
        for index, record in enumerate(history[:top], 1):
            table.add_row(
                str(index),
                compact_arch(record["arch"]),
                f"{record['flops']:,}",
                *(f"{record['costs'][name]:.4g}" for name in others),
                f"{record['score']:.4f}",
                generation_label(record),
            )
        print_(table)
    if summary["retrain"]:
        print_(summary_table(directory, summary))
    if summary.get("search_vs_random"):
        from nasengine.studies.search_compare import comparison_table

        print_(comparison_table(summary["search_vs_random"]))
    if summary.get("rank_check"):
        from nasengine.studies.rank_check import rank_agreement_line

        check = summary["rank_check"]
        print_(f"rank check (schedules x{check['schedule_scale']:g}): {rank_agreement_line(check)}")


def _limits_line(directory: Path) -> str:
    """``limits: flops ≤ 300.0 M MACs (image_size 224); latency ≤ 12.00 ms (batch 1)`` from a run's config.toml."""
    from nasengine.protocol.limits import configured_limits
    from nasengine.report.constraints import cost_formatter
    from nasengine.settings import config as configuration

    texts = []
    for name, bounds in configured_limits(configuration.load(RunLayout(directory).config).search).items():
        format_value = cost_formatter(name, bounds["options"])
        text = f"{name} ≤ {format_value(bounds['max'])}" if bounds["max"] != float("inf") else f"{name} unlimited"
        if bounds["min"]:
            text += f", ≥ {format_value(bounds['min'])}"
        options = ", ".join(f"{k} {v}" for k, v in bounds["options"].items() if v is not None)
        texts.append(text + (f" ({options})" if options else ""))
    return "limits: " + "; ".join(texts)


def _layout_line(directory: Path) -> str:
    """``layout: 2 processes x 1 torch thread, fp32 training`` from a run's config.toml (what a run of an earlier
    nasengine did not record is said so)."""
    from nasengine.settings import config as configuration

    config = configuration.load(RunLayout(directory).config)
    procs = f"{config.procs} process{'es' if config.procs != 1 else ''}" if config.procs else "processes not recorded"
    threads = (
        f"{config.threads} torch thread{'s' if config.threads != 1 else ''}"
        if config.threads
        else "threads not recorded"
    )
    precision = "fp32" if config.precision == "auto" else config.precision
    return f"layout: {procs} x {threads}, {precision} training"


@cli.group()
def latency() -> None:
    """Latency tables: every choice at every position of a space, timed on this machine."""


@latency.command("build")
@click.option("--space", "space_name", required=True, help="Search space name (see 'nasengine list').")
@space_option
@click.option(
    "--image-size",
    type=click.IntRange(min=32),
    required=True,
    help="Side of the square images the backbone gets (a detection task's min_size; 64 in the demo).",
)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if present), cpu, cuda or cuda:N.")
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Torch threads [default: this process's count]."
)
@click.option("--out", "out_file", required=True, type=click.Path(), help="The table file to write (JSON).")
def latency_build(
    space_name: str,
    space_options: tuple[str, ...],
    image_size: int,
    batch: int,
    device: str,
    threads: int | None,
    out_file: str,
) -> None:
    """Measure a latency table on this machine and write it to --out, for searches run elsewhere
    (--latency-table FILE, or search.constraints.latency.table)."""
    from nasengine.latency import latency_table, resolve_device, torch_threads
    from nasengine.rundir.records import write_json

    space = _space(space_name, space_options)
    with torch_threads(threads):
        table = latency_table(space, image_size, batch=batch, device=resolve_device(device), quiet=True)
    out = Path(out_file)
    if out.is_dir():
        raise NasEngineError(f"--out {out} is a folder; give the table's file name, e.g. {out / 'latency.json'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(table.to_json(), out)
    low, high = table.latency_range()
    print_(f"latency table: {table.describe()}", soft_wrap=True)
    print_(f"the space spans {low:.2f} to {high:.2f} ms (whole-network overhead {table.overhead_ms:+.2f} ms)")
    print_(f"written to {out}; search under it with --latency-table {out} --latency-max MS", soft_wrap=True)


@latency.command("measure")
@click.argument("run_dir", type=click.Path())
def latency_measure(run_dir: str) -> None:
    """Time the retrained networks of RUN_DIR on this machine as the run's table was timed (its threads, batch and
    image size), beside the table's prediction and the limit. Writes nothing: run it on the deployment machine."""
    import torch

    from nasengine.latency import device_name
    from nasengine.protocol.engine import Run
    from nasengine.rundir.layout import LATENCY_TABLE
    from nasengine.rundir.manifest import verify_run
    from nasengine.rundir.retrained import load_retrained, retrained_entries

    directory = Path(run_dir)
    verify_run(directory)
    run = Run.open(directory)
    if "latency" not in run.config.search.constraints:
        raise NasEngineError(f"{directory} searched without a latency limit; its networks have no latency table")
    if not (run.layout.folder("search") / LATENCY_TABLE).is_file():
        raise NasEngineError(f"{directory} has no latency table yet: its search has not started (nasengine search)")
    limit = run.limits["latency"]
    entries = retrained_entries(directory)
    if not entries:
        raise NasEngineError(f"{directory} has no retrained network yet; run: nasengine retrain {directory}")
    info = limit.constraint.table.info  # type: ignore[attr-defined]
    here = device_name(torch.device("cpu") if info["device"] == "cpu" else torch.device("cuda"))
    table = Table(
        title=f"latency of {directory}'s retrained networks on {here}, {info['threads']} thread(s), "
        f"{info['image_size']} px, batch {info['batch']} (table measured on {info['device_name']})",
        title_justify="left",
    )
    for column in ("network", "architecture", "predicted", "measured here", "limit", "within"):
        table.add_column(column)
    for name in entries:
        retrained = load_retrained(directory, entry=name)
        measured = limit.constraint.measure(run.space, retrained.arch, retrained.backbone)
        predicted = limit.constraint.cost(run.space, retrained.arch)
        fmt = limit.constraint.format
        verdict = "yes" if limit.allows(measured) else "[red]no[/red]"
        table.add_row(name, format_arch(retrained.arch), fmt(predicted), fmt(measured), limit.text(), verdict)
    print_(table)


@cli.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--entry", default=None, help="The retrained network: a folder of RUN_DIR/retrain/ [default: best].")
@click.option("--arch", default=None, help="Export the retrained network of this architecture instead of --entry.")
@click.option(
    "--format",
    "formats",
    default="torchscript,onnx,safetensors",
    show_default=True,
    help="Comma-separated: torchscript, onnx, safetensors.",
)
@click.option(
    "--what",
    type=click.Choice(["backbone", "detector"]),
    default="backbone",
    show_default=True,
    help="The backbone alone (feature maps c2..c5) or the whole detector.",
)
@click.option("--out", "out_dir", default=None, help="Folder for the files [default: RUN_DIR/export/<entry>-<what>/].")
@click.option(
    "--image-size",
    default=224,
    show_default=True,
    type=click.IntRange(min=32),
    help="Side of the example image the exports are traced and checked on.",
)
def export_command(
    run_dir: str, entry: str | None, arch: str | None, formats: str, what: str, out_dir: str | None, image_size: int
) -> None:
    """The retrained network of RUN_DIR as TorchScript, ONNX and safetensors, with a JSON describing it."""
    from nasengine.export import export

    info = export(run_dir, entry=entry, arch=arch, formats=formats, what=what, out=out_dir, image_size=image_size)
    print_(f"exported {info['entry']} ({info['what']}) to {info['folder']}:")
    for fmt, file in info["files"].items():
        checked = f", max |diff| vs PyTorch {file['max_abs_diff']:.2g}" if file.get("max_abs_diff") is not None else ""
        opset = f", opset {file['opset']}" if "opset" in file else ""
        print_(f"{fmt}: {file['file']} ({file['bytes'] / 1e6:.2f} MB{opset}{checked})")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except NasEngineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted; rerun the same command to continue where it stopped", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: one line too, with where to look
        command = f"nasengine {exc.ctx.info_name} --help" if getattr(exc, "ctx", None) else "nasengine --help"  # type: ignore[attr-defined]
        message = " ".join(exc.format_message().split())
        click.echo(f"error: {message}" + (f" (see '{command}')" if isinstance(exc, click.UsageError) else ""), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; rerun the same command to continue where it stopped", err=True)
        sys.exit(130)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        click.echo(
            f"error: no space left on the device{where}; free some space and run the same command again (a run "
            "continues from its last checkpoint)",
            err=True,
        )
        sys.exit(2)
