"""torchvision detectors around any backbone that returns four feature maps (strides 4, 8, 16, 32).

Composed the torchvision way — backbone with ``out_channels``, anchor generator, RoI pooler, heads — from
torchvision's own parts only:

- ``build_faster_rcnn``: FPN (DetNAS §4): C2–C5 through ``FeaturePyramidNetwork`` with P6 by max-pool,
  one anchor size per level, ``MultiScaleRoIAlign`` 7×7 over P2–P5 and the paper's 4conv1fc box head;
- ``build_retinanet``: C3–C5 through ``FeaturePyramidNetwork`` with P6/P7 computed from C5 (as in the
  RetinaNet paper), three anchor scales per level, torchvision's RetinaNet head and focal loss.

The backbone may be a supernet: the detector calls ``backbone(images)``, which runs its active path.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from nasengine.errors import NasEngineError

LEVELS = 5
"""Pyramid levels of both detectors: P2–P6 (FPN) and P3–P7 (RetinaNet); one anchor size each."""


class FeaturePyramid(nn.Module):
    """``backbone`` (a list of C2–C5 maps) followed by torchvision's FPN on the maps ``levels``."""

    def __init__(
        self,
        backbone: nn.Module,
        in_channels: Sequence[int],
        levels: Sequence[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock,
    ):
        super().__init__()
        self.body = backbone
        self.levels = list(levels)
        self.fpn = FeaturePyramidNetwork([in_channels[i] for i in self.levels], out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(images)
        return self.fpn(OrderedDict([(str(n), features[i]) for n, i in enumerate(self.levels)]))


def _check(out_channels: Sequence[int], anchor_sizes: Sequence[int]) -> None:
    if len(out_channels) != 4:
        raise NasEngineError(
            f"detection needs a backbone with 4 feature maps (strides 4, 8, 16, 32); this one has {len(out_channels)}"
        )
    if len(anchor_sizes) != LEVELS:
        raise NasEngineError(f"anchor_sizes needs {LEVELS} sizes, one per pyramid level; got {list(anchor_sizes)}")


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer when ``channels`` is not a multiple of 32)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def build_faster_rcnn(
    backbone: nn.Module,
    out_channels: Sequence[int],
    num_classes: int,
    *,
    min_size: int,
    max_size: int,
    anchor_sizes: Sequence[int],
    fpn_channels: int,
    score_thresh: float,
    rois_per_image: int,
    proposals_per_image: int,
) -> FasterRCNN:
    """Faster R-CNN with FPN and the 4conv1fc head; ``num_classes`` counts the background.

    ``rois_per_image`` proposals are sampled per image for the box head in training;
    ``proposals_per_image`` are kept after the RPN's NMS at inference (twice as many in training).
    """
    _check(out_channels, anchor_sizes)
    features = FeaturePyramid(backbone, out_channels, range(4), fpn_channels, LastLevelMaxPool())
    anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * LEVELS)
    # GroupNorm, not BatchNorm, in the box head: its inputs are RoIs, which in training are the sampled
    # proposals (a quarter positives) and at inference all of them, so batch statistics would differ
    # between the two, and the per-path BN recalibration (loss() in train mode) would average them over
    # sampled RoIs. GroupNorm normalises each RoI alone and behaves the same in both modes.
    head = FastRCNNConvFCHead((fpn_channels, 7, 7), [fpn_channels] * 4, [1024], norm_layer=group_norm)
    return FasterRCNN(
        features,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_post_nms_top_n_train=2 * proposals_per_image,
        rpn_post_nms_top_n_test=proposals_per_image,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
        box_head=head,
        box_predictor=FastRCNNPredictor(1024, num_classes),
        box_score_thresh=score_thresh,
        box_batch_size_per_image=rois_per_image,
    )


def build_retinanet(
    backbone: nn.Module,
    out_channels: Sequence[int],
    num_classes: int,
    *,
    min_size: int,
    max_size: int,
    anchor_sizes: Sequence[int],
    fpn_channels: int,
    score_thresh: float,
) -> RetinaNet:
    """RetinaNet on C3–C5 with P6/P7; ``num_classes`` counts the background (label 0, never a training target)."""
    _check(out_channels, anchor_sizes)
    features = FeaturePyramid(
        backbone, out_channels, range(1, 4), fpn_channels, LastLevelP6P7(out_channels[-1], fpn_channels)
    )
    sizes = tuple((int(s), int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in anchor_sizes)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * LEVELS)
    return RetinaNet(
        features,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        anchor_generator=anchors,
        score_thresh=score_thresh,
        detections_per_img=100,  # COCOeval counts at most 100 detections per image
    )
