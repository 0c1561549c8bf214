"""The one training loop, resumable and deterministic by seed, and the path-wise SGD phase built on it.

:func:`run_loop` trains for a fixed number of iterations and owns everything a phase must not do
differently: resuming from ``checkpoint.pt``, the batch order (:class:`ResumableBatchSampler`), seeding
each iteration from ``(seed, iteration)`` (the path, augmentation, dropout and detector sampling then do
not depend on where a run was interrupted), the divergence checks, the progress bar, the JSON-lines log,
TensorBoard, the checkpoint cadence and the gradient reduction across ranks. A phase gives it a
:class:`Loop` (paths, sizes, names), an optimizer, a learning-rate schedule and a step: the loss of one
batch. Every phase that trains uses it: supernet pre-training and fine-tuning and the standalone networks
(:func:`train`: SGD, path-wise for supernets) and block-wise distillation
(:mod:`nasengine.protocol.distillation`: Adam).

Gradients are cleared to ``None`` at each iteration, so the parameters of paths not taken get no
gradient, no momentum and no weight decay.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from nasengine import console
from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Task
from nasengine.protocol import distributed
from nasengine.protocol.precision import Mixed
from nasengine.protocol.seeds import ITERATION, derived_seed
from nasengine.protocol.tensorboard import Board
from nasengine.rundir.checkpoint import load_checkpoint, save_checkpoint
from nasengine.rundir.layout import CHECKPOINT, LOG
from nasengine.rundir.records import JsonLinesWriter
from nasengine.rundir.training_log import truncate_training_log
from nasengine.settings.config import Schedule

STATS_KEY = "figures"  # the checkpoint's key for the training statistics (its name in existing runs)
SCALER_KEY = "grad_scaler"  # the checkpoint's key for fp16's gradient scaler

Step = Callable[[nn.Module, int, Any], tuple[torch.Tensor, float]]
"""``step(model, iteration, batch) -> (loss, logged)``: the loss to back-propagate and the value to log."""


@dataclass(frozen=True)
class Loop:
    """What a training phase tells :func:`run_loop` besides its optimizer, schedule and step."""

    description: str  # the progress bar's label and the phase named in errors
    out_dir: Path  # checkpoint.pt and log.jsonl
    iterations: int
    batch_size: int
    checkpoint_every: int
    seed: int  # the batch order and every iteration's torch seed
    loss_name: str = "loss"  # the loss's key in the log, the checkpoint's statistics and done.json
    loss_label: str = "loss"  # the loss in a divergence error ("the loss became nan")
    smoothed: bool = True  # report the exponential moving average of the loss (0.9 old, 0.1 new), not the last
    workers: int = 0  # DataLoader worker processes (augmentation is then seeded per worker, not per iteration)
    tensorboard: Path | None = None  # the phase's TensorBoard folder


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only: none on normalisation layers and biases."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if is_norm or name == "bias" or param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(schedule: Schedule, base_lr: float, iteration: int) -> float:
    """The learning rate at ``iteration``: linear warm-up, then linear-to-zero or step decay."""
    if schedule.lr_schedule == "linear":
        lr = base_lr * (1.0 - iteration / schedule.iterations)
    elif schedule.lr_schedule == "step":
        passed = sum(iteration >= m * schedule.iterations for m in schedule.milestones)
        lr = base_lr * 0.1**passed
    else:
        raise NasEngineError(f"unknown lr_schedule {schedule.lr_schedule!r}; use 'linear' or 'step'")
    return lr * warmup_factor(schedule.warmup_iterations, iteration)


def warmup_factor(warmup_iterations: int, iteration: int) -> float:
    """The linear warm-up's factor at ``iteration``: ``(1 + iteration) / warmup_iterations`` during it, else 1."""
    return (1 + iteration) / warmup_iterations if iteration < warmup_iterations else 1.0


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices over epochs of seeded permutations, starting at any iteration.

    With several ranks each takes its own slice of every permutation. Resuming at iteration ``start``
    yields exactly the batches an uninterrupted run would have yielded from there.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int, stop: int):
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.per_rank = size // self.world
        if self.per_rank < batch_size:
            raise NasEngineError(
                f"the training split has {size} images, fewer than one batch of {batch_size} per rank; "
                "lower the batch size or add data"
            )
        self.size, self.batch_size, self.seed, self.start, self.stop = size, batch_size, seed, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.per_rank // self.batch_size
        current_epoch, mine = -1, None
        for iteration in range(self.start, self.stop):
            epoch, step = divmod(iteration, per_epoch)
            if epoch != current_epoch:
                generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
                mine = torch.randperm(self.size, generator=generator)[self.rank :: self.world]
                current_epoch = epoch
            yield mine[step * self.batch_size : (step + 1) * self.batch_size].tolist()  # type: ignore[index]


class Diverged(NasEngineError):
    """Training produced a non-finite loss, weight or BN statistic; the engine names the phase and the fix."""

    def __init__(
        self,
        description: str,
        iteration: int,
        lr: float,
        what: str,
        checkpoint: Path | None,
        checkpoint_iteration: int | None,
    ):
        self.description, self.iteration, self.lr, self.what = description, iteration, lr, what
        self.checkpoint, self.checkpoint_iteration = checkpoint, checkpoint_iteration
        newest = (
            f"the newest checkpoint is {checkpoint} (iteration {checkpoint_iteration})"
            if checkpoint
            else "there is no checkpoint of this phase yet"
        )
        super().__init__(f"{description}: {what} at iteration {iteration + 1} (lr {lr:.3g}); {newest}")


def state_overflow(model: nn.Module) -> str | None:
    """Which of the model's weights or buffers (BN statistics) are not finite, or None.

    One fused norm over every floating tensor; a norm overflows for weights near the float range too (1e33
    and up), which is divergence all the same.
    """
    named = [(n, t) for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_floating_point()]
    if not named:
        return None
    norms = torch._foreach_norm([t.detach() for _, t in named])
    if bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
        return None
    name = next(n for (n, _), norm in zip(named, norms) if not torch.isfinite(norm))
    return f"weight or BN statistic {name!r} is not finite"


OVERFLOW_CHECK_EVERY = 10  # iterations between weight checks (a check costs ~1/10 of a small supernet's step)


def overflow_check_due(iteration: int, checkpoint_every: int, iterations: int) -> bool:
    """Weights are checked every few iterations and always before a checkpoint or the end, so a diverged
    state is never saved or marked done (a non-finite loss is caught at every iteration)."""
    done = iteration + 1
    return done % OVERFLOW_CHECK_EVERY == 0 or done % checkpoint_every == 0 or done == iterations


def batch_images(batch: Any) -> int:
    """Number of images in a batch: ``(images, labels)`` or ``(list_of_images, list_of_targets)``."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first)


def run_loop(
    loop: Loop,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    data: Dataset,
    collate: Callable[[list], Any],
    step: Step,
    *,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Train ``model`` for ``loop.iterations`` from its newest checkpoint in ``loop.out_dir`` (if any).

    Each iteration sets every parameter group's learning rate to ``lr_at(iteration)``, clears the
    gradients, calls ``step(model, iteration, batch)`` (under autocast for ``precision`` ``bf16`` or
    ``fp16``; ``fp16`` scales the loss with a gradient scaler saved in the checkpoint), averages the
    gradients over the current group's ranks (one flat all-reduce of the gradients that exist: only the
    sampled path has any) and applies the optimizer. Writes ``checkpoint.pt`` every
    ``loop.checkpoint_every`` iterations and at the end, ``log.jsonl`` (one line per iteration) and
    TensorBoard scalars; returns the final statistics (the loss, ``lr``, ``img/s``), which a finished
    phase's ``done.json`` keeps.
    """
    device = device or torch.device("cpu")
    mixed = Mixed(precision, device)
    loop.out_dir.mkdir(parents=True, exist_ok=True)
    start, stats = resume_training_state(model, optimizer, loop.out_dir, loop.iterations, loop.description, mixed)
    saved_at = start if start > 0 else None  # the iteration of the newest checkpoint on disk
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    sampler = ResumableBatchSampler(len(data), loop.batch_size, loop.seed, start, loop.iterations)  # type: ignore[arg-type]
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=loop.workers)
    model.train()
    shown = stats.get(loop.loss_name, math.nan)  # a smoothed loss continues across a resume
    with (
        console.progress(loop.iterations, loop.description) as bar,
        JsonLinesWriter(loop.out_dir / LOG if distributed.is_main() else None) as log,
        Board(loop.tensorboard, first_step=start + 1) as board,
    ):
        bar.update(start)
        batches = iter(loader)
        for iteration in range(start, loop.iterations):
            tick = time.perf_counter()
            torch.manual_seed(derived_seed(loop.seed, ITERATION, iteration))
            batch = next(batches)
            lr = lr_at(iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            with mixed.autocast():
                loss, value = step(model, iteration, batch)
            if not torch.isfinite(loss):
                raise _diverged(loop, iteration, lr, f"the {loop.loss_label} became {loss.item()}", saved_at)
            mixed.backward(loss)
            distributed.average_gradients(parameters)
            mixed.step(optimizer)
            if overflow_check_due(iteration, loop.checkpoint_every, loop.iterations):
                overflow = state_overflow(model)
                if overflow:
                    raise _diverged(loop, iteration, lr, overflow, saved_at)
            images_per_s = batch_images(batch) * distributed.world_size() / (time.perf_counter() - tick)
            shown = value if not loop.smoothed or math.isnan(shown) else 0.9 * shown + 0.1 * value
            stats = {loop.loss_name: shown, "lr": lr, "img/s": images_per_s}
            bar.update(iteration + 1, loss=shown, **{"img/s": images_per_s})
            log.write({"iteration": iteration + 1, loop.loss_name: value, "lr": lr, "images_per_s": images_per_s})
            board.scalars(iteration + 1, **{loop.loss_name: value}, lr=lr, images_per_s=images_per_s)
            done = iteration + 1
            if done % loop.checkpoint_every == 0 and done < loop.iterations:
                board.flush()
                save_training_state(model, optimizer, done, loop.out_dir / CHECKPOINT, stats, mixed)
                saved_at = done
    if start < loop.iterations:
        save_training_state(model, optimizer, loop.iterations, loop.out_dir / CHECKPOINT, stats, mixed)
    return stats


def _diverged(loop: Loop, iteration: int, lr: float, what: str, saved_at: int | None) -> Diverged:
    checkpoint = loop.out_dir / CHECKPOINT if saved_at else None
    return Diverged(loop.description, iteration, lr, what, checkpoint, saved_at)


def train(
    model: nn.Module,
    task: Task,
    data: Dataset,
    schedule: Schedule,
    out_dir: Path,
    *,
    seed: int,
    device: torch.device,
    description: str,
    paths: Callable[[int], Sequence[Arch]] | None = None,
    activate: Callable[[Arch], None] | None = None,
    workers: int = 0,
    tensorboard: Path | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Train ``model`` with ``task.loss`` and SGD for ``schedule.iterations`` (see :func:`run_loop`).

    Supernets: ``paths(iteration)`` lists that iteration's paths and ``activate(arch)`` selects one before
    its forward pass; the losses of several paths are averaged in one graph, so one backward pass (and
    one gradient reduction) covers them all. Without ``paths`` the model is a plain network.
    """
    base_lr = (
        schedule.lr
        if schedule.lr is not None
        else task.base_lr * schedule.batch_size * distributed.world_size() / task.base_batch_size
    )
    optimizer = torch.optim.SGD(param_groups(model, schedule.weight_decay), lr=base_lr, momentum=schedule.momentum)

    def step(model: nn.Module, iteration: int, batch: Any) -> tuple[torch.Tensor, float]:
        archs: Sequence[Arch | None] = paths(iteration) if paths is not None else [None]
        loss = _mean_loss(model, task, batch, archs, activate)
        return loss, float(loss.detach())

    loop = Loop(
        description,
        out_dir,
        schedule.iterations,
        schedule.batch_size,
        schedule.checkpoint_every,
        seed,
        workers=workers,
        tensorboard=tensorboard,
    )
    return run_loop(
        loop,
        model,
        optimizer,
        lambda iteration: learning_rate(schedule, base_lr, iteration),
        data,
        task.collate,
        step,
        device=device,
        precision=precision,
    )


def _mean_loss(
    model: nn.Module, task: Task, batch: Any, archs: Sequence[Arch | None], activate: Callable[[Arch], None] | None
) -> torch.Tensor:
    """The task's loss averaged over the iteration's paths (one ``None`` entry: a plain network)."""
    total = None
    for arch in archs:
        if arch is not None and activate is not None:
            activate(arch)
        loss = task.loss(model, batch)
        total = loss if total is None else total + loss
    return total / len(archs)  # type: ignore[operator,return-value]


def resume_training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    out_dir: Path,
    iterations: int,
    description: str,
    mixed: Mixed | None = None,
) -> tuple[int, dict[str, float]]:
    """Load ``out_dir/checkpoint.pt`` into ``model``, ``optimizer`` (and ``mixed``'s scaler) if it exists, drop
    log lines written after it, and return the iteration to continue from (0 for a fresh start) with the training
    statistics saved with it (smoothed loss, lr), so a resumed phase reports what an uninterrupted one would."""
    start, stats = 0, {}
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
        stats = dict(state.get(STATS_KEY, {}))
        if mixed is not None:
            mixed.load_state_dict(state.get(SCALER_KEY))
        console.log(f"{description}: resuming at iteration {start}/{iterations}")
    if distributed.is_main():
        truncate_training_log(out_dir / LOG, start)
    return start, stats


def save_training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    path: Path,
    stats: dict[str, float] | None = None,
    mixed: Mixed | None = None,
) -> None:
    """Write the training state at ``iteration``, byte for byte what an uninterrupted run writes: the
    optimizer's per-parameter state is sorted by parameter index (its insertion order records which paths
    happened to be trained first since the process started) and wall-clock statistics are left out."""
    if distributed.is_main():
        optimizer_state = optimizer.state_dict()
        # pickle writes a string once per object: keys unpickled on resume are new objects, fresh ones are
        # interned literals, so both are interned here to give the same bytes
        optimizer_state["state"] = {
            index: {sys.intern(name): value for name, value in entry.items()}
            for index, entry in sorted(optimizer_state["state"].items())
        }
        optimizer_state["param_groups"] = [
            {sys.intern(name): value for name, value in group.items()} for group in optimizer_state["param_groups"]
        ]
        steady = {key: value for key, value in (stats or {}).items() if key != "img/s"}  # no wall clock
        state = {"model": model.state_dict(), "optimizer": optimizer_state, "iteration": iteration, STATS_KEY: steady}
        scaler = mixed.state_dict() if mixed is not None else None
        if scaler is not None:
            state[SCALER_KEY] = scaler
        save_checkpoint(state, path)
    distributed.barrier()
