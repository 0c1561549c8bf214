"""Iteration-based SGD training, path-wise for supernets, resumable and deterministic by seed.

One loop serves every phase: supernet pre-training and fine-tuning (the paths of each iteration come
from :mod:`nasengine.protocol.path_sampling`; several paths in one iteration are averaged into one update) and the
retraining of a standalone network (no sampling). Gradients are cleared to ``None``
so the parameters of paths not taken get no gradient, no momentum and no weight decay. Everything random
in an iteration (the path, the batch order, augmentation, dropout, detector sampling) is seeded from
``(seed, iteration)``, so a run resumed from a checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from nasengine import console
from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Task
from nasengine.protocol import distributed
from nasengine.protocol.seeds import ITERATION, derived_seed
from nasengine.protocol.tensorboard import Board
from nasengine.rundir.checkpoint import load_checkpoint, save_checkpoint
from nasengine.rundir.layout import CHECKPOINT, LOG
from nasengine.settings.config import Schedule


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
    if iteration < schedule.warmup_iterations:
        lr *= (1 + iteration) / schedule.warmup_iterations
    return lr


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices over epochs of seeded permutations, starting at any iteration.

    Under DDP each rank takes its own slice of every permutation. Resuming at iteration ``start``
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
) -> dict[str, float]:
    """Train ``model`` with ``task.loss`` for ``schedule.iterations``; resume from ``out_dir`` if possible.

    Supernets: ``paths(iteration)`` lists that iteration's paths and ``activate(arch)`` selects one before
    its forward pass; the losses of several paths are averaged in one graph, so one backward pass (and
    one DDP gradient reduction) covers them all.
    Writes ``checkpoint.pt`` every ``checkpoint_every`` iterations and ``log.jsonl`` (one line per
    logged iteration), and the same figures to TensorBoard in the folder ``tensorboard`` if given;
    returns the final training figures. With ``workers`` > 0 the data is loaded in worker processes
    (needed for JPEG datasets); augmentation is then seeded per worker, not per iteration.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base_lr = (
        schedule.lr
        if schedule.lr is not None
        else task.base_lr * schedule.batch_size * distributed.world_size() / task.base_batch_size
    )
    optimizer = torch.optim.SGD(param_groups(model, schedule.weight_decay), lr=base_lr, momentum=schedule.momentum)
    checkpoint_path = out_dir / CHECKPOINT
    start, figures = resume_training_state(model, optimizer, out_dir, schedule.iterations, description)
    saved_at = start if start > 0 else None  # the iteration of the newest checkpoint on disk

    trained = _wrap_for_ddp(model, device)
    sampler = ResumableBatchSampler(len(data), schedule.batch_size, seed, start, schedule.iterations)  # type: ignore[arg-type]
    loader = DataLoader(
        data, batch_sampler=sampler, collate_fn=task.collate, num_workers=workers, persistent_workers=False
    )
    model.train()
    smoothed = figures.get("loss", math.nan)  # the smoothed loss continues across a resume
    with (
        console.progress(schedule.iterations, description) as bar,
        open(out_dir / LOG, "a") as log_file,
        Board(tensorboard, first_step=start + 1) as board,
    ):
        bar.update(start)
        batches = iter(loader)
        for iteration in range(start, schedule.iterations):
            tick = time.perf_counter()
            torch.manual_seed(derived_seed(seed, ITERATION, iteration))
            batch = next(batches)
            archs = paths(iteration) if paths is not None else [None]
            lr = learning_rate(schedule, base_lr, iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = _mean_loss(trained, task, batch, archs, activate)
            if not torch.isfinite(loss):
                raise Diverged(
                    description,
                    iteration,
                    lr,
                    f"the loss became {loss.item()}",
                    checkpoint_path if saved_at else None,
                    saved_at,
                )
            loss.backward()
            optimizer.step()
            overflow = (
                state_overflow(model)
                if overflow_check_due(iteration, schedule.checkpoint_every, schedule.iterations)
                else None
            )
            if overflow:
                raise Diverged(description, iteration, lr, overflow, checkpoint_path if saved_at else None, saved_at)
            seconds = time.perf_counter() - tick
            value = float(loss.detach())
            smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value
            images_per_s = batch_images(batch) * distributed.world_size() / seconds
            figures = {"loss": smoothed, "lr": lr, "img/s": images_per_s}
            bar.update(iteration + 1, loss=smoothed, **{"img/s": images_per_s})
            if distributed.is_main():
                log_file.write(
                    json.dumps({"iteration": iteration + 1, "loss": value, "lr": lr, "images_per_s": images_per_s})
                    + "\n"
                )
                board.scalars(iteration + 1, loss=value, lr=lr, images_per_s=images_per_s)
            done = iteration + 1
            if done % schedule.checkpoint_every == 0 and done < schedule.iterations:
                log_file.flush()
                board.flush()
                save_training_state(model, optimizer, done, checkpoint_path, figures)
                saved_at = done
    if start < schedule.iterations:
        save_training_state(model, optimizer, schedule.iterations, checkpoint_path, figures)
    return figures


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
    model: nn.Module, optimizer: torch.optim.Optimizer, out_dir: Path, iterations: int, description: str
) -> tuple[int, dict[str, float]]:
    """Load ``out_dir/checkpoint.pt`` into ``model`` and ``optimizer`` if it exists, drop log lines
    written after it, and return the iteration to continue from (0 for a fresh start) with the training
    figures saved with it (smoothed loss, lr, ...), so a resumed phase reports what an uninterrupted one would."""
    start, figures = 0, {}
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
        figures = dict(state.get("figures", {}))
        console.log(f"{description}: resuming at iteration {start}/{iterations}")
    truncate_log(out_dir / LOG, start)
    return start, figures


def save_training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    path: Path,
    figures: dict[str, float] | None = None,
) -> None:
    """Write the training state at ``iteration``, byte for byte what an uninterrupted run writes: the
    optimizer's per-parameter state is sorted by parameter index (its insertion order records which paths
    happened to be trained first since the process started) and wall-clock figures are left out."""
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
        steady = {key: value for key, value in (figures or {}).items() if key != "img/s"}  # no wall clock
        save_checkpoint(
            {"model": model.state_dict(), "optimizer": optimizer_state, "iteration": iteration, "figures": steady}, path
        )
    distributed.barrier()


def truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines past ``iteration`` (written after the checkpoint a resume starts from)."""
    if not path.exists() or not distributed.is_main():
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise NasEngineError(
            f"{path} is not UTF-8 text; delete it (the training log is rewritten from the checkpoint on)"
        ) from None
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record_iteration = int(json.loads(line)["iteration"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # a torn last line: the process was killed while writing it
                break
            raise NasEngineError(
                f"{path} line {number} is not a training-log record; delete that line or the file"
            ) from None
        if record_iteration <= iteration:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))


def _wrap_for_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP under torchrun (unused parameters allowed: only one path runs per step), else the model itself."""
    if not distributed.is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
