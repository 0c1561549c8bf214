"""Small run files, written and read one way: JSON-lines logs and JSON documents.

- :class:`JsonLinesWriter` appends one JSON object per line, flushed as it is written (``durable`` also
  fsyncs each line: the search history, whose lines are results that took minutes each).
- :func:`read_json_lines` reads a JSON-lines file with one policy for damage. The last line is torn when
  the process was killed while writing it: it lacks its newline, or it is not valid JSON. A torn last line
  is dropped (and :func:`cut_torn_line` cuts it from the file, for the process that writes it next).
  Any other bad line stops the read with a one-line error naming the file, the line and the fix: a
  reader must never build on a record that was damaged after it was written.
- :func:`rewrite_json_lines` replaces a whole file atomically (a kill leaves the old or the new file).
- :func:`write_json` / :func:`read_json` are the small JSON documents (``done.json``, ``best.json``, ...),
  written atomically; :func:`strict_json` turns NaN and infinities into ``null`` for files other tools read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nasengine.errors import NasEngineError
from nasengine.rundir.atomic import atomic_write
from nasengine.rundir.manifest import redo_command, verify_file

RecordCheck = Callable[[Any], "str | None"]
"""Why a parsed line is not a record of its file (a short clause), or None when it is one."""


@dataclass
class JsonLines:
    """A JSON-lines file's records in file order; ``intact_bytes`` is where a torn last line begins (None:
    the file ends with a complete line)."""

    records: list[Any]
    intact_bytes: int | None


def _parse(raw: bytes) -> tuple[Any, str | None]:
    """``(value, problem)`` of one line's bytes; ``problem`` is None when they are UTF-8 JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"byte {exc.start + 1} is not UTF-8"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} at column {exc.colno}"


def read_json_lines(path: Path, *, what: str, fix: str, check: RecordCheck | None = None) -> JsonLines:
    """The records of ``path`` (see the module: a torn last line is dropped, any other bad line raises).

    ``what`` names a record in the error (``"history record"``), ``fix`` says what to do about it, and
    ``check`` refuses lines that parse but are not records of this file. A file a finished phase wrote is
    checked against its ``done.json`` first (:mod:`nasengine.rundir.manifest`)."""
    verify_file(path)
    data = path.read_bytes()
    *lines, tail = data.split(b"\n")  # tail: the bytes after the last newline, a torn line if any
    intact = len(data) - len(tail)
    if not tail and lines and _parse(lines[-1])[1] is not None:  # killed mid-write: a partial line
        intact -= len(lines.pop()) + 1
    records = []
    for number, raw in enumerate(lines, start=1):
        value, problem = _parse(raw)
        problem = problem or (check(value) if check else None)
        if problem:
            raise NasEngineError(f"{path} line {number} is not a valid {what} ({problem}); {fix}")
        records.append(value)
    return JsonLines(records, intact if intact < len(data) else None)


def cut_torn_line(path: Path, lines: JsonLines) -> None:
    """Cut the torn last line :func:`read_json_lines` found, so the next append starts on a line of its own.
    Only for the process that writes ``path`` (it holds the run directory's lock)."""
    if lines.intact_bytes is not None:
        os.truncate(path, lines.intact_bytes)


def _line(record: Any) -> str:
    return json.dumps(record) + "\n"


def rewrite_json_lines(path: Path, records: Iterable[Any]) -> None:
    """Replace ``path`` with ``records``, one per line, atomically."""
    text = "".join(_line(record) for record in records)
    atomic_write(path, lambda handle: handle.write(text.encode()))


class JsonLinesWriter:
    """Appends records to a JSON-lines file, one per line, each flushed as it is written (and fsynced
    when ``durable``). A context manager; ``None`` as the path writes nothing (ranks other than 0)."""

    def __init__(self, path: Path | None, *, durable: bool = False):
        self.path, self.durable = path, durable
        self._handle: IO[str] | None = None

    def __enter__(self) -> JsonLinesWriter:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def write(self, record: Any) -> None:
        if self._handle is None:
            return
        self._handle.write(_line(record))
        self._handle.flush()
        if self.durable:
            os.fsync(self._handle.fileno())

    def sync(self) -> None:
        """Force what was written to disk (before a checkpoint that vouches for it)."""
        if self._handle is not None:
            os.fsync(self._handle.fileno())


def write_json(data: Any, path: str | Path) -> None:
    """Write ``data`` as indented JSON atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def read_json(path: str | Path) -> Any:
    """A JSON document; a one-line error when it is missing, not UTF-8 or not JSON, or when a finished phase
    wrote it and it changed since (:mod:`nasengine.rundir.manifest`)."""
    path = Path(path)
    verify_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NasEngineError(f"{path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise NasEngineError(
            f"{path} is not UTF-8 text (byte {exc.start}); delete it, or redo the phase that wrote it: "
            f"{redo_command(path)}"
        ) from None
    except IsADirectoryError:
        raise NasEngineError(f"{path} is a directory, not a JSON file") from None
    except json.JSONDecodeError as exc:
        raise NasEngineError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


def strict_json(value: Any) -> Any:
    """``value`` with every NaN and infinity replaced by ``None``, at any depth, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value
