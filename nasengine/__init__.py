"""nasengine: one-shot neural-architecture search for object-detection backbones (DetNAS).

The core (this package) knows only the three plugin interfaces in :mod:`nasengine.interfaces`;
every space, task and strategy — the built-in ones included — is found through entry points by
:mod:`nasengine.registry`.
"""

from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Space, Strategy, Task

__all__ = ["Arch", "NasEngineError", "Space", "Strategy", "Task"]
__version__ = "0.1.0"
