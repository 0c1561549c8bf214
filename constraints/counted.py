"""Costs counted on the network's graph: FLOPs (multiply-accumulates, fvcore) and parameters.

Both come from the core's per-block lookup table (``nasengine.flops``), so a check is one sum, and both are
exact: a full trace of the network gives the same numbers.
"""

from __future__ import annotations

from torch import nn

from nasengine.flops import cost_of, count_params, flops_range, params_range, trace_flops
from nasengine.interfaces import Arch, Constraint, Space


class FlopsConstraint(Constraint):
    """Multiply-accumulates of the backbone at ``image_size`` px (224, as the paper counts them)."""

    name = "flops"
    unit = "MACs"
    description = "multiply-accumulates of the backbone (fvcore), at 224 px as the paper counts them"

    def __init__(self, image_size: int = 224):
        self.image_size = int(image_size)

    def options(self):
        return {"image_size": self.image_size}

    def cost(self, space: Space, arch: Arch) -> float:
        return cost_of(space, arch, self.image_size).flops

    def cost_range(self, space: Space) -> tuple[float, float]:
        return flops_range(space, self.image_size)

    def measure(self, space: Space, arch: Arch, network: nn.Module) -> float:
        return trace_flops(network, self.image_size)

    def format(self, value: float) -> str:
        return f"{value / 1e6:.1f} M MACs"


class ParamsConstraint(Constraint):
    """Parameters of the backbone."""

    name = "params"
    unit = "parameters"
    description = "parameters of the backbone"

    def cost(self, space: Space, arch: Arch) -> float:
        return cost_of(space, arch).params

    def cost_range(self, space: Space) -> tuple[float, float]:
        return params_range(space)

    def measure(self, space: Space, arch: Arch, network: nn.Module) -> float:
        return count_params(network)

    def format(self, value: float) -> str:
        return f"{value / 1e6:.3f} M parameters"
