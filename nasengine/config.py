"""The run configuration: presets, TOML files and CLI overrides, resolved into one ``RunConfig``.

Precedence, lowest first: the preset (``demo`` by default), a ``--config`` TOML file, CLI flags. The
resolved configuration is written to ``RUN_DIR/config.toml`` and is all a later phase or a resume
needs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasengine.errors import NasEngineError


@dataclass
class Schedule:
    """One training phase: SGD with momentum, iteration-based."""

    iterations: int
    batch_size: int
    lr: float | None = None  # None: the task's base_lr scaled linearly by batch_size / base_batch_size
    momentum: float = 0.9
    weight_decay: float = 4e-5
    lr_schedule: str = "linear"  # "linear": linear to zero (pre-training); "step": ÷10 at each milestone
    milestones: list[float] = field(default_factory=list)  # fractions of `iterations`
    warmup_iterations: int = 0
    checkpoint_every: int = 500
    # Supernet phases only (see nasengine.sampling): "uniform" (the paper), "fair" (FairNAS) or "distill"
    # (block-wise distillation from the trained baseline for `distill_fraction` of the iterations, Adam at
    # `distill_lr`, then uniform; pre-training only).
    sampling: str = "uniform"
    distill_fraction: float = 0.5
    distill_lr: float = 0.003


@dataclass
class SearchConfig:
    strategy: str = "evolution"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    flops_min: float = 0.0
    flops_max: float | None = None  # None: the space's ``default_flops_max`` (300M for shufflenet-small)
    flops_image_size: int = 224
    batch_size: int = 16  # evaluation batch for calibration and scoring
    on: str = "detection"  # "classification" searches on the pre-training task (ClsNASNet)


@dataclass
class RunConfig:
    space: str = "shufflenet-small"
    space_options: dict[str, Any] = field(default_factory=dict)
    task: str = "coco-fpn"
    task_options: dict[str, Any] = field(default_factory=dict)
    pretrain_task: str = "fashion-mnist"
    pretrain_task_options: dict[str, Any] = field(default_factory=dict)
    pretrain: bool = True  # False: DetNAS-scratch (no pre-training, fine-tuning twice as long)
    pretrain_schedule: Schedule = field(default_factory=lambda: Schedule(iterations=100, batch_size=64))
    finetune_schedule: Schedule = field(default_factory=lambda: Schedule(iterations=100, batch_size=8))
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain_baseline: bool = True
    seed: int = 0
    channels_last: bool = True
    data_workers: int = 0  # DataLoader worker processes for training (raise it for JPEG datasets like ImageNet)
    preset: str = "demo"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's schedules and search settings (DESIGN.md §5). Fine-tuning length is set per dataset below.
    "paper": {
        "pretrain_task": "imagenet",
        "pretrain_schedule": {"iterations": 300_000, "batch_size": 1024, "lr": 0.5, "weight_decay": 4e-5,
                              "lr_schedule": "linear", "checkpoint_every": 5000, "sampling": "uniform"},
        "finetune_schedule": {"iterations": 90_000, "batch_size": 16, "weight_decay": 1e-4,
                              "lr_schedule": "step", "milestones": [60_000 / 90_000, 80_000 / 90_000],
                              "warmup_iterations": 500, "checkpoint_every": 5000},
        "search": {"strategy_options": {"population": 50, "top_k": 10, "generations": 20}},
    },
    # Sized so that `make demo` runs the whole protocol on 2 CPU cores in about 15 minutes.
    "demo": {
        "pretrain_task": "fashion-mnist",
        "task_options": {"search_size": 100, "calib_size": 64},
        # Uniform sampling does not learn at this budget (README, "Supernet training recipes"): the demo
        # distills every choice from the trained baseline for half the iterations, then samples uniformly.
        "pretrain_schedule": {"iterations": 1000, "batch_size": 64, "lr": 0.02, "weight_decay": 4e-5,
                              "lr_schedule": "linear", "warmup_iterations": 20, "checkpoint_every": 200,
                              "sampling": "distill", "distill_fraction": 0.4},
        "finetune_schedule": {"iterations": 900, "batch_size": 8, "lr": 0.04, "weight_decay": 1e-4,
                              "lr_schedule": "step", "milestones": [0.8], "warmup_iterations": 20,
                              "checkpoint_every": 100},
        "search": {"batch_size": 16, "strategy_options": {"population": 8, "top_k": 3, "generations": 3}},
    },
    # Well under a minute: for tests.
    "smoke": {
        "pretrain_task": "fashion-mnist",
        "pretrain_task_options": {"search_size": 64, "calib_size": 16, "test_size": 64},
        "task_options": {"search_size": 6, "calib_size": 4, "test_size": 6},
        "pretrain_schedule": {"iterations": 4, "batch_size": 8, "lr": 0.05, "checkpoint_every": 2},
        "finetune_schedule": {"iterations": 3, "batch_size": 2, "lr": 0.01, "weight_decay": 1e-4,
                              "lr_schedule": "step", "milestones": [0.5], "checkpoint_every": 2},
        "search": {"batch_size": 4, "strategy_options": {"population": 4, "top_k": 2, "generations": 2}},
    },
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise NasEngineError(f"unknown config key {where}{unknown[0]!r}; known keys: {', '.join(names)}")
    values = {}
    for key, value in data.items():
        if key in ("pretrain_schedule", "finetune_schedule"):
            value = _build(Schedule, value, f"{key}.")
        elif key == "search":
            value = _build(SearchConfig, value, "search.")
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise NasEngineError(f"incomplete config section {where or 'top level'}: {exc}") from None


def resolve(preset: str = "demo", file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The configuration from a preset, an optional TOML file and CLI overrides (nested dicts)."""
    data: dict[str, Any] = {}
    if file is not None:
        data = load_toml(file)
    preset = (overrides or {}).get("preset") or data.get("preset") or preset
    if preset not in PRESETS:
        raise NasEngineError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    defaults = RunConfig().to_dict()
    explicit = _merge(data, overrides or {})
    preset_values = copy.deepcopy(PRESETS[preset])
    strategy = explicit.get("search", {}).get("strategy", defaults["search"]["strategy"])
    _drop_foreign_strategy_options(preset_values, strategy)
    merged = _merge(_merge(_merge(defaults, preset_values), data), overrides or {})
    merged["preset"] = preset
    config = _build(RunConfig, merged, "")
    _apply_dataset_rules(config, explicit=explicit)
    return config


def _drop_foreign_strategy_options(preset_values: dict[str, Any], strategy: str) -> None:
    """A preset's strategy options are meant for the evolution search; keep only those the chosen
    strategy accepts (``random`` has no ``top_k``). Options the user gives are never dropped."""
    import inspect

    from nasengine import registry

    options = preset_values.get("search", {}).get("strategy_options")
    if not options:
        return
    try:
        parameters = inspect.signature(registry.get("strategy", strategy)).parameters
    except NasEngineError:
        return  # an unknown strategy is reported when the search starts, with the known names
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in [k for k in options if k not in parameters]:
        del options[key]


def _apply_dataset_rules(config: RunConfig, explicit: dict[str, Any]) -> None:
    """Rules from the paper that depend on the chosen task and variant, unless set explicitly."""
    finetune_set = "iterations" in explicit.get("finetune_schedule", {})
    if config.preset == "paper" and config.task.startswith("voc") and not finetune_set:
        config.finetune_schedule.iterations = 22_500
    if not config.pretrain and not finetune_set:  # DetNAS-scratch: fine-tune twice as long
        config.finetune_schedule.iterations *= 2
    from nasengine.sampling import SAMPLINGS

    for name in ("pretrain_schedule", "finetune_schedule"):
        schedule = getattr(config, name)
        if schedule.sampling not in SAMPLINGS:
            raise NasEngineError(f"{name}.sampling must be one of {', '.join(SAMPLINGS)}, not {schedule.sampling!r}")
        if not 0 < schedule.distill_fraction < 1:
            raise NasEngineError(f"{name}.distill_fraction must be between 0 and 1 (exclusive), not {schedule.distill_fraction!r}")
    if config.finetune_schedule.sampling == "distill":
        raise NasEngineError("finetune_schedule.sampling 'distill' is for pre-training only; use 'uniform' or 'fair'")
    if config.search.on not in ("detection", "classification"):
        raise NasEngineError(f"search.on must be 'detection' or 'classification', not {config.search.on!r}")


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise NasEngineError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise NasEngineError(f"config file {path} is not valid TOML: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def dumps_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML text for a nested dict (None values are omitted, as TOML has no null)."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if v is not None and not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{_toml_key(key)}"
            lines.append(f"\n[{name}]")
            lines.append(dumps_toml(value, prefix=f"{name}.").strip("\n"))
    return "\n".join(line for line in lines if line) + "\n"


def save(config: RunConfig, path: str | Path) -> None:
    from nasengine.checkpoint import atomic_write  # imported here: checkpoint pulls in torch

    text = dumps_toml(config.to_dict())
    atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def load(path: str | Path) -> RunConfig:
    """A run's resolved configuration, as written by :func:`save`."""
    data = load_toml(path)
    return _build(RunConfig, _merge(RunConfig().to_dict(), data), "")
