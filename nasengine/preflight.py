"""The checks every run passes before anything is written or trained.

A run that would fail late — an unknown strategy option, a FLOPs window outside the space, a broken
annotation file in the test split — fails here instead, in seconds, with one line naming the problem and
the fix. The configuration's own types and ranges are checked when it is resolved (``config.check_types``
and ``config.check_ranges``); this module checks what needs the plugins: they exist and accept their
options, the FLOPs window meets the space, the distillation recipe has a teacher, and every split of every
task the run uses reads and decodes (``Task.check_data``, cached by the tasks, so it is cheap to repeat).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasengine import registry
from nasengine.errors import NasEngineError

if TYPE_CHECKING:
    from nasengine.engine import Run


def check_run(run: "Run") -> None:
    """Raise ``NasEngineError`` for the first problem that would stop ``run`` later; return when it can run."""
    from nasengine.search import flops_constraint

    config = run.config
    space = run.space  # unknown spaces and bad space options fail here
    flops_constraint(space, config.search)  # the FLOPs window meets the space's range
    registry.create("strategy", config.search.strategy, choices=space.choices, constraint=lambda arch: True,
                    seed=config.seed, **config.search.strategy_options)
    if config.pretrain and config.pretrain_schedule.sampling == "distill":
        if space.named.get(space.baseline_name or "") is None:
            raise NasEngineError(f"space {config.space!r} names no baseline to distill from; "
                                 "set pretrain_schedule.sampling to 'uniform' or 'fair'")
    tasks = [run.task]
    if config.pretrain or config.search.on == "classification":
        tasks.append(run.pretrain_task)
    for task in tasks:
        task.check_data()
