"""The search history: one JSON line per evaluated candidate, appended as each result arrives.

It is the search's cache (a candidate is never evaluated twice) and its resume point (a restarted
search replays it instead of recomputing). A torn last line — the process killed mid-write, so the line
is not valid JSON or lacks its newline — is dropped on load and cut from the file. Any other bad line
stops the load with a one-line error: replaying a damaged history would silently change the search.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch


def _bad_line(path: Path, number: int, reason: str) -> NasEngineError:
    return NasEngineError(
        f"{path} line {number} is not a valid history record ({reason}); fix or delete that line, "
        "or redo the search with --redo search"
    )


def _record_problem(record: Any) -> str | None:
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


def _parse_line(raw: bytes) -> tuple[Any, str | None]:
    """``(value, problem)`` for one line's bytes; ``problem`` is None when it is valid UTF-8 JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"byte {exc.start + 1} is not UTF-8"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} at column {exc.colno}"


def _load(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    """The records of ``path`` in file order, and the byte length to cut the file to (None to keep it)."""
    data = path.read_bytes()
    *lines, tail = data.split(b"\n")  # tail: the bytes after the last newline, a torn line if any
    keep = len(data) - len(tail)
    if not tail and lines and _parse_line(lines[-1])[1] is not None:  # killed mid-append: a partial line
        keep -= len(lines.pop()) + 1
    records = []
    for number, raw in enumerate(lines, start=1):
        value, problem = _parse_line(raw)
        problem = problem or _record_problem(value)
        if problem:
            raise _bad_line(path, number, problem)
        records.append(value)
    return records, keep if keep < len(data) else None


class History:
    def __init__(self, path: Path):
        self.path = path
        self.records: dict[Arch, dict[str, Any]] = {}
        if path.exists():
            records, cut = _load(path)
            for record in records:
                self.records[tuple(record["arch"])] = record
            if cut is not None:
                os.truncate(path, cut)

    def __contains__(self, arch: Arch) -> bool:
        return tuple(arch) in self.records

    def __getitem__(self, arch: Arch) -> dict[str, Any]:
        return self.records[tuple(arch)]

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict[str, Any]) -> None:
        """Store ``record`` (must have ``arch``) and append it to the file, flushed to disk."""
        self.records[tuple(record["arch"])] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def best(self) -> dict[str, Any] | None:
        """The highest-scoring record (the earliest among equals)."""
        best = None
        for record in self.records.values():
            if best is None or record["score"] > best["score"]:
                best = record
        return best


def read_history(path: Path) -> list[dict[str, Any]]:
    """Records in the order they were evaluated."""
    return list(History(path).records.values()) if path.exists() else []
