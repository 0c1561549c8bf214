"""Process layouts: ``--procs N`` (all nodes together), ``--threads T`` and several nodes, launched by
nasengine itself through PyTorch's elastic launcher — the code path of ``torchrun``, so a command given by
hand under ``torchrun`` runs the same ranks and writes the same files.

The layout is part of a run (``procs`` and ``threads`` in ``config.toml``): the batches are per process and
the thread count changes float sums, so a run continues in the layout it began with
(:meth:`nasengine.protocol.engine.Run.check_layout`). The default is :func:`default_procs` processes.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass

import torch

from nasengine import console
from nasengine.errors import NasEngineError

LAUNCHED_ENV = "WORLD_SIZE"  # set in every rank by torchrun and by this launcher


@dataclass(frozen=True)
class Launch:
    """How a command's ranks are started: the rendezvous of several nodes and the restarts of lost ranks."""

    nodes: int = 1
    rdzv_endpoint: str | None = None  # HOST:PORT of the c10d rendezvous (needed for several nodes)
    rdzv_id: str | None = None  # the job's name at the rendezvous (every node's launcher gives the same)
    max_restarts: int = 0  # restarts of the whole group after a rank is lost
    rdzv_timeout: int = 600  # seconds the launchers wait for all nodes to join


def inside_launcher() -> bool:
    return LAUNCHED_ENV in os.environ


def default_procs() -> int:
    """One process per GPU; one process on a CPU machine.

    On this project's 2-core CPU two data-parallel 1-thread ranks process 1.59× the images per second of one
    2-thread process (``python -m bench.layouts``), but each rank trains its own batch, so an iteration does
    twice the work and a phase is no sooner done. Independent networks side by side do pay (rank-check -n 4
    1.64× sooner, random-baseline -n 4 1.44×); ask for them with ``--procs``.
    """
    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def default_threads(procs_per_node: int) -> int:
    """The cores shared out evenly (threads × processes ≤ cores: oversubscribed, every rank ran ~10× slower)."""
    return max(1, (os.cpu_count() or 1) // procs_per_node)


def launch(argv: list[str], procs: int, threads: int, how: Launch) -> None:
    """Run ``python -m nasengine *argv`` as ``procs`` ranks (``procs / nodes`` on this node) with ``threads``
    torch threads each; returns when they finish, raises a one-line error when a rank failed for good."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if procs % how.nodes:
        raise NasEngineError(f"--procs {procs} does not divide into {how.nodes} nodes; give a multiple of {how.nodes}")
    if how.nodes > 1 and not how.rdzv_endpoint:
        raise NasEngineError(
            f"{how.nodes} nodes need a rendezvous: add --rdzv-endpoint HOST:PORT (a host every node reaches) "
            "and the same --rdzv-id on every node"
        )
    per_node = procs // how.nodes
    os.environ["OMP_NUM_THREADS"] = str(threads)
    config = LaunchConfig(
        min_nodes=how.nodes,
        max_nodes=how.nodes,
        nproc_per_node=per_node,
        run_id=how.rdzv_id or f"nasengine-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=how.rdzv_endpoint or "localhost:0",
        rdzv_configs={"join_timeout": how.rdzv_timeout, **({"is_host": True} if how.nodes == 1 else {})},
        max_restarts=how.max_restarts,
        monitor_interval=0.5,
        start_method="spawn",
    )
    where = f" on {how.nodes} nodes" if how.nodes > 1 else ""
    console.log(f"launching {procs} processes{where} with {threads} torch thread(s) each")
    try:
        elastic_launch(config, sys.executable)("-m", "nasengine", *argv)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise NasEngineError(
            f"rank {rank} exited with code {failure.exitcode} after {how.max_restarts} restart(s) (its error is "
            "above); run the same command again to continue where it stopped"
        ) from None
