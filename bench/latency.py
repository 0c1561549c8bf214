"""Benchmark: latency predicted by the per-block table against the measured latency of whole backbones.

Builds a fresh latency table of the space on this machine (its build time printed), then measures the whole
backbone of the space's named architectures and of ``--archs`` random ones (seeded) the way the table's parts
are measured (interleaved rounds, median), in one process after the table's own warm-up. It prints, for the
table's prediction and for FLOPs: Spearman's rank correlation with the measured latency, and for the table the
median and largest absolute error (% of measured). With ``--onnx`` each backbone is also exported (ONNX,
TorchScript-based exporter) and timed under onnxruntime with the same thread count, as a second target the
table never saw. The aims (the accuracy per-block lookup tables report): Spearman >= 0.9 and median absolute
error <= 10%.

Writes ``OUT/table.json`` (the measured table) and ``OUT/results.json`` (every architecture's prediction,
FLOPs and measurements) into its own folder.

    python -m bench.latency [--space shufflenet-small] [--image-size 224] [--threads 1] [--batch 1] [--archs 50] [--onnx]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from bench.common import add_out_argument, agreement_cells
from nasengine import registry
from nasengine.flops import cost_of
from nasengine.interfaces import Arch, Space
from nasengine.latency import LatencyTable, Timing, build_table, time_calls, time_networks, torch_threads
from nasengine.rundir.records import write_json

AIM_SPEARMAN = 0.9
AIM_MEDIAN_ERROR = 10.0  # percent


def architectures(space: Space, count: int, seed: int = 1) -> list[tuple[str, Arch]]:
    """The space's named architectures, then ``count`` distinct random ones (drawn with ``seed``)."""
    archs = [(name, tuple(arch)) for name, arch in space.named.items()]
    draw = random.Random(seed)
    seen = {arch for _, arch in archs}
    while len(archs) < len(space.named) + count:
        arch = tuple(draw.randrange(n) for n in space.choices)
        if arch not in seen:
            seen.add(arch)
            archs.append((f"random-{len(archs) - len(space.named)}", arch))
    return archs


def onnx_latencies(
    space: Space, archs: Sequence[Arch], image_size: int, batch: int, threads: int, timing: Timing, passes: int
) -> list[float]:
    """Milliseconds per run of each exported backbone under onnxruntime (CPU, ``threads`` intra-op threads),
    each timed alone in ``passes`` passes through them all, as the torch networks are."""
    import onnxruntime

    from nasengine.export import FeatureMaps

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    example = torch.randn(batch, 3, image_size, image_size)
    calls = []
    with tempfile.TemporaryDirectory() as folder:
        for index, arch in enumerate(archs):
            path = Path(folder) / f"backbone-{index}.onnx"
            with torch.random.fork_rng(devices=[]):
                network = FeatureMaps(space.build_network(arch)).eval()
            torch.onnx.export(network, (example,), str(path), input_names=["images"], dynamo=False, opset_version=17)
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {"images": example.numpy()}
            calls.append(lambda session=session, feed=feed: session.run(None, feed))
        times: list[list[float]] = [[] for _ in calls]
        for _ in range(passes):
            for index, call in enumerate(calls):
                times[index].append(time_calls([call], torch.device("cpu"), timing)[0])
        return [timing.reduce(values) for values in times]


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def errors(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """Median and largest absolute error of ``predicted``, in % of ``measured``."""
    relative = [abs(p - m) / m * 100 for p, m in zip(predicted, measured)]
    return statistics.median(relative), max(relative)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    space = registry.create("space", args.space)
    device = torch.device(args.device)
    started = time.perf_counter()
    table: LatencyTable = build_table(space, args.image_size, batch=args.batch, device=device)
    build_seconds = time.perf_counter() - started
    named = architectures(space, args.archs)
    archs = [arch for _, arch in named]
    with torch.random.fork_rng(devices=[]):
        networks = [space.build_network(arch) for arch in archs]
    timing = Timing(warmup=5, rounds=args.rounds, number=args.number)
    started = time.perf_counter()
    measured = time_networks(networks, args.image_size, args.batch, device, timing, passes=args.passes)
    measure_seconds = time.perf_counter() - started
    again = time_networks(networks, args.image_size, args.batch, device, timing, passes=args.passes)
    predicted = [table.latency(arch) for arch in archs]
    flops = [cost_of(space, arch).flops for arch in archs]
    results: dict[str, Any] = {
        "space": space.name,
        "image_size": args.image_size,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "device": table.info["device_name"],
        "table_seconds": round(build_seconds, 1),
        "measure_seconds": round(measure_seconds, 1),
        "timing": f"{timing.describe()}, over {args.passes} passes through all networks",
        "overhead_ms": table.overhead_ms,
        "archs": [
            {"name": name, "arch": list(arch), "predicted_ms": p, "measured_ms": m, "measured_again_ms": a, "flops": f}
            for (name, arch), p, m, a, f in zip(named, predicted, measured, again, flops)
        ],
    }
    if args.onnx:
        started = time.perf_counter()
        ort = onnx_latencies(space, archs, args.image_size, args.batch, torch.get_num_threads(), timing, args.passes)
        results["onnx_seconds"] = round(time.perf_counter() - started, 1)
        for record, value in zip(results["archs"], ort):
            record["onnxruntime_ms"] = value
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(table.to_json(), args.out / "table.json")
    write_json(results, args.out / "results.json")
    return results


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """``(target, predictor, Spearman, median error, largest error, aims)`` rows of the table."""
    records = results["archs"]
    predicted = [r["predicted_ms"] for r in records]
    flops = [r["flops"] for r in records]
    rows = []
    targets = [("torch eager", "measured_ms")]
    if "onnxruntime_ms" in records[0]:
        targets.append(("onnxruntime", "onnxruntime_ms"))
    again = [r["measured_again_ms"] for r in records]
    measured_first = [r["measured_ms"] for r in records]
    median, largest = errors(again, measured_first)
    rows.append(
        (
            "torch eager",
            "the same, measured again",
            agreement_cells(again, measured_first)[1],
            f"{median:.1f}%",
            f"{largest:.1f}%",
            "(the ceiling)",
        )
    )
    for target, key in targets:
        measured = [r[key] for r in records]
        rho = rank_correlation(predicted, measured)
        median, largest = errors(predicted, measured)
        met = "met" if rho >= AIM_SPEARMAN and median <= AIM_MEDIAN_ERROR else "not met"
        if key != "measured_ms":
            met = "(no aim)"
        rows.append(
            (target, "latency table", agreement_cells(predicted, measured)[1], f"{median:.1f}%", f"{largest:.1f}%", met)
        )
        rows.append((target, "FLOPs", agreement_cells(flops, measured)[1], "", "", ""))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="shufflenet-small")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--archs", type=int, default=50, help="random architectures beside the named ones")
    parser.add_argument("--onnx", action="store_true", help="also time each exported backbone under onnxruntime")
    parser.add_argument("--passes", type=int, default=8, help="passes through all networks (the minimum is kept)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per network and pass")
    parser.add_argument("--number", type=int, default=3, help="calls per round")
    add_out_argument(parser, "latency")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        results = measure(args)
    records = results["archs"]
    measured = [r["measured_ms"] for r in records]
    table = Table(
        title=(
            f"{results['space']} at {results['image_size']}px, batch {results['batch']}, {results['threads']} thread(s), "
            f"{results['device']}: {len(records)} backbones, {min(measured):.2f}-{max(measured):.2f} ms measured; "
            f"table built in {results['table_seconds']} s (overhead {results['overhead_ms']:.2f} ms); networks timed "
            f"{results['timing']}"
        )
    )
    for column in ("target", "predictor", "Spearman (p)", "median |error|", "largest |error|", "aims (>= 0.9, <= 10%)"):
        table.add_column(column)
    for row in summary_rows(results):
        table.add_row(*row)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
