"""The paper's evolutionary search (DetNAS §3.4, as in SinglePathOneShot's reference search).

Generation 0 is ``population`` uniformly random legal architectures. Every later generation takes the
``top_k`` best of everything scored so far as parents (ties go to the earlier asked) and breeds
``population // 2`` children by mutation and the rest by crossover; children that break the constraint or
were asked before are discarded and redrawn. When an operator cannot fill its share within ``max_tries``
draws in a row, random legal architectures fill the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from nasengine import BatchStrategy, NasEngineError, check_int, check_probability
from nasengine.interfaces import Arch
from nasengine.strategies.variation import crossover, mutate


class EvolutionStrategy(BatchStrategy):
    """Evolution with top-k parents, half mutation and half crossover per generation.

    Options: ``population`` (candidates per generation, 50), ``top_k`` (parents, 10), ``generations``
    (asks, 20: 1000 candidates in all), ``mutation_prob`` (chance that a gene is resampled, 0.1) and
    ``max_tries`` (draws in a row allowed to find one legal new candidate, 10000).
    """

    name: ClassVar[str] = "evolution"
    description: ClassVar[str] = "DetNAS evolution: top-k parents, half mutation, half crossover, under the constraint"

    def __init__(
        self,
        choices: Sequence[int],
        constraint: Callable[[Arch], bool],
        seed: int,
        *,
        population: int = 50,
        top_k: int = 10,
        generations: int = 20,
        mutation_prob: float = 0.1,
        max_tries: int = 10_000,
    ):
        super().__init__(choices, constraint, seed, population=population, generations=generations, max_tries=max_tries)
        self.top_k = check_int("top_k", top_k, minimum=1)
        if top_k > population:
            raise NasEngineError(f"strategy option top_k ({top_k}) must not exceed population ({population})")
        self.mutation_prob = check_probability("mutation_prob", mutation_prob)

    @classmethod
    def options_for_budget(cls, budget: int, batch_size: int | None = None) -> dict[str, Any]:
        """``population`` x ``generations`` as for any batch strategy, with ``top_k`` capped at the population."""
        options = super().options_for_budget(budget, batch_size)
        return {**options, "top_k": min(10, options["population"])}

    def _propose(self, count: int) -> list[Arch]:
        batch: list[Arch] = []
        if self._scores:
            parents = self._parents()
            mutations = count // 2
            self._fill(
                batch, mutations, lambda: mutate(self._rng.choice(parents), self.choices, self.mutation_prob, self._rng)
            )
            self._fill(
                batch,
                len(batch) + count - mutations,
                lambda: crossover(self._rng.choice(parents), self._rng.choice(parents), self._rng),
            )
        self._fill_random(batch, count)
        return batch

    def _parents(self) -> list[Arch]:
        """The ``top_k`` best architectures scored so far, best first, ties by ask order."""
        ranked = sorted(self._scores, key=lambda arch: (-self._scores[arch], self._order[arch]))
        return ranked[: self.top_k]
