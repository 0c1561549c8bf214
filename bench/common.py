"""What the benches share: their run-directory and output-folder arguments, the rank check several of them
reuse, Kendall's tau and Spearman's rho as table cells, the ``nasengine`` command run in a subprocess, and
the comparison of two run directories file by file (wall-clock fields aside).

Benches read run directories only through :class:`nasengine.rundir.layout.RunLayout` and the product's readers
(:mod:`nasengine.rundir.records`, ``read_history``, ``read_training_log``, ``load_checkpoint``,
``nasengine.settings.config.load``), and write only into their own output folder (``--out``), never into a run
directory; what a bench derives from a run goes under ``OUT/<run_key(run)>``.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasengine.errors import NasEngineError
from nasengine.rundir.layout import CONFIG, RunLayout
from nasengine.rundir.lock import LOCK_NAME
from nasengine.rundir.manifest import FILES, INPUTS, SELF
from nasengine.rundir.records import read_json, read_json_lines

DEFAULT_RUN_DIR = Path("runs/fidelity/seed0")
"""The run the benches that need one read by default: ``bench.fidelity``'s seed 0 (``make bench`` runs the
benches in name order, so it exists by the time they run)."""
OUT_ROOT = Path("runs/bench")


def add_run_dir_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The optional RUN_DIR positional argument (default :data:`DEFAULT_RUN_DIR`)."""
    parser.add_argument("run_dir", type=Path, nargs="?", default=DEFAULT_RUN_DIR, help=help)


def output_folder(text: str) -> Path:
    """``--out``'s type: a folder that is not a run directory nor inside one."""
    path = Path(text)
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / CONFIG).is_file():
            raise argparse.ArgumentTypeError(
                f"{text} is {'' if folder == path.resolve() else 'inside '}the run directory {folder}: "
                "a bench writes only into its own folder"
            )
    return path


def add_out_argument(parser: argparse.ArgumentParser, name: str, default: Path | None = None) -> None:
    """``--out``: the bench's own output folder, ``runs/bench/<name>`` unless ``default`` says otherwise."""
    parser.add_argument(
        "--out",
        type=output_folder,
        default=default or OUT_ROOT / name,
        help="this bench's output folder (never a run directory)",
    )


def chosen(parser: argparse.ArgumentParser, option: str, text: str, known: Sequence[str]) -> list[str]:
    """The comma-separated names of ``text``, each one of ``known``; else ``parser`` exits naming the unknown."""
    names = text.split(",")
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"{option}: {', '.join(unknown)} not among {', '.join(known)}")
    return names


def run_key(run_dir: str | Path) -> str:
    """A folder name for what a bench derives from ``run_dir``: the run's name and a hash of its resolved path,
    so that two runs never share one and a run finds its own again from any working directory."""
    resolved = Path(run_dir).resolve()
    return f"{resolved.name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:10]}"


def rank_check_result(run_dir: Path) -> dict[str, Any]:
    """``run_dir``'s rank-check result (``RunLayout.rank_check_result``); exits saying how to make it if absent."""
    path = RunLayout(run_dir).rank_check_result
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run `nasengine rank-check {run_dir}` first")
    return read_json(path)


def rank_check_candidates(run_dir: Path) -> list[dict[str, Any]]:
    """The networks of ``run_dir``'s rank check: arch, supernet and standalone scores, params, ..."""
    return rank_check_result(run_dir)["candidates"]


def agreement_cells(a: Sequence[float], b: Sequence[float]) -> tuple[str, str]:
    """Kendall's tau and Spearman's rho between ``a`` and ``b``, each as ``+0.39 (0.18)`` (p in brackets)."""
    from scipy.stats import kendalltau, spearmanr

    tau, tau_p = kendalltau(a, b)
    rho, rho_p = spearmanr(a, b)
    return f"{tau:+.2f} ({tau_p:.2f})", f"{rho:+.2f} ({rho_p:.2f})"


def nasengine_command() -> list[str]:
    """This Python's ``nasengine`` console script (else ``python -m nasengine``)."""
    script = Path(sys.executable).parent / "nasengine"
    return [str(script)] if script.exists() else [sys.executable, "-m", "nasengine"]


def say(bench: str, message: str) -> None:
    """A progress line on stderr, ``[bench] message``."""
    print(f"[{bench}] {message}", file=sys.stderr, flush=True)


def run_nasengine(arguments: Sequence[str], log: Path, *, bench: str) -> str | None:
    """Run ``nasengine ARGUMENTS`` with its output in ``log``; None on success, else why it failed."""
    command = nasengine_command() + list(arguments)
    log.parent.mkdir(parents=True, exist_ok=True)
    say(bench, f"{shlex.join(['nasengine', *arguments])}  (log: {log})")
    started = time.perf_counter()
    try:
        with open(log, "w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    except OSError as exc:
        say(bench, f"  could not start: {exc}")
        return f"'nasengine {arguments[0]}' could not start: {exc}"
    seconds = time.perf_counter() - started
    if code == 0:
        say(bench, f"  done in {seconds:.0f} s")
        return None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "no output")
    say(bench, f"  failed (exit {code}) after {seconds:.0f} s: {error.strip()}")
    return f"'nasengine {arguments[0]}' failed (exit {code}): {error.strip()} (see {log})"


# --- comparing two run directories (bench.faults, bench.corruption) ------------------------------------------
MANIFEST = {FILES, INPUTS, SELF}
WALL_CLOCK = {"seconds", "calib_seconds", "score_seconds", "images_per_s", "img/s", "teacher_seconds"}
# a retrained network's measured costs hold timings (its latency, timed on the machine after retraining), and the
# report's verdict on them and their text follow them
TIMED = {"measured", "within"}
SKIPPED = {LOCK_NAME}


def comparable(value: Any) -> Any:
    """``value`` without wall-clock fields, at any depth, nor a ``done.json``'s manifest: its SHA-256s cover
    wall-clock fields too (each file it lists is compared on its own)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in WALL_CLOCK | MANIFEST | TIMED}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def json_lines(path: Path) -> list[Any]:
    """A JSON-lines file's records without wall-clock fields; a torn last line is an error (in a finished run,
    the process that resumed the file must have cut it)."""
    lines = read_json_lines(path, what="record", fix="compare the files by hand")
    if lines.intact_bytes is not None:
        raise NasEngineError(f"{path} ends with a torn line")
    return [comparable(record) for record in lines.records]


def same_records(a: Path, b: Path) -> bool:
    """Whether two JSON or JSON-lines files hold the same records, wall-clock fields aside."""
    if a.suffix == ".json":
        return comparable(read_json(a)) == comparable(read_json(b))
    return json_lines(a) == json_lines(b)


PHASE_TIMES_HEADER = "| phase | work | seconds |"  # report/summary.md's table of wall-clock phase times


def comparable_markdown(text: str) -> str:
    """``text`` with the seconds column of the phase-time table, and the timed columns of the constraints
    table (``measured``, ``within``), blanked (every other line as it is)."""
    lines, in_table, timed = [], False, []
    for line in text.splitlines():
        in_table = line == PHASE_TIMES_HEADER or (in_table and line.startswith("|"))
        if line.startswith("| network | constraint |"):
            timed = [i for i, cell in enumerate(line.split("|")) if cell.strip() in TIMED]
        elif not line.startswith("|"):
            timed = []
        if timed and not line.startswith("|--"):
            cells = line.split("|")
            line = "|".join(" " if i in timed else cell for i, cell in enumerate(cells))
        lines.append(line.rsplit("|", 2)[0] + "| |" if in_table and not line.startswith("|--") else line)
    return "\n".join(lines)


def checkpoint_difference(a: Path, b: Path) -> str:
    import torch

    from nasengine.errors import NasEngineError
    from nasengine.rundir.checkpoint import load_checkpoint

    try:
        left, right = load_checkpoint(a), load_checkpoint(b)
    except NasEngineError as exc:  # a damaged copy: the difference is that it cannot be read as it was
        return f"unreadable: {exc}"

    def walk(x: Any, y: Any, where: str) -> str | None:
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            return None if x.shape == y.shape and torch.equal(x, y) else where
        if isinstance(x, dict) and isinstance(y, dict):
            if set(x) != set(y):
                return f"{where} keys"
            return next((d for k in x if (d := walk(x[k], y[k], f"{where}.{k}"))), None)
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                return f"{where} length"
            return next((d for i, (p, q) in enumerate(zip(x, y)) if (d := walk(p, q, f"{where}[{i}]"))), None)
        return None if x == y else where

    found = walk(left, right, "")
    return f"tensor {found.lstrip('.')} differs" if found else "same tensors, different bytes"


def compare(reference: Path, faulted: Path, skip: Sequence[str] = ()) -> list[str]:
    """Every difference between the two run directories, as lines (none: identical); the folders ``skip`` names
    are left out, and always ``tb/``: TensorBoard's event files record wall times and are named after their
    host, pid and start time, so no two runs write the same bytes (a resumed phase's steps are kept unique by
    purge_step instead, tests/test_tensorboard.py)."""
    skipped_folders = {RunLayout(reference).tensorboard.name, *skip}

    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and p.name not in SKIPPED and p.relative_to(root).parts[0] not in skipped_folders
        }

    ours, theirs = files(reference), files(faulted)
    problems = [f"only in the reference: {name}" for name in sorted(ours - theirs)]
    problems += [f"only in the faulted run: {name}" for name in sorted(theirs - ours)]
    for name in sorted(ours & theirs):
        a, b = reference / name, faulted / name
        detail = ""
        if a.suffix in (".json", ".jsonl"):
            try:
                same = same_records(a, b)
            except NasEngineError as exc:
                same, detail = False, f" ({exc})"
        elif a.suffix == ".md":
            same = comparable_markdown(a.read_text()) == comparable_markdown(b.read_text())
        else:
            same = a.read_bytes() == b.read_bytes()
        if not same:
            detail = f" ({checkpoint_difference(a, b)})" if a.suffix == ".pt" else detail
            problems.append(f"differs: {name}{detail}")
    return problems
