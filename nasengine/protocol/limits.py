"""The run's limits: every constraint it searches under, with its bounds, as one legality check.

FLOPs are always limited (``search.flops_min`` / ``search.flops_max`` at ``search.flops_image_size``, as
before constraints were plugins); any other registered constraint joins through
``search.constraints.<name>`` — ``max`` and ``min`` are its bounds, every other key one of its options::

    [search.constraints.latency]
    max = 12.0          # ms
    batch = 1

A candidate is legal when every constraint's cost is inside its bounds. The constraints are found by name in
the ``nasengine.constraints`` entry-point group, so a third-party constraint is used exactly as ``latency``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Constraint, Space, implements
from nasengine.protocol import distributed
from nasengine.settings.defaults import FLOPS_CONSTRAINT

BOUNDS = ("max", "min")
"""The keys of a ``search.constraints.<name>`` table that are bounds; the others are the constraint's options."""


@dataclass
class Limit:
    """One constraint and its bounds ``[low, high]``."""

    constraint: Constraint
    low: float
    high: float

    @property
    def name(self) -> str:
        return self.constraint.name

    def allows(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self) -> str:
        """``"latency ≤ 12.00 ms"``, ``"flops in [100.0 M MACs, 300.0 M MACs]"``."""
        if self.low > 0 and math.isfinite(self.high):
            return f"{self.name} in [{self.constraint.format(self.low)}, {self.constraint.format(self.high)}]"
        if self.low > 0:
            return f"{self.name} ≥ {self.constraint.format(self.low)}"
        if math.isfinite(self.high):
            return f"{self.name} ≤ {self.constraint.format(self.high)}"
        return f"{self.name} unlimited"


class Limits:
    """Every limit of a run on ``space``: ``legal(arch)``, ``costs(arch)``, one-line texts and checks."""

    def __init__(self, space: Space, limits: list[Limit]):
        self.space = space
        self.limits = limits

    def __iter__(self):
        return iter(self.limits)

    def __getitem__(self, name: str) -> Limit:
        for limit in self.limits:
            if limit.name == name:
                return limit
        raise KeyError(name)

    def costs(self, arch: Arch) -> dict[str, float]:
        """Every constraint's cost of ``arch``, by constraint name."""
        return {limit.name: _checked_cost(limit.constraint, self.space, arch) for limit in self.limits}

    def legal(self, arch: Arch) -> bool:
        return all(limit.allows(_checked_cost(limit.constraint, self.space, arch)) for limit in self.limits)

    def broken(self, costs: Mapping[str, float]) -> list[Limit]:
        """The limits that ``costs`` (as :meth:`costs` gives them) break."""
        return [limit for limit in self.limits if limit.name in costs and not limit.allows(costs[limit.name])]

    def text(self) -> str:
        """``"flops ≤ 300.0 M MACs and latency ≤ 12.00 ms"``."""
        return " and ".join(limit.text() for limit in self.limits)

    def ranges_text(self) -> str:
        """What the space spans under each constraint that knows its range."""
        spans = []
        for limit in self.limits:
            span = known_range(limit.constraint, self.space)
            if span is not None:
                spans.append(f"{limit.name} {limit.constraint.format(span[0])} to {limit.constraint.format(span[1])}")
        return ", ".join(spans) or "an unknown range"

    def check_reachable(self) -> None:
        """One line for a limit no architecture of the space meets (for constraints that know their range)."""
        for limit in self.limits:
            span = known_range(limit.constraint, self.space)
            if limit.low > limit.high or (span is not None and (limit.high < span[0] or limit.low > span[1])):
                spanned = (
                    f"the space spans {limit.constraint.format(span[0])} to {limit.constraint.format(span[1])}"
                    if span is not None
                    else "its range is unknown"
                )
                raise NasEngineError(
                    f"no architecture of {self.space.name} fits {limit.text()}: {spanned}; {_fix(limit.name)}"
                )


def configured_limits(search: Any) -> dict[str, dict[str, Any]]:
    """The limits a ``SearchConfig`` sets, as plain data: ``{name: {"min", "max", "options"}}``, FLOPs first (``max``
    is ``inf`` where there is none). What the report, ``show`` and the export's JSON say about a finished run."""
    high = math.inf if search.flops_max is None else float(search.flops_max)
    limits = {
        FLOPS_CONSTRAINT: {
            "min": float(search.flops_min),
            "max": high,
            "options": {"image_size": search.flops_image_size},
        }
    }
    for name, settings in search.constraints.items():
        limits[name] = {
            "min": float(settings.get("min", 0.0)),
            "max": float(settings["max"]),
            "options": {k: v for k, v in settings.items() if k not in BOUNDS},
        }
    return limits


def _fix(name: str) -> str:
    if name == FLOPS_CONSTRAINT:
        return "choose --flops-min/--flops-max inside that range"
    return f"choose search.constraints.{name}.max/min inside that range"


def known_range(constraint: Constraint, space: Space) -> tuple[float, float] | None:
    """The constraint's range over the space, or None when it does not know it."""
    if not implements(constraint, "cost_range"):
        return None
    try:
        low, high = constraint.cost_range(space)
    except NasEngineError:
        return None
    return float(low), float(high)


def _checked_cost(constraint: Constraint, space: Space, arch: Arch) -> float:
    value = constraint.cost(space, arch)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise NasEngineError(
            f"constraint {constraint.name!r} gave {value!r} as the cost of {tuple(arch)}; a cost is a finite number "
            ">= 0 (check it with nasengine.testing.check_constraint)"
        )
    return value


def parse_constraints(table: Mapping[str, Any], where: str = "") -> dict[str, tuple[float, float, dict[str, Any]]]:
    """``search.constraints`` as ``{name: (min, max, options)}``, checked: known names (one line listing them),
    ``max`` a number > 0 (required), ``min`` a number >= 0 at most ``max``, options the constraint declares."""
    parsed = {}
    for name, settings in table.items():
        key = f"{where}search.constraints.{name}"
        if name == FLOPS_CONSTRAINT:
            raise NasEngineError(
                f"{key}: FLOPs are limited by search.flops_max / search.flops_min (--flops-max); set them there"
            )
        try:
            registry.get("constraint", name)
        except NasEngineError as exc:
            raise NasEngineError(f"{key}: {exc}") from None
        if not isinstance(settings, Mapping):
            raise NasEngineError(f"{key} must be a table with max = NUMBER (e.g. --set {key}.max=12), not {settings!r}")
        if "max" not in settings:
            raise NasEngineError(f"{key} has no max; set the limit with --set {key}.max=NUMBER")
        bounds = []
        for bound, default in (("min", 0.0), ("max", math.inf)):
            value = settings.get(bound, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
                raise NasEngineError(
                    f"{key}.{bound} must be a number >= 0, not {value!r}; set it with --set {key}.{bound}=NUMBER"
                )
            bounds.append(float(value))
        low, high = bounds
        if high <= 0 or low > high:
            raise NasEngineError(f"{key}: max must be > 0 and at least min (min {low:g}, max {high:g})")
        options = {k: v for k, v in settings.items() if k not in BOUNDS}
        registry.create("constraint", name, **options)  # its options checked (constructors measure nothing)
        parsed[name] = (low, high, options)
    return parsed


def input_size(task: Any, search: Any) -> int:
    """The side of the square images the task feeds the backbone (``Task.input_size``), which measured costs such
    as latency are taken at; the FLOPs image size for a task that does not say."""
    return int(getattr(task, "input_size", None) or search.flops_image_size)


def run_limits(space: Space, search: Any, *, input_size: int, folder: Path | None = None, check: bool = True) -> Limits:
    """The limits of a search with settings ``search`` (a ``SearchConfig``) on ``space``, every constraint
    prepared (a latency table measured or read; with ``folder``, kept there by the main rank first, read back
    by the others). With ``check``, a limit no architecture meets is one line."""
    flops = registry.create("constraint", FLOPS_CONSTRAINT, image_size=search.flops_image_size)
    high = math.inf if search.flops_max is None else float(search.flops_max)
    limits = [Limit(flops, float(search.flops_min), high)]
    for name, (low, high, options) in parse_constraints(search.constraints).items():
        limits.append(Limit(registry.create("constraint", name, **options), low, high))
    if folder is not None and distributed.is_distributed():
        if distributed.is_main():
            _prepare(limits, space, input_size, folder)
        distributed.barrier()
        if not distributed.is_main():
            _prepare(limits, space, input_size, folder)
    else:
        _prepare(limits, space, input_size, folder)
    result = Limits(space, limits)
    if check:
        result.check_reachable()
    return result


def _prepare(limits: list[Limit], space: Space, input_size: int, folder: Path | None) -> None:
    for limit in limits:
        limit.constraint.prepare(space, input_size=input_size, folder=folder)
