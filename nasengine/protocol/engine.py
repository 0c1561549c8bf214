"""The one-shot protocol on a run directory: pre-train → fine-tune → search → retrain → report.

Each phase writes into its own folder of the run directory and marks itself complete with
``done.json``; a finished phase is skipped, an interrupted one resumes from its last checkpoint (or,
for the search, from its history). The engine talks to spaces, tasks and strategies only through
their interfaces, created by name through the registry.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasengine import console, registry
from nasengine.arch import format_arch
from nasengine.errors import NasEngineError
from nasengine.flops import cost_of
from nasengine.interfaces import Arch, Space, Supernet, Task, implements
from nasengine.protocol import distributed, precision, seeds
from nasengine.protocol.distillation import distill, inherit_shared
from nasengine.protocol.limits import Limits, input_size, run_limits
from nasengine.protocol.path_sampling import paths_for
from nasengine.protocol.preflight import check_run
from nasengine.protocol.search import CandidateEvaluator, run_search
from nasengine.protocol.seeds import arch_salt, derived_seed
from nasengine.protocol.training import Diverged, train
from nasengine.report.build import write_report
from nasengine.rundir.atomic import remove_stale_temp_files
from nasengine.rundir.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint
from nasengine.rundir.layout import (
    ARCH_FILE,
    CHECKPOINT,
    DONE,
    LOG,
    PHASES,
    REDO_DEPENDENTS,
    RESULT_FILES,
    SUMMARY,
    SUPERNET,
    TEST,
    RunLayout,
)
from nasengine.rundir.lock import RunLock
from nasengine.rundir.manifest import Tampered, unverified_files, verify_phase, write_done
from nasengine.rundir.records import read_json, write_json
from nasengine.settings import config as configuration
from nasengine.settings.config import RunConfig, scale_schedule
from nasengine.settings.defaults import FLOPS_CONSTRAINT

REMEASURES = 2
"""How many times a retrained network whose measured cost breaks a limit is measured again (the least stands)."""


class Run:
    """A run directory and its resolved configuration."""

    def __init__(self, directory: str | Path, config: RunConfig):
        self.dir = Path(directory)
        self.layout = RunLayout(self.dir)
        self.config = config
        self.device = distributed.setup()
        self._lock: RunLock | None = None
        self._redo: str | None = None  # the phase a command is about to redo (start)

    @classmethod
    def create(cls, directory: str | Path, config: RunConfig, redo: str | None = None) -> Run:
        """Start a run in ``directory``, or continue the one there if it has the same configuration.

        Everything is checked (:func:`nasengine.protocol.preflight.check_run`) before a new directory is made, and
        an existing one is locked before the checks (:meth:`start`); the run then holds the directory's lock
        until the process ends. ``redo``: the phase the caller redoes next (:meth:`start`).
        """
        directory = Path(directory)
        distributed.setup()  # the ranks are counted before the configuration is completed
        settle_config(directory, config)
        run = cls(directory, config)
        saved_path = run.layout.config
        run.start(redo)
        if distributed.is_main() and not saved_path.exists():
            configuration.save(config, saved_path)
        distributed.barrier()
        return run

    @classmethod
    def open(cls, directory: str | Path) -> Run:
        """An existing run directory (read-only until :meth:`claim`)."""
        path = RunLayout(directory).config
        if not path.exists():
            raise NasEngineError(
                f"{directory} is not a run directory (no config.toml); start one with 'nasengine run --out {directory}'"
            )
        return cls(directory, configuration.load(path))

    def check(self, redo: str | None = None) -> None:
        """Everything the run needs, checked before anything is trained (see :mod:`nasengine.protocol.preflight`);
        ``redo``: the phase the command redoes (as :meth:`start`)."""
        if redo is not None:
            self._redo = redo
        check_run(self)

    def start(self, redo: str | None = None) -> None:
        """Check everything and hold the directory for this process: an existing directory is claimed first, so
        a second writer is refused at once rather than after the checks; a new one only once they pass, so
        a refused run leaves nothing behind. The run's recorded ``threads`` become this process's, so a
        run resumed under another thread count continues exactly as it began; then the run's limits are
        prepared (a latency table measured under those threads, or read back from the search folder).

        ``redo``: the phase the caller is about to redo (:meth:`redo`); when that deletes the search, what the
        search folder keeps (a damaged latency table, say) is not read first."""
        self._redo = redo
        self.check_layout()
        if self.dir.is_dir():
            self.claim()
        self.check()
        self.claim()
        if self.config.threads and self.config.threads != torch.get_num_threads():
            console.log(f"{self.dir}: {self.config.threads} torch threads, as the run began (results depend on it)")
            torch.set_num_threads(self.config.threads)
        if self.kept_folder is not None or not self.search_folder.exists():
            _ = self.limits  # every constraint prepared on every rank now, its table kept in the run, before any phase

    def check_layout(self) -> None:
        """The run continues in as many processes as it began with (results depend on them: the batches are
        per process, and the data is sharded over the ranks); a run of an earlier nasengine (no ``procs``) in
        whatever layout it is given."""
        procs, ranks = self.config.procs, distributed.world_size()
        if procs is not None and procs != ranks:
            raise NasEngineError(
                f"{self.dir} was run by {procs} process(es) and this is {ranks}; results depend on the layout, so "
                f"continue it as it began: nasengine run --out {self.dir} (it launches {procs})"
            )

    def claim(self) -> None:
        """Create the directory, take its lock for this process's lifetime (one writer per run directory)
        and remove the temporary files of writes a killed process left behind."""
        if distributed.is_main():
            if self.dir.exists() and not self.dir.is_dir():
                raise NasEngineError(f"{self.dir} is a file, not a run directory; choose another --out")
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise NasEngineError(
                    f"cannot create the run directory {self.dir} ({exc.strerror or exc}); choose another --out"
                ) from None
            if self._lock is None:
                self._lock = RunLock(self.dir)
                self._lock.acquire()
            removed = remove_stale_temp_files(self.dir)
            if removed:
                console.log(f"removed {removed} temporary file(s) left by an interrupted write in {self.dir}")
        distributed.barrier()

    def redo(self, phase: str) -> None:
        """Forget that ``phase`` finished, and everything computed from it, so the next start redoes it.

        The phase's own checkpoints that pass their checksum are kept — training resumes from them and,
        being deterministic, ends exactly where it would have — while corrupt ones are deleted; the phases
        that depend on it (``REDO_DEPENDENTS``) are deleted whole. The search is redone from scratch.
        TensorBoard's folders (``tb/``) of whatever is trained or searched again are deleted with it, so
        TensorBoard never shows a phase twice.
        """
        if phase not in PHASES:
            raise NasEngineError(f"unknown phase {phase!r} for --redo; phases: {', '.join(PHASES)}")
        if distributed.is_main():
            removed = []
            if phase == "search":
                removed += _remove(self.dir, ["search"])
                removed += self._remove_boards(["search"])
            else:
                kept, deleted = _clear_phase(self.layout.folder(phase))
                for name in deleted:
                    if Path(name).name == CHECKPOINT:  # that training restarts from its first iteration
                        _remove_events(self.layout.tensorboard / Path(name).parent)
                console.log(
                    f"redo {phase}: kept {kept} verified checkpoint(s), deleted {len(deleted)} result or corrupt "
                    f"file(s){': ' + ', '.join(deleted) if deleted else ''}"
                )
            removed += _remove(self.dir, REDO_DEPENDENTS[phase])
            removed += self._remove_boards(REDO_DEPENDENTS[phase])
            if removed:
                console.log(f"redo {phase}: removed what depends on it: {', '.join(removed)}")
        distributed.barrier()
        self.__dict__.pop("limits", None)  # a search folder removed took its kept table: kept there again when asked
        self._redo = None

    def _remove_boards(self, patterns: Sequence[str]) -> list[str]:
        board = self.layout.tensorboard
        return [f"{board.name}/{name}" for name in _remove(board, patterns)]

    # plugins -------------------------------------------------------------------------------------
    @cached_property
    def space(self) -> Space:
        return registry.create("space", self.config.space, **self.config.space_options)

    @cached_property
    def task(self) -> Task:
        """The detection task (fine-tuning, retraining, test)."""
        return registry.create("task", self.config.task, **self.config.task_options)

    @cached_property
    def pretrain_task(self) -> Task:
        return registry.create("task", self.config.pretrain_task, **self.config.pretrain_task_options)

    @property
    def training_precision(self) -> str:
        """The training precision: as recorded (``auto`` only in a run of an earlier nasengine, which trained in
        fp32)."""
        return "fp32" if self.config.precision == "auto" else self.config.precision

    @property
    def search_task(self) -> Task:
        return self.pretrain_task if self.config.search.on == "classification" else self.task

    @property
    def search_folder(self) -> Path:
        return self.layout.folder("search")

    @property
    def kept_folder(self) -> Path | None:
        """The search folder, where constraints keep what they measured, when it exists and is not about to be
        redone (``start(redo=...)``)."""
        redo = self._redo
        if redo is not None and (redo == "search" or "search" in REDO_DEPENDENTS.get(redo, ())):
            return None
        return self.search_folder if self.search_folder.is_dir() else None

    @cached_property
    def limits(self) -> Limits:
        """The run's limits (FLOPs and every other constraint), prepared: what a constraint measures (a latency
        table) is kept in the search folder, where the search, a resume, the retraining and the report read it."""
        return run_limits(
            self.space,
            self.config.search,
            input_size=input_size(self.task, self.config.search),
            folder=self.search_folder,
        )

    # helpers -------------------------------------------------------------------------------------
    def done(self, phase: str) -> bool:
        """The phase finished: its ``done.json`` exists and every file it lists, and every finished folder
        below it, is what it wrote (:mod:`nasengine.rundir.manifest`: a changed or missing file is one error
        naming the ``--redo``). A deleted ``supernet.pt`` reopens the phase, which resumes from its newest
        checkpoint."""
        if not self.layout.done(phase).exists():
            return False
        product = self.layout.product(phase)
        if product is not None and not product.exists():
            console.log(f"{phase}: {product} is missing; redoing the phase from its newest checkpoint")
            return False
        return _finished(self.layout.folder(phase))

    def _mark_done(self, phase_dir: Path, info: dict[str, Any], made_from: Sequence[str] = ()) -> None:
        """``done.json``: ``info``, the SHA-256 of every file the phase wrote and the fingerprints of the finished
        phases ``made_from`` (their names: ``pretrain``, ``search``, ...)."""
        if distributed.is_main():
            write_done(phase_dir, info, [self.layout.done(name) for name in made_from])
        distributed.barrier()

    def _model(self, task: Task, backbone: nn.Module) -> nn.Module:
        model = task.build_model(backbone, self.space.out_channels).to(self.device)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _diverged(self, error: Diverged, phase_dir: Path, setting: str) -> NasEngineError:
        """``error`` with the setting to lower and the command that starts a run with it: a run directory's
        configuration is fixed (and the same configuration would diverge again, deterministically), so the
        command makes a new run from this one's ``config.toml``."""
        return NasEngineError(
            f"{error}; lower {setting} (now {error.lr:.3g} at that iteration) in a new run, as a run's configuration "
            f"is fixed: nasengine run --config {self.layout.config} --set {setting}=VALUE --out NEW_DIR"
        )

    def _train_phase(
        self, phase_dir: Path, model: nn.Module, task: Task, schedule, salt: int, label: str, supernet=None
    ) -> dict:
        """Train ``model`` (a supernet's model when ``supernet`` is given) on ``task``; what ``done.json`` records."""
        setting = f"{'pretrain' if task is self.pretrain_task else 'finetune'}_schedule.lr"
        return self._timed_training(
            phase_dir,
            setting,
            schedule.iterations,
            lambda: train(
                distributed.convert_sync_batchnorm(model, self.device),
                task,
                task.dataset("train", train=True),
                schedule,
                phase_dir,
                seed=derived_seed(self.config.seed, salt),
                device=self.device,
                description=label,
                paths=self._path_sampler(schedule, salt) if supernet is not None else None,
                activate=supernet.activate if supernet is not None else None,
                workers=self.config.data_workers,
                tensorboard=self.layout.tensorboard_of(phase_dir),
                precision=self.training_precision,
            ),
        )

    def _timed_training(self, phase_dir: Path, setting: str, iterations: int, training) -> dict[str, Any]:
        """Run ``training()``; a divergence becomes the error naming ``setting`` and the command that redoes
        the phase. Returns the iterations, the final statistics and the seconds it took."""
        started = time.perf_counter()
        try:
            final = training()
        except Diverged as error:
            raise self._diverged(error, phase_dir, setting) from None
        return {"iterations": iterations, "final": final, "seconds": round(time.perf_counter() - started, 1)}

    def _path_sampler(self, schedule, salt: int):
        seed = derived_seed(self.config.seed, salt)
        return lambda iteration: paths_for(schedule.sampling, self.space.choices, seed, iteration)

    def _fresh_supernet(self, salt: int):
        torch.manual_seed(derived_seed(self.config.seed, salt, seeds.SUPERNET_INIT))
        return self.space.build_supernet()

    # phases --------------------------------------------------------------------------------------
    def pretrain(self) -> None:
        """Step 1: path-wise supernet pre-training on the classification task."""
        phase_dir = self.layout.folder("pretrain")
        if not self.config.pretrain:
            console.log("pretrain: skipped (DetNAS-scratch: fine-tuning starts from random weights)")
            return
        if self.done("pretrain"):
            return
        supernet = self._fresh_supernet(seeds.PRETRAIN)
        model = self._model(self.pretrain_task, supernet)
        schedule = self.config.pretrain_schedule
        distilled = {}
        if schedule.sampling == "distill":
            distilled = self._distill(phase_dir, model, supernet)
            schedule = replace(schedule, iterations=schedule.iterations - distilled["iterations"])
        info = self._train_phase(
            phase_dir,
            model,
            self.pretrain_task,
            schedule,
            seeds.PRETRAIN,
            f"pretrain supernet on {self.config.pretrain_task}",
            supernet,
        )
        info = {**info, **({"distill": distilled} if distilled else {})}
        if distributed.is_main():
            save_checkpoint({"backbone": supernet.state_dict(), "model": model.state_dict()}, phase_dir / SUPERNET)
        self._mark_done(phase_dir, info)

    def _distill(self, phase_dir: Path, model: nn.Module, supernet) -> dict[str, Any]:
        """``sampling = "distill"``: train the teacher (the space's baseline, exactly as its retraining
        pre-trains it), then distill every choice of ``supernet`` from it block by block; ``model`` leaves
        with the distilled supernet and the teacher's stem and head."""
        schedule = self.config.pretrain_schedule
        iterations = max(1, round(schedule.iterations * schedule.distill_fraction))
        if not implements(supernet, "distill_pairs"):
            raise NasEngineError(
                f"space {self.config.space!r} cannot be distilled (its supernet has no distill_pairs); "
                "set pretrain_schedule.sampling to 'uniform' or 'fair'"
            )
        teacher_arch = self.space.named.get(self.space.baseline_name or "")
        if teacher_arch is None:
            raise NasEngineError(
                f"space {self.config.space!r} names no baseline to distill from; "
                "set pretrain_schedule.sampling to 'uniform' or 'fair'"
            )
        teacher_dir = self.layout.teacher
        torch.manual_seed(derived_seed(self.config.seed, seeds.STANDALONE_INIT, arch_salt(teacher_arch)))
        teacher = self.space.build_network(teacher_arch)
        teacher_model = self._model(self.pretrain_task, teacher)
        self._train_standalone_phase(
            teacher_dir,
            teacher_model,
            self.pretrain_task,
            schedule,
            seeds.STANDALONE_PRETRAIN,
            f"pretrain teacher {self.space.baseline_name}",
        )
        inherit_shared(model, teacher_model)
        distill_dir = self.layout.distill
        info = self._timed_training(
            distill_dir,
            "pretrain_schedule.distill_lr",
            iterations,
            lambda: distill(
                model,
                supernet,
                teacher_model,
                teacher,
                self.pretrain_task,
                self.pretrain_task.dataset("train", train=True),
                self.space.choices,
                schedule,
                iterations,
                distill_dir,
                seed=derived_seed(self.config.seed, seeds.DISTILL),
                description=f"distill supernet from {self.space.baseline_name}",
                workers=self.config.data_workers,
                tensorboard=self.layout.tensorboard_of(distill_dir),
                device=self.device,
                precision=self.training_precision,
            ),
        )
        return {"iterations": iterations, "teacher": self.space.baseline_name, **info}

    def finetune(self) -> None:
        """Step 2: path-wise supernet fine-tuning on the detection task (skipped for ClsNASNet search)."""
        phase_dir = self.layout.folder("finetune")
        if self.config.search.on == "classification":
            console.log("finetune: skipped (the search runs on the pre-trained classification supernet)")
            return
        if self.done("finetune"):
            return
        supernet = self._fresh_supernet(seeds.FINETUNE)
        if self.config.pretrain:
            supernet.load_state_dict(self._checkpoint("pretrain")["backbone"])
        model = self._model(self.task, supernet)
        info = self._train_phase(
            phase_dir,
            model,
            self.task,
            self.config.finetune_schedule,
            seeds.FINETUNE,
            f"finetune supernet on {self.config.task}",
            supernet,
        )
        if distributed.is_main():
            save_checkpoint({"model": model.state_dict()}, phase_dir / SUPERNET)
        self._mark_done(phase_dir, info, ["pretrain"] if self.config.pretrain else [])

    def search(
        self, strategy: str | None = None, strategy_options: dict[str, Any] | None = None, folder: str | None = None
    ) -> dict[str, Any]:
        """Step 3: the strategy's search on the trained supernet under the FLOPs constraint.

        With ``strategy`` (and its ``strategy_options``), a second search instead — the same trained
        supernet, FLOPs window, seed and search settings, another strategy — written to
        ``RUN_DIR/<folder>`` (default ``search-<strategy>``); the run's own ``search/`` is left alone.
        Either is resumable from its history and skipped once done.
        """

        settings = self.config.search
        if strategy is not None:
            settings = replace(settings, strategy=strategy, strategy_options=dict(strategy_options or {}))
        folder = folder or ("search" if strategy is None else f"search-{strategy}")
        phase_dir = self.layout.folder(folder)
        if self.done(folder):
            return read_json(self.layout.best(folder))
        supernet, model = self.trained_search_model()
        started = time.perf_counter()
        with distributed.local_batchnorm(model):
            best = run_search(
                self.space,
                self.search_task,
                supernet,
                model,
                settings,
                phase_dir,
                limits=self.limits,
                seed=self.config.seed,
                tensorboard=self.layout.tensorboard_of(phase_dir),
            )
        info = {"candidates": best["candidates"], "seconds": round(time.perf_counter() - started, 1)}
        if strategy is not None:
            info.update(strategy=settings.strategy, strategy_options=settings.strategy_options)
        self._mark_done(phase_dir, info, [self._search_source()])
        label = "search" if strategy is None else folder
        costs = "  ".join(f"{limit.name} {limit.constraint.format(best['costs'][limit.name])}" for limit in self.limits)
        console.log(f"{label}: best {best['arch_text']}  score {best['score']:.4g}  {costs}")
        return best

    def _search_source(self) -> str:
        """The phase whose supernet the search scores on: fine-tuning, or pre-training for ClsNASNet."""
        return "pretrain" if self.config.search.on == "classification" else "finetune"

    def trained_search_model(self) -> tuple[Supernet, nn.Module]:
        """The trained supernet the search scores candidates on (the fine-tuned one; the pre-trained one for
        ``search.on = "classification"``) and the search task's model around it."""
        supernet = self.space.build_supernet()
        model = self._model(self.search_task, supernet)
        model.load_state_dict(self._checkpoint(self._search_source())["model"])
        return supernet, model

    def score_on_supernet(self, arch: Arch) -> dict[str, Any]:
        """``arch`` scored exactly as the search scores a candidate: on the trained supernet, BatchNorm
        recalibrated on the calib split with the run's seed, scored on the search split."""
        supernet, model = self.trained_search_model()
        settings = self.config.search
        with distributed.local_batchnorm(model):
            evaluator = CandidateEvaluator.for_task(
                supernet, model, self.search_task, batch_size=settings.batch_size, seed=self.config.seed
            )
            return evaluator.evaluate(arch)

    def retrain(self, arch: Arch | None = None) -> dict[str, Any]:
        """Step 4: the winner (and the all-3×3 baseline) trained alone the same way, then tested."""
        phase_dir = self.layout.retrain
        searched = arch is None
        if arch is None:
            arch = tuple(read_json(self.layout.best())["arch"]) if self.done("search") else None
            if arch is None:
                raise NasEngineError(
                    f"{self.dir} has no finished search; run 'nasengine search {self.dir}' or pass --arch"
                )
        if self.done("retrain"):  # every file checked, the networks' training folders too
            summary = read_json(phase_dir / SUMMARY)
            if summary.get("best", {}).get("arch") == list(arch):
                return summary
        entries = {"best": tuple(arch)}
        done = self.layout.retrain_test("best")
        if done.is_file() and tuple(read_json(done)["arch"]) != tuple(arch):  # not another network's result
            raise NasEngineError(
                f"{self.dir} has {format_arch(read_json(done)['arch'])} retrained as 'best'; retrain "
                f"{format_arch(arch)} in its place: nasengine retrain {self.dir} --arch {format_arch(arch)} --redo"
            )
        baseline = self.space.baseline_name
        if self.config.retrain_baseline and baseline:
            entries[baseline] = tuple(self.space.named[baseline])
        trained = distributed.share_out(  # side by side when the run has several processes
            list(entries.items()),
            lambda entry: self.train_standalone(entry[1], self.layout.retrain_entry(entry[0]), entry[0]),
        )
        results = dict(zip(entries, trained))
        if distributed.is_main():
            write_json(results, phase_dir / SUMMARY)
        self._mark_done(phase_dir, {"entries": list(results)}, ["search"] if searched else [])
        return results

    def _claim_for(self, arch: Arch, out_dir: Path) -> None:
        """Mark ``out_dir`` as the training folder of ``arch`` (``arch.json``); a folder that trained another
        architecture (``retrain --arch X --redo`` in the winner's folder) is emptied first, as its checkpoints
        would not fit."""
        marker = out_dir / ARCH_FILE
        if distributed.is_main():
            if marker.is_file() and _marked_arch(marker) != list(arch):
                console.log(f"{out_dir} trained another architecture than {format_arch(arch)}: emptied for it")
                shutil.rmtree(out_dir)
            if not marker.is_file():
                write_json({"arch": list(arch)}, marker)
        distributed.barrier()

    def train_standalone(self, arch: Arch, out_dir: Path, label: str, schedule_scale: float = 1.0) -> dict[str, Any]:
        """Pre-train (unless scratch) and fine-tune the standalone network of ``arch``; test it.

        ``schedule_scale`` (0 < s <= 1) shortens both schedules to that fraction of their iterations
        (at least one; milestones are fractions, so they follow), as ``nasengine rank-check`` does.
        """
        result_path = out_dir / TEST
        self._claim_for(arch, out_dir)
        if result_path.exists():  # trained: what it was trained from is checked like any finished phase
            for done in sorted(out_dir.rglob(DONE)):
                verify_phase(done.parent)
            return read_json(result_path)
        pretrain_schedule = scale_schedule(self.config.pretrain_schedule, schedule_scale)
        finetune_schedule = scale_schedule(self.config.finetune_schedule, schedule_scale)
        salt = arch_salt(arch)
        torch.manual_seed(derived_seed(self.config.seed, seeds.STANDALONE_INIT, salt))
        backbone = self.space.build_network(arch)
        if self.config.pretrain:
            model = self._model(self.pretrain_task, backbone)
            self._reuse_teacher(arch, out_dir / "pretrain", schedule_scale)
            self._train_standalone_phase(
                out_dir / "pretrain",
                model,
                self.pretrain_task,
                pretrain_schedule,
                seeds.STANDALONE_PRETRAIN,
                f"pretrain {label}",
            )
        # the detection head's initial weights must not depend on whether pre-training ran in this process
        torch.manual_seed(derived_seed(self.config.seed, seeds.STANDALONE_HEAD, salt))
        model = self._model(self.task, backbone)
        self._train_standalone_phase(
            out_dir / "finetune", model, self.task, finetune_schedule, seeds.STANDALONE_FINETUNE, f"finetune {label}"
        )
        metrics = self.task.evaluate(
            model, self.task.loader("test", train=False, batch_size=self.config.search.batch_size)
        )
        result = {
            "arch": list(arch),
            "arch_text": format_arch(arch),
            "flops": cost_of(self.space, arch, self.config.search.flops_image_size).flops,
            "params": cost_of(self.space, arch).params,
            "costs": self.limits.costs(arch),
            "measured": self._measure(arch, backbone, label),
            "test": {k: float(v) for k, v in metrics.items()},
        }
        if distributed.is_main():
            write_json(result, result_path)
        distributed.barrier()
        return result

    def _measure(self, arch: Arch, backbone: nn.Module, label: str) -> dict[str, float]:
        """The trained network's real cost under every constraint that can measure one (latency: timed on this
        machine), beside the prediction the search used; a limit the real network breaks is said at once."""
        measured: dict[str, float] = {}
        for limit in self.limits:
            if not implements(limit.constraint, "measure"):
                continue
            measured[limit.name] = float(limit.constraint.measure(self.space, arch, backbone))
            for _ in range(REMEASURES if not limit.allows(measured[limit.name]) else 0):
                # a timing only ever reads high (the machine was busy), so a limit seemingly broken is timed
                # again before it is reported broken, and the fastest reading stands
                again = float(limit.constraint.measure(self.space, arch, backbone))
                measured[limit.name] = min(measured[limit.name], again)
            if limit.name != FLOPS_CONSTRAINT and distributed.is_main():
                verdict = "within" if limit.allows(measured[limit.name]) else "[red]outside[/red]"
                console.log(
                    f"{label}: {limit.name} measured {limit.constraint.format(measured[limit.name])} (predicted "
                    f"{limit.constraint.format(self.limits.costs(arch)[limit.name])}): {verdict} {limit.text()}"
                )
        return measured

    def _train_standalone_phase(
        self, folder: Path, model: nn.Module, task: Task, schedule, salt: int, description: str
    ) -> None:
        """Train a standalone network's phase into ``folder`` unless it is done, then load its trained
        weights into ``model``."""
        if not _finished(folder):
            info = self._train_phase(folder, model, task, schedule, salt, description)
            self._mark_done(folder, info)
        model.load_state_dict(load_checkpoint(folder / CHECKPOINT)["model"])

    def _reuse_teacher(self, arch: Arch, pretrain_dir: Path, schedule_scale: float) -> None:
        """The distillation teacher is this very network pre-trained this very way (same seeds, same
        schedule): copy it instead of training it twice."""
        teacher_dir = self.layout.teacher
        baseline = self.space.named.get(self.space.baseline_name or "")
        if (
            schedule_scale == 1.0
            and baseline is not None
            and tuple(arch) == tuple(baseline)
            and (teacher_dir / DONE).exists()
            and not pretrain_dir.exists()
            and distributed.is_main()
        ):
            shutil.copytree(teacher_dir, pretrain_dir)
            teacher_board, board = self.layout.tensorboard_of(teacher_dir), self.layout.tensorboard_of(pretrain_dir)
            if teacher_board.is_dir():
                shutil.rmtree(board, ignore_errors=True)
                shutil.copytree(teacher_board, board)
            info = read_json(teacher_dir / DONE)
            write_done(
                pretrain_dir,
                {**info, "seconds": 0.0, "reused": "pretrain/teacher", "teacher_seconds": info.get("seconds")},
            )
        distributed.barrier()

    def run_all(self, arch: Arch | None = None) -> dict[str, Any]:
        """Every phase in order (the search is skipped when ``arch`` is given)."""
        self.pretrain()
        if arch is None:
            self.finetune()
            self.search()
        self.retrain(arch)
        return write_report(self.dir, self.config.search.flops_max)

    def _checkpoint(self, phase: str) -> dict[str, Any]:
        if not self.done(phase):
            raise NasEngineError(
                f"phase '{phase}' of {self.dir} is not finished; run 'nasengine {phase} {self.dir}' first"
            )
        return load_checkpoint(self.layout.supernet(phase))


def settle_config(directory: Path, config: RunConfig) -> RunConfig | None:
    """Complete ``config`` for a run in ``directory`` and check it may continue the run there; returns the saved
    configuration (None for a new run).

    What was not asked for (``threads``, ``procs``, ``precision``, the FLOPs limit) is the saved run's, or
    for a new run this process's threads, the launched ranks and the device's precision; any other
    difference from the saved configuration is one error line. Called by :meth:`Run.create` and, before it
    starts any rank, by ``nasengine``'s launcher.
    """
    if config.search.flops_max is None:
        space = registry.create("space", config.space, **config.space_options)
        config.search.flops_max = float(space.default_flops_max)
    layout = RunLayout(directory)
    found = [phase for phase in PHASES if layout.folder(phase).exists()]
    if found and not layout.config.exists():
        raise NasEngineError(
            f"{directory} holds a run's {found[0]}/ but no {layout.config.name}, so its configuration is unknown; "
            f"restore {layout.config.name} from a backup, or use another --out"
        )
    saved = configuration.load(layout.config) if layout.config.exists() else None
    if config.threads is None:  # not asked for: a resumed run keeps its own (None in a run of an older
        # nasengine, which did not record it), a new one takes this process's
        config.threads = saved.threads if saved is not None else torch.get_num_threads()
    if config.procs is None:  # the same for the processes and the precision
        config.procs = saved.procs if saved is not None else distributed.world_size()
    if config.precision == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        config.precision = saved.precision if saved is not None else precision.resolve("auto", device)
    if saved is not None:
        difference = _first_difference(saved.to_dict(), config.to_dict())
        if difference:
            raise NasEngineError(
                f"{directory} holds a run with a different configuration ({difference}); "
                "use another --out, or rerun with the same options to resume it"
            )
    return saved


def _marked_arch(marker: Path) -> list[int] | None:
    """The architecture an ``arch.json`` names; None when it cannot be read (a damaged marker of a folder
    whose phase is not finished, so no manifest vouches for it: the folder is trained again)."""
    try:
        return read_json(marker)["arch"]
    except Tampered:
        raise
    except (NasEngineError, KeyError, TypeError):
        return None


def _finished(folder: Path) -> bool:
    """``folder`` holds a finished phase: its ``done.json`` exists, and what it lists checks out (else
    :class:`nasengine.rundir.manifest.Tampered`)."""
    if not (folder / DONE).exists():
        return False
    verify_phase(folder)
    return True


def _clear_phase(folder: Path) -> tuple[int, list[str]]:
    """Delete ``folder``'s results and corrupt checkpoints, and the training state of every training folder
    with a file that is not what its phase wrote (it trains again from its first iteration, so its log is
    written whole again); returns (checkpoints kept, names deleted)."""
    kept, deleted = 0, []
    dones = sorted(folder.rglob(DONE)) if folder.is_dir() else []
    damaged = [path for done in dones for path in unverified_files(done.parent)]
    for training in sorted({p.parent for p in damaged if (p.parent / LOG).exists() or p.name in (CHECKPOINT, LOG)}):
        for name in (CHECKPOINT, LOG):
            if (training / name).exists():
                (training / name).unlink()
                deleted.append(str((training / name).relative_to(folder.parent)))
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if not path.is_file():
            continue
        if path.suffix == ".pt" and path.name not in RESULT_FILES:
            reason = verify_checkpoint(path)
            if reason is None:
                kept += 1
                continue
            # a corrupt training state: the folder's phase must restart, so it is no longer done either
            (path.parent / DONE).unlink(missing_ok=True)
        elif path.name not in RESULT_FILES:
            continue
        if path.exists():
            path.unlink()
            deleted.append(str(path.relative_to(folder.parent)))
    return kept, deleted


def _remove(directory: Path, patterns: Sequence[str]) -> list[str]:
    """Delete the folders of ``directory`` matching ``patterns``; returns their names."""
    removed = []
    for pattern in patterns:
        for path in sorted(directory.glob(pattern)):
            if path.is_dir():
                shutil.rmtree(path)
                removed.append(path.name + "/")
    return removed


def _remove_events(folder: Path) -> None:
    """Delete the TensorBoard event files of ``folder`` itself (its sub-folders are other phases)."""
    for path in folder.glob("events.out.tfevents.*"):
        path.unlink()


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{path}{key}.")
            if found:
                return found
        return None
    if a != b and not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b)):
        return f"{path.rstrip('.')}: {a!r} there, {b!r} now"
    return None
