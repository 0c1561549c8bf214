"""Detection tasks for supernet fine-tuning and search: ``coco-fpn``, ``coco-retinanet``, ``voc-fpn`` and
``voc-retinanet``.

The detectors are torchvision's (``detection_models``): Faster R-CNN over FPN with the 4conv1fc head, or
RetinaNet, on any backbone returning the four feature maps C2–C5. Data is COCO-format
(``coco_data``); VOC roots are converted into the same COCO collections (``voc_data``), so all four
tasks share one dataset, one set of checks and one metric: pycocotools' ``COCOeval`` (``coco_metrics``).
The score is AP (IoU .50:.95) for COCO tasks and AP at IoU 0.5 for VOC tasks.

Without ``data_root`` the tasks read the embedded data (64-px photo crops with pasted Fashion-MNIST items,
``embedded_detection``) through exactly the code path of user data, with defaults sized for it. Nothing is
read when a task is constructed: the annotations are loaded and checked when a split is first used.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nasengine.errors import NasEngineError
from nasengine.interfaces import Task

if TYPE_CHECKING:  # the data modules import pycocotools and PIL: loaded on first use, not with the task
    from nasengine.tasks.coco_data import CocoDetection, Collection, DetectionSplits
    from nasengine.tasks.voc_data import VocReader

# Defaults for user data are the paper's scale (DetNAS §4, torchvision's detectors). The embedded data is
# 1,500 train / 300 test images of 64 px with 1–3 objects of 20–40 px items (box side √area 11–39 px, median 23), so:
# no resizing; one anchor per level from 16 px at stride 4 (RetinaNet adds ×2^(1/3), ×2^(2/3) from stride 8),
# covering the objects on P2–P3; and far fewer proposals and sampled RoIs than COCO's ~7 objects per 800-px
# image need. At 64 px the 4conv1fc head dominates the cost, so these (with the 32 FPN channels the head's
# convolutions use) decide the speed: a training iteration costs about 0.4 of what it costs at 64 channels and
# 32 RoIs, and a fine-tuned standalone ShuffleNetV2-20 still reaches AP ≈ 0.15.
EMBEDDED_DEFAULTS: dict[str, Any] = {
    "min_size": 64,
    "max_size": 64,
    "anchor_sizes": [16, 32, 64, 128, 256],
    "fpn_channels": 32,
    "batch_size": 8,
    "search_size": 200,
    "calib_size": 100,
    "proposals_per_image": 50,
    "rois_per_image": 16,
}
PAPER_DEFAULTS: dict[str, Any] = {
    "min_size": 800,
    "max_size": 1333,
    "anchor_sizes": [32, 64, 128, 256, 512],
    "fpn_channels": 256,
    "batch_size": 2,
    "search_size": 5000,
    "calib_size": 500,
    "proposals_per_image": 1000,
    "rois_per_image": 512,
}


def _default(value: Any, name: str, data_root: str | None) -> Any:
    """``value``, or the default of option ``name`` for this data (embedded or user), checked."""
    value = value if value is not None else (EMBEDDED_DEFAULTS if data_root is None else PAPER_DEFAULTS)[name]
    values = value if name == "anchor_sizes" else [value]
    smallest = 0 if name == "search_size" else 1
    if not isinstance(values, (list, tuple)) or not all(_is_int(v) and v >= smallest for v in values):
        kind = "a list of positive integers" if name == "anchor_sizes" else f"an integer >= {smallest}"
        raise NasEngineError(f"task option {name} must be {kind}, not {value!r}")
    return list(values) if name == "anchor_sizes" else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class DetectionTask(Task):
    """What every detection task shares: options, splits, batches, loss, COCO metrics and statistics.

    Subclasses say where the two collections come from (``_load_train``, ``_load_test``) and which
    detector sits on the backbone (``build_model``).
    """

    kind: ClassVar[str] = "detection"
    base_batch_size: ClassVar[int] = 16
    score_metric: ClassVar[str] = "AP"  # the entry of ``evaluate``'s result that becomes ``score``

    def __init__(
        self,
        *,
        data_root: str | Path | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        anchor_sizes: Sequence[int] | None = None,
        fpn_channels: int | None = None,
        batch_size: int | None = None,
        search_size: int | None = None,
        calib_size: int | None = None,
        test_size: int | None = None,
        split_seed: int = 0,
        score_thresh: float = 0.05,
    ):
        self.data_root = None if data_root is None else str(data_root)
        self.min_size = _default(min_size, "min_size", data_root)
        self.max_size = _default(max_size, "max_size", data_root)
        self.input_size = self.min_size  # the short side; latency tables are measured on square images of it
        self.anchor_sizes = _default(anchor_sizes, "anchor_sizes", data_root)
        self.fpn_channels = _default(fpn_channels, "fpn_channels", data_root)
        self.batch_size = _default(batch_size, "batch_size", data_root)
        self.search_size = _default(search_size, "search_size", data_root)
        self.calib_size = _default(calib_size, "calib_size", data_root)
        if test_size is not None and not (_is_int(test_size) and test_size > 0):
            raise NasEngineError(
                f"task option test_size must be a positive integer (or absent for all), not {test_size!r}"
            )
        if isinstance(score_thresh, bool) or not isinstance(score_thresh, (int, float)) or not 0 <= score_thresh <= 1:
            raise NasEngineError(f"task option score_thresh must be a number in [0, 1], not {score_thresh!r}")
        self.test_size, self.split_seed, self.score_thresh = test_size, split_seed, float(score_thresh)

    def options(self) -> dict[str, Any]:
        return {
            "data_root": self.data_root,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "anchor_sizes": self.anchor_sizes,
            "fpn_channels": self.fpn_channels,
            "batch_size": self.batch_size,
            "search_size": self.search_size,
            "calib_size": self.calib_size,
            "test_size": self.test_size,
            "split_seed": self.split_seed,
            "score_thresh": self.score_thresh,
        }

    def _root(self, embedded_folder: str) -> Path:
        """``data_root``, or the embedded data's ``embedded_folder`` (generated on first use)."""
        if self.data_root is not None:
            root = Path(self.data_root).expanduser()
            if not root.is_dir():
                raise NasEngineError(f"data root {root} of task {self.name!r} is not a folder")
            return root
        from nasengine.tasks import embedded_detection

        return embedded_detection.ensure_embedded_detection_data() / embedded_folder

    @abstractmethod
    def _load_train(self) -> Collection:
        """The checked training collection (train, search and calib are drawn from it)."""

    @abstractmethod
    def _load_test(self) -> Collection:
        """The checked test collection."""

    @cached_property
    def _splits(self) -> DetectionSplits:
        from nasengine.tasks.coco_data import DetectionSplits

        return DetectionSplits(
            self._load_train,
            self._load_test,
            search_size=self.search_size,
            calib_size=self.calib_size,
            test_size=self.test_size,
            split_seed=self.split_seed,
        )

    @property
    def class_names(self) -> list[str]:
        """Class names from the training annotations; label ``l`` is ``class_names[l - 1]``."""
        return self._splits.class_names

    def dataset(self, split: str, *, train: bool) -> Dataset:
        return self._splits.dataset(split, train=train)

    def check_data(self) -> None:
        """Load and check every split's annotations, then decode each of their images fully once.

        A truncated or corrupt image otherwise passes the header check and fails hours later in a data-loader
        worker. Decoded images are cached by path, size and mtime (``coco_data.check_images``), so later
        runs only ``stat`` them.
        """
        from nasengine.tasks.coco_data import check_images

        images: list[Path] = []
        for split in self.splits:
            images += self._splits.dataset(split, train=False).image_paths()
        check_images(images)

    def collate(self, batch: list) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        images, targets = zip(*batch)
        return list(images), list(targets)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        images, targets = _to_device(batch, next(model.parameters()).device)
        return sum(model(images, targets).values())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """COCOeval bbox metrics (fractions) on the images of ``loader``; ``score`` is ``score_metric``."""
        from nasengine.tasks.coco_metrics import coco_metrics, detections_to_results

        data = _coco_dataset(loader)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        results: list[dict] = []
        image_ids: list[int] = []
        try:
            for batch in loader:
                images, targets = _to_device(batch, device)
                for detections, target in zip(model(images), targets):
                    image_ids.append(target["image_id"])
                    results += detections_to_results(
                        detections["boxes"],
                        detections["scores"],
                        detections["labels"],
                        target["image_id"],
                        data.category_ids,
                    )
        finally:
            model.train(was_training)
        if not image_ids:
            raise NasEngineError(f"task {self.name!r}: the evaluation split is empty; enlarge it (e.g. search_size)")
        metrics = coco_metrics(data.coco, results, image_ids)
        return {**metrics, "score": metrics[self.score_metric]}

    def split_stats(self, split: str) -> dict[str, int]:
        return self._splits.stats(split)


def _to_device(batch: Any, device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def _coco_dataset(loader: DataLoader) -> CocoDetection:
    """The ``CocoDetection`` under ``loader`` (through ``Subset``-style wrappers): its ground truth and categories."""
    from nasengine.tasks.coco_data import CocoDetection

    data = loader.dataset
    while not isinstance(data, CocoDetection) and hasattr(data, "dataset"):
        data = data.dataset
    if not isinstance(data, CocoDetection):
        raise NasEngineError(
            f"detection evaluation needs a loader over the task's own dataset, not {type(data).__name__}"
        )
    return data


class CocoTask(DetectionTask):
    """COCO-format data: ``data_root/<train_images>`` with ``<train_annotations>``, and the same for test."""

    def __init__(
        self,
        *,
        train_images: str | None = None,
        train_annotations: str | None = None,
        test_images: str | None = None,
        test_annotations: str | None = None,
        **options: Any,
    ):
        super().__init__(**options)
        embedded = self.data_root is None
        self.train_images = train_images or ("train" if embedded else "train2017")
        self.train_annotations = train_annotations or (
            "annotations/instances_train.json" if embedded else "annotations/instances_train2017.json"
        )
        self.test_images = test_images or ("test" if embedded else "val2017")
        self.test_annotations = test_annotations or (
            "annotations/instances_test.json" if embedded else "annotations/instances_val2017.json"
        )

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "train_images": self.train_images,
            "train_annotations": self.train_annotations,
            "test_images": self.test_images,
            "test_annotations": self.test_annotations,
        }

    def _load_train(self) -> Collection:
        from nasengine.tasks.coco_data import load_coco

        root = self._root("coco")
        return load_coco(root / self.train_images, root / self.train_annotations)

    def _load_test(self) -> Collection:
        from nasengine.tasks.coco_data import load_coco

        root = self._root("coco")
        return load_coco(root / self.test_images, root / self.test_annotations)


def _class_list(classes: str | list[str] | None) -> list[str] | None:
    """The ``classes`` option as a list of distinct names (given as a list or as ``"a,b,c"``); one-line errors."""
    if classes is None:
        return None
    names = [name.strip() for name in classes.split(",")] if isinstance(classes, str) else classes
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
        raise NasEngineError(f"task option 'classes' must be class names, as a list or NAME,NAME,...; got {classes!r}")
    if len(set(names)) != len(names):
        raise NasEngineError(f"task option 'classes' names a class twice: {', '.join(names)}")
    return names


class VocTask(DetectionTask):
    """Pascal VOC data (``Annotations``, ``JPEGImages``, ``ImageSets/Main``); scored by AP at IoU 0.5."""

    score_metric: ClassVar[str] = "AP50"
    # under the paper's preset, VOC fine-tunes for 22.5k iterations instead of COCO's 90k
    preset_settings: ClassVar[dict[str, dict[str, Any]]] = {"paper": {"finetune_schedule": {"iterations": 22_500}}}

    def __init__(
        self,
        *,
        train_set: str | None = None,
        test_set: str | None = None,
        classes: str | list[str] | None = None,
        **options: Any,
    ):
        super().__init__(**options)
        self.train_set = train_set or ("train" if self.data_root is None else "trainval")
        self.test_set = test_set or "test"
        self.classes = _class_list(classes)

    def options(self) -> dict[str, Any]:
        listed = {"classes": self.classes} if self.classes is not None else {}
        return {**super().options(), "train_set": self.train_set, "test_set": self.test_set, **listed}

    @cached_property
    def _reader(self) -> VocReader:
        from nasengine.tasks.voc_data import VocReader

        classes = self.classes
        if classes is None and self.data_root is None:  # the embedded data's classes, in the order they had
            from nasengine.tasks.embedded_detection import CATEGORIES

            classes = sorted(category["name"] for category in CATEGORIES)
        return VocReader(self._root("voc"), (self.train_set, self.test_set), classes)

    def _load_train(self) -> Collection:
        return self._reader.collection(self.train_set)

    def _load_test(self) -> Collection:
        return self._reader.collection(self.test_set)


class FasterRcnnDetector:
    """Mixin: Faster R-CNN over FPN (P2–P6) with the 4conv1fc head, the paper's two-stage detector."""

    base_lr: ClassVar[float] = 0.02

    def __init__(self, *, proposals_per_image: int | None = None, rois_per_image: int | None = None, **options: Any):
        super().__init__(**options)
        self.proposals_per_image = _default(proposals_per_image, "proposals_per_image", self.data_root)
        self.rois_per_image = _default(rois_per_image, "rois_per_image", self.data_root)

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "proposals_per_image": self.proposals_per_image,
            "rois_per_image": self.rois_per_image,
        }

    def build_model(self, backbone: nn.Module, out_channels: Sequence[int]) -> nn.Module:
        from nasengine.tasks.detection_models import build_faster_rcnn

        return build_faster_rcnn(
            backbone,
            out_channels,
            len(self.class_names) + 1,
            min_size=self.min_size,
            max_size=self.max_size,
            anchor_sizes=self.anchor_sizes,
            fpn_channels=self.fpn_channels,
            score_thresh=self.score_thresh,
            rois_per_image=self.rois_per_image,
            proposals_per_image=self.proposals_per_image,
        )


class RetinaNetDetector:
    """Mixin: RetinaNet on C3–C5 with P6/P7 and focal loss, the paper's one-stage detector.

    Its score threshold defaults far below torchvision's 0.05: focal loss drives every score under the 0.01
    prior within a few steps, long before the detector is good, and a candidate with no detections cannot be
    ranked. COCOeval keeps the best 100 per image either way.
    """

    base_lr: ClassVar[float] = 0.01

    def __init__(self, *, score_thresh: float = 0.001, **options: Any):
        super().__init__(score_thresh=score_thresh, **options)

    def build_model(self, backbone: nn.Module, out_channels: Sequence[int]) -> nn.Module:
        from nasengine.tasks.detection_models import build_retinanet

        return build_retinanet(
            backbone,
            out_channels,
            len(self.class_names) + 1,
            min_size=self.min_size,
            max_size=self.max_size,
            anchor_sizes=self.anchor_sizes,
            fpn_channels=self.fpn_channels,
            score_thresh=self.score_thresh,
        )


class CocoFpnTask(FasterRcnnDetector, CocoTask):
    name: ClassVar[str] = "coco-fpn"
    description: ClassVar[str] = (
        "COCO-format detection, Faster R-CNN + FPN (4conv1fc); score AP; default: embedded data"
    )


class CocoRetinaNetTask(RetinaNetDetector, CocoTask):
    name: ClassVar[str] = "coco-retinanet"
    description: ClassVar[str] = (
        "COCO-format detection, RetinaNet (P3–P7, focal loss); score AP; default: embedded data"
    )


class VocFpnTask(FasterRcnnDetector, VocTask):
    name: ClassVar[str] = "voc-fpn"
    description: ClassVar[str] = (
        "Pascal VOC detection, Faster R-CNN + FPN (4conv1fc); score AP50; default: embedded data"
    )


class VocRetinaNetTask(RetinaNetDetector, VocTask):
    name: ClassVar[str] = "voc-retinanet"
    description: ClassVar[str] = (
        "Pascal VOC detection, RetinaNet (P3–P7, focal loss); score AP50; default: embedded data"
    )
