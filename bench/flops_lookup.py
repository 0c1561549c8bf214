"""Benchmark: one FLOPs query answered by the lookup table vs by a full fvcore trace, for each space.

Prints the cold table build time (into a temporary cache folder), the median time of one query each way
(the trace includes building the network, as the fallback does), and the counts of the space's published
architecture both ways; the table must agree with every traced architecture. Runs on one intra-op thread:
a batch-1 trace gains nothing from more, and shared machines give steadier figures that way.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from nasengine import registry
from nasengine.flops import cost_table, trace_flops
from nasengine.interfaces import Arch, Space

SPACES = [("shufflenet-small", {}, "detnas-coco-fpn-300m"), ("shufflenet-large", {}, "detnasnet"),
          ("shufflenet-large", {"width": "3.8G"}, "detnasnet")]  # (space, options, published architecture)
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
    table = Table(title=f"One FLOPs query at {IMAGE_SIZE}px: lookup table vs full fvcore trace (medians; MACs of "
                        f"the published architecture; equal: table = trace on all {TRACES} traced architectures)",
                  title_justify="left")
    for column in ("space", "table build", "lookup", "trace", "speed-up", "published", "MACs by table",
                   "MACs by trace", "equal"):
        table.add_column(column, justify="left" if column in ("space", "published") else "right", no_wrap=True)
    rng = random.Random(0)
    for name, options, published in SPACES:
        space = registry.create("space", name, **options)
        _, build = _timed(cost_table, space, IMAGE_SIZE)  # cold: the cache folder is empty
        archs = [tuple(rng.randrange(n) for n in space.choices) for _ in range(LOOKUPS)]
        lookup = statistics.median(_timed(space.flops, arch, IMAGE_SIZE)[1] for arch in archs)
        traced_archs = [space.named[published], *archs[: TRACES - 1]]
        counts, trace_times = zip(*(_timed(_traced, space, arch) for arch in traced_archs))
        trace = statistics.median(trace_times)
        equal = all(space.flops(arch, IMAGE_SIZE) == count for arch, count in zip(traced_archs, counts))
        label = name + "".join(f" {value}" for value in options.values())
        table.add_row(label, f"{build:.2f} s", f"{lookup * 1e6:.1f} µs", f"{trace:.2f} s", f"{trace / lookup:,.0f}×",
                      published, f"{space.flops(traced_archs[0], IMAGE_SIZE):,}", f"{counts[0]:,}",
                      "yes" if equal else "[red]NO[/red]")
    console = Console()
    console.width = max(console.width, 140)  # keep the rows whole when printing to a file or pipe
    console.print(table)


if __name__ == "__main__":
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NASENGINE_CACHE"] = cache  # time a cold table build without touching the user's cache
        main()
