"""The run directory's layout: every file and folder a run writes, named in one place.

::

    RUN_DIR/
      config.toml                     the resolved configuration (nasengine.settings.config)
      .lock                           one writer at a time (nasengine.rundir.lock)
      pretrain/   checkpoint.pt log.jsonl supernet.pt done.json   [teacher/ distill/ with sampling = "distill"]
      finetune/   checkpoint.pt log.jsonl supernet.pt done.json
      search/     history.jsonl best.json done.json
      search-<strategy>/              a second search on the same supernet (nasengine.studies.search_compare)
      retrain/    <entry>/{pretrain,finetune}/ <entry>/test.json summary.json done.json
      rank_check/ <arch>-s<scale>/    standalone networks of `nasengine rank-check`
      report/     summary.json summary.md *.png rank_check.json
      export/     <entry>-<backbone|detector>/  `nasengine export`: .torchscript.pt .onnx .safetensors .json
      tb/         TensorBoard event files: the phase folders' paths (tb/pretrain, tb/retrain/best/finetune, ...)

A phase is finished when its ``done.json`` exists and so does its product (``PRODUCTS``); ``--redo PHASE``
deletes the phase's results (``RESULT_FILES``) and the folders computed from it (``REDO_DEPENDENTS``).
"""

from __future__ import annotations

from pathlib import Path

PHASES = ("pretrain", "finetune", "search", "retrain")  # the protocol's steps (DetNAS §3)
CONFIG = "config.toml"
DONE = "done.json"
CHECKPOINT = "checkpoint.pt"  # a training phase's resumable state
LOG = "log.jsonl"  # a training phase's loss, learning rate and speed per iteration
HISTORY = "history.jsonl"  # a search's evaluated candidates
BEST = "best.json"  # a search's winner
LATENCY_TABLE = "latency_table.json"  # in the search folder: the latency table the search costed candidates with
SUPERNET = "supernet.pt"  # a supernet phase's trained weights
TEST = "test.json"  # a standalone network's test metrics
ARCH_FILE = "arch.json"  # the architecture a standalone network's folder trains
REPORT = "report"
SUMMARY = "summary.json"

PRODUCTS = {"pretrain": SUPERNET, "finetune": SUPERNET, "search": BEST, "retrain": SUMMARY}
RESULT_FILES = (DONE, TEST, SUMMARY, BEST, SUPERNET)
# What ``--redo PHASE`` deletes besides the phase itself: everything computed from its results (the report
# is written again; rank checks and comparison searches must be rerun), with the same folders under tb/.
REDO_DEPENDENTS = {
    "pretrain": ("finetune", "search", "search-*", "retrain", "rank_check", "report", "export"),
    "finetune": ("search", "search-*", "retrain", "rank_check", "report", "export"),
    "search": ("retrain", "rank_check", "report", "export"),
    "retrain": ("report", "export"),
}


class RunLayout:
    """The paths of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    def folder(self, name: str) -> Path:
        """A phase's folder (``pretrain``, ``search``, ``search-random``, ``pretrain/teacher``, ...)."""
        return self.root / name

    def done(self, name: str) -> Path:
        return self.root / name / DONE

    def product(self, phase: str) -> Path | None:
        """The file a finished phase must have besides ``done.json``, if any."""
        return self.root / phase / PRODUCTS[phase] if phase in PRODUCTS else None

    def supernet(self, phase: str) -> Path:
        return self.root / phase / SUPERNET

    @property
    def teacher(self) -> Path:
        """The distillation teacher's pre-training (``sampling = "distill"``)."""
        return self.root / "pretrain" / "teacher"

    def history(self, search: str = "search") -> Path:
        return self.root / search / HISTORY

    def best(self, search: str = "search") -> Path:
        return self.root / search / BEST

    def search_folders(self) -> list[Path]:
        """The run's own search and every comparison search (``search-<strategy>``), that exist."""
        return [p for p in [self.root / "search", *sorted(self.root.glob("search-*"))] if p.is_dir()]

    @property
    def retrain(self) -> Path:
        return self.root / "retrain"

    def retrain_entry(self, label: str) -> Path:
        """A retrained network's folder (``best``, the baseline's name, ...)."""
        return self.root / "retrain" / label

    def retrained_checkpoint(self, label: str) -> Path:
        """The fine-tuned detector of a retrained network: ``{"model": state_dict, ...}``."""
        return self.root / "retrain" / label / "finetune" / CHECKPOINT

    def export(self, label: str, what: str) -> Path:
        """Where ``nasengine export`` writes the ``backbone`` or ``detector`` of a retrained network."""
        return self.root / "export" / f"{label}-{what}"

    def retrain_tests(self) -> dict[str, Path]:
        """``{entry: test.json}`` of every retrained network that has been tested, in name order."""
        folder = self.root / "retrain"
        return {p.name: p / TEST for p in sorted(folder.glob("*")) if (p / TEST).is_file()}

    def rank_check(self, name: str) -> Path:
        return self.root / "rank_check" / name

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    def tensorboard_of(self, folder: Path) -> Path:
        """The TensorBoard folder of a phase folder of this run: ``tb/pretrain``, ``tb/retrain/best/finetune``, ..."""
        return self.tensorboard / Path(folder).resolve().relative_to(self.root.resolve())

    def log(self, name: str) -> Path:
        """A training folder's per-iteration log: ``pretrain``, ``pretrain/teacher``, ``retrain/best/pretrain``, ..."""
        return self.root / name / LOG

    @property
    def distill(self) -> Path:
        """The block-wise distillation stage of the supernet's pre-training (``sampling = "distill"``)."""
        return self.root / "pretrain" / "distill"

    def retrain_phase(self, label: str, phase: str) -> Path:
        """A retrained network's ``pretrain`` or ``finetune`` folder."""
        return self.root / "retrain" / label / phase

    def retrain_test(self, label: str) -> Path:
        """A retrained network's test metrics (``test.json``)."""
        return self.root / "retrain" / label / TEST

    @property
    def rank_check_result(self) -> Path:
        """The result of ``nasengine rank-check``: its networks, their scores and the rank statistics."""
        return self.root / "report" / "rank_check.json"

    @property
    def rank_check_figure(self) -> Path:
        """``nasengine rank-check``'s scatter of standalone against supernet scores."""
        return self.root / "report" / "rank_check.png"
