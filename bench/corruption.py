"""Damage a finished run file by file and see whether each command notices: the corruption matrix.

    python -m bench.corruption [--preset smoke] [--set KEY=VALUE ...] [--reference RUN] [--files GLOB,...] [--jobs 2]
                               [--out runs/bench/corruption]

A finished ``nasengine run`` (``reference/run``: made with ``--preset`` and any ``--set`` settings, e.g.
``--set search.constraints.latency.max=40`` for a run under latency, or a copy of ``--reference``, a finished run
of them) is copied once per case; in the copy one file is damaged
one way — ``flip`` (one byte in the middle XOR 1), ``half`` (cut to half its length), ``empty`` (0 bytes)
or ``delete`` — and one command runs on it as a user would: ``resume`` (the same ``nasengine run`` again),
``show``, ``report`` or ``export`` (safetensors of the retrained winner). Every file of the run is damaged
but the lock and TensorBoard's event files. Each case ends as one of:

- **error**: exit status 2 and one ``error:`` line, no traceback. If the line suggests a ``nasengine``
  command, it is run as written, then the command again: the case counts as **error, hint works** when the
  run then ends identical to the reference (``bench.common.compare``), else **error, hint fails**;
- **recovered**: exit status 0, and the run is identical to the reference afterwards (a deleted product
  rebuilt, the report written again);
- **silent**: exit status 0, and the damage is still there (or the run differs from the reference);
- **crash**: any other exit status, or a traceback.

Prints the counts per damage and per command, and every case that is silent or crashed; writes
``matrix.json`` (every case) into ``--out``. Exits 1 when any case is silent or crashed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import add_out_argument, compare, nasengine_command
from nasengine.rundir.lock import LOCK_NAME

DAMAGES = ("flip", "half", "empty", "delete")
COMMANDS = ("resume", "show", "report", "export")
OUTCOMES = ("error, hint works", "error", "error, hint fails", "recovered", "silent", "crash")
SKIPPED = {"tb", "export"}  # event files hold wall times; export/ is what the export command writes
HINT = re.compile(r"(nasengine [a-z-]+ \S+(?: --[a-z-]+(?: [^\s;,]+)?)*)")


def damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
        return
    data = path.read_bytes()
    if how == "flip":
        data = data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1 :] if data else data
    elif how == "half":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = b""
    path.write_bytes(data)


def command_line(command: str, run: Path, preset: Sequence[str]) -> list[str]:
    """The ``nasengine`` command line of ``command`` on ``run``; ``preset``: the options the run was made with."""
    arguments = {
        "resume": ["run", *preset, "--out", str(run), "--quiet"],
        "show": ["show", str(run)],
        "report": ["report", str(run)],
        "export": ["export", str(run), "--format", "safetensors", "--image-size", "64"],
    }[command]
    return [*nasengine_command(), *arguments]


def execute(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(arguments, capture_output=True, text=True, timeout=900, env=env)


def clean_error(result: subprocess.CompletedProcess[str]) -> bool:
    lines = result.stderr.strip().splitlines()
    return result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")


class Hints:
    """Whether following a hint repaired the damage, found once per damaged file, damage and hint (the four
    commands on one damage usually give the same hint, and following it retrains)."""

    def __init__(self) -> None:
        self._works: dict[tuple[str, str, str], bool] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def works(self, key: tuple[str, str, str], reference: Path, case: Path, hint: str, preset: Sequence[str]) -> bool:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._works:  # followed on this case's copy, which the hint names
                followed = execute([*nasengine_command(), *shlex.split(hint)[1:]])
                again = execute(command_line("resume", case, preset)) if followed.returncode == 0 else followed
                repaired = followed.returncode == 0 and again.returncode == 0
                self._works[key] = repaired and not compare(reference, case, SKIPPED)
            return self._works[key]


def run_case(
    reference: Path, case: Path, name: str, how: str, command: str, preset: Sequence[str], hints: Hints
) -> dict[str, str]:
    """Damage ``name`` of a copy of ``reference`` at ``case`` by ``how``, run ``command`` on it, classify."""
    shutil.copytree(reference, case)
    damage(case / name, how)
    result = execute(command_line(command, case, preset))
    entry = {"file": name, "damage": how, "command": command, "said": result.stderr.strip()[-300:]}
    if "Traceback" in result.stderr or result.returncode not in (0, 2):
        outcome = "crash"
    elif result.returncode == 2:
        outcome = "error" if clean_error(result) else "crash"
        hint = HINT.search(result.stderr)
        if outcome == "error" and hint and hint.group(1).split()[1] != "run":
            entry["hint"] = hint.group(1)
            general = hint.group(1).replace(str(case), "RUN")
            works = hints.works((name, how, general), reference, case, hint.group(1), preset)
            outcome = "error, hint works" if works else "error, hint fails"
    else:
        outcome = "silent" if compare(reference, case, SKIPPED) else "recovered"
    shutil.rmtree(case, ignore_errors=True)
    return {**entry, "outcome": outcome}


def counts_table(title: str, cases: list[dict[str, str]], key: str, values: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(key)
    for outcome in OUTCOMES:
        table.add_column(outcome, justify="right")
    for value in [*values, "all"]:
        counted = Counter(c["outcome"] for c in cases if value == "all" or c[key] == value)
        table.add_row(value, *(str(counted.get(outcome, 0)) for outcome in OUTCOMES))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 1 when a case is silent or crashed, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="smoke", help="the preset of the damaged run (default smoke)")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="a setting of the damaged run"
    )
    parser.add_argument(
        "--files", default="*", help="damage only the run's files matching these globs (comma-separated)"
    )
    parser.add_argument("--damages", default=",".join(DAMAGES), help=f"comma-separated, of {', '.join(DAMAGES)}")
    parser.add_argument("--commands", default=",".join(COMMANDS), help=f"comma-separated, of {', '.join(COMMANDS)}")
    parser.add_argument(
        "--reference", type=Path, help="damage copies of this finished run of --preset (default: make one)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="cases side by side, one torch thread each")
    add_out_argument(parser, "corruption")
    args = parser.parse_args(argv)
    damages, commands = args.damages.split(","), args.commands.split(",")
    if set(damages) - set(DAMAGES) or set(commands) - set(COMMANDS):
        parser.error(f"--damages of {', '.join(DAMAGES)}; --commands of {', '.join(COMMANDS)}")
    shutil.rmtree(args.out, ignore_errors=True)
    reference = args.out / "reference" / "run"
    if args.reference is not None:
        shutil.copytree(args.reference, reference, ignore=shutil.ignore_patterns(LOCK_NAME))
    run_options = ["--preset", args.preset, *(part for setting in args.settings for part in ("--set", setting))]
    made = execute(command_line("resume", reference, run_options))  # makes it, or checks that the copy is finished
    if made.returncode != 0:
        raise SystemExit(f"the reference run failed: {made.stderr.strip()[-500:]}")
    names = sorted(
        str(p.relative_to(reference))
        for p in reference.rglob("*")
        if p.is_file() and p.name != LOCK_NAME and p.relative_to(reference).parts[0] not in SKIPPED
    )
    names = [name for name in names if any(fnmatch.fnmatch(name, glob) for glob in args.files.split(","))]
    plan = [(name, how, command) for name in names for how in damages for command in commands]
    print(f"{len(names)} files x {len(damages)} damages x {len(commands)} commands = {len(plan)} cases", flush=True)

    hints = Hints()

    def one(index: int) -> dict[str, str]:
        name, how, command = plan[index]
        case = args.out / "cases" / f"{index:04d}" / "run"
        return run_case(reference, case, name, how, command, run_options, hints)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        cases = []
        for done, case in enumerate(pool.map(one, range(len(plan))), 1):
            cases.append(case)
            if case["outcome"] in ("silent", "crash", "error, hint fails"):
                print(f"{done:4d}/{len(plan)} {case['outcome']}: {case['damage']} {case['file']}, {case['command']}")
                print(f"        {case['said'][-200:]}", flush=True)
    console = Console(width=140)
    console.print(counts_table("by damage", cases, "damage", damages))
    console.print(counts_table("by command", cases, "command", commands))
    bad = sum(case["outcome"] in ("silent", "crash") for case in cases)
    print(f"RESULT: {len(cases)} cases, {bad} silent or crashed")
    (args.out / "matrix.json").write_text(json.dumps({"cases": cases}, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
