"""Which supernet paths a training iteration trains: the recipes behind ``Schedule.sampling``.

- ``uniform`` (the paper, SPOS): one path per iteration, every position's choice drawn uniformly.
- ``fair`` (FairNAS's strict fairness): per iteration one path per choice index, built from a random
  permutation of the choices at every position, so every choice of every position is trained exactly
  once per iteration; their losses are averaged into one update.
- ``distill`` (block-wise distillation, as DNA does, then ``uniform``): see :mod:`nasengine.protocol.distillation`; its
  end-to-end part samples like ``uniform``.

Every draw is seeded from ``(seed, iteration)``, so the paths are the same on every rank and after a
resume.
"""

from __future__ import annotations

import numpy as np

from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch
from nasengine.protocol.seeds import PATHS

SAMPLINGS = ("uniform", "fair", "distill")


def _rng(seed: int, iteration: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(seed)), PATHS, abs(int(iteration))])


def uniform_path(choices: tuple[int, ...], seed: int, iteration: int) -> Arch:
    """The path of ``iteration``: every position's choice drawn uniformly."""
    rng = _rng(seed, iteration)
    return tuple(int(rng.integers(n)) for n in choices)


def fair_paths(choices: tuple[int, ...], seed: int, iteration: int) -> list[Arch]:
    """``max(choices)`` paths that together take every choice of every position once.

    A position with fewer choices than the widest one repeats its permutation's first entries.
    """
    rng = _rng(seed, iteration)
    width = max(choices)
    permutations = [list(rng.permutation(n)) * -(-width // n) for n in choices]
    return [tuple(int(p[m]) for p in permutations) for m in range(width)]


def paths_for(sampling: str, choices: tuple[int, ...], seed: int, iteration: int) -> list[Arch]:
    """The paths one iteration of end-to-end supernet training trains under ``sampling``."""
    if sampling == "fair":
        return fair_paths(choices, seed, iteration)
    if sampling in ("uniform", "distill"):
        return [uniform_path(choices, seed, iteration)]
    raise NasEngineError(f"unknown sampling {sampling!r}; use one of: {', '.join(SAMPLINGS)}")
