"""The detection tasks: ``coco-fpn``, ``coco-retinanet``, ``voc-fpn`` and ``voc-retinanet``.

Each is data (a COCO or Pascal VOC root, split as DetNAS §4 does), a torchvision detector around the
searched backbone (``detection_models``), the detector's own losses, and COCOeval box AP as the score
(COCO tasks: AP at IoU .50:.95; VOC tasks: AP at IoU .50, the VOC metric).

Without ``data_root`` a task uses the embedded default data (128-px canvases, objects 12–56 px, see
``embedded_detection``) and defaults sized for it; with a ``data_root`` the defaults are the paper's
(short side 800, anchors 32–512, FPN 256 channels, 2 images per process). Every default can be
overridden by an option, e.g. ``--task-option min_size=600``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from nasengine.errors import NasEngineError
from nasengine.interfaces import Task
from nasengine.tasks import detection_models
from nasengine.tasks.coco_data import CocoDetection, DetectionSplits, load_coco
from nasengine.tasks.coco_metrics import coco_metrics, detections_to_results

PAPER_DEFAULTS: dict[str, Any] = {
    "min_size": 800, "max_size": 1333, "anchor_sizes": [32, 64, 128, 256, 512], "fpn_channels": 256,
    "batch_size": 2, "search_size": 5000, "calib_size": 500, "rois_per_image": 512, "proposals_per_image": 1000,
}
# The embedded images are 128 px with objects of 12–56 px: anchors scaled with the image (800 → 128 px
# is ×0.16, so 32 → ~5; 8 keeps P2's anchor twice its stride), and the box head's work cut down —
# at this size the 4conv1fc head on 512 RoIs per image costs many times the backbone (see README bench).
EMBEDDED_DEFAULTS: dict[str, Any] = {
    "min_size": 128, "max_size": 128, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 64,
    "batch_size": 8, "search_size": 200, "calib_size": 100, "rois_per_image": 128, "proposals_per_image": 300,
}


class DetectionTask(Task):
    """Shared by the four tasks; subclasses set the data (COCO/VOC) and the detector (FPN/RetinaNet)."""

    kind = "detection"
    base_batch_size = 16
    detector: ClassVar[str]  # "fpn" or "retinanet"
    score_metric: ClassVar[str]  # the metric reported as "score"
    default_score_thresh: ClassVar[float]

    def __init__(
        self,
        data_root: str | Path | None = None,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        anchor_sizes: Sequence[int] | None = None,
        fpn_channels: int | None = None,
        batch_size: int | None = None,
        search_size: int | None = None,
        calib_size: int | None = None,
        test_size: int | None = None,
        split_seed: int = 0,
        score_thresh: float | None = None,
        rois_per_image: int | None = None,
        proposals_per_image: int | None = None,
    ):
        self.data_root = None if data_root is None else Path(data_root)
        defaults = EMBEDDED_DEFAULTS if data_root is None else PAPER_DEFAULTS
        given = {
            "min_size": min_size, "max_size": max_size, "anchor_sizes": anchor_sizes, "fpn_channels": fpn_channels,
            "batch_size": batch_size, "search_size": search_size, "calib_size": calib_size,
            "rois_per_image": rois_per_image, "proposals_per_image": proposals_per_image,
        }
        settings = {key: defaults[key] if value is None else value for key, value in given.items()}
        for key, value in settings.items():
            values = value if key == "anchor_sizes" else [value]
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise NasEngineError(f"task option {key} must be {'a list of integers' if key == 'anchor_sizes' else 'an integer'}, not {value!r}")
            if any(v < (0 if key in ("search_size", "calib_size") else 1) for v in values):
                raise NasEngineError(f"task option {key} must be positive, not {value!r}")
        self.min_size, self.max_size = settings["min_size"], settings["max_size"]
        self.anchor_sizes = list(settings["anchor_sizes"])
        self.fpn_channels = settings["fpn_channels"]
        self.batch_size = settings["batch_size"]
        self.search_size, self.calib_size = settings["search_size"], settings["calib_size"]
        self.rois_per_image, self.proposals_per_image = settings["rois_per_image"], settings["proposals_per_image"]
        self.test_size = test_size
        self.split_seed = split_seed
        self.score_thresh = self.default_score_thresh if score_thresh is None else float(score_thresh)

    # data ----------------------------------------------------------------------------------------
    def _root(self, embedded_folder: str) -> Path:
        if self.data_root is not None:
            if not self.data_root.is_dir():
                raise NasEngineError(f"data root {self.data_root} does not exist")
            return self.data_root
        from nasengine.tasks.embedded_detection import ensure_embedded_detection_data

        return ensure_embedded_detection_data() / embedded_folder

    def _data_options(self) -> dict[str, Any]:
        """The options naming files inside the data root."""
        return {}

    @property
    def class_names(self) -> list[str]:  # type: ignore[override]
        return self.data.class_names

    @cached_property
    def data(self) -> DetectionSplits:
        """The four splits, read and checked on first use."""
        return self._make_data()

    @abstractmethod
    def _make_data(self) -> DetectionSplits:
        """The splits of this task's data root."""

    def _split_options(self) -> dict[str, Any]:
        return {"search_size": self.search_size, "calib_size": self.calib_size, "test_size": self.test_size,
                "split_seed": self.split_seed}

    def options(self) -> dict[str, Any]:
        options = {
            "data_root": None if self.data_root is None else str(self.data_root),
            **self._data_options(),
            "min_size": self.min_size, "max_size": self.max_size, "anchor_sizes": self.anchor_sizes,
            "fpn_channels": self.fpn_channels, "batch_size": self.batch_size, **self._split_options(),
            "score_thresh": self.score_thresh, "rois_per_image": self.rois_per_image,
            "proposals_per_image": self.proposals_per_image,
        }
        return {key: value for key, value in options.items() if value is not None}  # TOML has no null

    def dataset(self, split: str, *, train: bool) -> CocoDetection:
        return self.data.dataset(split, train=train)

    def split_stats(self, split: str) -> dict[str, int]:
        return self.data.stats(split)

    def collate(self, batch: list) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        images, targets = zip(*batch)
        return list(images), list(targets)

    # model ---------------------------------------------------------------------------------------
    def build_model(self, backbone: nn.Module, out_channels: Sequence[int]) -> nn.Module:
        common = {"min_size": self.min_size, "max_size": self.max_size, "anchor_sizes": self.anchor_sizes,
                  "fpn_channels": self.fpn_channels, "score_thresh": self.score_thresh}
        num_classes = len(self.class_names) + 1  # torchvision counts the background as class 0
        if self.detector == "fpn":
            return detection_models.build_faster_rcnn(backbone, out_channels, num_classes, **common,
                                                      rois_per_image=self.rois_per_image,
                                                      proposals_per_image=self.proposals_per_image)
        return detection_models.build_retinanet(backbone, out_channels, num_classes, **common)

    def loss(self, model: nn.Module, batch: tuple[list[torch.Tensor], list[dict[str, Any]]]) -> torch.Tensor:
        """The sum of the detector's losses; puts ``model`` in train mode (torchvision computes losses only there)."""
        images, targets = batch
        device = next(model.parameters()).device
        model.train()
        losses = model(
            [image.to(device, non_blocking=True) for image in images],
            [{key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in target.items()}
             for target in targets],
        )
        return sum(losses.values())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """COCOeval box metrics on the images of ``loader`` (a split of this task, or a Subset of one)."""
        dataset = _coco_dataset(loader.dataset)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        results: list[dict] = []
        image_ids: list[int] = []
        try:
            for images, targets in loader:
                outputs = model([image.to(device, non_blocking=True) for image in images])
                for output, target in zip(outputs, targets):
                    image_ids.append(target["image_id"])
                    results += detections_to_results(output["boxes"], output["scores"], output["labels"],
                                                     target["image_id"], dataset.category_ids)
        finally:
            model.train(was_training)
        metrics = coco_metrics(dataset.coco, results, image_ids)
        return {**metrics, "score": metrics[self.score_metric]}


def _coco_dataset(dataset: Dataset) -> CocoDetection:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if not isinstance(dataset, CocoDetection):
        raise TypeError(f"detection tasks evaluate loaders over their own datasets, not {type(dataset).__name__}")
    return dataset


class CocoTask(DetectionTask):
    """A COCO root: ``train_annotations`` over ``train_images`` (train, search, calib), ``test_*`` for test."""

    score_metric = "AP"

    def __init__(
        self,
        data_root: str | Path | None = None,
        *,
        train_images: str | None = None,
        train_annotations: str | None = None,
        test_images: str | None = None,
        test_annotations: str | None = None,
        **options: Any,
    ):
        super().__init__(data_root, **options)
        embedded = data_root is None
        self.train_images = train_images or ("train" if embedded else "train2017")
        self.train_annotations = train_annotations or (
            "annotations/instances_train.json" if embedded else "annotations/instances_train2017.json")
        self.test_images = test_images or ("test" if embedded else "val2017")
        self.test_annotations = test_annotations or (
            "annotations/instances_test.json" if embedded else "annotations/instances_val2017.json")

    def _data_options(self) -> dict[str, Any]:
        return {"train_images": self.train_images, "train_annotations": self.train_annotations,
                "test_images": self.test_images, "test_annotations": self.test_annotations}

    def _make_data(self) -> DetectionSplits:
        root = self._root("coco")
        return DetectionSplits(
            lambda: load_coco(root / self.train_images, root / self.train_annotations),
            lambda: load_coco(root / self.test_images, root / self.test_annotations),
            **self._split_options(),
        )


class VocTask(DetectionTask):
    """A Pascal VOC root: image set ``train_set`` (train, search, calib) and ``test_set`` (test)."""

    score_metric = "AP50"

    def __init__(self, data_root: str | Path | None = None, *, train_set: str | None = None,
                 test_set: str = "test", **options: Any):
        super().__init__(data_root, **options)
        self.train_set = train_set or ("train" if data_root is None else "trainval")
        self.test_set = test_set

    def _data_options(self) -> dict[str, Any]:
        return {"train_set": self.train_set, "test_set": self.test_set}

    def _make_data(self) -> DetectionSplits:
        from nasengine.tasks.voc_data import VocReader

        reader = VocReader(self._root("voc"), (self.train_set, self.test_set))
        return DetectionSplits(lambda: reader.collection(self.train_set), lambda: reader.collection(self.test_set),
                               **self._split_options())


class CocoFpnTask(CocoTask):
    """COCO-format detection with Faster R-CNN + FPN (4conv1fc head); score = COCO AP."""

    name = "coco-fpn"
    description = "COCO-format detection, Faster R-CNN with FPN and a 4conv1fc head; score: AP@[.5:.95]"
    detector = "fpn"
    base_lr = 0.02
    default_score_thresh = 0.05


class CocoRetinaNetTask(CocoTask):
    """COCO-format detection with RetinaNet; score = COCO AP."""

    name = "coco-retinanet"
    description = "COCO-format detection, RetinaNet (P3–P7, focal loss); score: AP@[.5:.95]"
    detector = "retinanet"
    base_lr = 0.01
    # torchvision's 0.05 hides every detection early in training, when scores still sit near the 0.01 prior
    default_score_thresh = 0.001


class VocFpnTask(VocTask):
    """Pascal VOC detection with Faster R-CNN + FPN (4conv1fc head); score = AP at IoU 0.5."""

    name = "voc-fpn"
    description = "Pascal VOC detection, Faster R-CNN with FPN and a 4conv1fc head; score: AP@.5"
    detector = "fpn"
    base_lr = 0.02
    default_score_thresh = 0.05


class VocRetinaNetTask(VocTask):
    """Pascal VOC detection with RetinaNet; score = AP at IoU 0.5."""

    name = "voc-retinanet"
    description = "Pascal VOC detection, RetinaNet (P3–P7, focal loss); score: AP@.5"
    detector = "retinanet"
    base_lr = 0.01
    default_score_thresh = 0.001
