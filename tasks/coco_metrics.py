"""COCO box metrics through pycocotools' ``COCOeval``: detections in, AP / AP50 / AP75 / APs / APm / APl out.

Detectors give ``xyxy`` boxes and contiguous labels ``1..K``; COCO results are ``xywh`` boxes with the
dataset's category ids. ``detections_to_results`` converts one image's detections, ``coco_metrics`` runs
``COCOeval`` (bbox) on exactly the given image ids, with its printing silenced.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
"""Names of ``COCOeval.stats[0:6]``, in order."""


def detections_to_results(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, image_id: int, category_ids: Sequence[int]
) -> list[dict]:
    """COCO result entries for one image: ``xyxy`` → ``xywh``, label ``l`` → ``category_ids[l - 1]``.

    Label 0 (background) is dropped: RetinaNet scores it like any class and can return it.
    """
    keep = labels > 0
    boxes, scores, labels = boxes[keep].detach().to("cpu", torch.float64), scores[keep], labels[keep]
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    return [
        {"image_id": int(image_id), "category_id": int(category_ids[label - 1]), "bbox": box, "score": score}
        for box, score, label in zip(xywh, scores.detach().cpu().tolist(), labels.detach().cpu().tolist())
    ]


def coco_metrics(coco_gt: COCO, results: list[dict], image_ids: Sequence[int]) -> dict[str, float]:
    """``COCOeval`` bbox metrics of ``results`` against ``coco_gt`` on ``image_ids`` only.

    Values are fractions in [0, 1]. No detections give all zeros, and so does a metric COCOeval cannot
    define (it reports -1, e.g. APs when the images hold no small objects).
    """
    if not results or not image_ids:
        return dict.fromkeys(METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = sorted(set(int(i) for i in image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: max(float(value), 0.0) for name, value in zip(METRICS, evaluator.stats[:6])}
