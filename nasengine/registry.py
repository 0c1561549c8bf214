"""Finds spaces, tasks and strategies through Python entry points.

Built-in plugins are registered in this project's ``pyproject.toml`` exactly as a third-party package
registers its own, so the core never imports one by name. A plugin that fails to import is reported with
its error and the others still load.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from nasengine.errors import NasEngineError

GROUPS = {
    "space": "nasengine.spaces",
    "task": "nasengine.tasks",
    "strategy": "nasengine.strategies",
}
PLURALS = {"space": "spaces", "task": "tasks", "strategy": "strategies"}


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
    """Every plugin of ``kind`` ("space", "task" or "strategy"), importable or not, by name."""
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {sorted(GROUPS)}")
    found: dict[str, Plugin] = {}
    for ep in sorted(entry_points(group=GROUPS[kind]), key=lambda e: e.name):
        found.setdefault(ep.name, _load(kind, ep))
    return found


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


def create(kind: str, name: str, **options: Any) -> Any:
    """An instance of the plugin ``name`` built with its ``options``."""
    cls = get(kind, name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise NasEngineError(f"{kind} {name!r} does not accept these options {sorted(options)}: {exc}") from None
