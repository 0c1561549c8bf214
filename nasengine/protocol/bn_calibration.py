"""BatchNorm recalibration: the statistics of one path, recomputed before it is scored (DetNAS §3.2).

Statistics accumulated while training the supernet mix every path, so each candidate's running means
and variances are reset and recomputed on the ``calib`` split: train mode (batch statistics), no
gradients, and a cumulative average over the batches (``momentum=None``). The forward pass is the
task's own ``loss``, so every BN layer the task's model runs — backbone and head — is recalibrated.

When one submodule (``stop_after``, the backbone) holds every BN layer of the model, the forward pass
stops as soon as that submodule has run: the rest of the model (FPN, RPN, RoI heads and their losses in
the built-in detectors, whose heads use GroupNorm) cannot change a BN statistic, and skipping it makes
recalibration cheaper, so a larger calib split costs what a small one did.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from nasengine.interfaces import Task


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _Stop(Exception):
    """Raised by the hook on ``stop_after`` to end a calibration forward pass early."""


def _raise_stop(_module: nn.Module, _args: Any, _output: Any) -> None:
    raise _Stop


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, task: Task, loader: DataLoader, seed: int = 0, stop_after: nn.Module | None = None
) -> int:
    """Reset and recompute every BN layer's running statistics over ``loader``; returns images seen.

    ``stop_after`` (a submodule of ``model``, e.g. the backbone) ends each forward pass once it has run,
    provided it holds every BN layer of ``model``; otherwise the whole ``task.loss`` runs.
    """
    layers = batch_norms(model)
    hook = None
    if stop_after is not None and {id(m) for m in batch_norms(stop_after)} == {id(m) for m in layers}:
        hook = stop_after.register_forward_hook(_raise_stop)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    torch.manual_seed(seed)  # detectors sample anchors and proposals in train mode
    was_training = model.training
    model.train()
    seen = 0
    try:
        for batch in loader:
            try:
                task.loss(model, batch)
            except _Stop:
                pass
            first = batch[0] if isinstance(batch, (tuple, list)) else batch
            seen += len(first)
    finally:
        if hook is not None:
            hook.remove()
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return seen
