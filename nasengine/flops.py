"""Backbone FLOPs and parameters, as the paper counts them: multiply-accumulates of convolutions and linear
layers (fvcore), at 224×224 by default.

A full fvcore trace costs 0.1–1 s, too slow for a constraint checked thousands of times in a search. Block
costs are exactly additive, so a ``CostTable`` holds the cost of every choice at every position (each block
traced alone at its input resolution) plus the fixed parts, and answers a query with one sum. A table is
built once per (space, options, image size) and kept in memory and as JSON under the ``flops`` cache folder.
Spaces that do not implement ``Space.cost_parts`` fall back to a full trace of ``build_network``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Space
from nasengine.paths import cache_dir

FORMAT = 1
"""Version of the table's JSON layout and counting rules; part of every cache key."""

COUNTED_OPS = ("aten::_convolution", "aten::linear", "aten::addmm")
"""The traced operators that count: convolutions and linear layers (``addmm`` is a linear with bias in
some traces). Everything else, batch norm included, counts zero."""


@dataclass(frozen=True)
class Cost:
    """Multiply-accumulates and parameters of a backbone (or part of one)."""

    flops: int
    params: int


def trace_flops(module: nn.Module, input_shape: int | Sequence[int] = 224) -> int:
    """Multiply-accumulates of one forward pass of ``module`` by a full fvcore trace (batch 1).

    ``input_shape`` is an image size (input ``1×3×size×size``) or a full input shape. The module runs in
    eval mode without gradients (its BN statistics are left alone) and gets its training mode back.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore.nn's import warns about torch.jit.script
        from fvcore.nn.jit_analysis import JitModelAnalysis
        from fvcore.nn.jit_handles import addmm_flop_jit, conv_flop_jit, linear_flop_jit

    handles = dict(zip(COUNTED_OPS, (conv_flop_jit, linear_flop_jit, addmm_flop_jit)))
    shape = (1, 3, input_shape, input_shape) if isinstance(input_shape, int) else tuple(input_shape)
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            analysis = JitModelAnalysis(module, (torch.zeros(shape, device=device),)).set_op_handle(**handles)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        module.train(was_training)


def count_params(module: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in module.parameters())


class CostTable:
    """Cost of every choice at every position plus the fixed parts; ``cost(arch)`` is one sum."""

    def __init__(self, fixed: Cost, flops: list[list[int]], params: list[list[int]]):
        self.fixed = fixed
        self.flops = flops  # [position][choice]
        self.params = params

    @classmethod
    def build(cls, space: Space, image_size: int) -> CostTable:
        """Trace every part ``space.cost_parts(image_size)`` yields (raises NotImplementedError without it).

        A module yielded again with the same input shape is traced once (spaces share one module between
        identical positions); weak keys keep a freed module's id from aliasing a new one.
        """
        fixed_flops = fixed_params = 0
        flops: dict[int, dict[int, int]] = {}
        params: dict[int, dict[int, int]] = {}
        traced: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], int]] = weakref.WeakKeyDictionary()
        for position, choice, module, input_shape in space.cost_parts(image_size):
            shapes = traced.setdefault(module, {})
            if tuple(input_shape) not in shapes:
                shapes[tuple(input_shape)] = trace_flops(module, input_shape)
            part_flops, part_params = shapes[tuple(input_shape)], count_params(module)
            if position is None:
                fixed_flops += part_flops
                fixed_params += part_params
            elif choice in flops.setdefault(position, {}):
                raise NasEngineError(f"{space.name}.cost_parts yielded choice {choice} at position {position} twice")
            else:
                flops[position][choice] = part_flops
                params.setdefault(position, {})[choice] = part_params
        if {p: set(row) for p, row in flops.items()} != {p: set(range(n)) for p, n in enumerate(space.choices)}:
            raise NasEngineError(f"{space.name}.cost_parts did not yield every choice at every position")
        positions = range(len(space.choices))
        return cls(
            Cost(fixed_flops, fixed_params),
            [[flops[p][c] for c in range(space.choices[p])] for p in positions],
            [[params[p][c] for c in range(space.choices[p])] for p in positions],
        )

    def cost(self, arch: Arch) -> Cost:
        try:
            if len(arch) != len(self.flops) or min(arch) < 0:
                raise IndexError
            return Cost(self.fixed.flops + sum(map(list.__getitem__, self.flops, arch)),
                        self.fixed.params + sum(map(list.__getitem__, self.params, arch)))
        except (IndexError, TypeError, ValueError):
            raise NasEngineError(
                f"architecture {tuple(arch)} does not fit the space: it needs {len(self.flops)} choice indices in range"
            ) from None

    def flops_range(self) -> tuple[int, int]:
        """Fewest and most FLOPs of any architecture (sums of the per-position extremes)."""
        return (self.fixed.flops + sum(min(row) for row in self.flops),
                self.fixed.flops + sum(max(row) for row in self.flops))

    def to_json(self) -> dict[str, Any]:
        return {"fixed": {"flops": self.fixed.flops, "params": self.fixed.params},
                "flops": self.flops, "params": self.params}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CostTable:
        return cls(Cost(int(data["fixed"]["flops"]), int(data["fixed"]["params"])), data["flops"], data["params"])


_tables: dict[tuple[str, str, int], CostTable] = {}
_traced: dict[tuple[tuple[str, str, int], Arch], Cost] = {}  # full-trace answers for spaces without cost_parts


def _source_fingerprint(space: Space) -> str:
    """Hash of the source files defining the space's class and its bases, so editing a block rebuilds the table."""
    digest = hashlib.sha256()
    for cls in type(space).__mro__:
        if cls.__module__ in ("builtins", "abc", "nasengine.interfaces"):
            continue
        try:
            digest.update(Path(inspect.getfile(cls)).read_bytes())
        except (TypeError, OSError):  # classes defined interactively have no file
            digest.update(cls.__qualname__.encode())
    return digest.hexdigest()[:16]


def _key(space: Space, image_size: int) -> dict[str, Any]:
    return {"space": space.name, "options": space.options(), "image_size": image_size,
            "format": FORMAT, "counted": list(COUNTED_OPS)}


def table_path(space: Space, image_size: int) -> Path:
    """Where the space's table is cached on disk (the name changes with the space's source code)."""
    key = json.dumps(_key(space, image_size), sort_keys=True, default=str) + _source_fingerprint(space)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir("flops") / f"{space.name}-{image_size}px-{digest}.json"


def _write_atomically(data: dict[str, Any], path: Path) -> None:
    """Write JSON through a temporary file and ``os.replace``, so readers never see half a table."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as tmp:
        json.dump(data, tmp)
    os.replace(tmp.name, path)


def _memory_key(space: Space, image_size: int) -> tuple[str, str, int]:
    # cheaper than the JSON key: this runs on every FLOPs query
    return space.name, repr(sorted(space.options().items())), image_size


def cost_table(space: Space, image_size: int = 224) -> CostTable:
    """The space's table: from memory, else from the disk cache, else built (and saved)."""
    memory_key = _memory_key(space, image_size)
    table = _tables.get(memory_key)
    if table is not None:
        return table
    key = json.loads(json.dumps(_key(space, image_size), default=str))  # as it reads back from the file
    path = table_path(space, image_size)
    try:
        data = json.loads(path.read_text())
        table = CostTable.from_json(data) if data.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):  # missing or unreadable: rebuild
        table = None
    if table is None:
        table = CostTable.build(space, image_size)
        _write_atomically({"key": key, **table.to_json()}, path)
    _tables[memory_key] = table
    return table


def _has_cost_parts(space: Space) -> bool:
    return type(space).cost_parts is not Space.cost_parts


def cost_of(space: Space, arch: Arch, image_size: int = 224) -> Cost:
    """FLOPs and parameters of ``space.build_network(arch)`` at ``image_size``: a table lookup, or a full
    trace (remembered) when the space does not implement ``cost_parts``."""
    if _has_cost_parts(space):
        return cost_table(space, image_size).cost(arch)
    key = (_memory_key(space, image_size), tuple(arch))
    if key not in _traced:
        network = space.build_network(tuple(arch))
        _traced[key] = Cost(trace_flops(network, image_size), count_params(network))
    return _traced[key]


def flops_range(space: Space, image_size: int = 224) -> tuple[int, int]:
    """``(min, max)`` FLOPs over every architecture of the space."""
    if not _has_cost_parts(space):
        raise NasEngineError(
            f"space {space.name!r} does not implement cost_parts, so its FLOPs range is unknown; "
            "implement Space.cost_parts (per-choice modules with their input shapes) to get it"
        )
    return cost_table(space, image_size).flops_range()
