"""Atomic file writes: a temporary file beside the target, fsynced, then moved into place.

Every file a run writes goes through :func:`atomic_write` (``.tmp-<name>.<random>``, then ``os.replace``), so an
interrupted run never leaves a half-written file that a resume would trust; :func:`remove_stale_temp_files`
clears the temporary files a killed write leaves behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"
# mkstemp's random part: 8 characters of lowercase letters, digits and "_".
_TEMP = re.compile(r"\.tmp-.+\.[a-z0-9_]{8}")


def atomic_write(path: Path, write) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result gets a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_stale_temp_file(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_write`."""
    return bool(_TEMP.fullmatch(name))


def remove_stale_temp_files(directory: str | Path) -> int:
    """Delete the temporary files killed writes left anywhere under ``directory``; return how many.

    Call it only while holding the run directory's lock (:mod:`nasengine.rundir.lock`): a temporary
    file of a write in progress looks exactly like a stale one.
    """
    removed = 0
    for folder, _, names in os.walk(directory):
        for name in names:
            if is_stale_temp_file(name):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed
