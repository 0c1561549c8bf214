"""Backbone latency on the device a command runs on: a lookup table of every choice at every position, timed.

Blocks of a chain run one after another, so a backbone's latency is close to the sum of its blocks' (the
approach of FBNet's and Once-for-All's latency tables). A ``LatencyTable`` holds the milliseconds of every
part ``Space.cost_parts`` yields (each choice at each position at its input shape for the run's image size,
and the fixed parts such as the stem), plus the **overhead** that the parts do not account for — the gaps
between blocks, the allocator, the network's own Python — measured on whole networks (the median of measured
minus summed, over the baseline and a few random architectures). A prediction is one sum.

Timings are taken the way small kernels must be: in eval mode without gradients, after a warm-up of the
process and of each module, in interleaved rounds (every part once per round, so a slow moment of the
machine touches all parts alike), each round the mean of ``number`` calls, and the **minimum** over rounds as
the statistic: on a shared machine interference only ever adds time, and measured on this 2-core machine the
minimum ranks 25 backbones the same way twice in a row (Spearman 0.94, means within 0.5%) where the median
does not (0.85, means 7% apart). The device, its name, the torch threads, the batch and the library versions
are recorded in the table; a table is built once per (space, options, source code, image size, batch, device,
threads, versions) and cached as JSON under the ``latency`` cache folder. ``nasengine latency build`` writes one to a
file, so a table measured on a deployment machine can constrain a search run elsewhere.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasengine.cache import cache_dir
from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Space, implements

FORMAT = 1
"""Version of the table's JSON layout and timing method; part of every cache key."""


@dataclass(frozen=True)
class Timing:
    """How parts are timed: ``warmup`` calls each first, then ``rounds`` rounds of ``number`` calls each."""

    warmup: int = 5
    rounds: int = 15
    number: int = 5
    statistic: str = "min"  # over the rounds: "min" (noise on a shared machine only adds time) or "median"

    def describe(self) -> str:
        return (
            f"{self.statistic} over {self.rounds} interleaved rounds of the mean of {self.number} calls, "
            f"after {self.warmup}"
        )

    def reduce(self, values: Sequence[float]) -> float:
        return min(values) if self.statistic == "min" else statistics.median(values)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (CUDA when there is one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; one line otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise NasEngineError(f"latency device {device!r} is not a device; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise NasEngineError(f"latency device {device!r} asked for, but this machine has no CUDA; use cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise NasEngineError(f"latency device {device!r} is not supported; use auto, cpu or cuda")
    return resolved


def device_name(device: torch.device) -> str:
    """What the device is, for people and cache keys: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``count`` inside the block (None: left as they are)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    calls: Sequence[Callable[[], Any]], device: torch.device, timing: Timing, on_round: Callable[[], None] | None = None
) -> list[float]:
    """Milliseconds per call of each of ``calls``, timed in interleaved rounds (see the module)."""
    with torch.inference_mode():
        for call in calls:
            for _ in range(timing.warmup):
                call()
        _synchronize(device)
        rounds: list[list[float]] = [[] for _ in calls]
        for _ in range(timing.rounds):
            for index, call in enumerate(calls):
                _synchronize(device)
                start = time.perf_counter()
                for _ in range(timing.number):
                    call()
                _synchronize(device)
                rounds[index].append((time.perf_counter() - start) * 1e3 / timing.number)
            if on_round is not None:
                on_round()
    return [timing.reduce(values) for values in rounds]


def _runner(module: nn.Module, shape: Sequence[int], device: torch.device) -> Callable[[], Any]:
    module = module.to(device).eval()
    inputs = torch.randn(*shape, device=device)
    return lambda: module(inputs)


def with_batch(shape: Sequence[int], batch: int) -> tuple[int, ...]:
    return (batch, *tuple(shape)[1:])


def time_networks(
    networks: Sequence[nn.Module], image_size: int, batch: int, device: torch.device, timing: Timing, passes: int = 2
) -> list[float]:
    """Milliseconds per forward pass of each whole network on ``batch`` images of ``image_size`` px.

    A network is timed alone, its rounds one after another — as a deployed network runs, its weights warm in
    the caches; interleaving dozens of networks would time them all cache-cold — and the networks are gone
    through ``passes`` times, the statistic taken over every pass, so a slow moment of the machine does not
    fall on one network only."""
    shape = (batch, 3, image_size, image_size)
    runners = [_runner(network, shape, device) for network in networks]
    times: list[list[float]] = [[] for _ in networks]
    for _ in range(passes):
        for index, runner in enumerate(runners):
            times[index].append(time_calls([runner], device, timing)[0])
    return [timing.reduce(values) for values in times]


def time_in_fresh_process(
    space: Space, arch: Arch, network: nn.Module, image_size: int, batch: int, device: torch.device, passes: int
) -> float:
    """Milliseconds per forward pass of ``network`` (``space.build_network(arch)`` with its weights), timed as
    :func:`time_networks` times it, but in a fresh Python process with this process's torch threads — as a
    deployed detector runs, and as a table is measured: a process that has trained for minutes times the same
    network up to 15% slower here (measured: 7.55 and 8.13 ms in the training process against 6.45–7.14 ms in
    fresh ones). The space is rebuilt there by its registered name."""
    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    spec = {
        "space": space.name,
        "options": space.options(),
        "arch": list(arch),
        "state": state,
        "image_size": image_size,
        "batch": batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "passes": passes,
    }
    with tempfile.TemporaryDirectory(prefix="nasengine-latency-") as folder:
        path = Path(folder) / "network.pt"
        torch.save(spec, path)
        result = subprocess.run(
            [sys.executable, "-m", "nasengine.latency", str(path)], capture_output=True, text=True, timeout=900
        )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise NasEngineError(f"timing {space.name} {list(arch)} in a fresh process failed: {last}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["ms"])


WARMUP_SECONDS = 1.0
"""How long a fresh timing process runs the network before timing it (its first seconds run slow)."""


def _time_saved_network(path: str) -> None:
    """The child of :func:`time_in_fresh_process`: build, load, warm up for ``WARMUP_SECONDS``, time, print JSON."""
    from nasengine import registry

    spec = torch.load(path, weights_only=True)
    torch.set_num_threads(int(spec["threads"]))
    space = registry.create("space", spec["space"], **spec["options"])
    network = space.build_network(tuple(spec["arch"]))
    network.load_state_dict(spec["state"])
    device = torch.device(spec["device"])
    run = _runner(network, (spec["batch"], 3, spec["image_size"], spec["image_size"]), device)
    with torch.inference_mode():
        started = time.perf_counter()
        while time.perf_counter() - started < WARMUP_SECONDS:
            run()
    (ms,) = time_networks([network], spec["image_size"], spec["batch"], device, Timing(), passes=spec["passes"])
    print(json.dumps({"ms": ms}))


@dataclass
class LatencyTable:
    """Milliseconds of every choice at every position, of the fixed parts and of the whole-network overhead."""

    ms: list[list[float]]  # [position][choice]
    fixed_ms: float
    overhead_ms: float
    info: dict[str, Any] = field(default_factory=dict)  # space, options, image size, batch, device, threads, ...

    def latency(self, arch: Arch) -> float:
        """Predicted milliseconds of ``arch``'s backbone."""
        if len(arch) != len(self.ms) or any(not 0 <= c < len(row) for c, row in zip(arch, self.ms)):
            raise NasEngineError(
                f"architecture {tuple(arch)} does not fit the latency table of {self.info.get('space')}: "
                f"it has {len(self.ms)} positions with {[len(row) for row in self.ms]} choices"
            )
        return self.fixed_ms + self.overhead_ms + sum(row[c] for row, c in zip(self.ms, arch))

    def latency_range(self) -> tuple[float, float]:
        base = self.fixed_ms + self.overhead_ms
        return base + sum(min(row) for row in self.ms), base + sum(max(row) for row in self.ms)

    def describe(self) -> str:
        """One line: where and how the table was measured."""
        info = self.info
        return (
            f"{info.get('space')} at {info.get('image_size')}px, batch {info.get('batch')}, on {info.get('device')} "
            f"({info.get('device_name')}), {info.get('threads')} thread(s), torch {info.get('torch')}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **self.info,
            "fixed_ms": self.fixed_ms,
            "overhead_ms": self.overhead_ms,
            "ms": self.ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyTable:
        info = {k: v for k, v in data.items() if k not in ("fixed_ms", "overhead_ms", "ms")}
        ms = [[float(v) for v in row] for row in data["ms"]]
        return cls(ms, float(data["fixed_ms"]), float(data["overhead_ms"]), info)


def build_table(
    space: Space,
    image_size: int,
    *,
    batch: int = 1,
    device: torch.device | None = None,
    timing: Timing = Timing(),
    overhead_networks: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Time every part of ``space.cost_parts(image_size)`` (a module met again at the same shape is timed once)
    in interleaved rounds, then ``overhead_networks`` whole networks as :func:`time_networks` times them (the
    baseline first, then random architectures drawn from a fixed seed) for the overhead. Runs under the torch
    threads set when it is called; ``progress(done, total)`` is told after every round."""
    if not implements(space, "cost_parts"):
        raise NasEngineError(
            f"space {space.name!r} does not implement cost_parts, so it has no per-block latency table; implement "
            "Space.cost_parts (per-choice modules with their input shapes) to search it under latency"
        )
    device = device or torch.device("cpu")
    with torch.random.fork_rng(devices=[]):  # building modules draws from the global generator
        torch.manual_seed(0)
        parts = list(space.cost_parts(image_size))
        distinct: dict[tuple[int, tuple[int, ...]], int] = {}
        calls: list[Callable[[], Any]] = []
        for _, _, module, shape in parts:
            key = (id(module), tuple(shape))
            if key not in distinct:
                distinct[key] = len(calls)
                calls.append(_runner(module, with_batch(shape, batch), device))
        archs = _overhead_archs(space, overhead_networks)
        networks = [space.build_network(arch) for arch in archs]
    rounds = [0]

    def tick() -> None:
        rounds[0] += 1
        if progress is not None:
            progress(rounds[0], timing.rounds + 1)

    part_ms = time_calls(calls, device, timing, on_round=tick)
    measured = time_networks(networks, image_size, batch, device, timing)  # as `measure` times a network
    tick()
    fixed = 0.0
    ms: dict[int, dict[int, float]] = {}
    for position, choice, module, shape_in in parts:
        value = part_ms[distinct[(id(module), tuple(shape_in))]]
        if position is None:
            fixed += value
        else:
            ms.setdefault(position, {})[choice] = value  # type: ignore[index]
    if {p: set(row) for p, row in ms.items()} != {p: set(range(n)) for p, n in enumerate(space.choices)}:
        raise NasEngineError(f"{space.name}.cost_parts did not yield every choice at every position")
    table = LatencyTable([[ms[p][c] for c in range(n)] for p, n in enumerate(space.choices)], fixed, 0.0)
    overhead = statistics.median(m - table.latency(arch) for m, arch in zip(measured, archs))
    table.overhead_ms = overhead
    table.info = {
        **_key(space, image_size, batch, device),
        "timing": timing.describe(),
        "overhead_from": [list(a) for a in archs],
        "built": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return table


def _overhead_archs(space: Space, count: int) -> list[Arch]:
    """The architectures whose whole-network timings give the overhead: the baseline (if the space names one)
    and random ones from a fixed seed, so every build of a table times the same networks."""
    archs: list[Arch] = []
    baseline = space.named.get(space.baseline_name or "")
    if baseline is not None:
        archs.append(tuple(baseline))
    draw = random.Random(0)
    while len(archs) < max(1, count):
        archs.append(tuple(draw.randrange(n) for n in space.choices))
    return archs


def _key(space: Space, image_size: int, batch: int, device: torch.device) -> dict[str, Any]:
    """What a table depends on: the space (its name, options, choices and source code), the input, the device,
    the threads and the versions."""
    from nasengine.flops import _source_fingerprint

    return {
        "space": space.name,
        "options": space.options(),
        "choices": list(space.choices),
        "source": _source_fingerprint(space),
        "image_size": image_size,
        "batch": batch,
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "format": FORMAT,
    }


def table_path(space: Space, image_size: int, batch: int, device: torch.device) -> Path:
    """Where the table for this space, input, device and thread count is cached."""
    key = json.dumps(_key(space, image_size, batch, device), sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir("latency") / f"{space.name}-{image_size}px-b{batch}-{device.type}-{digest}.json"


_tables: dict[Path, LatencyTable] = {}


def latency_table(
    space: Space, image_size: int, *, batch: int = 1, device: torch.device | None = None, quiet: bool = False
) -> LatencyTable:
    """The table for ``space`` on this machine: from memory, else the disk cache, else measured (and cached)."""
    from nasengine import console
    from nasengine.flops import _write_atomically

    device = device or torch.device("cpu")
    path = table_path(space, image_size, batch, device)
    if path in _tables:
        return _tables[path]
    table = None
    try:
        table = LatencyTable.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # missing or unreadable: measure again
        pass
    if table is None:
        what = f"latency table of {space.name} at {image_size}px, batch {batch}, {device.type}"
        timing = Timing()
        with console.progress(timing.rounds + 1, f"measuring the {what}", log_every=timing.rounds) as bar:
            table = build_table(
                space, image_size, batch=batch, device=device, timing=timing, progress=lambda done, _: bar.update(done)
            )
        _write_atomically(table.to_json(), path)
        if not quiet:
            console.log(f"latency table measured: {table.describe()}; cached in {path}")
    _tables[path] = table
    return table


def read_table(path: str | Path, space: Space) -> LatencyTable:
    """A table file (``nasengine latency build``'s) for ``space``; one line naming the file and the problem
    otherwise (not a table, another space, other options, another number of positions or choices)."""
    path = Path(path)
    rebuild = f"build one with: nasengine latency build --space {space.name} --out {path}"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NasEngineError(f"latency table {path} does not exist; {rebuild}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NasEngineError(f"latency table {path} cannot be read ({exc}); {rebuild}") from None
    except ValueError:
        raise NasEngineError(f"latency table {path} is not JSON; {rebuild}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NasEngineError(
            f"latency table {path} is not a nasengine latency table (format {FORMAT}): no 'format' field of "
            f"{FORMAT}; {rebuild}"
        )
    try:
        table = LatencyTable.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise NasEngineError(f"latency table {path} is damaged (field {exc}); {rebuild}") from None
    info = table.info
    if info.get("space") != space.name or info.get("options") != json.loads(json.dumps(space.options())):
        raise NasEngineError(
            f"latency table {path} was measured for space {info.get('space')!r} with options {info.get('options')}, "
            f"not {space.name!r} with {space.options()}; {rebuild}"
        )
    if [len(row) for row in table.ms] != list(space.choices):
        raise NasEngineError(
            f"latency table {path} has {[len(row) for row in table.ms]} choices per position, the space "
            f"{list(space.choices)}; {rebuild}"
        )
    if not all(v == v and abs(v) != float("inf") for row in table.ms for v in row):
        raise NasEngineError(f"latency table {path} holds a value that is not a finite number; {rebuild}")
    return table


if __name__ == "__main__":
    _time_saved_network(sys.argv[1])
