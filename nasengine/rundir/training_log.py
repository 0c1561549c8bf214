"""A training phase's ``log.jsonl``: one line per iteration, ``{"iteration": n, "<loss>": ..., "lr": ...,
"images_per_s": ...}``, read with the run files' one policy (:func:`nasengine.rundir.records.read_json_lines`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasengine.rundir.records import read_json_lines, rewrite_json_lines

FIX = "delete that line or the file (the log is written again from the phase's checkpoint on)"


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    iteration = record.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool):
        return "no integer 'iteration'"
    return None


def read_training_log(path: Path) -> list[dict[str, Any]]:
    """The log's records in file order (a torn last line left out)."""
    return read_json_lines(path, what="training-log record", fix=FIX, check=_record_problem).records


def truncate_training_log(path: Path, iteration: int) -> None:
    """Keep only the lines up to ``iteration`` (a resume from that iteration's checkpoint writes the rest
    again); the file is replaced atomically, and only when something is dropped."""
    if not path.exists():
        return
    lines = read_json_lines(path, what="training-log record", fix=FIX, check=_record_problem)
    kept = [record for record in lines.records if record["iteration"] <= iteration]
    if len(kept) < len(lines.records) or lines.intact_bytes is not None:
        rewrite_json_lines(path, kept)
