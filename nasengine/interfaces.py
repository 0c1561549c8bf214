"""The contract between the engine and its plugins: ``Space``, ``Task``, ``Strategy`` and ``Constraint``.

A plugin subclasses one of these and is registered under the matching entry-point group
(``nasengine.spaces``, ``nasengine.tasks``, ``nasengine.strategies``, ``nasengine.constraints``). The engine only
ever talks to these methods, so a new space needs no strategy code and a new task needs no space code.

The rules every plugin keeps are written on the classes below; in short:

- **options**: a plugin's constructor keyword arguments are its options (``--space-option``, ``--task-option``,
  ``search.strategy_options``, or ``options.<kind>.<name>`` tables that reach the plugin by name); an option
  the signature does not declare is refused in one line before a run writes anything (a ``**options``
  constructor passing them to ``super().__init__`` declares the chain's keywords; one keeping them checks
  its own); ``options()`` returns them so ``type(plugin)(**plugin.options())`` rebuilds it.
- **feature maps**: a backbone (supernet or standalone network) returns a list with one ``(N, C, H, W)``
  tensor per entry of the space's ``out_channels``, ``C`` equal to that entry; for detection exactly four,
  at strides 4, 8, 16 and 32 (a 64-px input gives maps of 16, 8, 4 and 2 px).
- **batches**: ``(images, targets)``, images first — a ``(N, C, H, W)`` tensor or a list of N ``(C, H, W)``
  tensors — so ``len(batch[0])`` counts the images (BN recalibration and images/s rely on it).
- **scores**: ``Task.evaluate`` returns a dict of floats with ``score``, higher is better.
- **optional methods** (``Supernet.distill_pairs``, ``Space.cost_parts``, ``Task.split_stats``, marked
  ``@optional`` below): a plugin may leave them out; the engine asks ``implements(plugin, "cost_parts")``
  before it relies on one, and says in one line what the missing method costs.
- **strategies**: every architecture ``ask`` returns is a sequence of ``len(choices)`` legal choice
  indices, satisfies ``constraint``, and was never asked before; the sequence depends only on the seed
  and the scores told. A strategy that cannot find a legal new architecture raises
  ``nasengine.ConstraintUnsatisfiable``; a small space that is used up gives a short batch instead.

The engine refuses a plugin that breaks them with a one-line ``NasEngineError`` naming it (every asked
architecture is checked, and the run's space before any training), and ``nasengine.testing`` checks
them in a plugin's own tests, one line each: ``check_space(MySpace())``, ``check_task(MyTask(...))``,
``check_strategy(MyStrategy)`` — or ``nasengine check --space S --task T --strategy G``.

Example — a space in a package of your own::

    class TinySpace(Space):
        name = "tiny"
        description = "a plain conv net with two kernel choices"
        choices = (2, 2, 2)
        out_channels = [16, 32, 64, 128]
        named = {"all-3x3": (0, 0, 0)}

        def build_supernet(self): ...
        def build_network(self, arch): ...
        def extract_network(self, supernet, arch): ...

and in its ``pyproject.toml``::

    [project.entry-points."nasengine.spaces"]
    tiny = "my_package.tiny:TinySpace"

and in its tests::

    from nasengine.testing import check_space

    def test_tiny_space_keeps_the_rules():
        check_space(TinySpace())
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nasengine.errors import NasEngineError

Arch = tuple[int, ...]
"""One choice index per searchable position, e.g. 20 ints in 0..3."""

_Method = TypeVar("_Method", bound=Callable[..., Any])


def optional(method: _Method) -> _Method:
    """Marks a method of the contract that a plugin may leave out; :func:`implements` says whether it did."""
    method.__nasengine_optional__ = True  # type: ignore[attr-defined]
    return method


def implements(plugin: object, method: str) -> bool:
    """Whether ``plugin`` provides ``method``: defined, and not the contract's unimplemented optional one."""
    found = getattr(type(plugin), method, None)
    return found is not None and not getattr(found, "__nasengine_optional__", False)


class Supernet(nn.Module):
    """A module holding every candidate path; ``activate(arch)`` selects the one ``forward`` runs.

    ``forward(images)`` returns the backbone's feature maps (one per entry of the space's
    ``out_channels``), so detection heads that call ``backbone(images)`` work unchanged. With the same
    weights, the active path's outputs equal those of ``space.extract_network(supernet, arch)``.
    """

    arch: Arch | None = None

    def activate(self, arch: Arch) -> None:
        self.arch = tuple(int(c) for c in arch)

    @optional
    def distill_pairs(
        self, teacher: nn.Module, inputs: torch.Tensor, arch: Arch
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Optional, for block-wise distillation (``pretrain_schedule.sampling = "distill"``).

        ``teacher`` is a standalone network of this space (``build_network`` of the baseline) and
        ``inputs`` what a model hands its backbone. Run the teacher on ``inputs`` without gradients,
        feed each position of this supernet the teacher's input at that position through the choice
        ``arch[i]``, and return one ``(supernet_output, teacher_output)`` pair per position. A space that
        does not override this cannot use ``"distill"`` (the run is refused before training).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement distill_pairs")


class Space(ABC):
    """What can be searched: a supernet of choice blocks and the standalone networks of its paths.

    Constructor keyword arguments are the space's options (e.g. ``width``); ``options`` returns
    them so a run can be rebuilt from its config.

    Attributes every space sets (``nasengine.testing.check_space`` checks them all):

    - ``name``: the name it is registered under; ``description``: one line for ``nasengine list``.
    - ``choices``: a tuple with the number of options (an int >= 1) of each searchable position; an
      architecture is a tuple of one index ``0 <= arch[i] < choices[i]`` per position.
    - ``out_channels``: the channels of each feature map the backbone returns, in order. Detection tasks
      need four maps at strides 4, 8, 16 and 32 (C2–C5); classification heads use the last one.
    - ``named``: a dict (``{}`` when there are none) of architectures by name, each legal; ``--arch``
      accepts the names. ``baseline_name``, when set, is one of them (retrained beside the winner).
    - ``default_flops_max``: the search's FLOPs limit when the user gives none.

    Optional, for the report's architecture figure and tables: ``choice_names``, one name per choice index
    (``("3×3", "5×5", "7×7", "Xception")``), and ``repeats``, the searchable blocks of each stage (summing
    to ``len(choices)``); without them choices are drawn as ``choice i`` in one stage.

    The core counts an architecture's FLOPs and parameters (``nasengine.flops.cost_of(space, arch,
    image_size)``: a lookup table from ``cost_parts``, else a full trace of ``build_network``); a space
    never counts them itself, so this contract depends on nothing above it.

    The supernet's path and the standalone network of the same architecture are one network: the same
    outputs for the same weights, and ``build_network(arch)`` has exactly the parameters and buffers (names
    and shapes) that ``extract_network`` fills.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    choices: tuple[int, ...]
    out_channels: list[int]
    named: dict[str, Arch]
    baseline_name: str | None = None  # the named architecture the winner is compared with
    default_flops_max: float = math.inf  # the search's FLOPs limit when none is given
    choice_names: ClassVar[tuple[str, ...] | None] = None  # optional: a name per choice index, for figures
    repeats: ClassVar[tuple[int, ...] | None] = None  # optional: searchable blocks per stage, for figures

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this space: ``type(space)(**space.options())`` is the same space.

        Part of every cache key and of the run's config; plain TOML values only (str, int, float, bool,
        lists and dicts of them)."""
        return {}

    @property
    def size(self) -> int:
        """Number of architectures in the space."""
        return math.prod(self.choices)

    @abstractmethod
    def build_supernet(self) -> Supernet:
        """A fresh supernet with every choice at every position."""

    @abstractmethod
    def build_network(self, arch: Arch) -> nn.Module:
        """A standalone backbone of just this path (same outputs as the supernet's forward).

        Its ``forward(images)`` returns the feature maps, one per ``out_channels`` entry (see the class)."""

    @abstractmethod
    def extract_network(self, supernet: Supernet, arch: Arch) -> nn.Module:
        """``build_network(arch)`` with the path's weights (and BN buffers) copied from ``supernet``."""

    @optional
    def cost_parts(self, image_size: int) -> Iterator[tuple[int | None, int | None, nn.Module, tuple[int, ...]]]:
        """Modules to count FLOPs on, each with its input shape, for the lookup table.

        Yields ``(position, choice, module, input_shape)``; ``position`` and ``choice`` are None for
        the fixed parts (stem, ...). The same module object yielded again with the same input shape is
        traced only once, so identical positions can share one module. A space that cannot be split this
        way leaves it unimplemented: FLOPs then come from a full trace of ``build_network`` (slower, and
        the space's FLOPs range is unknown). The parts must add up exactly to that full trace for every
        architecture: yield each module ``build_network`` runs, with the input shape it gets there.
        """
        raise NotImplementedError(f"space {self.name!r} does not implement cost_parts")


class Task(ABC):
    """Data + head + loss + metric.

    Splits: ``train`` (training), ``search`` (held out of train, scores candidates), ``test``
    (separate evaluation data), ``calib`` (a subset of train for BatchNorm recalibration).

    The rules the engine relies on (``nasengine.testing.check_task`` checks them):

    - ``kind`` is ``"detection"`` for tasks whose model takes the backbone's four feature maps (strides 4,
      8, 16, 32), ``"classification"`` otherwise.
    - A batch from ``loader`` is ``(images, targets)``, images first: a ``(N, C, H, W)`` tensor or a list
      of N ``(C, H, W)`` tensors, with one target per image. The engine counts images as ``len(batch[0])``
      (BN recalibration, images/s), so a dict or a batch with images elsewhere is counted wrong.
    - ``loss`` in train mode returns a finite scalar tensor that back-propagates into the backbone.
    - ``evaluate`` returns a dict of floats with ``score``, higher is better, and leaves the model in the
      train/eval mode it found it in.
    - Constructor keyword arguments are the options, returned by ``options``; nothing heavy (no data) is
      read when the task is constructed.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "classification"  # or "detection"
    splits: ClassVar[tuple[str, ...]] = ("train", "search", "test", "calib")
    batch_size: int = 32
    base_lr: ClassVar[float] = 0.1  # the learning rate at ``base_batch_size``; scaled linearly by the engine
    base_batch_size: ClassVar[int] = 256
    preset_settings: ClassVar[dict[str, dict[str, Any]]] = {}
    """Config values this task sets under a preset, over the preset's own (settings the user gives still win),
    e.g. ``{"paper": {"finetune_schedule": {"iterations": 22_500}}}``."""
    class_names: list[str]
    input_size: int | None = None
    """The side of the (square) images the task feeds the backbone; measured costs such as latency are taken
    at it. None: the FLOPs image size (224)."""

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this task: ``type(task)(**task.options())`` is the same task."""
        return {}

    @abstractmethod
    def build_model(self, backbone: nn.Module, out_channels: Sequence[int]) -> nn.Module:
        """The full model: ``backbone`` (a supernet or a standalone network) plus this task's head."""

    @abstractmethod
    def dataset(self, split: str, *, train: bool) -> Dataset:
        """The split's dataset, with training augmentation when ``train``."""

    def collate(self, batch: list) -> Any:
        """How samples become a batch, ``(images, targets)`` (detection tasks keep lists of both)."""
        return torch.utils.data.default_collate(batch)

    def loader(self, split: str, *, train: bool, batch_size: int | None = None, seed: int = 0) -> DataLoader:
        """A DataLoader over ``split`` (shuffled with ``seed`` when ``train``), batched with :meth:`collate`.

        For evaluation and for a plugin's own tests; the engine's training phases draw their batches through
        their own resumable sampler."""
        data = self.dataset(split, train=train)
        size = batch_size or self.batch_size
        return DataLoader(
            data,
            batch_size=size,
            shuffle=train,
            drop_last=train and len(data) >= size,  # type: ignore[arg-type]
            collate_fn=self.collate,
            generator=torch.Generator().manual_seed(seed),
        )

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Training loss of ``model`` (in train mode) on one batch, moved to the model's device.

        A finite scalar tensor with a gradient; BN recalibration also calls it (without gradients)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Metrics of ``model`` on ``loader`` as floats; always includes ``score`` (higher is better).

        Runs in eval mode without gradients and gives the model back in the mode it came in."""

    def check_data(self) -> None:
        """Validate every split before any training: raise ``NasEngineError`` with one line naming the file
        (and field) and the fix. The engine calls it first in every run, so a bad annotation or image fails in
        seconds, not after hours of pre-training. The default builds each split's dataset; tasks that read
        files override it to check annotations and decode every image (cache the result: it runs each time).
        """
        for split in self.splits:
            self.dataset(split, train=False)

    @optional
    def split_stats(self, split: str) -> dict[str, int]:
        """Counts for ``nasengine data stats``: ``images`` plus one entry per class name."""
        raise NotImplementedError(f"task {self.name!r} does not report split statistics")


class Strategy(ABC):
    """A search algorithm driven ask/tell: it never evaluates anything itself.

    ``constraint(arch)`` says whether an architecture is legal (e.g. within the FLOPs limits).
    Every architecture ``ask`` returns is legal and never returned before; the choices depend only on
    ``seed`` and the scores told, so replaying a history reproduces a search exactly.

    The rules (the engine checks the first three on every ask, and that an empty batch finishes the
    strategy, with a one-line error naming it; ``nasengine.testing.check_strategy`` checks them all):

    - an architecture is a tuple (or list) of ``len(choices)`` ints, ``0 <= arch[i] < choices[i]``;
    - ``constraint(arch)`` is True for every architecture asked;
    - no architecture is asked twice, in one batch or across batches;
    - a fresh instance with the same ``seed``, told the same scores, asks the same sequence: draw from a
      ``random.Random(seed)`` of its own, never from the global ``random`` or ``torch`` generators; another
      seed asks another sequence (set ``seeded = False`` on a strategy that draws nothing at random);
    - ``finished`` becomes True once the budget is spent, or once an empty batch is told; ``budget``, when
      set, is not exceeded;
    - a small space that is used up gives a short (or empty) batch; when a legal new architecture cannot
      be found otherwise, ``ask`` raises ``ConstraintUnsatisfiable`` (``nasengine.ConstraintUnsatisfiable``)
      and the engine stops with the space's FLOPs range and the limits.

    Constructor keyword arguments after ``seed`` are the strategy's options (``search.strategy_options``,
    or ``options.strategy.<name>`` in a preset, config file or ``--set``): the signature declares them, and
    an option it does not name is refused in one line before anything is written (a constructor taking
    ``**params`` checks its own and raises ``NasEngineError``). The strategy states its budget in its own
    terms: ``budget`` (the candidates it will ask for in all) and ``batch_size`` (candidates per ask) once
    built, and ``options_for_budget`` for the options that plan a given budget (how a comparison search is
    sized like the run's, ``nasengine search RUN_DIR --strategy S --budget-like R``).
    ``nasengine.BatchStrategy`` (:mod:`nasengine.strategy_base`) implements the bookkeeping (legal, new,
    reproducible batches) for strategies that propose ``population`` at a time, and ``nasengine.check_int``
    and ``nasengine.check_probability`` check an option in one line.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    seeded: ClassVar[bool] = True  # whether it draws at random (then two seeds must give two searches)
    budget: int | None = None  # total candidates the strategy will ask for, when known (progress bars)
    batch_size: int | None = None  # candidates per ask, when fixed

    def __init__(self, choices: Sequence[int], constraint: Callable[[Arch], bool], seed: int, **params: Any):
        self.choices = tuple(choices)
        self.constraint = constraint
        self.seed = seed

    @classmethod
    def options_for_budget(cls, budget: int, batch_size: int | None = None) -> dict[str, Any]:
        """The options that make this strategy plan exactly ``budget`` candidates, asked ``batch_size`` at
        a time when it asks in batches and that size divides the budget. Override it to let a search be
        sized like another; the default says the strategy cannot be."""
        raise NasEngineError(
            f"strategy {getattr(cls, 'name', cls.__name__)!r} cannot be sized to a budget of {budget} candidates "
            "(it does not define Strategy.options_for_budget)"
        )

    @property
    @abstractmethod
    def finished(self) -> bool:
        """True once the strategy's budget is spent."""

    @abstractmethod
    def ask(self) -> list[Arch]:
        """The next candidates to evaluate. A batch may come back short (or empty) when a small space has
        no legal, unseen architecture left; the strategy is then finished once that batch is told."""

    @abstractmethod
    def tell(self, results: list[tuple[Arch, float]]) -> None:
        """Scores (higher is better; NaN ranks last) of candidates from the last ``ask``, in any order and
        possibly over several calls; the engine tells every candidate before asking again."""


class Constraint(ABC):
    """A cost of a backbone that a search limits: FLOPs, parameters, latency on a device, or your own.

    The run sets limits on it (``search.constraints.<name>.max`` and ``.min``; FLOPs keep their
    ``search.flops_max`` / ``--flops-max``) and a candidate is legal only when every constraint's ``cost`` is
    inside its limits. Constructor keyword arguments are the constraint's options, set beside the limits
    (``--set search.constraints.latency.batch=8``); ``options()`` returns them.

    The rules (``nasengine.testing.check_constraint`` checks them all):

    - the constructor measures nothing (a run builds its constraints to check their options before anything
      is written); heavy work belongs in ``prepare``;
    - ``name``, ``unit`` (shown after every value: ``"MACs"``, ``"ms"``) and ``description`` are set;
    - ``cost(space, arch)`` is a finite number >= 0 and, within a run, a function of ``arch`` alone: the same
      answer on every call, in every process and after a resume. A cost that is measured (a timing) is
      measured once into a table and looked up — ``prepare`` keeps that table in the run folder it is given
      and reads it back there, so a resumed search sees the same numbers;
    - ``cost_range(space)``, when implemented, bounds every architecture's cost (it lets an impossible limit be
      refused before training, with the range in the message);
    - ``measure(space, arch, network)``, when implemented, is the real network's cost (the retrained winner is
      measured with it, to check the prediction against the limit).
    """

    name: ClassVar[str]
    unit: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this constraint."""
        return {}

    def prepare(self, space: Space, *, input_size: int, folder: Any = None) -> None:  # noqa: B027
        """Called once before ``cost``: build (or read) what the costs come from. ``input_size`` is the side of
        the square images the run's detection task feeds the backbone; ``folder`` (a ``Path``, or None
        outside a search) is where the run keeps what this constraint measured, so a resumed search reads it
        back instead of measuring again."""

    @abstractmethod
    def cost(self, space: Space, arch: Arch) -> float:
        """The cost of ``space.build_network(arch)``; deterministic within a run (see the class)."""

    @optional
    def cost_range(self, space: Space) -> tuple[float, float]:
        """The fewest and most any architecture of ``space`` costs."""
        raise NotImplementedError(f"constraint {self.name!r} does not know its range")

    @optional
    def measure(self, space: Space, arch: Arch, network: nn.Module) -> float:
        """The cost of ``network`` (``arch``'s standalone backbone, trained) measured on the real network."""
        raise NotImplementedError(f"constraint {self.name!r} does not measure networks")

    def format(self, value: float) -> str:
        """``value`` for people: ``"12.3 ms"``, ``"288.1 M MACs"``."""
        return f"{value:.4g} {self.unit}".strip()
