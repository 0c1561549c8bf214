"""Benchmark: training and inference throughput of the detection tasks on the embedded data, CPU.

For ``coco-fpn`` and ``coco-retinanet`` (the VOC tasks build the same models) at their embedded defaults
(128-px images, batch 8, FPN 64 channels), on the ``shufflenet-small`` supernet with the task's published
DetNAS path active and ``channels_last`` as the engine runs it: images/s of a training step (forward,
backward, SGD) over 3 warm-up and 10 timed steps (``--steps``), and of eval-mode inference (no grad) over 1
warm-up and 5 timed batches (``--eval-batches``); each from the median batch time. Batches are read before
timing, so the figures are the model's alone. The load average is printed with the table: on a shared machine
other processes slow every figure. It writes nothing.

    python -m bench.detection_throughput [--tasks coco-fpn,coco-retinanet] [--steps 10] [--eval-batches 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from itertools import cycle, islice
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from bench.common import chosen
from nasengine import registry

TASKS = {"coco-fpn": "detnas-coco-fpn-300m", "coco-retinanet": "detnas-coco-retinanet-300m"}  # task: DetNAS path
WARMUP, STEPS = 3, 10
EVAL_WARMUP, EVAL_BATCHES = 1, 5


def _images_per_second(run: Callable[[Any], Any], batches: list, warmup: int) -> tuple[float, float]:
    """``(images/s, seconds per batch)`` of ``run(batch)`` from the median batch time after ``warmup`` batches.

    The median, not the mean, so that a burst of load from another process does not decide the figure.
    """
    for batch in batches[:warmup]:
        run(batch)
    times = []
    for batch in batches[warmup:]:
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return len(batches[0][0]) / seconds, seconds


def measure(task_name: str, arch_name: str, steps: int = STEPS, eval_batches: int = EVAL_BATCHES) -> dict[str, float]:
    task = registry.create("task", task_name)
    space = registry.create("space", "shufflenet-small")
    supernet = space.build_supernet()
    supernet.activate(space.named[arch_name])
    torch.manual_seed(0)
    model = task.build_model(supernet, space.out_channels).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=task.base_lr * task.batch_size / task.base_batch_size, momentum=0.9, weight_decay=1e-4
    )
    train_batches = list(islice(cycle(task.loader("train", train=True)), WARMUP + steps))

    def step(batch: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        task.loss(model, batch).backward()
        optimizer.step()

    model.train()
    train_rate, train_step = _images_per_second(step, train_batches, WARMUP)

    test_batches = list(islice(task.loader("test", train=False), EVAL_WARMUP + eval_batches))
    model.eval()
    with torch.no_grad():
        infer_rate, infer_batch = _images_per_second(lambda batch: model(batch[0]), test_batches, EVAL_WARMUP)
    return {
        "size": task.min_size,
        "batch": task.batch_size,
        "train": train_rate,
        "step": train_step,
        "infer": infer_rate,
        "infer_batch": infer_batch,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--steps", type=int, default=STEPS, help="timed training steps (after 3 warm-up steps)")
    parser.add_argument("--eval-batches", type=int, default=EVAL_BATCHES, help="timed inference batches")
    args = parser.parse_args(argv)
    names = chosen(parser, "--tasks", args.tasks, list(TASKS))
    rows = [(name, measure(name, TASKS[name], args.steps, args.eval_batches)) for name in names]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    table = Table(
        title=f"Detection throughput on the embedded data, shufflenet-small supernet path, channels_last, "
        f"{torch.get_num_threads()} threads (load average {load})",
        title_justify="left",
    )
    for column in ("task", "image px", "batch", "train img/s", "s / train step", "infer img/s", "s / infer batch"):
        table.add_column(column, justify="left" if column == "task" else "right", no_wrap=True)
    for name, r in rows:
        table.add_row(
            name,
            str(r["size"]),
            str(r["batch"]),
            f"{r['train']:.1f}",
            f"{r['step']:.3f}",
            f"{r['infer']:.1f}",
            f"{r['infer_batch']:.3f}",
        )
    console = Console()
    console.width = max(console.width, 120)  # keep the rows whole when printing to a file or pipe
    console.print(table)


if __name__ == "__main__":
    main()
