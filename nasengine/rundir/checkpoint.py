"""Checksummed checkpoints, written atomically and loaded safely (``weights_only=True``).

Every checkpoint is written atomically (:mod:`nasengine.rundir.atomic`), so an interrupted run never leaves
a half-written checkpoint that a resume would trust.

A checkpoint is the ``torch.save`` bytes followed by a fixed trailer holding their SHA-256, so a file
that changed after it was written (a bad disk, a partial copy, a hand edit) is refused instead of
loaded. Checkpoints written before the trailer existed still load, unverified.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from nasengine.errors import NasEngineError
from nasengine.rundir.atomic import atomic_write
from nasengine.rundir.manifest import redo_command, verify_file

TRAILER_MARK = b"\nNASENGINE-SHA256:"
TRAILER_LENGTH = len(TRAILER_MARK) + 64 + 1  # the mark, 64 hex digits, a newline
CODE_RUNNING = "holds objects other than tensors and plain data (refused: it could run code)"


def _trailer(body: bytes) -> bytes:
    return TRAILER_MARK + hashlib.sha256(body).hexdigest().encode() + b"\n"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) and its SHA-256 atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    body = buffer.getvalue()
    atomic_write(Path(path), lambda handle: handle.write(body + _trailer(body)))


def _split_trailer(data: bytes) -> tuple[bytes, str | None]:
    """``(body, problem)``: the ``torch.save`` bytes, and why they fail their checksum (None if they
    pass, or if the file has no trailer because an older nasengine wrote it)."""
    tail = data[-TRAILER_LENGTH:]
    if len(data) < TRAILER_LENGTH or not tail.startswith(TRAILER_MARK):
        return data, None
    body = data[:-TRAILER_LENGTH]
    if tail != _trailer(body):
        return body, "SHA-256 mismatch: the file changed after it was written"
    return body, None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NasEngineError(f"checkpoint {path} does not exist; run the phase that writes it first") from None
    except OSError as exc:
        raise NasEngineError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None


def _unpickle(body: bytes) -> tuple[Any, str | None]:
    """``(state, problem)``: ``torch.load`` of ``body`` with ``weights_only=True``, or why it failed."""
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True), None
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # the weights-only unpickler met a class or function: a code-running pickle
            return None, CODE_RUNNING
        return None, "its bytes are not a PyTorch checkpoint: it is damaged"
    except Exception as exc:  # torch reports damaged zip archives as RuntimeError, with long messages
        return None, f"{type(exc).__name__}: {_first_sentence(exc)}"


def _first_sentence(exc: Exception) -> str:
    line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return line.split(". ")[0].rstrip(".")[:200]


def verify_checkpoint(path: str | Path) -> str | None:
    """None if ``path`` would load, else why not, as a short clause ("SHA-256 mismatch: ...", "it does not
    exist", ...). A checksummed file is only hashed; one that predates checksums is unpickled."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "it does not exist"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    body, problem = _split_trailer(data)
    if problem or len(body) < len(data):
        return problem
    problem = _unpickle(body)[1]
    return f"it {problem}" if problem == CODE_RUNNING else problem


def load_checkpoint(path: str | Path, *, phase: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`: verify its SHA-256 trailer (when it has one)
    and unpickle it with ``weights_only=True``. ``phase`` names the phase that wrote it, for the fix
    an error suggests."""
    path = Path(path)
    verify_file(path)
    body, problem = _split_trailer(_read_bytes(path))
    if problem:
        raise NasEngineError(f"checkpoint {path} is corrupt ({problem}); redo that phase: {redo_command(path, phase)}")
    state, problem = _unpickle(body)
    if problem == CODE_RUNNING:
        raise NasEngineError(f"checkpoint {path} {CODE_RUNNING}; it was not written by nasengine")
    if problem:
        raise NasEngineError(
            f"checkpoint {path} cannot be read ({problem}); redo that phase: {redo_command(path, phase)}"
        )
    return state
