"""The four detection tasks: models on supernet paths and standalone networks, loss, COCOeval metrics, options."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.tasks import embedded_detection
from nasengine.tasks.coco_metrics import METRICS, coco_metrics, detections_to_results

TASKS = ("coco-fpn", "coco-retinanet", "voc-fpn", "voc-retinanet")
TINY_DATA = {"canvas_size": 64, "num_train": 16, "num_test": 6}
TINY = {
    "min_size": 64,
    "max_size": 64,
    "fpn_channels": 32,
    "batch_size": 2,
    "search_size": 4,
    "calib_size": 2,
    "test_size": 4,
}
TINY_FPN = {"proposals_per_image": 20, "rois_per_image": 16}


@pytest.fixture(scope="module", autouse=True)
def tiny_embedded_data(tmp_path_factory):
    """The tasks' embedded data (``data_root=None``), generated small into a private cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NASENGINE_CACHE", str(tmp_path_factory.mktemp("cache")))
        root = embedded_detection.ensure_embedded_detection_data(**TINY_DATA)
        patch.setattr(
            embedded_detection,
            "ensure_embedded_detection_data",
            functools.partial(embedded_detection.ensure_embedded_detection_data, **TINY_DATA),
        )
        yield root


def make_task(name: str, **options):
    extra = TINY_FPN if name.endswith("fpn") else {}
    return registry.create("task", name, **{**TINY, **extra, **options})


@pytest.fixture(scope="module")
def space():
    return registry.create("space", "shufflenet-small")


def random_arch(space, seed: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(int(torch.randint(n, (), generator=generator)) for n in space.choices)


@pytest.mark.parametrize("backbone_kind", ["supernet", "standalone"])
@pytest.mark.parametrize("name", TASKS)
def test_a_training_step_and_evaluation(name, backbone_kind, space):
    torch.manual_seed(0)
    task = make_task(name)
    arch = random_arch(space, seed=len(name))
    if backbone_kind == "supernet":
        backbone = space.build_supernet()
        backbone.activate(arch)
    else:
        backbone = space.build_network(arch)
    model = task.build_model(backbone, space.out_channels).to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=task.base_lr * 2 / task.base_batch_size, momentum=0.9)
    images, targets = batch = next(iter(task.loader("train", train=True, batch_size=2)))
    assert len(images) == len(targets) == 2 and images[0].shape[0] == 3
    loss = task.loss(model, batch)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    optimizer.step()
    assert math.isfinite(task.loss(model, batch).item())

    metrics = task.evaluate(model, task.loader("test", train=False, batch_size=2))
    assert set(metrics) == {*METRICS, "score"} and all(0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics["score"] == metrics["AP50" if name.startswith("voc") else "AP"]
    assert model.training


def test_task_attributes_and_options_rebuild_the_task():
    for name in TASKS:
        task = make_task(name)
        cls = type(task)
        assert (
            cls.kind == "detection"
            and cls.base_batch_size == 16
            and task.splits == ("train", "search", "test", "calib")
        )
        assert cls.base_lr == (0.02 if name.endswith("fpn") else 0.01)
        assert "\n" not in cls.description and cls.name == name
        assert cls(**task.options()).options() == task.options()
        assert len(task.class_names) == 10
    assert make_task("coco-retinanet").score_thresh < make_task("coco-fpn").score_thresh


def test_defaults_follow_the_data():
    embedded = registry.get("task", "coco-fpn")()
    user = registry.get("task", "voc-fpn")(data_root="/nonexistent")  # nothing is read on construction
    assert (embedded.min_size, embedded.max_size, embedded.fpn_channels, embedded.batch_size) == (64, 64, 32, 8)
    assert (user.min_size, user.max_size, user.anchor_sizes, user.fpn_channels) == (
        800,
        1333,
        [32, 64, 128, 256, 512],
        256,
    )
    assert (user.search_size, user.calib_size, user.batch_size, user.train_set, user.test_set) == (
        5000,
        500,
        2,
        "trainval",
        "test",
    )
    coco = registry.get("task", "coco-fpn")(data_root="/nonexistent")
    assert (coco.train_images, coco.test_annotations) == ("train2017", "annotations/instances_val2017.json")
    with pytest.raises(NasEngineError, match="data root /nonexistent"):
        user.dataset("train", train=False)


def test_bad_options_are_one_line_errors(space):
    with pytest.raises(NasEngineError, match="min_size must be an integer"):
        make_task("coco-fpn", min_size="big")
    with pytest.raises(NasEngineError, match="anchor_sizes needs 5 sizes"):
        make_task("coco-fpn", anchor_sizes=[8, 16, 32, 64]).build_model(space.build_supernet(), space.out_channels)
    with pytest.raises(NasEngineError, match="task 'coco-retinanet' has no option 'rois_per_image'; its options: "):
        make_task("coco-retinanet", rois_per_image=8)  # a Faster R-CNN option, declared by coco-fpn only


def test_no_detections_give_zero_metrics(space):
    task = make_task("coco-fpn", score_thresh=1.0)
    backbone = space.build_supernet()
    backbone.activate(random_arch(space, 0))
    model = task.build_model(backbone, space.out_channels)
    metrics = task.evaluate(model, task.loader("search", train=False))
    assert metrics == dict.fromkeys((*METRICS, "score"), 0.0)


def ground_truth_results(task, split: str, shift: float = 0.0) -> tuple[list[dict], list[int]]:
    data = task.dataset(split, train=False)
    results, ids = [], []
    for _, target in data:
        boxes = target["boxes"].clone()
        boxes[:, 0::2] += shift * (boxes[:, 2:3] - boxes[:, 0:1])
        results += detections_to_results(
            boxes, torch.ones(len(boxes)), target["labels"], target["image_id"], data.category_ids
        )
        ids.append(target["image_id"])
    return results, ids


@pytest.mark.parametrize("name", ["coco-fpn", "voc-fpn"])
def test_cocoeval_of_ground_truth_is_one_and_shifted_boxes_lower(name):
    task = make_task(name)
    coco = task.dataset("test", train=False).coco
    results, ids = ground_truth_results(task, "test")
    perfect = coco_metrics(coco, results, ids)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AP50"] == pytest.approx(1.0)
    shifted = coco_metrics(coco, ground_truth_results(task, "test", shift=0.3)[0], ids)
    assert shifted["AP"] < 0.9 and shifted["AP75"] < perfect["AP75"]
    assert coco_metrics(coco, [], ids) == dict.fromkeys(METRICS, 0.0)


def test_cocoeval_counts_only_the_given_images():
    task = make_task("coco-fpn", test_size=None)
    coco = task.dataset("test", train=False).coco
    results, ids = ground_truth_results(task, "test")
    half = ids[: len(ids) // 2]
    on_half = [r for r in results if r["image_id"] in half]
    assert coco_metrics(coco, on_half, half)["AP"] == pytest.approx(1.0)
    assert coco_metrics(coco, on_half, ids)["AP"] < 0.9


def test_train_flips_boxes_with_the_image():
    task = make_task("coco-fpn")
    plain = task.dataset("train", train=False)[0]
    flipped_data = task.dataset("train", train=True)
    torch.manual_seed(0)
    samples = [flipped_data[0] for _ in range(8)]
    flipped = next(s for s in samples if not torch.equal(s[0], plain[0]))
    width = plain[0].shape[-1]
    assert torch.equal(flipped[0], plain[0].flip(-1))
    expected = torch.stack(
        [
            width - plain[1]["boxes"][:, 2],
            plain[1]["boxes"][:, 1],
            width - plain[1]["boxes"][:, 0],
            plain[1]["boxes"][:, 3],
        ],
        dim=1,
    )
    assert torch.equal(flipped[1]["boxes"], expected) and torch.equal(flipped[1]["labels"], plain[1]["labels"])


def test_results_convert_boxes_and_labels_and_drop_background():
    results = detections_to_results(
        torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.0, 0.0, 5.0, 5.0]]),
        torch.tensor([0.9, 0.8]),
        torch.tensor([2, 0]),
        image_id=7,
        category_ids=[3, 9],
    )
    assert results == [{"image_id": 7, "category_id": 9, "bbox": [1.0, 2.0, 10.0, 20.0], "score": pytest.approx(0.9)}]


def _bn_statistics(model) -> list[torch.Tensor]:
    from nasengine.protocol.bn_calibration import batch_norms

    return [t.clone() for m in batch_norms(model) for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("name", ["coco-fpn", "voc-retinanet"])
def test_recalibration_stopping_after_the_backbone_gives_the_full_passes_statistics(name, space):
    from nasengine.protocol.bn_calibration import recalibrate_bn

    torch.manual_seed(0)
    task = make_task(name, calib_size=4)
    supernet = space.build_supernet()
    supernet.activate(random_arch(space, seed=3))
    model = task.build_model(supernet, space.out_channels)
    loader = task.loader("calib", train=False, batch_size=2)
    heads_run = []
    head = model.rpn if hasattr(model, "rpn") else model.head
    head.register_forward_hook(lambda *_: heads_run.append(1))

    assert recalibrate_bn(model, task, loader, seed=5) == 4
    full = _bn_statistics(model)
    assert len(heads_run) == 2  # the whole detector ran on both batches

    assert recalibrate_bn(model, task, loader, seed=5, stop_after=supernet) == 4
    assert len(heads_run) == 2  # the head was skipped
    assert all(torch.equal(a, b) for a, b in zip(full, _bn_statistics(model)))
    assert not supernet._forward_hooks and model.training  # nothing left behind

    # a BN layer outside the backbone: the forward pass must reach it, so nothing is skipped
    head.add_module("extra_norm", torch.nn.BatchNorm2d(1))
    recalibrate_bn(model, task, loader, seed=5, stop_after=supernet)
    assert len(heads_run) == 4
