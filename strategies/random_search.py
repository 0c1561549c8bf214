"""Random search: the paper's baseline curve, with the same budget as evolution.

Every candidate is drawn uniformly from the architectures the constraint allows, never repeating; the
scores told are checked but do not steer anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from nasengine import BatchStrategy
from nasengine.interfaces import Arch


class RandomStrategy(BatchStrategy):
    """Uniformly random legal architectures, asked ``population`` at a time.

    Options: ``population`` (candidates per ask, 50), ``generations`` (asks, 20: 1000 candidates in all)
    and ``max_tries`` (draws in a row allowed to find one legal new candidate, 10000).
    """

    name: ClassVar[str] = "random"
    description: ClassVar[str] = "uniformly random legal architectures, population x generations of them"

    def __init__(
        self,
        choices: Sequence[int],
        constraint: Callable[[Arch], bool],
        seed: int,
        *,
        population: int = 50,
        generations: int = 20,
        max_tries: int = 10_000,
    ):
        super().__init__(choices, constraint, seed, population=population, generations=generations, max_tries=max_tries)

    def _propose(self, count: int) -> list[Arch]:
        batch: list[Arch] = []
        self._fill_random(batch, count)
        return batch
