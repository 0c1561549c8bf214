"""Distributed helpers: the same code path for one CPU process and for ``torchrun`` with DDP.

Under ``torchrun`` the environment carries ``RANK``/``WORLD_SIZE``; ``setup()`` then joins the process
group (NCCL on CUDA, gloo on CPU). Everything else asks ``rank()``/``world_size()`` and works unchanged
when no group exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def setup() -> torch.device:
    """Join the process group when launched by torchrun; return this rank's device."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_distributed():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """SyncBatchNorm for multi-GPU training (the paper's supernet training); CPU/gloo keeps plain BN,
    which SyncBatchNorm does not support."""
    if is_distributed() and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


class local_batchnorm:
    """Within this context SyncBatchNorm layers use only this rank's batch.

    During search each rank recalibrates a different candidate, so statistics must not be synced.
    Each rank gets a process group of its own (``new_group`` must be called by every rank for every
    group, hence the loop).
    """

    _solo_groups: dict[int, object] = {}

    def __init__(self, model: torch.nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
        self.saved: list[object] = []

    def __enter__(self) -> None:
        if not self.layers or not is_distributed():
            return
        if not self._solo_groups:
            for r in range(world_size()):
                self._solo_groups[r] = dist.new_group([r])
        self.saved = [layer.process_group for layer in self.layers]
        for layer in self.layers:
            layer.process_group = self._solo_groups[rank()]

    def __exit__(self, *exc: object) -> None:
        for layer, group in zip(self.layers, self.saved):
            layer.process_group = group


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over the ranks (for updates that bypass DDP's forward).

    Every rank must hold a gradient for the same parameters, which holds when all ranks train the
    same path, as the seeded path samplers guarantee.
    """
    if not is_distributed():
        return
    for param in parameters:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world_size()
