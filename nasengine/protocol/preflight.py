"""The checks every run passes before anything is written or trained.

A run that would fail late — an unknown strategy option, a FLOPs window outside the space, a broken
annotation file in the test split — fails here instead, in seconds, with one line naming the problem and
the fix. The configuration's own types and ranges are checked when it is resolved (``config.check_types``
and ``config.check_ranges``); this module checks what needs the plugins: they exist and accept their
options, the FLOPs window meets the space, the distillation recipe has a teacher, the space keeps the rules
of ``nasengine.interfaces`` (``nasengine.testing.check_space`` on one random path: supernet and extracted
network agree, the feature maps are what ``out_channels`` says — four at strides 4/8/16/32 for a detection
task — and the FLOPs table equals a full trace; about 0.5 s for ``shufflenet-small``, once per process), the
strategy keeps the rules of a strategy (``nasengine.testing.check_strategy`` with the run's choices, options
and seed: ask/tell driven to the end under a fake constraint with fake scores, nothing evaluated; 0.04 s for
evolution at the demo's 8 x 3 on ``shufflenet-small``, 0.07 s at the paper's 50 x 20, once per process),
every split of every task the run uses reads and decodes (``Task.check_data``, cached by the tasks, so it is
cheap to repeat), and every such task keeps the rules of a task (``nasengine.testing.check_task`` on a tiny
backbone: one batch of the search split, a finite loss with a gradient, ``evaluate`` on its first two images
returns a score; 0.15 s for ``coco-fpn`` on the embedded data, 0.04 s for ``fashion-mnist``, once per
process).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.interfaces import Space, Task
from nasengine.settings.config import RunConfig

if TYPE_CHECKING:
    from nasengine.protocol.limits import Limits

SPACE_CHECK = {"samples": 1, "image_size": 64}
"""The cheap settings of the space check every run passes (``nasengine.testing.check_space``)."""

TASK_CHECK = {"images": 2}
"""The cheap settings of the task check every run passes (``nasengine.testing.check_task``)."""

_spaces_checked: set[tuple[Any, ...]] = set()
_strategies_checked: set[tuple[Any, ...]] = set()
_tasks_checked: set[tuple[Any, ...]] = set()


class Checked(Protocol):
    """What the check needs of a run (``nasengine.protocol.engine.Run`` has it): its config and its plugins, the
    pre-training task built only when the run uses it."""

    @property
    def config(self) -> RunConfig: ...
    @property
    def space(self) -> Space: ...
    @property
    def task(self) -> Task: ...
    @property
    def pretrain_task(self) -> Task: ...
    @property
    def kept_folder(self) -> Path | None: ...


def check_run(run: Checked) -> None:
    """Raise ``NasEngineError`` for the first problem that would stop ``run`` later; return when it can run."""
    from nasengine.latency import torch_threads
    from nasengine.protocol.limits import input_size, run_limits

    config = run.config
    uses_pretrain_task = config.pretrain or config.search.on == "classification"
    if uses_pretrain_task:  # its options are pretrain_task_options, which its errors must name
        registry.check_options("task", config.pretrain_task, config.pretrain_task_options, key="pretrain_task_options")
    if run.task.kind != "detection":
        raise NasEngineError(
            f"--task {config.task} is a {run.task.kind} task, but the search is for a detection backbone: give a "
            f"detection task ({', '.join(registry.task_names('detection'))})"
        )
    if uses_pretrain_task and run.pretrain_task.kind != "classification":
        raise NasEngineError(
            f"--pretrain-task {config.pretrain_task} is a {run.pretrain_task.kind} task, but pre-training needs a "
            f"classification task ({', '.join(registry.task_names('classification'))})"
        )
    space = run.space  # unknown spaces and bad space options fail here
    check_space_once(space, detection=True, flops_image_size=config.search.flops_image_size)
    # every limit meets the space: what a constraint measures (a latency table) is read back from a resumed run's
    # search folder, else measured (and cached) under the run's threads, as the ranks will
    with torch_threads(config.threads):
        limits = run_limits(
            space, config.search, input_size=input_size(run.task, config.search), folder=run.kept_folder
        )
    if config.retrain_baseline:
        warn_if_the_baseline_is_outside(space, limits)
    registry.create(
        "strategy",
        config.search.strategy,
        choices=space.choices,
        constraint=lambda arch: True,
        seed=config.seed,
        **config.search.strategy_options,
    )
    check_strategy_once(
        registry.get("strategy", config.search.strategy), space.choices, config.search.strategy_options, config.seed
    )
    if config.pretrain and config.pretrain_schedule.sampling == "distill":
        if space.named.get(space.baseline_name or "") is None:
            raise NasEngineError(
                f"space {config.space!r} names no baseline to distill from; "
                "set pretrain_schedule.sampling to 'uniform' or 'fair'"
            )
    tasks = [run.task]
    if uses_pretrain_task:
        tasks.append(run.pretrain_task)
    for task in tasks:
        task.check_data()
    for task in tasks:
        check_task_once(task)


def warn_if_the_baseline_is_outside(space: Space, limits: Limits) -> None:
    """One warning when the baseline the winner is compared with breaks one of the search's limits: the search
    could not have chosen it, so the comparison is not between equals."""
    from nasengine import console

    baseline = space.named.get(space.baseline_name or "")
    if baseline is None:
        return
    costs = limits.costs(baseline)
    broken = limits.broken(costs)
    if broken:
        what = ", ".join(f"{limit.name} {limit.constraint.format(costs[limit.name])}" for limit in broken)
        console.log(
            f"[yellow]warning:[/yellow] the baseline {space.baseline_name} ({what}) is outside the search's limits "
            f"({limits.text()}): the winner is compared with a network the search could not choose (set "
            "retrain_baseline = false to train only the winner, or widen the limits)"
        )


def check_space_once(space: Space, *, detection: bool, flops_image_size: int) -> None:
    """``nasengine.testing.check_space`` with the cheap settings, at most once per process for each space,
    options and kind of task (a passed check is remembered; a failed one is repeated)."""
    from nasengine.testing import check_space

    key = (type(space), repr(sorted(space.options().items())), detection, flops_image_size)
    if key not in _spaces_checked:
        check_space(space, detection=detection, flops_image_size=flops_image_size, **SPACE_CHECK)
        _spaces_checked.add(key)


def check_strategy_once(strategy_cls: type, choices: Sequence[int], options: Mapping[str, Any], seed: int) -> None:
    """``nasengine.testing.check_strategy`` on ``strategy_cls`` with the run's choices, options and seed, at
    most once per process for each of them (a passed check is remembered; a failed one is repeated)."""
    from nasengine.testing import check_strategy

    key = (strategy_cls, tuple(choices), repr(sorted(options.items())), seed)
    if key not in _strategies_checked:
        check_strategy(strategy_cls, choices, options, seed=seed)
        _strategies_checked.add(key)


def check_task_once(task: Task) -> None:
    """``nasengine.testing.check_task`` with the cheap settings, at most once per process for each task class
    and options (a passed check is remembered; a failed one is repeated)."""
    from nasengine.testing import check_task

    try:
        key: tuple[Any, ...] | None = (type(task), repr(sorted(task.options().items())))
    except Exception:  # a broken options(): the check says so in one line
        key = None
    if key is None or key not in _tasks_checked:
        check_task(task, **TASK_CHECK)  # type: ignore[arg-type]
        if key is not None:
            _tasks_checked.add(key)
