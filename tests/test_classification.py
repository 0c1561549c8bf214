"""Classification tasks: Fashion-MNIST (real data) and ImageNet-style ImageFolder (a tiny folder written here)."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.tasks import fashion_mnist
from nasengine.tasks.classification import FashionMnistTask, ImageNetTask

ARCH = (2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2)


@pytest.fixture(scope="module")
def space():
    return registry.create("space", "shufflenet-small")


@pytest.fixture(scope="module")
def task() -> FashionMnistTask:
    return FashionMnistTask(search_size=300, calib_size=40, test_size=64, batch_size=16)


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_registered_and_cheap_to_construct():
    task = registry.create("task", "fashion-mnist", data_root="/nonexistent")  # nothing is read yet
    assert task.kind == "classification" and task.base_lr == 0.5 and task.base_batch_size == 1024
    assert task.class_names[0] == "T-shirt/top" and len(task.class_names) == 10
    assert registry.create("task", "fashion-mnist", **task.options()).options() == task.options()
    assert registry.get("task", "imagenet") is ImageNetTask


def test_supernet_training_step_changes_weights(task, space):
    supernet = space.build_supernet()
    supernet.activate(ARCH)
    model = task.build_model(supernet, space.out_channels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = snapshot(model)
    torch.manual_seed(0)
    batch = next(iter(task.loader("train", train=True)))
    assert batch[0].shape == (16, 3, 32, 32) and batch[1].dtype == torch.int64
    model.train()
    loss = task.loss(model, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert "head.fc.weight" in changed and "head.conv.weight" in changed
    assert any(name.startswith("backbone.") for name in changed)


def test_evaluate_standalone_network(task, space):
    model = task.build_model(space.build_network(ARCH), space.out_channels)
    metrics = task.evaluate(model, task.loader("test", train=False, batch_size=32))
    assert set(metrics) == {"top1", "top5", "loss", "score"}
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 100 and metrics["score"] == metrics["top1"]
    assert np.isfinite(metrics["loss"])
    assert model.training  # evaluate restores the mode it found


def test_splits_disjoint_deterministic_and_sized():
    def indices(seed: int) -> dict[str, set[int]]:
        task = FashionMnistTask(search_size=500, calib_size=50, test_size=100, split_seed=seed)
        return {split: set(task.dataset(split, train=False).indices.tolist()) for split in task.splits}

    first, again, other = indices(0), indices(0), indices(1)
    assert first == again and first["search"] != other["search"]
    assert len(first["search"]) == 500 and len(first["calib"]) == 50 and len(first["test"]) == 100
    assert len(first["train"]) == 60_000 - 500
    assert not first["search"] & first["train"]
    assert first["calib"] <= first["train"]


def test_split_stats_counts_classes(task):
    stats = task.split_stats("search")
    assert stats["images"] == 300 == sum(stats[name] for name in task.class_names)
    assert task.split_stats("test")["images"] == 64


def test_images_and_augmentation(task):
    raw, _ = fashion_mnist.read_split(task._folder, "train")
    plain = task.dataset("train", train=False)
    image, label = plain[0]
    source = int(plain.indices[0])
    assert image.shape == (3, 32, 32) and image.min() >= 0 and image.max() <= 1
    assert torch.equal(image[0, 2:30, 2:30], torch.from_numpy(raw[source].astype(np.float32)) / 255)
    assert torch.equal(image[1], image[0]) and image[0, :2].abs().sum() == 0
    augmented = task.dataset("train", train=True)
    torch.manual_seed(3)
    first = augmented.__getitems__(list(range(32)))
    torch.manual_seed(3)
    second = augmented.__getitems__(list(range(32)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
    for (shifted, _), index in zip(first, range(32)):
        padded = torch.nn.functional.pad(plain[index][0], (4, 4, 4, 4))
        crops = [padded[:, y : y + 32, x : x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(shifted, crop) or torch.equal(shifted, crop.flip(-1)) for crop in crops)
    assert sum(not torch.equal(a[0], plain[i][0]) for i, a in enumerate(first)) > 16


def test_bad_data_root_names_the_fix(tmp_path):
    with pytest.raises(NasEngineError) as excinfo:
        FashionMnistTask(data_root=str(tmp_path)).dataset("train", train=True)
    message = one_line_error(excinfo)
    assert str(tmp_path) in message and "--data-root" in message and "apt-get install dataset-fashion-mnist" in message


def test_nothing_found_and_download_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "missing")
    monkeypatch.setenv("NASENGINE_CACHE", str(tmp_path / "cache"))

    def offline(folder):
        raise OSError("network unreachable")

    monkeypatch.setattr(fashion_mnist, "_download", offline)
    with pytest.raises(NasEngineError) as excinfo:
        fashion_mnist.find_fashion_mnist()
    message = one_line_error(excinfo)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root" in message


def test_corrupt_idx_file_is_named(tmp_path):
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(fashion_mnist.SYSTEM_DIR / name, tmp_path / name)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(100)))  # a labels header where images belong
    with pytest.raises(NasEngineError) as excinfo:
        FashionMnistTask(data_root=str(tmp_path)).dataset("train", train=False)
    assert str(bad) in one_line_error(excinfo) and "0x00000803" in str(excinfo.value)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(NasEngineError) as excinfo:
        FashionMnistTask(data_root=str(tmp_path)).dataset("train", train=False)
    assert str(bad) in one_line_error(excinfo)


def test_split_sizes_are_checked(tmp_path):
    with pytest.raises(NasEngineError, match="search_size"):
        FashionMnistTask(search_size=60_000).dataset("train", train=True)


def write_image_folder(root, classes=("cat", "dog", "fox"), train_per_class=6, val_per_class=2):
    rng = np.random.default_rng(0)
    for part, count in (("train", train_per_class), ("val", val_per_class)):
        for index, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True)
            for k in range(count):
                colour = np.zeros((40, 48, 3), np.uint8)
                colour[..., index] = 200
                noisy = np.clip(colour + rng.integers(0, 40, colour.shape), 0, 255).astype(np.uint8)
                Image.fromarray(noisy).save(folder / f"{k}.png")


def test_imagenet_folder_trains_and_evaluates(tmp_path, space):
    write_image_folder(tmp_path)
    task = ImageNetTask(data_root=str(tmp_path), image_size=32, search_size=3, calib_size=4, batch_size=4)
    assert task.class_names == ["cat", "dog", "fox"]
    assert len(task.dataset("train", train=True)) == 15 and len(task.dataset("test", train=False)) == 6
    assert task.split_stats("test") == {"images": 6, "cat": 2, "dog": 2, "fox": 2}
    model = task.build_model(space.build_network(ARCH), space.out_channels)
    torch.manual_seed(0)
    images, labels = next(iter(task.loader("train", train=True)))
    assert images.shape == (4, 3, 32, 32)
    loss = task.loss(model, (images, labels))
    loss.backward()
    assert torch.isfinite(loss)
    metrics = task.evaluate(model, task.loader("test", train=False))
    assert metrics["score"] == metrics["top1"] and 0 <= metrics["top1"] <= metrics["top5"] <= 100


def test_imagenet_missing_data_is_one_line(tmp_path):
    with pytest.raises(NasEngineError) as excinfo:
        ImageNetTask().dataset("train", train=True)
    assert "--data-root" in one_line_error(excinfo)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(NasEngineError) as excinfo:
        ImageNetTask(data_root=str(tmp_path)).dataset("train", train=True)
    assert "val/" in one_line_error(excinfo)
