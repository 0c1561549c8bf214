"""``nasengine data show``: a grid of a detection split's images with their boxes and class names."""

from __future__ import annotations

from pathlib import Path

from nasengine.interfaces import Task
from nasengine.report.drawing import pyplot, save_figure


def draw_detection_grid(task: Task, split: str, out: Path, count: int = 16, columns: int = 4) -> Path:
    """Draw the first ``count`` images of ``split`` with their ground-truth boxes into ``out`` (PNG)."""
    plt = pyplot()
    from matplotlib.patches import Rectangle

    data = task.dataset(split, train=False)
    count = min(count, len(data))  # type: ignore[arg-type]
    rows = max(1, (count + columns - 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= count:
            continue
        image, target = data[index]
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        if isinstance(target, dict):
            for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
                x0, y0, x1, y1 = box
                colour = plt.cm.tab10(label % 10)
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
                ax.text(
                    x0,
                    y0,
                    task.class_names[label - 1],
                    color="white",
                    fontsize=7,
                    va="bottom",
                    bbox={"facecolor": colour, "pad": 1, "linewidth": 0},
                )
        else:
            ax.set_title(task.class_names[int(target)], fontsize=8)
    return save_figure(fig, out, dpi=100)
