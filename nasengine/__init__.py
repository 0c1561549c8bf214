"""nasengine: one-shot neural-architecture search for object-detection backbones (DetNAS).

The core (this package) knows only the three plugin interfaces in :mod:`nasengine.interfaces`;
every space, task and strategy — the built-in ones included — is found through entry points by
:mod:`nasengine.registry`. Plugin authors check their plugins against those interfaces with
:mod:`nasengine.testing` (``check_space``, ``check_task``, ``check_strategy``; imported on demand).
"""

from nasengine.errors import ConstraintUnsatisfiable, NasEngineError
from nasengine.interfaces import Arch, Space, Strategy, Supernet, Task

__all__ = ["Arch", "ConstraintUnsatisfiable", "NasEngineError", "Space", "Strategy", "Supernet", "Task"]
__version__ = "0.1.0"
