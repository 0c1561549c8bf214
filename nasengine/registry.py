"""Finds spaces, tasks, strategies and constraints through Python entry points.

Built-in plugins are registered in this project's ``pyproject.toml`` exactly as a third-party package
registers its own, so the core never imports one by name. A plugin that fails to import is reported with
its error and the others still load.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from nasengine.errors import NasEngineError

GROUPS = {
    "space": "nasengine.spaces",
    "task": "nasengine.tasks",
    "strategy": "nasengine.strategies",
    "constraint": "nasengine.constraints",
}
PLURALS = {"space": "spaces", "task": "tasks", "strategy": "strategies", "constraint": "constraints"}


@dataclass
class Plugin:
    """One registered plugin: its class, or the error that stopped it from importing."""

    kind: str
    name: str
    target: str  # "module:attr" as registered
    source: str  # the distribution that registered it, e.g. "nasengine 0.1.0"
    cls: type | None = None
    error: str | None = None

    @property
    def description(self) -> str:
        if self.cls is None:
            return f"failed to import: {self.error}"
        return getattr(self.cls, "description", "") or (self.cls.__doc__ or "").strip().split("\n")[0]


def _load(kind: str, ep: EntryPoint) -> Plugin:
    dist = ep.dist
    source = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    plugin = Plugin(kind=kind, name=ep.name, target=ep.value, source=source)
    try:
        plugin.cls = ep.load()
    except Exception as exc:  # a broken third-party plugin must not take the others down
        plugin.error = f"{type(exc).__name__}: {exc}"
    return plugin


def plugins(kind: str) -> dict[str, Plugin]:
    """Every plugin of ``kind`` ("space", "task", "strategy" or "constraint"), importable or not, by name."""
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {sorted(GROUPS)}")
    found: dict[str, Plugin] = {}
    for ep in sorted(entry_points(group=GROUPS[kind]), key=lambda e: e.name):
        found.setdefault(ep.name, _load(kind, ep))
    return found


def task_names(task_kind: str) -> list[str]:
    """The registered tasks whose ``kind`` is ``task_kind`` (``detection`` or ``classification``), by name."""
    return [name for name, plugin in plugins("task").items() if getattr(plugin.cls, "kind", None) == task_kind]


def get(kind: str, name: str) -> type:
    """The class registered as ``name``; a one-line error lists the known names otherwise."""
    known = plugins(kind)
    plugin = known.get(name)
    if plugin is None:
        names = ", ".join(sorted(known)) or "none installed"
        raise NasEngineError(f"unknown {kind} {name!r}; known {PLURALS[kind]}: {names}")
    if plugin.cls is None:
        raise NasEngineError(
            f"{kind} {name!r} ({plugin.target}, from {plugin.source}) failed to import: {plugin.error}"
        )
    return plugin.cls


SUPPLIED = {"strategy": ("choices", "constraint", "seed")}
"""Constructor arguments the engine supplies itself, which are not options a user sets."""
OPTION_KEYS = {
    "space": "space_options",
    "task": "task_options",
    "strategy": "search.strategy_options",
}


def declared_options(cls: type, kind: str) -> list[str] | None:
    """The options ``cls`` declares by its constructor's keyword arguments, or None when it accepts any.

    A constructor that takes ``**options`` and hands them to ``super().__init__`` (cooperative classes, as
    the detection tasks are) declares its own keywords plus those of the next constructors up its MRO,
    down to one without ``**options``; when none is found (``object`` or a base taking ``**params``
    ends the walk) the plugin accepts any option and must check its own, raising ``NasEngineError``.
    """
    names: list[str] = []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)
    for owner in cls.__mro__:
        init = owner.__dict__.get("__init__")
        if init is None:
            continue
        if owner is object:
            return None
        parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        for p in parameters:
            if p.kind not in positional and p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in names:
                names.append(p.name)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return [n for n in names if n not in SUPPLIED.get(kind, ())]
    return None


def check_options(kind: str, name: str, options: dict[str, Any], key: str | None = None) -> None:
    """One line naming the first option the plugin ``name`` does not declare, and the options it does (set under
    the configuration's ``key``, by default the kind's: ``task_options`` for a task)."""
    cls = get(kind, name)
    declared = declared_options(cls, kind)
    if declared is None:
        return
    unknown = [key for key in options if key not in declared]
    if unknown and not declared:
        raise NasEngineError(f"{kind} {name!r} takes no options, so not {unknown[0]!r}; remove it")
    if unknown:
        listed = ", ".join(declared)
        where = (
            f"search.constraints.{name}.NAME=VALUE"
            if kind == "constraint"
            else f"{key or OPTION_KEYS[kind]}.NAME=VALUE or options.{kind}.{name}.NAME=VALUE"
        )
        raise NasEngineError(
            f"{kind} {name!r} has no option {unknown[0]!r}; its options: {listed} (set them with --set {where})"
        )


def create(kind: str, name: str, **options: Any) -> Any:
    """An instance of the plugin ``name`` built with its ``options`` (checked by :func:`check_options`)."""
    cls = get(kind, name)
    supplied = SUPPLIED.get(kind, ())
    check_options(kind, name, {k: v for k, v in options.items() if k not in supplied})
    try:
        return cls(**options)
    except TypeError as exc:
        raise NasEngineError(f"{kind} {name!r} does not accept these options {sorted(options)}: {exc}") from None
