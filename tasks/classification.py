"""Classification tasks for supernet pre-training: ``fashion-mnist`` (embedded) and ``imagenet`` (ImageFolder).

Both put the paper's classification head on the backbone's last feature map (1×1 conv to 1024 → BN →
ReLU → global average pool → dropout → linear) and train with label-smoothed cross-entropy. The
``search`` split is held out of the training images by a seeded permutation; ``calib`` is a subset of
what remains for training. Data is read on first use, so constructing a task costs nothing.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from nasengine.errors import NasEngineError
from nasengine.interfaces import Task
from nasengine.tasks import fashion_mnist

LABEL_SMOOTHING = 0.1
HEAD_CHANNELS = 1024


class ClassificationHead(nn.Module):
    """1×1 conv to 1024 (no bias) → BN → ReLU → global average pool → dropout → linear (paper §4)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, HEAD_CHANNELS, 1, bias=False)
        self.bn = nn.BatchNorm2d(HEAD_CHANNELS)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(features)))
        return self.fc(self.dropout(x.mean(dim=(2, 3))))


class Classifier(nn.Module):
    """Normalise the ``[0, 1]`` images, run the backbone, classify its last feature map.

    Normalisation lives in the model (as in torchvision's detectors) so datasets yield plain ``[0, 1]``
    images that can be drawn as they are.
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_channels: int,
        num_classes: int,
        dropout: float,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__()
        self.backbone = backbone
        self.head = ClassificationHead(in_channels, num_classes, dropout)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone((images - self.mean) / self.std)[-1])


def hold_out(count: int, search_size: int, calib_size: int, seed: int, what: str) -> dict[str, torch.Tensor]:
    """Sorted indices of the ``train``, ``search`` and ``calib`` splits of ``count`` training images.

    ``search`` is a seeded random subset held out of ``train``; ``calib`` a seeded subset of ``train``.
    """
    if not 0 <= search_size < count or not 0 < calib_size <= count - search_size:
        raise NasEngineError(
            f"{what} has {count} training images: search_size={search_size} and calib_size={calib_size} must leave "
            "training images (need search_size < images and 0 < calib_size <= images - search_size)"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    train = order[search_size:]
    return {
        "train": train.sort().values,
        "search": order[:search_size].sort().values,
        "calib": train[:calib_size].sort().values,
    }


def subset(count: int, size: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random subset of ``size`` out of ``count`` (all when ``size`` is None)."""
    if size is None or size >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size].sort().values


class ClassificationTask(Task):
    """What every classification task shares: the head, the loss, the metrics and the splits' bookkeeping."""

    kind: ClassVar[str] = "classification"
    base_lr: ClassVar[float] = 0.5
    base_batch_size: ClassVar[int] = 1024
    mean: ClassVar[tuple[float, ...]] = (0.485, 0.456, 0.406)
    std: ClassVar[tuple[float, ...]] = (0.229, 0.224, 0.225)

    def __init__(
        self,
        *,
        search_size: int,
        calib_size: int,
        test_size: int | None,
        split_seed: int,
        batch_size: int,
        dropout: float,
    ):
        self.search_size, self.calib_size, self.test_size = search_size, calib_size, test_size
        self.split_seed, self.batch_size, self.dropout = split_seed, batch_size, dropout

    def options(self) -> dict[str, Any]:
        return {
            "search_size": self.search_size,
            "calib_size": self.calib_size,
            "test_size": self.test_size,
            "split_seed": self.split_seed,
            "batch_size": self.batch_size,
            "dropout": self.dropout,
        }

    def build_model(self, backbone: nn.Module, out_channels: Sequence[int]) -> nn.Module:
        return Classifier(backbone, out_channels[-1], len(self.class_names), self.dropout, self.mean, self.std)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        images, labels = batch
        device = next(model.parameters()).device
        logits = model(images.to(device, non_blocking=True))
        return F.cross_entropy(logits, labels.to(device, non_blocking=True), label_smoothing=LABEL_SMOOTHING)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Top-1 and top-5 accuracy in percent (top-k with k = min(5, classes)), mean cross-entropy; score = top-1."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        seen, top1, top5, loss_sum = 0, 0, 0, 0.0
        try:
            for images, labels in loader:
                logits = model(images.to(device, non_blocking=True)).float()
                labels = labels.to(device, non_blocking=True)
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                best = logits.topk(min(5, logits.shape[1]), dim=1).indices
                hits = best == labels[:, None]
                top1 += int(hits[:, 0].sum())
                top5 += int(hits.any(dim=1).sum())
                seen += len(labels)
        finally:
            model.train(was_training)
        if seen == 0:
            raise NasEngineError(f"task {self.name!r}: the evaluation split is empty; enlarge it (e.g. search_size)")
        return {
            "top1": 100.0 * top1 / seen,
            "top5": 100.0 * top5 / seen,
            "loss": loss_sum / seen,
            "score": 100.0 * top1 / seen,
        }

    def split_stats(self, split: str) -> dict[str, int]:
        counts = torch.bincount(self._labels(split), minlength=len(self.class_names)).tolist()
        return {"images": sum(counts), **dict(zip(self.class_names, counts))}

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise NasEngineError(f"unknown split {split!r}; {self.name} has: {', '.join(self.splits)}")

    @abstractmethod
    def _labels(self, split: str) -> torch.Tensor:
        """Labels of every image of ``split``, without reading any image."""


class FashionMnistTask(ClassificationTask):
    """Real Fashion-MNIST (60k train / 10k test, 10 classes): the embedded pre-training task."""

    name: ClassVar[str] = "fashion-mnist"
    description: ClassVar[str] = (
        "Fashion-MNIST (real, 60k/10k grey 28 px items, 10 classes) framed at 32 px; embedded pre-training data"
    )
    class_names: ClassVar[list[str]] = fashion_mnist.CLASS_NAMES
    # Statistics of the training images framed at 32 px (the item covers 7/8 of the frame at every size).
    mean: ClassVar[tuple[float, ...]] = (0.219,) * 3
    std: ClassVar[tuple[float, ...]] = (0.332,) * 3

    def __init__(
        self,
        data_root: str | None = None,
        image_size: int = 32,
        search_size: int = 5000,
        calib_size: int = 500,
        test_size: int | None = None,
        split_seed: int = 0,
        batch_size: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__(
            search_size=search_size,
            calib_size=calib_size,
            test_size=test_size,
            split_seed=split_seed,
            batch_size=batch_size,
            dropout=dropout,
        )
        self.data_root, self.image_size = data_root, image_size
        self.input_size = image_size

    def options(self) -> dict[str, Any]:
        return {"data_root": self.data_root, "image_size": self.image_size, **super().options()}

    @cached_property
    def _folder(self) -> Path:
        return fashion_mnist.find_fashion_mnist(self.data_root)

    def _source(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, labels, indices)``: the preprocessed arrays the split indexes into."""
        self._check_split(split)
        if split == "test":
            images, labels = fashion_mnist.load_split(self._folder, "t10k", self.image_size)
            return images, labels, subset(len(labels), self.test_size, self.split_seed)
        images, labels = fashion_mnist.load_split(self._folder, "train", self.image_size)
        indices = hold_out(len(labels), self.search_size, self.calib_size, self.split_seed, "Fashion-MNIST")
        return images, labels, indices[split]

    def dataset(self, split: str, *, train: bool) -> Dataset:
        images, labels, indices = self._source(split)
        return fashion_mnist.FashionMnistDataset(images, labels, indices, train=train)

    def _labels(self, split: str) -> torch.Tensor:
        _, labels, indices = self._source(split)
        return labels[indices]


class _ImageFiles(Dataset):
    """``(transform(image), label)`` for the ``(path, label)`` samples at ``indices``."""

    def __init__(self, samples: list[tuple[str, int]], indices: torch.Tensor, transform):
        from torchvision.datasets.folder import default_loader

        self.samples, self.indices, self.transform, self.load = samples, indices.tolist(), transform, default_loader

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[self.indices[index]]
        return self.transform(self.load(path)), label


class ImageNetTask(ClassificationTask):
    """ImageNet (or any ImageFolder pair ``data_root/train/<class>/*``, ``data_root/val/<class>/*``)."""

    name: ClassVar[str] = "imagenet"
    description: ClassVar[str] = (
        "ImageNet-style ImageFolder data (data_root/train, data_root/val): the paper's pre-training task"
    )

    def __init__(
        self,
        data_root: str | None = None,
        image_size: int = 224,
        search_size: int = 10_000,
        calib_size: int = 500,
        test_size: int | None = None,
        split_seed: int = 0,
        batch_size: int = 32,
        dropout: float = 0.1,
    ):
        super().__init__(
            search_size=search_size,
            calib_size=calib_size,
            test_size=test_size,
            split_seed=split_seed,
            batch_size=batch_size,
            dropout=dropout,
        )
        self.data_root, self.image_size = data_root, image_size
        self.input_size = image_size

    def options(self) -> dict[str, Any]:
        return {"data_root": self.data_root, "image_size": self.image_size, **super().options()}

    @cached_property
    def _root(self) -> Path:
        if self.data_root is None:
            raise NasEngineError(
                "the imagenet task needs its data: pass --data-root (or --pretrain-data-root) a folder with "
                "train/<class>/ and val/<class>/ images"
            )
        root = Path(self.data_root)
        for part in ("train", "val"):
            if not (root / part).is_dir():
                raise NasEngineError(
                    f"{root} has no {part}/ folder; the imagenet task expects {root}/train/<class>/*.JPEG and "
                    f"{root}/val/<class>/*.JPEG"
                )
        return root

    @cached_property
    def class_names(self) -> list[str]:
        return sorted(entry.name for entry in (self._root / "train").iterdir() if entry.is_dir())

    @cached_property
    def _samples(self) -> dict[str, list[tuple[str, int]]]:
        """``(path, label)`` of every train and val image (scanning ImageNet takes a while, so once)."""
        from torchvision.datasets import ImageFolder
        from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

        try:
            train = ImageFolder(str(self._root / "train")).samples
        except FileNotFoundError as exc:
            raise NasEngineError(f"cannot read {self._root / 'train'} as an ImageFolder: {exc}") from None
        class_to_idx = {name: index for index, name in enumerate(self.class_names)}
        val_dir = self._root / "val"
        unknown = sorted(entry.name for entry in val_dir.iterdir() if entry.is_dir() and entry.name not in class_to_idx)
        if unknown:
            raise NasEngineError(
                f"{val_dir} has classes missing from train/: {', '.join(unknown[:5])}; "
                "the two folders must name the same classes"
            )
        val = make_dataset(str(val_dir), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
        if not val:
            raise NasEngineError(f"{val_dir} holds no images; the imagenet task expects val/<class>/*.JPEG")
        return {"train": train, "val": val}

    def _indices(self, split: str) -> tuple[list[tuple[str, int]], torch.Tensor]:
        self._check_split(split)
        if split == "test":
            val = self._samples["val"]
            return val, subset(len(val), self.test_size, self.split_seed)
        train = self._samples["train"]
        return train, hold_out(
            len(train), self.search_size, self.calib_size, self.split_seed, str(self._root / "train")
        )[split]

    def dataset(self, split: str, *, train: bool) -> Dataset:
        from torchvision import transforms as T

        samples, indices = self._indices(split)
        if train:
            transform = T.Compose(
                [
                    T.RandomResizedCrop(self.image_size),
                    T.RandomHorizontalFlip(),
                    T.ColorJitter(0.4, 0.4, 0.4),
                    T.ToTensor(),
                ]
            )
        else:
            transform = T.Compose(
                [T.Resize(round(self.image_size * 256 / 224)), T.CenterCrop(self.image_size), T.ToTensor()]
            )
        return _ImageFiles(samples, indices, transform)

    def _labels(self, split: str) -> torch.Tensor:
        samples, indices = self._indices(split)
        return torch.tensor([samples[i][1] for i in indices.tolist()], dtype=torch.long)
