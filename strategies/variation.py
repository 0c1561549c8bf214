"""The built-in strategies' variation operators: mutation and crossover of architectures.

The ask/tell bookkeeping they build on (``BatchStrategy``) and the option checks (``check_int``,
``check_probability``) are public in the core, :mod:`nasengine.strategy_base` (``from nasengine import
BatchStrategy``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from nasengine.interfaces import Arch


def mutate(parent: Arch, choices: Sequence[int], prob: float, rng: random.Random) -> Arch:
    """``parent`` with each gene resampled, with probability ``prob``, uniformly among its choices.

    A resampled gene may land on its old value, as in the reference search, so a gene changes with
    probability ``prob * (n - 1) / n``.
    """
    return tuple(rng.randrange(n) if rng.random() < prob else gene for gene, n in zip(parent, choices))


def crossover(first: Arch, second: Arch, rng: random.Random) -> Arch:
    """Each gene taken from ``first`` or ``second`` with probability 0.5."""
    return tuple(a if rng.random() < 0.5 else b for a, b in zip(first, second))
