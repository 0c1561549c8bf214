"""Benchmark: one training step of the demo's detector under each process layout and precision, CPU.

The step is the engine's: ``coco-fpn`` on the ``shufflenet-small`` supernet (one sampled path, the demo's
64-px embedded data, batch 8 per process, channels_last), SGD, gradients averaged over the ranks by the
engine's one flat all-reduce (:func:`nasengine.protocol.distributed.average_gradients`). Layouts:

- one process with all the cores' threads, and with 1 thread;
- N processes side by side, 1 thread each, independent (the engine's networks trained side by side);
- N data-parallel ranks, 1 thread each (the engine's supernet phases under ``--procs N``), and the same
  with PyTorch's DistributedDataParallel wrapper (``find_unused_parameters``: a supernet trains one path),
  which the engine replaced by the flat all-reduce;
- one process under bf16 autocast (the engine's ``precision = "bf16"``).

Each layout runs in fresh processes, one layout at a time; the figure is the median of ``--steps`` steps
after 15 warm-up steps (per rank: the slowest rank's median). It writes nothing.

    python -m bench.layouts [--steps 25] [--procs 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Sequence
from itertools import cycle, islice

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rich.console import Console
from rich.table import Table

from nasengine import registry
from nasengine.protocol import distributed
from nasengine.protocol.path_sampling import uniform_path
from nasengine.protocol.precision import Mixed

WARMUP = 15  # a supernet's blocks used for the first time cost 18–40% more (page faults): every choice used first


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(
    rank: int, world: int, threads: int, mode: str, precision: str, batch: int, steps: int, port: int, out
) -> None:
    """Time ``steps`` training steps in this process; put ``(rank, median seconds)`` on ``out``."""
    torch.set_num_threads(threads)
    if mode in ("parallel", "ddp"):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    task, space = registry.create("task", "coco-fpn"), registry.create("space", "shufflenet-small")
    torch.manual_seed(0)
    supernet = space.build_supernet()
    model = task.build_model(supernet, space.out_channels).to(memory_format=torch.channels_last)
    stepped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if mode == "ddp" else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mixed = Mixed(precision, torch.device("cpu"))
    batches = list(islice(cycle(task.loader("train", train=True, batch_size=batch)), WARMUP + steps))
    times = []
    model.train()
    for index, batch in enumerate(batches):
        supernet.activate(uniform_path(space.choices, 0, index))
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with mixed.autocast():
            loss = task.loss(stepped, batch)
        mixed.backward(loss)
        if mode == "parallel":
            distributed.average_gradients(model.parameters())
        mixed.step(optimizer)
        times.append(time.perf_counter() - started)
    out.put((rank, statistics.median(times[WARMUP:])))
    if dist.is_initialized():
        dist.destroy_process_group()


def measure(procs: int, threads: int, mode: str, precision: str, batch: int, steps: int) -> list[float]:
    """Median seconds per step of each of ``procs`` processes of one layout."""
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    port = _free_port()
    workers = [
        context.Process(
            target=_worker,
            args=(rank, procs, threads, mode, precision, batch, steps, port, queue),
        )
        for rank in range(procs)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()  # the results are a few bytes: they wait in the queue's pipe
    failed = [rank for rank, worker in enumerate(workers) if worker.exitcode != 0]
    if failed:
        raise SystemExit(f"the measuring process of rank {failed[0]} failed (exit code {workers[failed[0]].exitcode})")
    results = dict(queue.get() for _ in workers)
    return [results[rank] for rank in range(procs)]


def layouts(procs: int, cores: int) -> list[tuple[str, int, int, str, str, int]]:
    """``(label, processes, threads, mode, precision, batch per process)`` of every layout measured."""
    return [
        (f"one process, {cores} threads", 1, cores, "alone", "fp32", 8),
        ("one process, 1 thread", 1, 1, "alone", "fp32", 8),
        (f"{procs} processes side by side, 1 thread each", procs, 1, "alone", "fp32", 8),
        (f"{procs} data-parallel ranks, 1 thread each (flat all-reduce)", procs, 1, "parallel", "fp32", 8),
        (f"{procs} data-parallel ranks, 1 thread each (DDP wrapper)", procs, 1, "ddp", "fp32", 8),
        (f"{procs} data-parallel ranks, 1 thread, batch {8 // procs} each", procs, 1, "parallel", "fp32", 8 // procs),
        (f"one process, {cores} threads, bf16 autocast", 1, cores, "alone", "bf16", 8),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25, help="timed steps per process (after 15 warm-up steps)")
    parser.add_argument("--procs", type=int, default=2, help="processes of the multi-process layouts")
    parser.add_argument("--only", default=None, help="comma-separated row numbers to measure (1-based)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    rows = layouts(args.procs, cores)
    wanted = {int(n) for n in args.only.split(",")} if args.only else set(range(1, len(rows) + 1))
    reference = None
    table = Table(
        title=f"One training step of the demo's detector (coco-fpn, shufflenet-small, 64 px, batch 8 per "
        f"process), {cores} cores, median of {args.steps}",
        title_justify="left",
    )
    for column in ("layout", "s / step (each process)", "images / s, all processes", "vs the first row"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    for number, (label, procs, threads, mode, precision, batch) in enumerate(rows, 1):
        if number not in wanted:
            continue
        seconds = measure(procs, threads, mode, precision, batch, args.steps)
        rate = sum(batch / s for s in seconds) if mode == "alone" else batch * procs / max(seconds)
        reference = reference or rate
        table.add_row(label, ", ".join(f"{s:.3f}" for s in seconds), f"{rate:.1f}", f"{rate / reference:.2f}×")
    console = Console()
    console.width = max(console.width, 130)
    console.print(table)


if __name__ == "__main__":
    main()
