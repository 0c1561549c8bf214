"""Block-wise distillation of a supernet from a trained standalone teacher (``sampling = "distill"``).

Uniform single-path training of a ShuffleNet supernet from scratch does not learn at small budgets:
each position's choices must first agree on what their outputs mean, and end-to-end training gives
them no shared target (measured in the README: loss stays at or above chance). Block-wise
distillation (as in DNA, Li et al., CVPR 2020) gives them one: a standalone network (the teacher, the
space's baseline) is trained first; then at every iteration each position of the supernet gets the
teacher's input at that position and its sampled choice is trained to reproduce the teacher's output
there (mean squared error relative to the target's energy, summed over positions). Every choice of
every position is trained on the same inputs and targets, so they become interchangeable, and any
path composed of them starts out close to the teacher. End-to-end uniform training then takes over
(:func:`nasengine.protocol.training.train`).

The iterations run in the one training loop (:func:`nasengine.protocol.training.run_loop`), so they resume
and seed exactly as every other phase's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from nasengine.errors import NasEngineError
from nasengine.interfaces import Supernet, Task
from nasengine.protocol.path_sampling import uniform_path
from nasengine.protocol.training import Loop, run_loop, warmup_factor
from nasengine.settings.config import Schedule


class _Captured(Exception):
    """Raised by a forward pre-hook to stop the teacher once its backbone's input is known."""

    def __init__(self, value: torch.Tensor):
        self.value = value


def backbone_input(model: nn.Module, backbone: nn.Module, task: Task, batch: Any) -> torch.Tensor:
    """The tensor ``model`` hands its ``backbone`` for ``batch`` (normalised, resized: the task's own way)."""

    def capture(_module: nn.Module, args: tuple[Any, ...]) -> None:
        raise _Captured(args[0])

    handle = backbone.register_forward_pre_hook(capture)
    try:
        with torch.no_grad():
            task.loss(model, batch)
    except _Captured as captured:
        return captured.value
    finally:
        handle.remove()
    raise NasEngineError(f"task {task.name!r}: its loss never called the backbone, so it cannot be distilled")


def inherit_shared(model: nn.Module, teacher_model: nn.Module) -> int:
    """Copy every tensor the teacher model shares with the supernet model (same name and shape: the
    stem and the task head); returns how many were copied."""
    target = model.state_dict()
    shared = {k: v for k, v in teacher_model.state_dict().items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return len(shared)


def distill(
    model: nn.Module,
    supernet: Supernet,
    teacher_model: nn.Module,
    teacher_backbone: nn.Module,
    task: Task,
    data: Dataset,
    choices: tuple[int, ...],
    schedule: Schedule,
    iterations: int,
    out_dir: Path,
    *,
    seed: int,
    description: str,
    workers: int = 0,
    tensorboard: Path | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Train every choice of ``supernet`` (``choices`` options per position) to reproduce
    ``teacher_backbone`` position by position; ``model`` is the supernet inside the task's model.

    Adam at ``schedule.distill_lr`` with ``schedule``'s warm-up, then linear to zero over
    ``iterations``. Writes ``checkpoint.pt`` and ``log.jsonl`` (``distill_loss``: the mean over positions)
    in ``out_dir``; returns the final statistics.
    """
    teacher_model.eval()
    optimizer = torch.optim.Adam([p for p in supernet.parameters() if p.requires_grad], lr=schedule.distill_lr)

    def lr_at(iteration: int) -> float:
        return (
            schedule.distill_lr * (1.0 - iteration / iterations) * warmup_factor(schedule.warmup_iterations, iteration)
        )

    def step(_model: nn.Module, iteration: int, batch: Any) -> tuple[torch.Tensor, float]:
        images = backbone_input(teacher_model, teacher_backbone, task, batch)
        pairs = supernet.distill_pairs(teacher_backbone, images, uniform_path(choices, seed, iteration))
        loss: torch.Tensor = sum(  # type: ignore[assignment]
            nn.functional.mse_loss(out, target) / target.pow(2).mean().clamp_min(1e-8) for out, target in pairs
        )
        return loss, float(loss.detach()) / len(pairs)

    loop = Loop(
        description,
        out_dir,
        iterations,
        schedule.batch_size,
        schedule.checkpoint_every,
        seed,
        loss_name="distill_loss",
        loss_label="distillation loss",
        smoothed=False,
        workers=workers,
        tensorboard=tensorboard,
    )
    return run_loop(
        loop,
        model,
        optimizer,
        lr_at,
        data,
        task.collate,
        step,
        device=device,
        precision=precision,
    )
