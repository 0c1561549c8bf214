"""The one table of built-in plugin names the core needs, and the presets that name them.

The core talks to spaces, tasks and strategies only through ``nasengine.interfaces`` and the registry.
Where it must still name a built-in plugin — the defaults of a run, the tasks and strategy options of a
preset, the strategy that draws random architectures for the random baseline and the comparison search —
the name comes from this module, and ``tests/test_import_graph.py`` checks that no other core module
names one. A preset gives plugin options per plugin name (``options.<kind>.<name>``, see
``nasengine.settings.config``): they reach a plugin only when the run uses it. Values that belong to a plugin come
from the plugin (a space's ``default_flops_max``, a task's ``preset_settings``). Help texts are generated
from these names.
"""

from __future__ import annotations

from typing import Any

DEFAULT_SPACE = "shufflenet-small"
DEFAULT_TASK = "coco-fpn"  # the detection task searched for
DEFAULT_PRETRAIN_TASK = "fashion-mnist"  # the classification task of supernet pre-training
DEFAULT_STRATEGY = "evolution"
RANDOM_STRATEGY = "random"  # uniformly random legal architectures: the random baseline, the comparison search
DEFAULT_PRESET = "demo"
FLOPS_CONSTRAINT = "flops"  # the constraint every search has, its limits in search.flops_min / search.flops_max
DETECTION_TASKS = ("coco-fpn", "coco-retinanet", "voc-fpn", "voc-retinanet")  # the built-in detection tasks


def _each(names: tuple[str, ...], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The same options for each of ``names`` (each gets its own copy)."""
    return {name: dict(options) for name in names}


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's schedules and search settings (DESIGN.md §5). A task may set its own values under a preset
    # (``Task.preset_settings``): the VOC tasks fine-tune for 22,500 iterations here.
    "paper": {
        "pretrain_task": "imagenet",
        "pretrain_schedule": {
            "iterations": 300_000,
            "batch_size": 1024,
            "lr": 0.5,
            "weight_decay": 4e-5,
            "lr_schedule": "linear",
            "checkpoint_every": 5000,
            "sampling": "uniform",
        },
        "finetune_schedule": {
            "iterations": 90_000,
            "batch_size": 16,
            "weight_decay": 1e-4,
            "lr_schedule": "step",
            "milestones": [60_000 / 90_000, 80_000 / 90_000],
            "warmup_iterations": 500,
            "checkpoint_every": 5000,
        },
        "options": {
            "strategy": {
                "evolution": {"population": 50, "top_k": 10, "generations": 20},
                "random": {"population": 50, "generations": 20},  # the same 1000 candidates (paper Fig. 2)
            },
        },
    },
    # Sized so that `make demo` runs the whole protocol on 2 CPU cores in about 15 minutes.
    "demo": {
        "pretrain_task": "fashion-mnist",
        # Uniform sampling does not learn at this budget (README, "Supernet training recipes"): the demo
        # distills every choice from the trained baseline for half the iterations, then samples uniformly.
        "pretrain_schedule": {
            "iterations": 1000,
            "batch_size": 64,
            "lr": 0.02,
            "weight_decay": 4e-5,
            "lr_schedule": "linear",
            "warmup_iterations": 20,
            "checkpoint_every": 200,
            "sampling": "distill",
            "distill_fraction": 0.4,
        },
        "finetune_schedule": {
            "iterations": 900,
            "batch_size": 8,
            "lr": 0.04,
            "weight_decay": 1e-4,
            "lr_schedule": "step",
            "milestones": [0.8],
            "warmup_iterations": 20,
            "checkpoint_every": 100,
        },
        "search": {"batch_size": 16},
        "options": {
            # 300 search images and 1024 of the 1200 training images for calibration: with 100 and 64 a
            # candidate's score moved by 0.65x the spread of the candidates' scores when only the calibration
            # subset changed; the supernet's ranking of the rank check's networks agreed better with 1024
            # than with 256 calibration images on all three seeds (README, "What the search finds").
            "task": _each(DETECTION_TASKS, {"search_size": 300, "calib_size": 1024}),
            "strategy": {
                "evolution": {"population": 8, "top_k": 3, "generations": 3},
                "random": {"population": 8, "generations": 3},
            },
        },
    },
    # Well under a minute: for tests.
    "smoke": {
        "pretrain_task": "fashion-mnist",
        "pretrain_schedule": {"iterations": 4, "batch_size": 8, "lr": 0.05, "checkpoint_every": 2},
        "finetune_schedule": {
            "iterations": 3,
            "batch_size": 2,
            "lr": 0.01,
            "weight_decay": 1e-4,
            "lr_schedule": "step",
            "milestones": [0.5],
            "checkpoint_every": 2,
        },
        "search": {"batch_size": 4},
        "options": {
            "task": {
                "fashion-mnist": {"search_size": 64, "calib_size": 16, "test_size": 64},
                **_each(DETECTION_TASKS, {"search_size": 6, "calib_size": 4, "test_size": 6}),
            },
            "strategy": {
                "evolution": {"population": 4, "top_k": 2, "generations": 2},
                "random": {"population": 4, "generations": 2},
            },
        },
    },
}
