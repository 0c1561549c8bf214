"""What a finished phase wrote, with each file's SHA-256: recorded in its ``done.json``, checked by every reader.

When a phase (or any training folder: the teacher, a retrained network's ``pretrain``) completes, its
``done.json`` lists every file of its folder with its SHA-256 — sub-folders included, but not those that
have a ``done.json`` of their own — the fingerprints of the finished phases it was made from (``inputs``:
the SHA-256 of their ``files``, so a deleted or replaced earlier phase is noticed by the later ones), and the
SHA-256 of its own content::

    {"iterations": 900, "final": {...}, "seconds": 134.2,
     "files": {"checkpoint.pt": "9f2c...", "log.jsonl": "41aa...", "supernet.pt": "e03b..."},
     "inputs": {"pretrain/done.json": "5be0..."},
     "sha256": "c7d1..."}

:func:`verify_file` checks one file against the ``done.json`` that lists it (the nearest one above it in its
run directory); the run files' readers (:mod:`nasengine.rundir.records`, :mod:`nasengine.rundir.checkpoint`)
call it on every read, and :func:`verify_phase` checks a whole finished folder before the engine trusts it.
A file that changed after its phase finished — a flipped byte, a cut, an emptied or a deleted file, a
history line edited by hand — is one :class:`Tampered` error naming the file and the command that rebuilds
it. A ``done.json`` written before this module existed lists no files: its folder is not checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nasengine.errors import NasEngineError
from nasengine.rundir.atomic import atomic_write
from nasengine.rundir.layout import CONFIG, DONE, PHASES, REPORT
from nasengine.rundir.lock import LOCK_NAME, held_elsewhere

FILES = "files"
INPUTS = "inputs"
SELF = "sha256"
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> its SHA-256, hashed in this process


class Tampered(NasEngineError):
    """A file of a finished phase is not what the phase wrote."""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file (remembered for this process while its size and modification time stay)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def _content_hash(info: dict[str, Any]) -> str:
    body = {key: value for key, value in info.items() if key != SELF}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def phase_files(folder: Path) -> Iterator[Path]:
    """The files a ``done.json`` in ``folder`` vouches for: all below it but ``done.json`` itself, the run's lock
    and temporary files; of a folder that has a ``done.json`` of its own (a training folder of a retrained
    network), only that ``done.json``: it vouches for the rest, and the parent for it being there."""
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            if (entry / DONE).exists():
                yield entry / DONE
            else:
                yield from phase_files(entry)
        elif entry.name not in (DONE, LOCK_NAME) and not entry.name.startswith(".tmp-"):
            yield entry


def fingerprint(done: Path) -> str:
    """What a later phase records of a finished one: the SHA-256 of its ``files`` (wall-clock fields of the
    ``done.json`` itself left out, so a phase that finishes again with the same files keeps its fingerprint)."""
    files = read_done(done).get(FILES) or {}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_done(folder: Path, info: dict[str, Any], inputs: Sequence[Path] = ()) -> None:
    """Write ``folder/done.json``: ``info``, the SHA-256 of every file of the folder, the fingerprints of the
    finished phases' ``done.json`` files ``inputs`` it was made from, and its own SHA-256."""
    done = {key: value for key, value in info.items() if key not in (FILES, INPUTS, SELF)}
    done[FILES] = {path.relative_to(folder).as_posix(): sha256_of(path) for path in phase_files(folder)}
    root = run_root(folder / DONE)
    if inputs and root is not None:
        done[INPUTS] = {Path(p).resolve().relative_to(root).as_posix(): fingerprint(Path(p)) for p in inputs}
    done[SELF] = _content_hash(done)
    text = json.dumps(done, indent=2) + "\n"
    atomic_write(folder / DONE, lambda handle: handle.write(text.encode()))


def run_root(path: Path) -> Path | None:
    """The run directory holding ``path`` (the nearest folder above it with a ``config.toml``), or None."""
    for folder in Path(path).resolve().parents:
        if (folder / CONFIG).is_file():
            return folder
    return None


def redo_hint(root: Path, folder: Path) -> str:
    """The command that rebuilds what ``folder`` (a folder of the run ``root``) holds."""
    parts = Path(folder).resolve().relative_to(root).parts
    phase = parts[0] if parts else ""
    if phase in PHASES:
        return f"nasengine {phase} {root} --redo"
    if phase == REPORT:
        return f"nasengine report {root}"
    return f"delete {folder} and run the command that made it again"


def redo_command(path: Path, phase: str | None = None) -> str:
    """The command that rebuilds ``path`` (a file or folder of a run directory); outside a run directory, the
    ``--redo`` of ``phase`` when the caller knows it."""
    root = run_root(path)
    if root is not None:
        return redo_hint(root, path if path.is_dir() else path.parent)
    return (
        f"nasengine {phase} RUN_DIR --redo" if phase else "nasengine PHASE RUN_DIR --redo, for the phase that wrote it"
    )


def read_done(path: Path) -> dict[str, Any]:
    """A ``done.json``, its own SHA-256 checked (one that has none, from before manifests, is taken as it is)."""
    root = run_root(path)
    where = f"; redo it: {redo_hint(root, path.parent)}" if root else ""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Tampered(f"{path} is damaged (not valid JSON){where}") from None
    if not isinstance(info, dict):
        raise Tampered(f"{path} is damaged (not a JSON object){where}")
    if SELF in info and info[SELF] != _content_hash(info):
        raise Tampered(f"{path} changed after its phase finished (SHA-256 mismatch){where}")
    return info


def check_done(path: Path) -> dict[str, Any]:
    """:func:`read_done`, and the phases it was made from still there as they were (else :class:`Tampered`)."""
    info = read_done(path)
    check_inputs(path, info)
    return info


def check_inputs(path: Path, info: dict[str, Any] | None = None) -> None:
    """The finished phases the ``done.json`` at ``path`` was made from are still there as they were (else
    :class:`Tampered` naming the phase and its ``--redo``); ``info`` is its content, read here when not given
    (and nothing to check when it cannot be: ``path`` itself is about to be written again)."""
    root = run_root(path)
    if info is None:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return
    if root is None or not isinstance(info, dict) or not isinstance(info.get(INPUTS), dict):
        return
    for name, recorded in info[INPUTS].items():
        source = root / name
        hint = redo_hint(root, source.parent)
        if not source.is_file():
            raise Tampered(f"{source} is missing, but {path} was made from its phase; rebuild it: {hint}")
        if fingerprint(source) != recorded:
            raise Tampered(f"{source.parent} changed after {path} was made from it; redo it: {hint}")


def _listed_in(path: Path) -> tuple[Path, str, str] | None:
    """``(done.json, name in it, recorded SHA-256)`` of the finished folder that vouches for ``path``, or None."""
    root = run_root(path)
    if root is None:
        return None
    resolved = path.resolve()
    for folder in resolved.parents:
        done = folder / DONE
        if done.is_file():
            files = read_done(done).get(FILES) or {}
            name = resolved.relative_to(folder).as_posix()
            if name in files:
                return done, name, files[name]
        if folder == root:
            return None
    return None


def verify_file(path: Path) -> None:
    """Check ``path`` against the ``done.json`` that lists it (nothing to do when none does); a ``done.json``
    is checked against its own SHA-256. A mismatch or a missing file is one :class:`Tampered` line."""
    path = Path(path)
    if path.name == DONE and path.is_file():
        check_done(path)  # and, when a finished folder above lists it, its SHA-256 there too
    listed = _listed_in(path)
    if listed is None:
        return
    done, _, recorded = listed
    root = run_root(path)
    hint = redo_hint(root, done.parent) if root else "redo the phase that wrote it"
    if not path.is_file():
        raise Tampered(f"{path} is missing, but its finished phase ({done}) wrote it; rebuild it: {hint}")
    if sha256_of(path) != recorded:
        raise Tampered(f"{path} changed after its phase finished (SHA-256 differs from {done}); redo it: {hint}")


def verify_phase(folder: Path) -> None:
    """Check every file ``folder/done.json`` lists, and every finished folder below it, each ``done.json``
    against its own SHA-256; raises :class:`Tampered`."""
    for done in [folder / DONE, *sorted(p for p in folder.rglob(DONE) if p.parent != folder)]:
        for name in check_done(done).get(FILES) or {}:
            verify_file(done.parent / name)


def verify_run(root: Path, *, report: bool = True) -> None:
    """Check every finished folder of the run directory ``root`` (its phases, comparison searches, rank-check
    networks; the report unless ``report`` is False: it is about to be written again); raises :class:`Tampered`
    naming the first file that is not what its phase wrote."""
    root = Path(root)
    manifested = False  # whether this nasengine made the run (an older one wrote the report without a done.json)
    for done in sorted(root.rglob(DONE)):
        top = done.relative_to(root).parts[0]
        if top == REPORT and not report:
            continue
        files = check_done(done).get(FILES) or {}
        manifested = manifested or bool(files)
        for name in files:
            verify_file(done.parent / name)
    folder = root / REPORT
    if report and manifested and folder.is_dir() and not (folder / DONE).exists() and any(folder.iterdir()):
        if not held_elsewhere(root):  # a running process writes its report now; otherwise it was cut short
            raise Tampered(
                f"{folder} is unfinished (it has no {DONE}: the report was interrupted, or {DONE} deleted); "
                f"write it again: nasengine report {root}"
            )


def unverified_files(folder: Path) -> list[Path]:
    """The files ``folder/done.json`` lists that are missing or changed (for ``--redo``: what must be rebuilt);
    all of them when the ``done.json`` itself is damaged."""
    try:
        done = read_done(folder / DONE)
    except Tampered:
        return list(phase_files(folder))
    bad = []
    for name, recorded in (done.get(FILES) or {}).items():
        path = folder / name
        if not path.is_file() or sha256_of(path) != recorded:
            bad.append(path)
    return bad


def forget_hashes() -> None:
    """Drop the hashes remembered in this process (for a file changed within one tick of its clock)."""
    _verified.clear()
