"""The reusable base for strategies and the checks of their options, public as ``nasengine.BatchStrategy``,
``nasengine.check_int`` and ``nasengine.check_probability`` (and ``nasengine.strategy_base.random_arch``).

``BatchStrategy`` does the ask/tell bookkeeping of a strategy that proposes ``population`` candidates at a
time for ``generations`` asks, keeping every candidate legal, new and reproducible; a subclass writes only
``_propose(count)``, admitting candidates through ``_fill`` (a drawing function it gives) and
``_fill_random`` (uniform legal architectures), and reads ``_scores`` (every score told so far, NaN as
``-inf``) and ``_order`` (every architecture asked, with its position in the ask order)::

    from nasengine import BatchStrategy, check_probability

    class HillClimb(BatchStrategy):
        name = "hill-climb"

        def __init__(self, choices, constraint, seed, *, population=10, generations=10, step=0.2, max_tries=10_000):
            super().__init__(choices, constraint, seed, population=population, generations=generations,
                             max_tries=max_tries)
            self.step = check_probability("step", step)

        def _propose(self, count):
            batch = []
            if self._scores:
                best = max(self._scores, key=self._scores.get)
                self._fill(batch, count, lambda: tuple(
                    self._rng.randrange(n) if self._rng.random() < self.step else c
                    for c, n in zip(best, self.choices)))
            self._fill_random(batch, count)
            return batch

Its random stream is a private ``random.Random(seed)`` (``self._rng``), and a subclass draws only from it,
in an order fixed by the seed and the scores told, so replaying a history through a fresh instance
reproduces the same asks. Candidates are admitted one by one: an architecture already returned (in this
batch or an earlier one) or rejected by the constraint is discarded and another drawn, at most
``max_tries`` times in a row; when that fails, a small space is enumerated and a large one raises
``ConstraintUnsatisfiable``. ``budget`` is ``population * generations``, ``batch_size`` is ``population``,
and ``options_for_budget(budget, batch_size)`` gives ``population`` and ``generations`` for a budget.

``check_int`` and ``check_probability`` check one option each and raise a one-line ``NasEngineError``
naming it, so a bad option stops the run before anything is written (the engine builds the strategy in its
preflight).
"""

from __future__ import annotations

import itertools
import math
import random
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from nasengine import console
from nasengine.errors import ConstraintUnsatisfiable, NasEngineError
from nasengine.interfaces import Arch, Strategy

__all__ = ["BatchStrategy", "check_int", "check_probability", "random_arch"]


def random_arch(choices: Sequence[int], rng: random.Random) -> Arch:
    """One choice index per position, each uniform over that position's choices."""
    return tuple(rng.randrange(n) for n in choices)


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an int of at least ``minimum``; a NasEngineError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NasEngineError(f"strategy option {name} must be an integer >= {minimum}, not {value!r}")
    return value


def check_probability(name: str, value: Any) -> float:
    """``value`` as a float if it is a number in [0, 1]; a NasEngineError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise NasEngineError(f"strategy option {name} must be a number in [0, 1], not {value!r}")
    return float(value)


def _check_choices(choices: tuple[int, ...]) -> None:
    if not choices or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in choices):
        raise NasEngineError(f"choices must be a non-empty list of positive ints (options per position), not {choices}")


class BatchStrategy(Strategy):
    """``generations`` asks of ``population`` legal, never-repeated architectures; subclasses pick them.

    ``tell`` accepts the scores of the last ask in any order (in one call or several) and rejects
    architectures that were not asked or were already told; ``ask`` refuses to run ahead of untold
    scores. NaN scores rank below every other score. A batch comes back short only when a small space
    has no legal architecture left, and the strategy then finishes after it is told.
    """

    def __init__(
        self,
        choices: Sequence[int],
        constraint: Callable[[Arch], bool],
        seed: int,
        *,
        population: int,
        generations: int,
        max_tries: int,
    ):
        super().__init__(choices, constraint, seed)
        _check_choices(self.choices)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise NasEngineError(f"the strategy's seed must be an integer, not {seed!r}")
        self.population = check_int("population", population, minimum=1)
        self.generations = check_int("generations", generations, minimum=1)
        self.max_tries = check_int("max_tries", max_tries, minimum=1)
        self.budget = self.population * self.generations
        self.batch_size = self.population
        self._rng = random.Random(seed)
        self._order: dict[Arch, int] = {}  # every architecture asked, with its position in the ask order
        self._scores: dict[Arch, float] = {}
        self._pending: set[Arch] = set()
        self._asks = 0
        self._exhausted = False
        self._drew_own = False  # whether the subclass drew candidates of its own (``_fill``) in this ask
        self._short = 0  # candidates of this ask drawn at random after its own draws ran dry
        self.random_fills = 0  # candidates drawn at random because the subclass's own draws ran dry, in all

    @classmethod
    def options_for_budget(cls, budget: int, batch_size: int | None = None) -> dict[str, Any]:
        """``population`` = ``batch_size`` and ``generations`` = ``budget / batch_size`` when that divides,
        else all ``budget`` candidates in one generation."""
        budget = check_int("budget", budget, minimum=1)
        if batch_size and budget % batch_size == 0:
            return {"population": batch_size, "generations": budget // batch_size}
        return {"population": budget, "generations": 1}

    @property
    def finished(self) -> bool:
        return (self._asks >= self.generations or self._exhausted) and not self._pending

    def ask(self) -> list[Arch]:
        if self._pending:
            raise NasEngineError(
                f"ask() called while {len(self._pending)} candidates of the last ask have no score; tell them first"
            )
        if self.finished:
            return []
        self._drew_own, self._short = False, 0
        batch = self._propose(self.population)
        self._asks += 1
        if self._short:
            self.random_fills += self._short
            console.log(
                f"[yellow]warning:[/yellow] strategy {getattr(self, 'name', type(self).__name__)!r}, ask "
                f"{self._asks}: {self._short} of {len(batch)} candidates were drawn uniformly at random, as its own "
                f"proposals ran dry ({self.max_tries} draws in a row were repeats or broke the constraint)"
            )
        self._exhausted = len(batch) < self.population
        self._pending = set(batch)
        return batch

    def tell(self, results: list[tuple[Arch, float]]) -> None:
        told = [(_as_arch(arch), _as_score(arch, score)) for arch, score in results]
        in_call: set[Arch] = set()
        for arch, _ in told:
            if arch in in_call or arch in self._scores:
                raise NasEngineError(f"tell() got architecture {arch} twice; tell each asked candidate once")
            if arch not in self._pending:
                raise NasEngineError(f"tell() got architecture {arch}, which was never asked")
            in_call.add(arch)
        for arch, score in told:
            self._scores[arch] = -math.inf if math.isnan(score) else score
            self._pending.discard(arch)

    @abstractmethod
    def _propose(self, count: int) -> list[Arch]:
        """``count`` new candidates (fewer only when the space is used up), admitted through ``_fill*``."""

    def _admit(self, arch: Arch) -> bool:
        """Record ``arch`` as asked if it is new and legal; say whether it was."""
        if arch in self._order or not self.constraint(arch):
            return False
        self._order[arch] = len(self._order)
        return True

    def _fill(self, batch: list[Arch], target: int, draw: Callable[[], Arch], *, own: bool = True) -> None:
        """Append ``draw()`` results to ``batch`` until it holds ``target``, or ``max_tries`` fail in a row."""
        failures = 0
        while len(batch) < target and failures < self.max_tries:
            arch = draw()
            if self._admit(arch):
                batch.append(arch)
                failures = 0
            else:
                failures += 1
        self._drew_own = self._drew_own or own

    def _fill_random(self, batch: list[Arch], target: int) -> None:
        """Fill ``batch`` to ``target`` with uniformly random legal new architectures.

        Rejection sampling first; if that fails ``max_tries`` times in a row, a space of at most
        ``max_tries`` architectures is enumerated instead (and the batch stays short once none is left),
        while a larger one raises ConstraintUnsatisfiable. After the subclass's own draws (``_fill``) in this
        ask, what it adds is counted, and ``ask`` warns: a mutation that never changes anything would
        otherwise turn the strategy into random search without a word.
        """
        before = len(batch)
        self._fill(batch, target, lambda: random_arch(self.choices, self._rng), own=False)
        if len(batch) < target:
            batch.extend(self._sample_enumerated(target - len(batch)))
        if self._drew_own:
            self._short += len(batch) - before

    def _sample_enumerated(self, count: int) -> list[Arch]:
        """Up to ``count`` of the legal new architectures of a small space, uniformly, without repeats."""
        if math.prod(self.choices) > self.max_tries:
            self._unsatisfiable()
        every = itertools.product(*map(range, self.choices))
        left = [arch for arch in every if arch not in self._order and self.constraint(arch)]
        if not left and not self._order:
            self._unsatisfiable()
        chosen = self._rng.sample(left, min(count, len(left)))
        for arch in chosen:
            self._admit(arch)
        return chosen

    def _unsatisfiable(self) -> NoReturn:
        """Raise ConstraintUnsatisfiable; the engine appends the space's FLOPs range and the limits."""
        tries = self.max_tries
        if not self._order:
            raise ConstraintUnsatisfiable(f"no architecture satisfies the FLOPs constraint after {tries} tries")
        raise ConstraintUnsatisfiable(
            f"no new architecture satisfies the FLOPs constraint after {tries} tries "
            f"({len(self._order)} found so far; raise the strategy's max_tries or widen the limits)"
        )


def _as_arch(arch: Sequence[int]) -> Arch:
    try:
        return tuple(int(c) for c in arch)
    except (TypeError, ValueError):
        raise NasEngineError(f"tell() got {arch!r} where an architecture (a sequence of ints) belongs") from None


def _as_score(arch: Sequence[int], score: Any) -> float:
    try:
        return float(score)
    except (TypeError, ValueError):
        raise NasEngineError(
            f"tell() got score {score!r} for architecture {tuple(arch)}; scores must be numbers"
        ) from None
