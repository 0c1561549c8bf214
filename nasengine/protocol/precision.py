"""Mixed precision for the training loop: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast and a gradient scaler).

Only training runs under autocast. BatchNorm recalibration, the search's scores and the tests run in fp32,
so a candidate's statistics and score never depend on the training precision's rounding. ``auto`` (the
default) resolves when a run begins, to what measured fastest: fp32 on CPU (bf16 autocast measured 0.153
s against 0.140 s per step of the demo's detector on this project's 2-core CPU), bf16 on a CUDA device
that supports it, else fp16; the resolved value is what ``config.toml`` records.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(precision: str, device: torch.device) -> str:
    """``auto`` → the fastest precision for ``device``; any other value is returned as is."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


class Mixed:
    """Autocast and, for fp16, a gradient scaler around one training loop's steps."""

    def __init__(self, precision: str, device: torch.device):
        if precision not in _DTYPES and precision != "fp32":
            raise ValueError(f"unresolved precision {precision!r}")
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's step; with a scaler, skipped when a gradient overflowed (the scale is then lowered)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
