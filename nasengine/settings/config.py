"""The run configuration: presets, TOML files and CLI overrides, resolved into one ``RunConfig``.

Precedence, lowest first: the preset (``demo`` by default), a ``--config`` TOML file, CLI flags. The
resolved configuration is written to ``RUN_DIR/config.toml`` and is all a later phase or a resume
needs.

Plugin options are given per plugin name: a preset's, a file's or ``--set``'s ``options.<kind>.<name>`` table
(kind ``space``, ``task`` or ``strategy``) reaches that plugin only when the run uses it, so a preset sized
for ``evolution`` gives ``random`` its own options and a third-party task none of the built-ins'. The
options of the plugins the run uses — ``space_options``, ``task_options``, ``pretrain_task_options`` and
``search.strategy_options``, given directly or resolved from those tables (direct ones win) — are what
``config.toml`` keeps. A plugin declares its options by its constructor's keyword arguments; one that does
not fit is refused with one line before anything is written (``nasengine.registry.check_options``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasengine.errors import NasEngineError
from nasengine.rundir.atomic import atomic_write
from nasengine.settings.defaults import (
    DEFAULT_PRESET,
    DEFAULT_PRETRAIN_TASK,
    DEFAULT_SPACE,
    DEFAULT_STRATEGY,
    DEFAULT_TASK,
    PRESETS,
)


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
    # Supernet phases only (see nasengine.protocol.path_sampling): "uniform" (the paper), "fair" (FairNAS) or "distill"
    # (block-wise distillation from the trained baseline for `distill_fraction` of the iterations, Adam at
    # `distill_lr`, then uniform; pre-training only).
    sampling: str = "uniform"
    distill_fraction: float = 0.5
    distill_lr: float = 0.003


def check_schedule_scale(scale: float) -> float:
    """``scale`` as a float if it is in (0, 1]; else a one-line :class:`NasEngineError`."""
    scale = float(scale)
    if not (math.isfinite(scale) and 0.0 < scale <= 1.0):
        raise NasEngineError(f"--schedule-scale must be in (0, 1] (a fraction of the run's iterations), not {scale}")
    return scale


def scale_schedule(schedule: Schedule, scale: float) -> Schedule:
    """``schedule`` with ``scale`` times its iterations (rounded, at least 1) and warm-up (rounded).

    Milestones are fractions of the iterations, so a step schedule keeps its shape; ``scale`` 1.0 returns
    ``schedule`` itself.
    """
    scale = check_schedule_scale(scale)
    if scale == 1.0:
        return schedule
    iterations = max(1, int(schedule.iterations * scale + 0.5))
    warmup = min(iterations, int(schedule.warmup_iterations * scale + 0.5))
    return dataclasses.replace(schedule, iterations=iterations, warmup_iterations=warmup)


@dataclass
class SearchConfig:
    strategy: str = DEFAULT_STRATEGY
    strategy_options: dict[str, Any] = field(default_factory=dict)
    flops_min: float = 0.0
    flops_max: float | None = None  # None: the space's ``default_flops_max``
    flops_image_size: int = 224
    # other constraints than FLOPs, by name: {"latency": {"max": 12.0, "batch": 1}} (max/min bounds, other keys
    # the constraint's options; see nasengine.protocol.limits)
    constraints: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16  # evaluation batch for calibration and scoring
    on: str = "detection"  # "classification" searches on the pre-training task (ClsNASNet)


@dataclass
class RunConfig:
    space: str = DEFAULT_SPACE
    space_options: dict[str, Any] = field(default_factory=dict)
    task: str = DEFAULT_TASK
    task_options: dict[str, Any] = field(default_factory=dict)
    pretrain_task: str = DEFAULT_PRETRAIN_TASK
    pretrain_task_options: dict[str, Any] = field(default_factory=dict)
    pretrain: bool = True  # False: DetNAS-scratch (no pre-training, fine-tuning twice as long)
    pretrain_schedule: Schedule = field(default_factory=lambda: Schedule(iterations=100, batch_size=64))
    finetune_schedule: Schedule = field(default_factory=lambda: Schedule(iterations=100, batch_size=8))
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain_baseline: bool = True
    seed: int = 0
    channels_last: bool = True
    data_workers: int = 0  # DataLoader worker processes for training (raise it for JPEG datasets like ImageNet)
    # torch's intra-op threads in every process of the run: results depend on it (float sums in another order),
    # so it is recorded when the run starts (None: this process's count) and a resumed run uses it again
    threads: int | None = None
    # the processes the run spans (all nodes together) and the training precision: recorded like threads
    # (None / "auto": chosen when the run begins, see nasengine.launch and nasengine.protocol.precision)
    procs: int | None = None
    precision: str = "auto"
    preset: str = DEFAULT_PRESET

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


SECTIONS = {"pretrain_schedule": Schedule, "finetune_schedule": Schedule, "search": SearchConfig}


def _check_sections(data: dict[str, Any]) -> None:
    for key in SECTIONS:
        if key in data and not isinstance(data[key], dict):
            raise NasEngineError(
                f"config key {key} must be a table of settings (e.g. --set {key}.batch_size=8), not {data[key]!r}"
            )


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise NasEngineError(f"unknown config key {where}{unknown[0]!r}; known keys: {', '.join(names)}")
    values = {}
    for key, value in data.items():
        if key in SECTIONS and cls is RunConfig:
            _check_sections({key: value})
            value = _build(SECTIONS[key], value, f"{key}.")
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise NasEngineError(f"incomplete config section {where or 'top level'}: {exc}") from None


def resolve(
    preset: str = DEFAULT_PRESET, file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """The configuration from a preset, an optional TOML file and CLI overrides (nested dicts)."""
    data: dict[str, Any] = {}
    if file is not None:
        data = load_toml(file)
    overrides = copy.deepcopy(overrides or {})
    for source in (data, overrides or {}):
        _check_sections(source)
    preset = (overrides or {}).get("preset") or data.get("preset") or preset
    if preset not in PRESETS:
        raise NasEngineError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    defaults = RunConfig().to_dict()
    explicit = _merge(data, overrides or {})
    preset_values = copy.deepcopy(PRESETS[preset])
    task = explicit.get("task", preset_values.get("task", defaults["task"]))
    preset_values = _merge(preset_values, _task_preset_settings(task, preset))
    per_name = [_options_tables(preset_values, "preset " + preset, known=False)]
    per_name += [
        _options_tables(source, where, known=True)
        for source, where in ((data, "config file"), (overrides or {}, "--set"))
    ]
    merged = _merge(_merge(_merge(defaults, preset_values), data), overrides or {})
    _apply_plugin_options(merged, per_name, explicit)
    merged["preset"] = preset
    config = _build(RunConfig, merged, "")
    check_types(config)
    _apply_variant_rules(config, explicit=explicit)
    check_ranges(config)
    return config


# Where the options of each plugin the run uses live in the configuration: (config keys, plugin kind).
PLUGIN_OPTION_FIELDS = (
    (("space",), ("space_options",), "space"),
    (("task",), ("task_options",), "task"),
    (("pretrain_task",), ("pretrain_task_options",), "task"),
    (("search", "strategy"), ("search", "strategy_options"), "strategy"),
)


def _options_tables(source: dict[str, Any], where: str, *, known: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """Remove and return ``source``'s ``options`` table, ``{kind: {plugin name: {option: value}}}``, checked:
    kinds are space, task or strategy, and with ``known`` every name is a registered plugin of its kind."""
    from nasengine import registry

    tables = source.pop("options", None) or {}
    example = "--set options.strategy.evolution.population=20"
    if not isinstance(tables, dict):
        raise NasEngineError(f"{where}: options must be a table of plugin kinds (e.g. {example}), not {tables!r}")
    for kind, by_name in tables.items():
        if kind == "constraint":
            raise NasEngineError(
                f"{where}: a constraint's options are set beside its limit, under search.constraints.NAME "
                "(e.g. --set search.constraints.latency.batch=8), not under options.constraint"
            )
        if kind not in registry.GROUPS:
            raise NasEngineError(
                f"{where}: options.{kind} is not a plugin kind; use options.space, options.task or options.strategy "
                f"(e.g. {example})"
            )
        if not isinstance(by_name, dict) or not all(isinstance(v, dict) for v in by_name.values()):
            raise NasEngineError(f"{where}: options.{kind} must hold one table per {kind} name (e.g. {example})")
        if known:
            for name in by_name:
                try:
                    registry.get(kind, name)
                except NasEngineError as exc:  # a misspelt name: one line with the known ones
                    raise NasEngineError(f"{where}: options.{kind}.{name}: {exc}") from None
    return tables


def _apply_plugin_options(merged: dict[str, Any], per_name: list[dict[str, Any]], explicit: dict[str, Any]) -> None:
    """Set the options of the plugins the run uses from the per-name tables (preset, file, ``--set``, in that
    order), under the options given directly."""
    for name_keys, option_keys, kind in PLUGIN_OPTION_FIELDS:
        name = _lookup(merged, name_keys)
        if not isinstance(name, str):
            continue  # a wrong type is reported by check_types with the key
        options: dict[str, Any] = {}
        for tables in per_name:
            options = _merge(options, tables.get(kind, {}).get(name, {}))
        direct = _lookup(explicit, option_keys)
        if isinstance(direct, dict) or direct is None:
            owner = merged
            for key in option_keys[:-1]:
                owner = owner[key]
            owner[option_keys[-1]] = _merge(options, direct or {})


def _lookup(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _fields(section: Any, prefix: str):
    """``(dotted key, type hint, value)`` of every setting of a config section, sections recursed into."""
    hints = typing.get_type_hints(type(section))
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            yield from _fields(value, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", hints[item.name], value


def _bad(where: str, key: str, wanted: str, value: Any) -> NasEngineError:
    return NasEngineError(
        f"{where}{key} must be {wanted}, not {value!r}; set it with --set {key}=VALUE or in the --config file"
    )


def _typed(where: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` asks for (integral floats become ints), or a one-line error."""
    optional = type(None) in typing.get_args(hint)
    if optional and value is None:
        return None
    base = next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint) if optional else hint
    origin = typing.get_origin(base) or base
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is bool:
        if not isinstance(value, bool):
            raise _bad(where, key, "true or false", value)
    elif origin is int:
        if not (is_number and float(value).is_integer()):
            raise _bad(where, key, "an integer", value)
        value = int(value)
    elif origin is float:
        if not is_number or math.isnan(value):
            raise _bad(where, key, "a number", value)
        value = float(value)
    elif origin is str:
        if not isinstance(value, str):
            raise _bad(where, key, "a string", value)
    elif origin is list:
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise _bad(where, key, "a list of numbers like [0.5, 0.8]", value)
    elif origin is dict:
        if not isinstance(value, dict):
            raise _bad(where, key, "a table of options", value)
    return value


def check_types(config: RunConfig, where: str = "") -> None:
    """Every setting has its declared type (booleans are booleans, ints are ints); converts in place."""
    for key, hint, value in _fields(config, ""):
        *parents, leaf = key.split(".")
        owner = config
        for part in parents:
            owner = getattr(owner, part)
        setattr(owner, leaf, _typed(where, key, hint, value))


def check_ranges(config: RunConfig, where: str = "") -> None:
    """Every number inside its range and every name one of its choices; one line naming the key otherwise."""
    from nasengine.protocol.path_sampling import SAMPLINGS
    from nasengine.protocol.precision import PRECISIONS

    def require(ok: bool, key: str, wanted: str, value: Any) -> None:
        if not ok:
            raise _bad(where, key, wanted, value)

    require(0 <= config.seed < 2**63, "seed", "an integer in [0, 2**63)", config.seed)
    require(config.threads is None or config.threads >= 1, "threads", "an integer >= 1", config.threads)
    require(config.procs is None or config.procs >= 1, "procs", "an integer >= 1", config.procs)
    require(config.precision in PRECISIONS, "precision", " or ".join(PRECISIONS), config.precision)
    require(config.data_workers >= 0, "data_workers", "an integer >= 0", config.data_workers)
    for name in ("pretrain_schedule", "finetune_schedule"):
        schedule = getattr(config, name)
        require(schedule.iterations >= 1, f"{name}.iterations", "an integer >= 1", schedule.iterations)
        require(schedule.batch_size >= 1, f"{name}.batch_size", "an integer >= 1", schedule.batch_size)
        require(schedule.lr is None or 0 < schedule.lr < math.inf, f"{name}.lr", "a number > 0", schedule.lr)
        require(0 <= schedule.momentum < 1, f"{name}.momentum", "a number in [0, 1)", schedule.momentum)
        require(0 <= schedule.weight_decay < math.inf, f"{name}.weight_decay", "a number >= 0", schedule.weight_decay)
        require(
            schedule.lr_schedule in ("linear", "step"),
            f"{name}.lr_schedule",
            "'linear' or 'step'",
            schedule.lr_schedule,
        )
        require(
            all(0 < m < 1 for m in schedule.milestones) and schedule.milestones == sorted(schedule.milestones),
            f"{name}.milestones",
            "rising fractions of the iterations, each in (0, 1)",
            schedule.milestones,
        )
        require(
            0 <= schedule.warmup_iterations <= schedule.iterations,
            f"{name}.warmup_iterations",
            f"an integer in [0, {name}.iterations = {schedule.iterations}]",
            schedule.warmup_iterations,
        )
        require(
            schedule.checkpoint_every >= 1, f"{name}.checkpoint_every", "an integer >= 1", schedule.checkpoint_every
        )
        require(
            schedule.sampling in SAMPLINGS,
            f"{name}.sampling",
            f"one of {', '.join(map(repr, SAMPLINGS))}",
            schedule.sampling,
        )
        require(
            0 < schedule.distill_fraction < 1,
            f"{name}.distill_fraction",
            "a number in (0, 1)",
            schedule.distill_fraction,
        )
        require(0 < schedule.distill_lr < math.inf, f"{name}.distill_lr", "a number > 0", schedule.distill_lr)
    require(
        config.finetune_schedule.sampling != "distill",
        "finetune_schedule.sampling",
        "'uniform' or 'fair' ('distill' is for pre-training only)",
        config.finetune_schedule.sampling,
    )
    search = config.search
    require(0 <= search.flops_min < math.inf, "search.flops_min", "a number >= 0", search.flops_min)
    require(search.flops_max is None or search.flops_max > 0, "search.flops_max", "a number > 0", search.flops_max)
    require(
        search.flops_max is None or search.flops_min <= search.flops_max,
        "search.flops_min",
        f"at most search.flops_max ({search.flops_max:g})" if search.flops_max is not None else "",
        search.flops_min,
    )
    require(search.flops_image_size >= 32, "search.flops_image_size", "an integer >= 32", search.flops_image_size)
    require(search.batch_size >= 1, "search.batch_size", "an integer >= 1", search.batch_size)
    from nasengine.protocol.limits import parse_constraints

    parse_constraints(search.constraints, where)
    require(search.on in ("detection", "classification"), "search.on", "'detection' or 'classification'", search.on)


def _task_preset_settings(task: Any, preset: str) -> dict[str, Any]:
    """The config values the task sets under ``preset`` (``Task.preset_settings``), over the preset's own; an
    unknown task sets none (it is reported with the known names before the run starts)."""
    from nasengine import registry

    if not isinstance(task, str):
        return {}
    try:
        settings = getattr(registry.get("task", task), "preset_settings", None) or {}
    except NasEngineError:
        return {}
    return copy.deepcopy(settings.get(preset, {}))


def _apply_variant_rules(config: RunConfig, explicit: dict[str, Any]) -> None:
    """Rules from the paper that depend on the variant, unless set explicitly."""
    finetune_set = "iterations" in explicit.get("finetune_schedule", {})
    if not config.pretrain and not finetune_set:  # DetNAS-scratch: fine-tune twice as long
        config.finetune_schedule.iterations *= 2


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark (Windows editors) is skipped
    except FileNotFoundError:
        raise NasEngineError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise NasEngineError(f"config file {path} is a directory; give a TOML file") from None
    except UnicodeDecodeError as exc:
        raise NasEngineError(
            f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML"
        ) from None
    except OSError as exc:
        raise NasEngineError(f"config file {path} cannot be read ({exc.strerror or exc})") from None
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
    """Write the resolved configuration as TOML, atomically."""
    text = dumps_toml(config.to_dict())
    atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def load(path: str | Path) -> RunConfig:
    """A run's resolved configuration, as written by :func:`save`."""
    data = load_toml(path)
    missing = [
        key for key in ("space", "task", "seed", "pretrain_schedule", "finetune_schedule", "search") if key not in data
    ]
    if missing:
        raise NasEngineError(
            f"{path} is not a complete run configuration (no {missing[0]!r}); restore it from a "
            "backup, or start the run again in a new --out"
        )
    config = _build(RunConfig, _merge(RunConfig().to_dict(), data), "")
    check_types(config, where=f"{path}: ")
    check_ranges(config, where=f"{path}: ")
    return config
