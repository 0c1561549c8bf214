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

The loop is resumable and deterministic like :func:`nasengine.protocol.training.train`: the batch order and the
paths are seeded from ``(seed, iteration)``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nasengine import console
from nasengine.errors import NasEngineError
from nasengine.interfaces import Supernet, Task
from nasengine.protocol import distributed
from nasengine.protocol.path_sampling import uniform_path
from nasengine.protocol.seeds import ITERATION, derived_seed
from nasengine.protocol.tensorboard import Board
from nasengine.protocol.training import (
    Diverged,
    ResumableBatchSampler,
    batch_images,
    overflow_check_due,
    resume_training_state,
    save_training_state,
    state_overflow,
)
from nasengine.rundir.layout import CHECKPOINT, LOG
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


def supports_distillation(supernet: Supernet) -> bool:
    return type(supernet).distill_pairs is not Supernet.distill_pairs


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
) -> dict[str, float]:
    """Train every choice of ``supernet`` (``choices`` options per position) to reproduce
    ``teacher_backbone`` position by position; ``model`` is the supernet inside the task's model.

    Adam at ``schedule.distill_lr`` with ``schedule``'s warm-up, then linear to zero over
    ``iterations``. Writes ``checkpoint.pt`` and ``log.jsonl`` in ``out_dir`` (and the log's figures to
    TensorBoard in the folder ``tensorboard`` if given); returns the final figures.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    teacher_model.eval()
    params = [p for p in supernet.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=schedule.distill_lr)
    checkpoint_path = out_dir / CHECKPOINT
    start, figures = resume_training_state(model, optimizer, out_dir, iterations, description)
    saved_at = start if start > 0 else None
    sampler = ResumableBatchSampler(len(data), schedule.batch_size, seed, start, iterations)  # type: ignore[arg-type]
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=task.collate, num_workers=workers)
    model.train()
    with (
        console.progress(iterations, description) as bar,
        open(out_dir / LOG, "a") as log_file,
        Board(tensorboard, first_step=start + 1) as board,
    ):
        bar.update(start)
        batches = iter(loader)
        for iteration in range(start, iterations):
            tick = time.perf_counter()
            torch.manual_seed(derived_seed(seed, ITERATION, iteration))
            batch = next(batches)
            lr = schedule.distill_lr * (1.0 - iteration / iterations)
            if iteration < schedule.warmup_iterations:
                lr *= (1 + iteration) / schedule.warmup_iterations
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = backbone_input(teacher_model, teacher_backbone, task, batch)
            pairs = supernet.distill_pairs(teacher_backbone, images, uniform_path(choices, seed, iteration))
            loss: torch.Tensor = sum(  # type: ignore[assignment]
                nn.functional.mse_loss(out, target) / target.pow(2).mean().clamp_min(1e-8) for out, target in pairs
            )
            if not torch.isfinite(loss):
                raise Diverged(
                    description,
                    iteration,
                    lr,
                    f"the distillation loss became {loss.item()}",
                    checkpoint_path if saved_at else None,
                    saved_at,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(params)
            optimizer.step()
            overflow = (
                state_overflow(model) if overflow_check_due(iteration, schedule.checkpoint_every, iterations) else None
            )
            if overflow:
                raise Diverged(description, iteration, lr, overflow, checkpoint_path if saved_at else None, saved_at)
            value = float(loss.detach()) / len(pairs)
            images_per_s = batch_images(batch) * distributed.world_size() / (time.perf_counter() - tick)
            figures = {"distill_loss": value, "lr": lr, "img/s": images_per_s}
            bar.update(iteration + 1, loss=value, **{"img/s": images_per_s})
            if distributed.is_main():
                log_file.write(
                    json.dumps(
                        {"iteration": iteration + 1, "distill_loss": value, "lr": lr, "images_per_s": images_per_s}
                    )
                    + "\n"
                )
                board.scalars(iteration + 1, distill_loss=value, lr=lr, images_per_s=images_per_s)
            done = iteration + 1
            if done % schedule.checkpoint_every == 0 and done < iterations:
                log_file.flush()
                board.flush()
                save_training_state(model, optimizer, done, checkpoint_path, figures)
                saved_at = done
    if start < iterations:
        save_training_state(model, optimizer, iterations, checkpoint_path, figures)
    return figures
