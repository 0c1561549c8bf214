"""nasengine: one-shot neural-architecture search for object-detection backbones (DetNAS).

The core (this package) knows only the four plugin interfaces in :mod:`nasengine.interfaces`;
every space, task, strategy and constraint — the built-in ones included — is found through entry points by
:mod:`nasengine.registry`. Plugin authors check their plugins against those interfaces with
:mod:`nasengine.testing` (``check_space``, ``check_task``, ``check_strategy``, ``check_constraint``; imported on
demand).
A strategy that proposes a batch at a time builds on :class:`BatchStrategy` and checks its options with
:func:`check_int` and :func:`check_probability` (:mod:`nasengine.strategy_base`). :func:`backbone` gives a named
or found architecture as a backbone for torchvision's detectors (:mod:`nasengine.hub`).
"""

from nasengine.errors import ConstraintUnsatisfiable, NasEngineError
from nasengine.hub import backbone
from nasengine.interfaces import Arch, Constraint, Space, Strategy, Supernet, Task
from nasengine.strategy_base import BatchStrategy, check_int, check_probability

__all__ = [
    "Arch",
    "BatchStrategy",
    "Constraint",
    "ConstraintUnsatisfiable",
    "NasEngineError",
    "Space",
    "Strategy",
    "Supernet",
    "Task",
    "backbone",
    "check_int",
    "check_probability",
]
__version__ = "0.1.0"
