"""The one drawing setup every figure uses: matplotlib on the Agg backend (no display) and one way to save.

::

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ...
    save_figure(fig, out / "name.png")   # tight layout, PNG at DPI, the figure closed
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasengine.rundir.atomic import atomic_write

DPI = 120


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = DPI) -> Path:
    """Lay ``fig`` out tightly, write it to ``path`` as PNG, atomically (a killed report leaves the old figure
    or the new one, never half of one), and close it; returns ``path``."""
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi))
    pyplot().close(fig)
    return path
