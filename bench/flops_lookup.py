"""Benchmark: one FLOPs query answered by the lookup table vs by a full fvcore trace, for each space.

For shufflenet-small, shufflenet-large and shufflenet-large 3.8G at 224×224 it prints the cold table build
time (built and saved into an empty temporary cache folder, fvcore already imported), the median time of one
query by table lookup (over ``LOOKUPS`` random architectures) and by full trace (over ``TRACES``
architectures; a trace includes building the network, as the fallback does), the speed-up, and the MACs of
the space's published architecture both ways. "equal" says whether the table agreed with every traced
architecture.

Traces run on one intra-op thread by default (``--threads``): a batch-1 trace gains nothing from more, and
on shared 2-core machines extra threads oversubscribe the cores and make traces many times slower. The
tables are built in a temporary cache folder, removed afterwards; nothing else is written.

    python -m bench.flops_lookup [--threads N] [--spaces shufflenet-small,...] [--lookups 1000] [--traces 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from bench.common import chosen
from nasengine import registry
from nasengine.flops import cost_of, cost_table, trace_flops
from nasengine.interfaces import Arch, Space

SPACES = [
    ("shufflenet-small", {}, "detnas-coco-fpn-300m"),
    ("shufflenet-large", {}, "detnasnet"),
    ("shufflenet-large", {"width": "3.8G"}, "detnasnet"),
]  # (space, options, published architecture)
IMAGE_SIZE = 224
LOOKUPS = 1000
TRACES = 5  # the published architecture plus random ones

T = TypeVar("T")


def _timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``function(*args)`` and the seconds it took."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def _traced(space: Space, arch: Arch) -> int:
    """MACs of the architecture the way a space without a table gets them: build the network, trace it."""
    return trace_flops(space.build_network(arch), IMAGE_SIZE)


def label(name: str, options: dict[str, Any]) -> str:
    """A space's row label: its name and option values (``shufflenet-large 3.8G``)."""
    return name + "".join(f" {value}" for value in options.values())


@contextmanager
def cold_cache_and_threads(threads: int) -> Iterator[None]:
    """An empty temporary FLOPs-table cache and ``threads`` torch threads, both restored afterwards, so that a
    table build is timed cold without touching the user's cache."""
    before_threads, before_cache = torch.get_num_threads(), os.environ.get("NASENGINE_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NASENGINE_CACHE"] = cache
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before_threads)
            if before_cache is None:
                del os.environ["NASENGINE_CACHE"]
            else:
                os.environ["NASENGINE_CACHE"] = before_cache


def measure(spaces: list[tuple[str, dict[str, Any], str]], threads: int, lookups: int, traces: int) -> None:
    """Print the table for ``spaces`` (rows of :data:`SPACES`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trace_flops(nn.Conv2d(3, 3, 1), 8)  # import fvcore and warm up the tracer outside the timings
    table = Table(
        title=f"One FLOPs query at {IMAGE_SIZE}px, {threads} thread(s): lookup table (median of "
        f"{lookups}) vs full fvcore trace (median of {traces}); MACs of the published architecture",
        title_justify="left",
    )
    for column in (
        "space",
        "table build (cold)",
        "lookup",
        "trace",
        "speed-up",
        "published",
        "MACs by table",
        "MACs by trace",
        "equal",
    ):
        table.add_column(column, justify="left" if column in ("space", "published") else "right", no_wrap=True)
    rng = random.Random(0)
    for name, options, published in spaces:
        space = registry.create("space", name, **options)
        _, build = _timed(cost_table, space, IMAGE_SIZE)  # cold: nothing in memory or in the cache folder
        archs = [tuple(rng.randrange(n) for n in space.choices) for _ in range(lookups)]
        lookup = statistics.median(_timed(cost_of, space, arch, IMAGE_SIZE)[1] for arch in archs)
        traced_archs = [space.named[published], *archs[: traces - 1]]
        counts, trace_times = zip(*(_timed(_traced, space, arch) for arch in traced_archs))
        trace = statistics.median(trace_times)
        equal = all(cost_of(space, arch, IMAGE_SIZE).flops == count for arch, count in zip(traced_archs, counts))
        table.add_row(
            label(name, options),
            f"{build:.2f} s",
            f"{lookup * 1e6:.1f} µs",
            f"{trace:.2f} s",
            f"{trace / lookup:,.0f}×",
            published,
            f"{cost_of(space, traced_archs[0], IMAGE_SIZE).flops:,}",
            f"{counts[0]:,}",
            "yes" if equal else "[red]NO[/red]",
        )
    console = Console()
    console.width = max(console.width, 150)  # keep the rows whole when printing to a file or pipe
    console.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    labels = [label(name, options) for name, options, _ in SPACES]
    parser.add_argument("--spaces", default=",".join(labels), help="comma-separated rows, of: " + ", ".join(labels))
    parser.add_argument("--lookups", type=int, default=LOOKUPS, help="random architectures looked up")
    parser.add_argument("--traces", type=int, default=TRACES, help="architectures traced (the published one first)")
    args = parser.parse_args(argv)
    names = chosen(parser, "--spaces", args.spaces, labels)
    with cold_cache_and_threads(args.threads):
        measure([row for row in SPACES if label(row[0], row[1]) in names], args.threads, args.lookups, args.traces)


if __name__ == "__main__":
    main()
