"""BatchNorm recalibration: the statistics of one path, recomputed before it is scored (DetNAS §3.2).

Statistics accumulated while training the supernet mix every path, so each candidate's running means
and variances are reset and recomputed on the ``calib`` split: train mode (batch statistics), no
gradients, and a cumulative average over the batches (``momentum=None``). The forward pass is the
task's own ``loss``, so every BN layer the task's model runs — backbone and head — is recalibrated.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from nasengine.interfaces import Task


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, task: Task, loader: DataLoader, seed: int = 0) -> int:
    """Reset and recompute every BN layer's running statistics over ``loader``; returns images seen."""
    layers = batch_norms(model)
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
            task.loss(model, batch)
            first = batch[0] if isinstance(batch, (tuple, list)) else batch
            seen += len(first)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return seen
