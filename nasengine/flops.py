"""Backbone FLOPs and parameters, as the paper counts them: multiply-accumulates of convolutions and linear
layers (fvcore), at 224×224 by default.

A full fvcore trace costs 0.1–1 s, too slow for a constraint checked thousands of times in a search. Block
costs are exactly additive, so a ``CostTable`` holds the cost of every choice at every position (each block
traced alone at its input resolution) plus the fixed parts, and answers a query with one sum. A table is
built once per (space, options, image size) and kept in memory and as JSON under the ``flops`` cache folder.
Spaces that do not implement ``Space.cost_parts`` fall back to a full trace of ``build_network``.

A cached table is only as good as its key. The key holds the space's name and options, the image size, the
counting rules, the torch and fvcore versions and a hash of the source of every module the space's class
can run: the modules defining it and its bases and, transitively, every module they import from the same
distribution (a block in a helper module included). And a table read from disk is trusted only after one
random architecture's cost matches a full trace of its network; otherwise it is rebuilt.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import random
import sys
import tempfile
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasengine.cache import cache_dir
from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Space, implements

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
        """Trace every part ``space.cost_parts(image_size)`` yields (a space that ``implements`` it).

        A module yielded again with the same input shape is traced once (spaces share one module between
        identical positions); weak keys keep a freed module's id from aliasing a new one.
        """
        with torch.random.fork_rng(devices=[]):  # building modules draws from the global generator
            return cls._build(space, image_size)

    @classmethod
    def _build(cls, space: Space, image_size: int) -> CostTable:
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
                flops[position][choice] = part_flops  # type: ignore[index]
                params.setdefault(position, {})[choice] = part_params  # type: ignore[index]
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
            return Cost(
                self.fixed.flops + sum(map(list.__getitem__, self.flops, arch)),
                self.fixed.params + sum(map(list.__getitem__, self.params, arch)),
            )
        except (IndexError, TypeError, ValueError):
            raise NasEngineError(
                f"architecture {tuple(arch)} does not fit the space: it needs {len(self.flops)} choice indices in range"
            ) from None

    def flops_range(self) -> tuple[int, int]:
        """Fewest and most FLOPs of any architecture (sums of the per-position extremes)."""
        return (
            self.fixed.flops + sum(min(row) for row in self.flops),
            self.fixed.flops + sum(max(row) for row in self.flops),
        )

    def params_range(self) -> tuple[int, int]:
        """Fewest and most parameters of any architecture."""
        return (
            self.fixed.params + sum(min(row) for row in self.params),
            self.fixed.params + sum(max(row) for row in self.params),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "fixed": {"flops": self.fixed.flops, "params": self.fixed.params},
            "flops": self.flops,
            "params": self.params,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CostTable:
        return cls(Cost(int(data["fixed"]["flops"]), int(data["fixed"]["params"])), data["flops"], data["params"])


_tables: dict[tuple[str, str, int], CostTable] = {}
_traced: dict[tuple[tuple[str, str, int], Arch], Cost] = {}  # full-trace answers for spaces without cost_parts


def _own_modules(space_cls: type) -> list[str]:
    """Modules defining ``space_cls`` and its bases, less the standard library and ``nasengine.interfaces``
    (the interface is covered by ``FORMAT``)."""
    names = dict.fromkeys(cls.__module__ for cls in space_cls.__mro__)
    return [n for n in names if n != "nasengine.interfaces" and n.partition(".")[0] not in sys.stdlib_module_names]


def _source_fingerprint(space: Space) -> str:
    """Hash of the source of every module the space's class can run (:func:`space_modules`), so editing a
    block — in the space's file or a helper module it imports — rebuilds the table."""
    digest = hashlib.sha256()
    for cls in type(space).__mro__:
        if cls.__module__ in _own_modules(type(space)) and _module_file(cls.__module__) is None:
            digest.update(cls.__qualname__.encode())  # classes defined interactively have no file
    for name, path in sorted(space_modules(type(space)).items()):
        digest.update(name.encode())
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest()[:16]


def space_modules(space_cls: type) -> dict[str, str]:
    """``{module name: file}`` of the modules defining ``space_cls`` and its bases, and of every module
    they import — directly or through each other, imports inside functions included — from the same
    distribution (the same top-level package when the module belongs to none).

    Found by reading the sources (``ast``), not ``sys.modules``, so the answer does not depend on what the
    process happened to import; an ``importlib.import_module`` call is not seen."""
    found: dict[str, str] = {}
    pending = [".".join(root.split(".")[:i]) for root in _own_modules(space_cls) for i in range(1, root.count(".") + 2)]
    visited: set[str] = set()
    while pending:
        name = pending.pop()
        if name in visited:
            continue
        visited.add(name)
        located = _module_file(name)
        if located is None:
            continue
        path, is_package = located
        found[name] = path
        family = _family(name)
        for imported in _imports(name, path, is_package):
            if imported.partition(".")[0] in family and imported not in visited:
                pending.append(imported)
    return found


def _module_file(name: str) -> tuple[str, bool] | None:
    """``(file, is_package)`` of module ``name`` (imported or importable), or None when it has no file."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None) if module is not None else None
    if path is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, AttributeError, ValueError):  # not a module (e.g. a class imported by name)
            return None
        path = spec.origin if spec is not None and spec.has_location else None
    if not path or not os.path.isfile(path):
        return None
    return path, os.path.basename(path).startswith("__init__.")


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _family(name: str) -> frozenset[str]:
    """Top-level package names of the distribution(s) that ship module ``name`` (just its own when none)."""
    top = name.partition(".")[0]
    distributions = set(_distributions().get(top, ()))
    tops = {t for t, owners in _distributions().items() if distributions & set(owners)}
    return frozenset(tops | {top})


def _imports(name: str, path: str, is_package: bool) -> set[str]:
    """Absolute names of the modules (and candidate submodules) that module ``name``'s source imports."""
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return set()
    package = name if is_package else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = (
                    importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                    if node.level
                    else node.module or ""
                )
            except (ImportError, ValueError):
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    parents = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    return {n for n in names | parents if n}


def _key(space: Space, image_size: int) -> dict[str, Any]:
    return {
        "space": space.name,
        "options": space.options(),
        "image_size": image_size,
        "format": FORMAT,
        "counted": list(COUNTED_OPS),
        "torch": torch.__version__,
        "fvcore": _fvcore_version(),
    }


@functools.cache
def _fvcore_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fvcore")
    except PackageNotFoundError:
        return "unknown"


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
    """The space's table: from memory, else from the disk cache (once one random architecture's cost matches a
    full trace of its network), else built (and saved)."""
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
    if table is not None and not agrees_with_trace(space, table, image_size):
        table = None  # stale despite its key (e.g. code imported dynamically changed): rebuild
    if table is None:
        table = CostTable.build(space, image_size)
        _write_atomically({"key": key, **table.to_json()}, path)
    _tables[memory_key] = table
    return table


def agrees_with_trace(space: Space, table: CostTable, image_size: int, arch: Arch | None = None) -> bool:
    """Whether ``table`` gives ``arch`` (default: a random architecture) the cost of a full trace of its
    network. Leaves the global random generators as they were."""
    if arch is None:
        arch = tuple(random.Random().randrange(n) for n in space.choices)
    try:
        expected = table.cost(arch)
    except NasEngineError:  # the table does not even fit the space's positions
        return False
    with torch.random.fork_rng(devices=[]):
        network = space.build_network(arch)
    return expected == Cost(trace_flops(network, image_size), count_params(network))


def cost_of(space: Space, arch: Arch, image_size: int = 224) -> Cost:
    """FLOPs and parameters of ``space.build_network(arch)`` at ``image_size``: a table lookup, or a full
    trace (remembered) when the space does not implement ``cost_parts``."""
    if implements(space, "cost_parts"):
        return cost_table(space, image_size).cost(arch)
    key = (_memory_key(space, image_size), tuple(arch))
    if key not in _traced:
        network = space.build_network(tuple(arch))
        _traced[key] = Cost(trace_flops(network, image_size), count_params(network))
    return _traced[key]


def flops_range(space: Space, image_size: int = 224) -> tuple[int, int]:
    """``(min, max)`` FLOPs over every architecture of the space."""
    if not implements(space, "cost_parts"):
        raise NasEngineError(
            f"space {space.name!r} does not implement cost_parts, so its FLOPs range is unknown; "
            "implement Space.cost_parts (per-choice modules with their input shapes) to get it"
        )
    return cost_table(space, image_size).flops_range()


def params_range(space: Space) -> tuple[int, int]:
    """``(min, max)`` parameters over every architecture of the space."""
    if not implements(space, "cost_parts"):
        raise NasEngineError(
            f"space {space.name!r} does not implement cost_parts, so its parameter range is unknown; "
            "implement Space.cost_parts (per-choice modules with their input shapes) to get it"
        )
    return cost_table(space, 224).params_range()
