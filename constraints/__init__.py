"""Built-in constraints (installed as ``nasengine.constraints``): FLOPs, parameters and measured latency.

Registered through the ``nasengine.constraints`` entry-point group in ``pyproject.toml``, exactly as a
third-party constraint is.
"""
