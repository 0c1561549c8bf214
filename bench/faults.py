"""Kill a run at random points, resume it each time, and check it ends exactly like an uninterrupted run.

    python -m bench.faults [--kills 24] [--preset smoke] [--seed 0] [--out runs/faults]

First an uninterrupted ``nasengine run`` (``reference/run``). Then ``faulted-<n>/run`` runs (every run folder is
named ``run``, so the report, which names its run, reads the same): each start of the same
command is killed with SIGKILL after a random delay (seeded), the next start resumes it, and a run that
finishes before its kill ends the round; rounds repeat until ``--kills`` kills have landed. Each kill is
recorded with the phase it interrupted (the training folder it was writing, else the first unfinished phase).

Every file of every finished faulted run is then compared with the reference:

- checkpoints (``*.pt``): byte for byte (they carry their SHA-256), else tensor by tensor to say which differs;
- JSON and JSON-lines files: equal after dropping wall-clock fields (``seconds``, ``images_per_s``, ...), read
  with the run files' readers (a torn last line or an unreadable file is a difference);
- ``summary.md``: byte for byte but for the seconds of its phase-time table (wall clock);
- everything else (plots, ``config.toml``): byte for byte. The lock file is skipped (it holds a pid), and so
  is ``tb/``: TensorBoard's event files hold wall times, in files named after the second and pid they began.

A temporary file of a killed write must not survive either. Prints one table and exits 1 on any difference;
everything it writes is in ``--out`` (deleted first), with ``faults.json`` the kills and the verdict.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from bench.common import add_out_argument, compare, nasengine_command
from nasengine.rundir.layout import DONE, LOG, PHASES, RunLayout
from nasengine.rundir.records import write_json

RUN_FOLDER = "run"  # every run's folder name: the report names its run
KILLS_PER_RUN = 6  # then the run finishes and a fresh one starts, so early phases are interrupted again


def command(preset: str, seed: int, out: Path) -> list[str]:
    return [*nasengine_command(), "run", "--preset", preset, "--seed", str(seed), "--out", str(out), "--quiet"]


def phase_in_progress(out: Path) -> str:
    """The phase a kill interrupted: the first unfinished phase, or the training folder inside it (teacher,
    distill, retrain/<name>/pretrain, ...) written last."""
    layout = RunLayout(out)
    for phase in PHASES:
        if not layout.done(phase).exists():
            folder = layout.folder(phase)
            open_folders = (
                [p for p in folder.rglob("*") if p.is_dir() and not (p / DONE).exists() and (p / LOG).exists()]
                if folder.exists()
                else []
            )
            if not open_folders:
                return phase
            newest = max(open_folders, key=lambda p: (p / LOG).stat().st_mtime)
            return str(newest.relative_to(out))
    return "report"


def run_once(arguments: list[str], kill_after: float | None, log: IO[str]) -> tuple[bool, float]:
    """Start the command; SIGKILL it after ``kill_after`` seconds. Returns (killed, seconds it ran)."""
    started = time.perf_counter()
    process = subprocess.Popen(arguments, stdout=log, stderr=log, start_new_session=True)
    try:
        process.wait(timeout=kill_after)
        if process.returncode != 0:
            raise SystemExit(f"the run failed with exit code {process.returncode}; see {log.name}")
        return False, time.perf_counter() - started
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 1 on any difference, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24, help="kills to land in all (at least 20 for the claim)")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (the kill delays use seed 1234)")
    add_out_argument(parser, "faults", default=Path("runs/faults"))
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    with open(args.out / "runs.log", "w") as log:
        reference = args.out / "reference" / RUN_FOLDER
        _, reference_seconds = run_once(command(args.preset, args.seed, reference), None, log)
        print(f"reference run: {reference_seconds:.1f} s")
        rng = np.random.default_rng(1234)
        kills: list[tuple[int, float, str]] = []
        rounds: list[Path] = []
        while len(kills) < args.kills:
            out = args.out / f"faulted-{len(rounds)}" / RUN_FOLDER
            rounds.append(out)
            completed = False  # a start ran to its end (files alone cannot say: a kill may hit the report)
            for _ in range(min(KILLS_PER_RUN, args.kills - len(kills))):
                # delays up to 60 % of the reference time: start-up, then any phase the run has reached
                delay = float(rng.uniform(1.0, max(2.0, 0.6 * reference_seconds)))
                killed, _ = run_once(command(args.preset, args.seed, out), delay, log)
                if not killed:
                    completed = True
                    break
                kills.append((len(rounds) - 1, delay, phase_in_progress(out)))
                print(
                    f"kill {len(kills):2d}: round {len(rounds) - 1}, after {delay:5.1f} s, during {kills[-1][2]}",
                    flush=True,
                )
            if not completed:
                run_once(command(args.preset, args.seed, out), None, log)  # resume to the end, no more kills
    print()
    differences = 0
    for out in rounds:
        problems = compare(reference, out)
        temp = [str(p.relative_to(out)) for p in out.rglob(".tmp-*")]
        problems += [f"temporary file left: {name}" for name in temp]
        differences += len(problems)
        landed = sum(1 for r, _, _ in kills if out.parent.name == f"faulted-{r}")
        verdict = "identical to the uninterrupted run" if not problems else f"{len(problems)} difference(s)"
        print(f"{out.parent.name}: {landed} kill(s), {verdict}")
        for line in problems[:20]:
            print(f"    {line}")
    phases: dict[str, int] = {}
    for _, _, phase in kills:
        phases[phase] = phases.get(phase, 0) + 1
    print(
        f"\n{len(kills)} kills over {len(rounds)} run(s); interrupted phases: "
        + ", ".join(f"{phase} {count}" for phase, count in phases.items())
    )
    print(
        "RESULT: every file identical (wall-clock fields aside)"
        if not differences
        else f"RESULT: {differences} difference(s)"
    )
    write_json(
        {"kills": kills, "differences": differences, "reference_seconds": reference_seconds}, args.out / "faults.json"
    )
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
