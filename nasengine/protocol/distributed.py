"""Distributed helpers: the same code path for one CPU process, ``torchrun`` and ``nasengine --procs N``.

Under a launcher the environment carries ``RANK``/``WORLD_SIZE``; :func:`setup` then joins the process
group (NCCL on CUDA, gloo on CPU) within a time limit. Everything else asks :func:`rank`/:func:`world_size`
and works unchanged when no group exists.

Those answers are relative to the *current group*: the whole world, or, inside :func:`share_out`, the ranks
that train one of several independent networks side by side. Code that trains a network therefore never
knows whether it shares the machine: its group's first rank writes the files, its group's ranks reduce
gradients, and a group of one trains exactly as a single process with the same threads would.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")

INIT_TIMEOUT_ENV = "NASENGINE_INIT_TIMEOUT"  # seconds a rank waits for the process group to form
DEFAULT_INIT_TIMEOUT = 300.0
WAIT = timedelta(days=30)  # how long a rank waits for the others' side-by-side networks (hours of training)


@dataclass(frozen=True)
class _Group:
    handle: Any  # a ProcessGroup; None: this rank alone
    ranks: tuple[int, ...]  # global ranks, the group's rank 0 first


_groups: list[_Group] = []  # the current group is the last; empty: the whole world
_waiting: Any = None  # a gloo group with a long timeout, for gathering side-by-side work


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def global_rank() -> int:
    """This process's rank in the whole world (the console prints on global rank 0 only)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of ranks in the current group."""
    if _groups:
        return len(_groups[-1].ranks)
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank in the current group."""
    if _groups:
        return _groups[-1].ranks.index(global_rank())
    return global_rank()


def is_distributed() -> bool:
    """The current group has more than one rank (gradients are reduced, batches sharded)."""
    return is_initialized() and world_size() > 1


def is_main() -> bool:
    """This rank writes the current group's files."""
    return rank() == 0


def group() -> Any:
    """The current group's handle for collectives (None: the default group)."""
    return _groups[-1].handle if _groups else None


def setup() -> torch.device:
    """Join the process group when launched with several ranks; return this rank's device.

    A rank that cannot join within ``NASENGINE_INIT_TIMEOUT`` seconds (300 by default: a rank missing, an
    unreachable rendezvous) prints one line and exits, so a launcher with restarts left tries again
    instead of waiting forever.
    """
    global _waiting
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        with _deadline(float(os.environ.get(INIT_TIMEOUT_ENV, DEFAULT_INIT_TIMEOUT))):
            _init_process_group(backend)
            _waiting = dist.new_group(backend="gloo", timeout=WAIT)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _init_process_group(backend: str) -> None:
    """``init_process_group`` from the launcher's environment, its keys apart for each restart.

    An elastic launcher (``torchrun``, ``nasengine --procs``) keeps one store across the restarts of its ranks,
    and the process group's keys (each rank's address, the start-up barrier's counters) carry no restart
    number: a restarted rank could read a dead rank's address (seen: "Gloo connectFullMesh failed ...
    Connection refused", every restart after) or count a dead one at the barrier (seen: ranks waiting in
    ``init_process_group`` for 31 minutes). Each restart's group therefore lives under its own prefix.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:  # launched otherwise (a test's mp.spawn, SLURM's srun with env://)
        dist.init_process_group(backend=backend)
        return
    store, rank_, world = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"nasengine/restart-{attempt}", store)
    dist.init_process_group(backend=backend, store=store, rank=rank_, world_size=world)


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Exit the process with one line if the block does not finish within ``seconds``."""

    def expire() -> None:
        sys.stderr.write(
            f"error: rank {os.environ.get('RANK', '?')} could not join the process group within {seconds:g} s "
            f"(a rank is missing or {os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} is "
            f"unreachable); the launcher restarts the ranks if it has restarts left (raise {INIT_TIMEOUT_ENV} "
            "for slow clusters)\n"
        )
        sys.stderr.flush()
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def teardown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier(group=group())


def all_gather_object(value: Any) -> list[Any]:
    """``value`` of every rank of the current group, in rank order."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value, group=group())
    return gathered


def share_out(items: Sequence[T], work: Callable[[T], R]) -> list[R]:
    """``[work(item) for item in items]``, the items trained side by side: the ranks are split into
    ``min(len(items), ranks)`` equal groups, group ``g`` does items ``g, g + groups, ...`` (ranks left over
    wait), and every rank returns every result in item order (results must be picklable).

    Inside ``work`` the group is the current group, so ``rank()``, ``barrier()``, the gradient reduction and
    the files written are the group's; with as many items as ranks each item runs on one rank, exactly as
    in a single process with the same threads.
    """
    ranks = world_size()
    if not is_distributed() or len(items) <= 1:
        return [work(item) for item in items]
    count = min(len(items), ranks)
    size = ranks // count
    mine = rank() // size if rank() < count * size else None
    done: dict[int, R] = {}
    if mine is not None:
        members = tuple(_global_ranks()[mine * size : (mine + 1) * size])
        handle = dist.new_group(list(members), use_local_synchronization=True) if size > 1 else None
        _groups.append(_Group(handle, members))
        try:
            for index in range(mine, len(items), count):
                done[index] = work(items[index])
        finally:
            _groups.pop()
    gathered: list[dict[int, R]] = [{} for _ in range(ranks)]
    dist.all_gather_object(gathered, done if rank() % size == 0 else {}, group=_waiting if not _groups else group())
    merged = {index: result for part in gathered for index, result in part.items()}
    return [merged[index] for index in range(len(items))]


def _global_ranks() -> tuple[int, ...]:
    return _groups[-1].ranks if _groups else tuple(range(dist.get_world_size()))


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """SyncBatchNorm for multi-GPU training (the paper's supernet training) over the current group; CPU/gloo
    keeps plain BN, which SyncBatchNorm does not support."""
    if is_distributed() and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=group())
    return model


class local_batchnorm:
    """Within this context SyncBatchNorm layers use only this rank's batch.

    During search each rank recalibrates a different candidate, so statistics must not be synced.
    Each rank gets a process group of its own (formed by that rank alone).
    """

    _solo_groups: dict[int, object] = {}

    def __init__(self, model: torch.nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
        self.saved: list[object] = []

    def __enter__(self) -> None:
        if not self.layers or not is_distributed():
            return
        me = global_rank()
        if me not in self._solo_groups:
            self._solo_groups[me] = dist.new_group([me], use_local_synchronization=True)
        self.saved = [layer.process_group for layer in self.layers]
        for layer in self.layers:
            layer.process_group = self._solo_groups[me]

    def __exit__(self, *exc: object) -> None:
        for layer, saved in zip(self.layers, self.saved):
            layer.process_group = saved


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over the current group's ranks, as one flat all-reduce.

    Every rank must hold a gradient for the same parameters, which holds when all ranks train the
    same path, as the seeded path samplers guarantee.
    """
    if not is_distributed():
        return
    grads = [param.grad for param in parameters if param.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=group())
    flat /= world_size()
    for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(reduced)
