"""Latency of the backbone on a device, predicted from a table of its blocks measured there.

The table (``nasengine.latency``) is measured on the machine the command runs on — or read from a file that
``nasengine latency build`` wrote on the deployment machine (``table = FILE``, or ``--latency-table FILE``) —
and a copy is kept in the run's search folder, so a resumed search, the retraining and the report all use
the numbers the search used. After retraining, the winner's real network is timed (``measure``) the same
way, on this machine, to check the prediction against the limit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Constraint, Space
from nasengine.latency import (
    LatencyTable,
    Timing,
    latency_table,
    read_table,
    resolve_device,
    time_in_fresh_process,
    time_networks,
    torch_threads,
)
from nasengine.rundir.layout import LATENCY_TABLE
from nasengine.rundir.records import read_json, write_json

MEASURE_PASSES = 6
"""Passes over a network timed alone (about 4 s at the demo's 7 ms): on a shared machine a slower spell lasts
seconds (measured here: +50% for 2 s), and the minimum must reach past it."""


class LatencyConstraint(Constraint):
    """Milliseconds per forward pass of the backbone, from a per-block table measured on a device.

    Options: ``table`` (a file from ``nasengine latency build``; default: measured here), ``image_size`` (default:
    the run's detection input, ``Task.input_size``), ``batch`` (1), ``device`` (``auto``: CUDA if present, else
    the CPU) and ``threads`` (1: a batch-1 CPU server answers a request on one thread, and on this project's
    shared 2-core machine one thread's timings are steady — the minimum per second of one network stays within
    7.05–8.02 ms over 30 s — where two threads' swing from 6.6 to 13.1 ms).
    """

    name = "latency"
    unit = "ms"
    description = "milliseconds per forward pass of the backbone, from a per-block table measured on the device"

    def __init__(
        self,
        table: str | None = None,
        image_size: int | None = None,
        batch: int = 1,
        device: str = "auto",
        threads: int = 1,
    ):
        if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 32):
            raise NasEngineError(f"constraint latency: image_size must be an integer >= 32, not {image_size!r}")
        if isinstance(batch, bool) or int(batch) < 1:
            raise NasEngineError(f"constraint latency: batch must be an integer >= 1, not {batch!r}")
        if isinstance(threads, bool) or int(threads) < 1:
            raise NasEngineError(f"constraint latency: threads must be an integer >= 1, not {threads!r}")
        self.table_file = table
        self.image_size = None if image_size is None else int(image_size)
        self.batch = int(batch)
        self.device = str(device)
        self.threads = int(threads)
        self.table: LatencyTable | None = None

    def options(self):
        options = {"table": self.table_file, "image_size": self.image_size, "batch": self.batch}
        return {**options, "device": self.device, "threads": self.threads}

    def prepare(self, space: Space, *, input_size: int, folder: Path | None = None) -> None:
        size = self.image_size or input_size
        pinned = Path(folder) / LATENCY_TABLE if folder is not None else None
        if pinned is not None and pinned.is_file():
            read_json(pinned)  # checked against the search's manifest once the search is done
            self.table = read_table(pinned, space)
            return
        if self.table_file is not None:
            table = read_table(self.table_file, space)
            if table.info.get("image_size") != size or table.info.get("batch") != self.batch:
                raise NasEngineError(
                    f"latency table {self.table_file} was measured at {table.info.get('image_size')}px, batch "
                    f"{table.info.get('batch')}; this search asks for {size}px, batch {self.batch} (set "
                    f"search.constraints.latency.image_size / .batch to the table's, or build a table for these)"
                )
        else:
            with torch_threads(self.threads):
                table = latency_table(space, size, batch=self.batch, device=resolve_device(self.device))
        self.table = table
        if pinned is not None:
            pinned.parent.mkdir(parents=True, exist_ok=True)
            write_json(table.to_json(), pinned)

    def _table(self) -> LatencyTable:
        if self.table is None:
            raise NasEngineError("constraint latency: prepare(space, input_size=...) must be called before cost")
        return self.table

    def cost(self, space: Space, arch: Arch) -> float:
        return round(self._table().latency(arch), 4)

    def cost_range(self, space: Space) -> tuple[float, float]:
        return self._table().latency_range()

    def measure(self, space: Space, arch: Arch, network: nn.Module) -> float:
        """``network`` timed on this machine as the table's networks were (its threads, batch and size), in a
        fresh process (:func:`nasengine.latency.time_in_fresh_process`); in this one when the space is not
        registered (it could not be rebuilt there). On a machine without the table's GPU, on its CPU."""
        info = self._table().info
        device = torch.device(info.get("device", "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")
        size, batch = int(info["image_size"]), int(info["batch"])
        with torch_threads(info.get("threads")):
            if space.name in registry.plugins("space"):
                ms = time_in_fresh_process(space, arch, network, size, batch, device, MEASURE_PASSES)
            else:
                # a copy in the default memory layout, as the table's networks: a run trains channels-last
                copied = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
                (ms,) = time_networks([copied], size, batch, device, Timing(), passes=MEASURE_PASSES)
        return round(ms, 4)

    def format(self, value: float) -> str:
        return f"{value:.2f} ms"
