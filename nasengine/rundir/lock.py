"""One nasengine process per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock``.

Two processes writing the same run directory would interleave checkpoints and history lines, so the
second one stops with a one-line error naming the first (its pid, host and start time, which the holder
writes into the lock file). The kernel drops an ``flock`` when its process dies, however it dies, so a
lock file left by a killed run is simply taken over; the file itself is never deleted (deleting it
would let two processes lock two different files of the same name).

Locks are re-entrant within a process: acquiring the lock of a directory this process already holds
only counts, and the ``flock`` is released when the count returns to zero. With several ranks only rank 0
needs to hold it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from nasengine.errors import NasEngineError

try:
    import fcntl
except ImportError:  # Windows: no flock. Runs there are single-machine experiments, so rather than fail, skip
    fcntl = None  # type: ignore[assignment]  # no lock (a no-op): two runs in one folder are not prevented

LOCK_NAME = ".lock"

_registry_guard = threading.Lock()
_held: dict[Path, list[int]] = {}  # resolved run directory -> [file descriptor, hold count]


def _forget_inherited_locks() -> None:
    # A forked child shares the parent's lock file description; it must neither count as holding the
    # lock nor unlock it (that would release the parent's lock), so it only forgets the registry.
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_locks)


def _holder_text(lock_path: Path) -> str:
    """``pid N, started T`` (plus ``on host H`` when another machine holds it) from the lock file."""
    for _ in range(5):  # the holder may have locked the file but not written it yet
        try:
            info = json.loads(lock_path.read_text())
            pid, started = int(info["pid"]), str(info["started"])
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
            continue
        host = info.get("host")
        where = f" on host {host}" if host and host != socket.gethostname() else ""
        return f"pid {pid}{where}, started {started}"
    return "pid unknown"


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _lock(directory: Path) -> int:
    """Open and ``flock`` the lock file of ``directory``; its descriptor, or an error naming the holder."""
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NasEngineError(
            f"{directory} is in use by another nasengine process ({_holder_text(lock_path)}); "
            "wait for it to finish or use another --out"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise NasEngineError(f"cannot lock {lock_path} ({exc.strerror or exc}); use another --out") from None
    _write_holder(fd)
    return fd


def held_elsewhere(directory: str | Path) -> bool:
    """Whether another process holds the lock of ``directory`` now (a run writing into it); changes nothing."""
    lock_path = Path(directory) / LOCK_NAME
    if fcntl is None or Path(directory).resolve() in _held:
        return False
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:  # no lock file: no nasengine process ever held it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


class RunLock:
    """The lock of one run directory; ``acquire``/``release`` or ``with RunLock(directory):``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.holds = 0  # how many of this object's acquires are not yet released
        self._key: Path | None = None

    def acquire(self) -> RunLock:
        key = self._key = self._key or self.directory.resolve()
        with _registry_guard:
            entry = _held.get(key)
            if entry is None:
                fd = _lock(self.directory) if fcntl is not None else -1
                entry = _held[key] = [fd, 0]
            entry[1] += 1
            self.holds += 1
        return self

    def release(self) -> None:
        if self.holds == 0:
            return
        with _registry_guard:
            self.holds -= 1
            entry = _held.get(self._key)  # type: ignore[arg-type]
            if entry is None:  # forgotten in a forked child
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]  # type: ignore[arg-type]
                if entry[0] >= 0:
                    fcntl.flock(entry[0], fcntl.LOCK_UN)
                    os.close(entry[0])

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


@contextmanager
def hold_run_lock(directory: str | Path) -> Iterator[RunLock]:
    """Hold the lock of ``directory`` for the ``with`` block."""
    with RunLock(directory) as lock:
        yield lock
