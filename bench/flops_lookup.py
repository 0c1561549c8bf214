"""Benchmark: one FLOPs query answered by the lookup table vs by a full fvcore trace, for each space.

Prints the table build time, the median time of one query each way (the trace includes building the
network, as the fallback does), and the counts of the space's published architecture both ways; the
table must agree with every traced architecture.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from nasengine import registry
from nasengine.flops import CostTable, cost_table, trace_flops
from nasengine.interfaces import Arch, Space

SPACES = [("shufflenet-small", {}, "detnas-coco-fpn-300m"), ("shufflenet-large", {}, "detnasnet"),
          ("shufflenet-large", {"width": "3.8G"}, "detnasnet")]
IMAGE_SIZE = 224
LOOKUPS = 2000
TRACES = 3  # the published architecture plus random ones


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``function(*args)`` and the seconds it took."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def _traced(space: Space, arch: Arch) -> int:
    return trace_flops(space.build_network(arch), IMAGE_SIZE)


def main() -> None:
    table = Table(title=f"FLOPs query at {IMAGE_SIZE}px: lookup table vs full fvcore trace", title_justify="left")
    for column in ("space", "table build", "lookup (median)", "trace (median)", "speed-up",
                   "published arch", "MACs by table", "MACs by trace", "all equal"):
        table.add_column(column, justify="left" if column in ("space", "published arch") else "right")
    rng = random.Random(0)
    for name, options, published in SPACES:
        space = registry.create("space", name, **options)
        _, build = _timed(CostTable.build, space, IMAGE_SIZE)
        cost_table(space, IMAGE_SIZE)  # load (or build) the cached table so queries hit memory
        archs = [tuple(rng.randrange(n) for n in space.choices) for _ in range(LOOKUPS)]
        lookup = statistics.median(_timed(space.flops, arch, IMAGE_SIZE)[1] for arch in archs)
        traced_archs = [space.named[published], *archs[: TRACES - 1]]
        counts, trace_times = zip(*(_timed(_traced, space, arch) for arch in traced_archs))
        trace = statistics.median(trace_times)
        equal = all(space.flops(arch, IMAGE_SIZE) == count for arch, count in zip(traced_archs, counts))
        label = name + "".join(f" {k}={v}" for k, v in options.items())
        table.add_row(label, f"{build:.2f} s", f"{lookup * 1e6:.1f} µs", f"{trace:.2f} s", f"{trace / lookup:,.0f}×",
                      published, f"{space.flops(traced_archs[0], IMAGE_SIZE):,}", f"{counts[0]:,}",
                      "yes" if equal else "[red]NO[/red]")
    Console().print(table)


if __name__ == "__main__":
    main()
