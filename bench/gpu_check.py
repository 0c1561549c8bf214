"""The smoke protocol on every layout and precision this machine offers: throughput and equality checks.

On a CUDA machine: one GPU and all GPUs (``--procs``), each in fp32 and in the device's mixed precision
(bf16 where supported, else fp16). On a CPU machine, what a CPU can run: one process and two gloo ranks
of one thread each, in fp32 and bf16. Each layout is one ``nasengine run`` in ``OUT/<layout>/run``; the
first is run twice. The table gives per layout: wall seconds, the pre-training and fine-tuning images/s
(all ranks together, from ``done.json``), the search's seconds, the winner, and the checks where
exactness is promised:

- the same layout twice: the same search history and the same weights (``repeat``);
- the retrained baseline, in the same precision, whatever the number of processes (``baseline``: it
  trains alone on one rank, side by side with the winner).

CUDA kernels may be nondeterministic (atomics in some backward passes), so on a GPU a check can fail
without a bug in nasengine: the table says what it measured. Exits 1 when a check fails on a CPU.

    python -m bench.gpu_check [--out runs/gpu_check] [--preset smoke] [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench.common import add_out_argument, compare, run_nasengine
from nasengine.arch import format_arch
from nasengine.rundir.layout import RunLayout
from nasengine.rundir.records import read_json

BASELINE = "shufflenetv2-20"


def device_layouts(precisions: Sequence[str] | None) -> tuple[list[int], list[str], str]:
    """The process counts, the precisions and the device's name."""
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        mixed = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        name = f"{gpus} × {torch.cuda.get_device_name(0)}"
        return sorted({1, gpus}), list(precisions or ["fp32", mixed]), name
    return [1, 2], list(precisions or ["fp32", "bf16"]), "CPU (gloo, 1 thread per process)"


def run_layout(out: Path, preset: str, procs: int, precision: str, log: Path) -> float:
    """One ``nasengine run`` of the layout into ``out``; its wall seconds."""
    threads = ["--threads", "1"] if not torch.cuda.is_available() else []
    arguments = ["run", "--preset", preset, "--out", str(out), "--quiet", "--procs", str(procs), *threads]
    started = time.perf_counter()
    failure = run_nasengine([*arguments, "--set", f"precision={precision}"], log, bench="gpu_check")
    if failure:
        raise SystemExit(failure)
    return time.perf_counter() - started


def throughput(run: Path, phase: str) -> str:
    done = read_json(RunLayout(run).done(phase))
    rate = done.get("final", {}).get("img/s")
    return f"{rate:.0f}" if rate else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--precisions", default=None, help="comma-separated (default: fp32 and the device's mixed)")
    add_out_argument(parser, "gpu_check", default=Path("runs/gpu_check"))
    args = parser.parse_args(argv)
    procs_list, precisions, device = device_layouts(args.precisions.split(",") if args.precisions else None)
    if args.out.exists():
        shutil.rmtree(args.out)
    rows = []
    for precision in precisions:
        for procs in procs_list:
            name = f"procs{procs}-{precision}"
            run = args.out / name / "run"
            seconds = run_layout(run, args.preset, procs, precision, args.out / f"{name}.log")
            rows.append((name, procs, precision, run, seconds))
    first = rows[0]
    repeat = args.out / "repeat" / "run"
    run_layout(repeat, args.preset, first[1], first[2], args.out / "repeat.log")
    failed = 0
    table = Table(title=f"nasengine smoke protocol on {device}", title_justify="left")
    for column in ("layout", "wall s", "pretrain img/s", "finetune img/s", "search s", "winner", "checks"):
        table.add_column(column, justify="left" if column in ("layout", "winner", "checks") else "right")
    for name, _procs, precision, run, seconds in rows:
        checks = []
        if run == first[3]:
            checks.append(_verdict("repeat", compare(run, repeat)))
        same_precision = next(r for r in rows if r[2] == precision)
        if same_precision[3] != run:
            baseline = f"retrain/{BASELINE}"
            checks.append(_verdict("baseline", compare(same_precision[3] / baseline, run / baseline)))
        failed += sum("differs" in check for check in checks)
        table.add_row(
            name,
            f"{seconds:.1f}",
            throughput(run, "pretrain"),
            throughput(run, "finetune"),
            f"{read_json(RunLayout(run).done('search'))['seconds']:.1f}",
            format_arch(read_json(RunLayout(run).best())["arch"]),
            "; ".join(checks) or "-",
        )
    console = Console()
    console.width = max(console.width, 160)
    console.print(table)
    return 1 if failed and not torch.cuda.is_available() else 0


def _verdict(name: str, problems: list[str]) -> str:
    return f"{name} equal" if not problems else f"{name} differs ({problems[0]})"


if __name__ == "__main__":
    sys.exit(main())
