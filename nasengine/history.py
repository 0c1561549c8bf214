"""The search history: one JSON line per evaluated candidate, appended as each result arrives.

It is the search's cache (a candidate is never evaluated twice) and its resume point (a restarted
search replays it instead of recomputing). A torn last line — the process killed mid-write — is
dropped on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nasengine.interfaces import Arch


class History:
    def __init__(self, path: Path):
        self.path = path
        self.records: dict[Arch, dict[str, Any]] = {}
        if path.exists():
            lines = path.read_text().splitlines()
            good = []
            for line in lines:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                self.records[tuple(record["arch"])] = record
                good.append(line)
            if len(good) != len(lines):
                path.write_text("".join(line + "\n" for line in good))

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
