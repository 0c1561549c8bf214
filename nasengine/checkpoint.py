"""Atomic checkpoint and JSON writes, and safe loading (``weights_only=True``).

Every file is written to a temporary name in the same folder and moved into place with ``os.replace``,
so an interrupted run never leaves a half-written checkpoint that a resume would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from nasengine.errors import NasEngineError


def atomic_write(path: Path, write) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically."""
    atomic_write(Path(path), lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NasEngineError(f"checkpoint {path} does not exist; run the phase that writes it first") from None
    except Exception as exc:
        raise NasEngineError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); delete it to redo that phase") from None


def write_json(data: Any, path: str | Path) -> None:
    """Write ``data`` as indented JSON atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NasEngineError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise NasEngineError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
