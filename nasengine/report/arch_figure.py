"""The found backbone drawn block by block, stage by stage (the DetNAS paper's Figs. 4–5).

Each searchable block is a box whose colour and height say its choice; stages are set apart with their
names below. Several architectures (e.g. one searched on detection, one on classification) are drawn as rows
of one figure, so they compare at a glance.

A space describes itself for the drawing with two optional attributes: ``choice_names``, one name per
choice index (``("3×3", "5×5", "7×7", "Xception")`` for the ShuffleNetV2 spaces), and ``repeats``, the
number of blocks of each stage. A space without them (or whose plugin cannot be loaded) is drawn with
``choice i`` names in one stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasengine.report.drawing import pyplot, save_figure

BOX_WIDTH = 0.8
STAGE_GAP = 0.7  # extra room between stages, in block widths
ROW_HEIGHT = 1.6  # data units per drawn architecture (boxes, stage names and the row's label)


@dataclass(frozen=True)
class Layout:
    """How to draw a space's architectures: each choice's name and the blocks of each stage."""

    names: tuple[str, ...]
    stages: tuple[int, ...]


@dataclass(frozen=True)
class Box:
    """One block: its left edge (x), height and choice; its stage (0-based)."""

    x: float
    height: float
    choice: int
    stage: int


def space_layout(space: Any, arch: Sequence[int]) -> Layout:
    """The layout of ``arch`` in ``space`` (None: unknown space): the space's ``choice_names`` and
    ``repeats`` when they fit the architecture, else ``choice i`` names and one stage."""
    widest = max([*getattr(space, "choices", ()), *(int(c) + 1 for c in arch)], default=1)
    names = getattr(space, "choice_names", None)
    if not (isinstance(names, (list, tuple)) and len(names) >= widest and all(isinstance(n, str) for n in names)):
        names = tuple(f"choice {i}" for i in range(widest))
    stages = getattr(space, "repeats", None)
    if not (
        isinstance(stages, (list, tuple))
        and all(isinstance(n, int) and n > 0 for n in stages)
        and sum(stages) == len(arch)
    ):
        stages = (len(arch),)
    return Layout(tuple(names), tuple(stages))


def block_boxes(arch: Sequence[int], layout: Layout) -> list[Box]:
    """The boxes of ``arch``: one per block, left to right, a gap between stages; the higher the choice
    index, the taller the box."""
    stage_of = [stage for stage, count in enumerate(layout.stages) for _ in range(count)]
    return [
        Box(
            x=position + STAGE_GAP * stage_of[position],
            height=0.3 + 0.6 * (int(choice) + 1) / len(layout.names),
            choice=int(choice),
            stage=stage_of[position],
        )
        for position, choice in enumerate(arch)
    ]


def plot_architectures(rows: Mapping[str, tuple[Sequence[int], Layout]], path: Path) -> Path:
    """Draw each architecture (label → (arch, layout)) as a row of boxes, the first on top."""
    from matplotlib.patches import Patch, Rectangle

    plt = pyplot()
    drawn = {label: (block_boxes(arch, layout), layout) for label, (arch, layout) in rows.items()}
    right = max(boxes[-1].x + BOX_WIDTH for boxes, _ in drawn.values())
    fig, ax = plt.subplots(figsize=(max(8.0, 0.42 * right + 1.5), 1.9 * len(drawn) + 1.3))
    colours = plt.get_cmap("tab10")
    for row, (label, (boxes, layout)) in enumerate(drawn.items()):
        base = (len(drawn) - 1 - row) * ROW_HEIGHT
        centre = base + 0.62
        for box in boxes:
            bottom = centre - box.height / 2
            ax.add_patch(
                Rectangle((box.x, bottom), BOX_WIDTH, box.height, facecolor=colours(box.choice % 10), edgecolor="black")
            )
            ax.text(
                box.x + BOX_WIDTH / 2,
                centre,
                layout.names[box.choice],
                rotation=90,
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
        for stage, count in enumerate(layout.stages):
            members = [box for box in boxes if box.stage == stage]
            left, end = members[0].x, members[-1].x + BOX_WIDTH
            ax.plot([left, end], [base + 0.1, base + 0.1], color="grey", linewidth=1)
            name = f"stage {stage + 1} · {count} blocks" if len(layout.stages) > 1 else f"{count} blocks"
            ax.text((left + end) / 2, base + 0.05, name, ha="center", va="top", fontsize=8, color="dimgrey")
        ax.text(0, base + 1.12, label, ha="left", va="bottom", fontsize=9, weight="bold")
    ax.set_xlim(-0.3, right + 0.3)
    ax.set_ylim(-0.3, len(drawn) * ROW_HEIGHT - 0.2)
    ax.set_yticks([])
    ax.set_xticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("searchable blocks, input → output (box colour and height: the block's choice)")
    names = _legend_names([layout for _, layout in drawn.values()])
    handles = [Patch(facecolor=colours(i % 10), edgecolor="black", label=name) for i, name in enumerate(names)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(handles), fontsize=8)
    title = "Found architecture" if len(drawn) == 1 else "Found architectures side by side"
    ax.set_title(f"{title}, block by block and stage by stage")
    return save_figure(fig, path)


def _legend_names(layouts: Sequence[Layout]) -> list[str]:
    """Each choice index's name; where the rows' spaces name it differently, the names joined by `` / ``."""
    widest = max(len(layout.names) for layout in layouts)
    names = []
    for index in range(widest):
        seen = list(dict.fromkeys(layout.names[index] for layout in layouts if index < len(layout.names)))
        names.append(" / ".join(seen))
    return names
