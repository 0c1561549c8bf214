"""The search history: one JSON line per evaluated candidate, appended as each result arrives.

It is the search's cache (a candidate is never evaluated twice) and its resume point (a restarted
search replays it instead of recomputing). It is read with the run files' one policy
(:func:`nasengine.rundir.records.read_json_lines`): a torn last line — the process killed mid-write — is
dropped (and cut from the file when the search opens it to continue); any other bad line stops the load
with a one-line error, because replaying a damaged history would silently change the search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasengine.interfaces import Arch
from nasengine.rundir.manifest import redo_command
from nasengine.rundir.records import JsonLinesWriter, cut_torn_line, read_json_lines


def record_problem(record: Any) -> str | None:
    """Why ``record`` (a parsed line) is not a history record, or None.

    Scores are written as ``float(...)`` by :mod:`nasengine.protocol.search`, so they are always numbers — NaN
    and infinities included, which JSON lines carry as ``NaN``/``Infinity``; null is refused."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    arch = record.get("arch")
    if not isinstance(arch, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in arch):
        return "no 'arch' list of integers"
    score = record.get("score")
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        return "no numeric 'score'"
    return None


def _read(path: Path):
    fix = f"fix or delete that line, or redo the search: {redo_command(path, 'search')}"
    return read_json_lines(path, what="history record", fix=fix, check=record_problem)


class History:
    """The history of one search, opened by the process that continues it (a torn last line is cut)."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[Arch, dict[str, Any]] = {}
        if path.exists():
            lines = _read(path)
            for record in lines.records:
                self.records[tuple(record["arch"])] = record
            cut_torn_line(path, lines)

    def __contains__(self, arch: Arch) -> bool:
        return tuple(arch) in self.records

    def __getitem__(self, arch: Arch) -> dict[str, Any]:
        return self.records[tuple(arch)]

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict[str, Any]) -> None:
        """Store ``record`` (must have ``arch``) and append it to the file, on disk before this returns."""
        self.records[tuple(record["arch"])] = record
        with JsonLinesWriter(self.path, durable=True) as writer:
            writer.write(record)

    def best(self) -> dict[str, Any] | None:
        """The highest-scoring record (the earliest among equals)."""
        best = None
        for record in self.records.values():
            if best is None or record["score"] > best["score"]:
                best = record
        return best


def generation_label(record: dict[str, Any]) -> str:
    """A record's generation as people count it, the first being 1 (records count from 0), or "" without one."""
    generation = record.get("generation")
    return str(generation + 1) if isinstance(generation, int) else ""


def read_history(path: Path) -> list[dict[str, Any]]:
    """A history's records in the order they were evaluated, for readers (the file is left as it is)."""
    if not path.exists():
        return []
    records: dict[tuple[int, ...], dict[str, Any]] = {}
    for record in _read(path).records:
        records[tuple(record["arch"])] = record
    return list(records.values())
