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

A lost worker: ``--procs 2 --kill-rank 1`` runs every command as 2 processes (``--threads 1``) under
nasengine's launcher with restarts, and kills only rank 1 (SIGKILL, found by its ``RANK``), up to
``KILLS_PER_RUN`` times during one command: the launcher must restart the group each time and the command
finish by itself, within ``HANG_FACTOR`` times the reference's time (else it hung: a failure), to files
identical to an uninterrupted run of the same layout.

    python -m bench.faults --procs 2 --kill-rank 1 --kills 12
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


HANG_FACTOR = 4  # a command with lost ranks may take this many times the reference's time, plus restarts
RESTART_SECONDS = 60  # what each restart may add (the processes' start and the rendezvous)


def command(preset: str, seed: int, out: Path, procs: int = 1) -> list[str]:
    layout = ["--procs", str(procs), "--threads", "1", "--max-restarts", str(KILLS_PER_RUN)] if procs > 1 else []
    return [*nasengine_command(), "run", "--preset", preset, "--seed", str(seed), "--out", str(out), "--quiet", *layout]


def rank_pid(launcher: int, rank: int) -> int | None:
    """The process of ``rank`` among the launcher's children (its environment carries ``RANK``), or None."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0") if parent == launcher else []
        except (OSError, ValueError, IndexError):
            continue
        if f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def run_losing_rank(
    arguments: list[str], out: Path, delays: Sequence[float], rank: int, limit: float, log: IO[str]
) -> tuple[list[str], bool]:
    """Start the command (a run into ``out``) and SIGKILL its ``rank`` at each of ``delays`` (seconds from the
    start) while it runs; it must then finish by itself within ``limit`` seconds. Returns (the phase each
    kill interrupted, hung)."""
    started = time.perf_counter()
    process = subprocess.Popen(arguments, stdout=log, stderr=log, start_new_session=True)
    landed: list[str] = []
    for delay in sorted(delays):
        try:
            process.wait(timeout=max(0.0, started + delay - time.perf_counter()))
            break  # finished before this kill
        except subprocess.TimeoutExpired:
            pid = rank_pid(process.pid, rank)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                landed.append(phase_in_progress(out))
    try:
        process.wait(timeout=max(1.0, started + limit - time.perf_counter()))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return landed, True
    if process.returncode != 0:
        raise SystemExit(f"the run failed with exit code {process.returncode}; see {log.name}")
    return landed, False


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
    parser.add_argument("--procs", type=int, default=1, help="processes of every run (1 thread each when > 1)")
    parser.add_argument("--kill-rank", type=int, default=None, help="kill only this rank (needs --procs > 1)")
    add_out_argument(parser, "faults", default=Path("runs/faults"))
    args = parser.parse_args(argv)
    if args.kill_rank is not None and not 0 <= args.kill_rank < args.procs:
        parser.error(f"--kill-rank must name one of the {args.procs} ranks (0 to {args.procs - 1})")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    with open(args.out / "runs.log", "w") as log:
        reference = args.out / "reference" / RUN_FOLDER
        _, reference_seconds = run_once(command(args.preset, args.seed, reference, args.procs), None, log)
        print(f"reference run: {reference_seconds:.1f} s")
        rng = np.random.default_rng(1234)
        kills: list[tuple[int, float, str]] = []
        rounds: list[Path] = []
        hangs = 0
        while args.kill_rank is not None and len(kills) < args.kills:
            out = args.out / f"faulted-{len(rounds)}" / RUN_FOLDER
            rounds.append(out)
            wanted = min(KILLS_PER_RUN, args.kills - len(kills))
            delays = sorted(float(d) for d in rng.uniform(1.0, max(2.0, 0.8 * reference_seconds), wanted))
            limit = HANG_FACTOR * reference_seconds + RESTART_SECONDS * wanted
            landed, hung = run_losing_rank(
                command(args.preset, args.seed, out, args.procs), out, delays, args.kill_rank, limit, log
            )
            hangs += hung
            kills += [(len(rounds) - 1, delay, phase) for delay, phase in zip(delays, landed)]
            verdict = f"HUNG (no end within {limit:.0f} s)" if hung else "finished by itself"
            print(
                f"round {len(rounds) - 1}: rank {args.kill_rank} killed {len(landed)} time(s) (during "
                f"{', '.join(landed) or '-'}), {verdict}",
                flush=True,
            )
            if hung:
                run_once(command(args.preset, args.seed, out, args.procs), None, log)  # finish it to compare
        while args.kill_rank is None and len(kills) < args.kills:
            out = args.out / f"faulted-{len(rounds)}" / RUN_FOLDER
            rounds.append(out)
            completed = False  # a start ran to its end (files alone cannot say: a kill may hit the report)
            for _ in range(min(KILLS_PER_RUN, args.kills - len(kills))):
                # delays up to 60 % of the reference time: start-up, then any phase the run has reached
                delay = float(rng.uniform(1.0, max(2.0, 0.6 * reference_seconds)))
                killed, _ = run_once(command(args.preset, args.seed, out, args.procs), delay, log)
                if not killed:
                    completed = True
                    break
                kills.append((len(rounds) - 1, delay, phase_in_progress(out)))
                print(
                    f"kill {len(kills):2d}: round {len(rounds) - 1}, after {delay:5.1f} s, during {kills[-1][2]}",
                    flush=True,
                )
            if not completed:
                run_once(command(args.preset, args.seed, out, args.procs), None, log)  # resume to the end
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
    if hangs:
        print(f"{hangs} command(s) HUNG after a lost rank")
    print(
        "RESULT: every file identical (wall-clock fields aside)"
        if not differences and not hangs
        else f"RESULT: {differences} difference(s), {hangs} hang(s)"
    )
    write_json(
        {"kills": kills, "differences": differences, "hangs": hangs, "reference_seconds": reference_seconds},
        args.out / "faults.json",
    )
    return 1 if differences or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
