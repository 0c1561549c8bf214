"""Detection data: COCO/VOC reading, one-line errors for bad input, the four splits and their statistics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasengine.errors import NasEngineError
from nasengine.tasks import embedded_detection
from nasengine.tasks.coco_data import DetectionSplits, load_coco
from nasengine.tasks.detection import CocoFpnTask, VocFpnTask
from nasengine.tasks.voc_data import VocReader

TINY = {"canvas_size": 64, "num_train": 16, "num_test": 6}
SPLIT_OPTIONS = {"search_size": 4, "calib_size": 3}
FILES = {
    "train_images": "train",
    "train_annotations": "annotations/instances_train.json",
    "test_images": "test",
    "test_annotations": "annotations/instances_test.json",
}


@pytest.fixture(scope="module")
def embedded_root(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NASENGINE_CACHE", str(tmp_path_factory.mktemp("cache")))
        return embedded_detection.ensure_embedded_detection_data(**TINY)


def write_coco(root: Path, annotations: list[dict], *, images: int = 2, size: int = 32) -> Path:
    """A COCO root with ``images`` random ``size``-px PNGs in ``train``/``test`` and the same annotations in both."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (root / split).mkdir(exist_ok=True)
        entries = []
        for i in range(1, images + 1):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
            entries.append({"id": i, "file_name": f"{i}.png"})
        data = {
            "images": entries,
            "annotations": annotations,
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def annotation(id_: int, bbox: list[float], category_id: int = 3, image_id: int = 1) -> dict:
    return {"id": id_, "image_id": image_id, "category_id": category_id, "bbox": bbox}


def coco_task(root: Path, **options) -> CocoFpnTask:
    return CocoFpnTask(data_root=str(root), search_size=0, calib_size=1, min_size=32, max_size=32, **FILES, **options)


def load_error(task) -> str:
    with pytest.raises(NasEngineError) as info:
        task.dataset("train", train=False)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- reading and checking ------------------------------------------------------------------------
def test_a_good_coco_root_loads_with_contiguous_labels(tmp_path):
    root = write_coco(tmp_path, [annotation(1, [2, 3, 10, 12]), annotation(2, [0, 0, 5, 5], category_id=7, image_id=2)])
    task = coco_task(root)
    assert task.class_names == ["cat", "dog"]
    image, target = task.dataset("train", train=False)[0]
    assert image.shape == (3, 32, 32) and image.dtype.is_floating_point and 0 <= image.min() and image.max() <= 1
    assert target["boxes"].tolist() == [[2, 3, 12, 15]] and target["labels"].tolist() == [1] and target["image_id"] == 1
    assert task.dataset("train", train=False)[1][1]["labels"].tolist() == [2]


def test_missing_image_file_is_named(tmp_path):
    root = write_coco(tmp_path, [annotation(1, [2, 3, 10, 12])])
    (root / "train" / "2.png").unlink()
    message = load_error(coco_task(root))
    assert str(root / "train" / "2.png") in message and "does not exist" in message


def test_image_pil_cannot_read_is_named(tmp_path):
    root = write_coco(tmp_path, [annotation(1, [2, 3, 10, 12])])
    (root / "train" / "1.png").write_bytes(b"not an image at all")
    message = load_error(coco_task(root))
    assert str(root / "train" / "1.png") in message and "cannot be read" in message


@pytest.mark.parametrize(
    "break_it, field",
    [
        (lambda d: d.pop("annotations"), "'annotations'"),
        (lambda d: d["images"][0].pop("file_name"), "'file_name'"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "'bbox' of annotation 1"),
        (lambda d: d["categories"][0].update(id="three"), "'id' of categories[0]"),
    ],
)
def test_json_that_is_not_coco_names_file_and_field(tmp_path, break_it, field):
    root = write_coco(tmp_path, [annotation(1, [2, 3, 10, 12])])
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    break_it(data)
    path.write_text(json.dumps(data))
    message = load_error(coco_task(root))
    assert str(path) in message and field in message


def test_invalid_json_names_the_file(tmp_path):
    root = write_coco(tmp_path, [])
    path = root / "annotations" / "instances_train.json"
    path.write_text("{not json")
    message = load_error(coco_task(root))
    assert str(path) in message and "not valid JSON" in message


def test_negative_box_names_annotation_and_file(tmp_path):
    root = write_coco(tmp_path, [annotation(1, [2, 3, 10, 12]), annotation(42, [20, 20, -5, 4])])
    message = load_error(coco_task(root))
    assert "annotation 42" in message and "negative" in message and "instances_train.json" in message


def test_unknown_category_names_annotation_category_and_file(tmp_path):
    root = write_coco(tmp_path, [annotation(5, [2, 3, 10, 12], category_id=99)])
    message = load_error(coco_task(root))
    assert "annotation 5" in message and "category id 99" in message and "instances_train.json" in message


def test_empty_boxes_are_dropped_with_one_warning(tmp_path, capsys):
    root = write_coco(
        tmp_path,
        [
            annotation(1, [2, 3, 10, 12]),
            annotation(2, [5, 5, 0, 4]),
            annotation(3, [32.5, 4, 0.5, 5]),  # inside the tolerance, but nothing of it on the image
            annotation(4, [1, 1, 3, 0], image_id=2),
        ],
    )
    collection = load_coco(root / "train", root / "annotations" / "instances_train.json")
    assert sorted(collection.coco.anns) == [1]
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert out.count("warning") == 1 and "dropped 3 empty boxes" in out


def test_boxes_within_the_tolerance_are_clipped_to_the_image(tmp_path):
    root = write_coco(tmp_path, [annotation(1, [-0.5, 20, 10, 12.75])])
    _, target = coco_task(root).dataset("train", train=False)[0]
    assert target["boxes"].tolist() == [[0, 20, 9.5, 32]]


@pytest.mark.parametrize("box", [[-4, 20, 10, 10], [2, -3, 5, 5], [20, 2, 30, 5], [2, 20, 5, 30]])
def test_a_box_past_the_image_edge_is_refused(tmp_path, box):
    root = write_coco(tmp_path, [annotation(1, [2, 3, 10, 12]), annotation(2, box)])
    with pytest.raises(NasEngineError, match=r"annotation 2 has a box .* passes the edge of its 32x32 image"):
        load_coco(root / "train", root / "annotations" / "instances_train.json")


def test_declared_image_sizes_must_be_the_files(tmp_path):
    root = write_coco(tmp_path, [annotation(1, [2, 3, 10, 12])])
    file = root / "annotations" / "instances_train.json"
    data = json.loads(file.read_text())
    data["images"][0].update(width=640, height=480)
    file.write_text(json.dumps(data))
    with pytest.raises(NasEngineError, match=r"image 1 .* is declared 640x480 but the file is 32x32"):
        load_coco(root / "train", file)
    data["images"][0].update(width=32, height=32)  # declared right: accepted
    file.write_text(json.dumps(data))
    load_coco(root / "train", file)


EMBEDDED_CLASSES = sorted(category["name"] for category in embedded_detection.CATEGORIES)


def voc_copy(embedded_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    shutil.copytree(embedded_root / "voc", root)
    return root


@pytest.mark.parametrize(
    "xml, field",
    [
        ("<annotation><object><name>Bag", "not well-formed"),
        ("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>", "<name>"),
        (
            "<annotation><object><name>Bag</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax></bndbox></object></annotation>",
            "<ymax>",
        ),
        (
            "<annotation><object><name>Bag</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
            "</object></annotation>",
            "<xmin>",
        ),
    ],
)
def test_malformed_voc_xml_names_file_and_field(embedded_root, tmp_path, xml, field):
    root = voc_copy(embedded_root, tmp_path)
    first = (root / "ImageSets" / "Main" / "train.txt").read_text().split()[0]
    path = root / "Annotations" / f"{first}.xml"
    path.write_text(xml)
    task = VocFpnTask(data_root=str(root), train_set="train", search_size=0, calib_size=1, classes=EMBEDDED_CLASSES)
    message = load_error(task)
    assert str(path) in message and field in message


def test_voc_reading_gives_the_coco_boxes(embedded_root):
    coco = load_coco(embedded_root / "coco" / "train", embedded_root / "coco" / "annotations" / "instances_train.json")
    voc = VocReader(embedded_root / "voc", ("train", "test"), EMBEDDED_CLASSES).collection("train")

    def boxes_by_file(collection) -> dict[str, list]:
        cats = collection.coco.cats
        return {
            Path(image["file_name"]).stem: sorted(
                (cats[a["category_id"]]["name"], [round(v, 6) for v in a["bbox"]])
                for a in collection.coco.imgToAnns[image_id]
            )
            for image_id, image in collection.coco.imgs.items()
        }

    from_coco, from_voc = boxes_by_file(coco), boxes_by_file(voc)
    assert len(from_coco) == TINY["num_train"] and from_coco == from_voc


# --- splits --------------------------------------------------------------------------------------
def splits(embedded_root: Path, **options) -> DetectionSplits:
    coco = embedded_root / "coco"
    return DetectionSplits(
        lambda: load_coco(coco / "train", coco / "annotations" / "instances_train.json"),
        lambda: load_coco(coco / "test", coco / "annotations" / "instances_test.json"),
        **{**SPLIT_OPTIONS, "test_size": None, "split_seed": 0, **options},
    )


def test_search_is_held_out_of_train_deterministically(embedded_root):
    first, again, other = splits(embedded_root), splits(embedded_root), splits(embedded_root, split_seed=1)
    train, search = set(first.image_ids("train")), set(first.image_ids("search"))
    assert len(search) == 4 and not train & search and len(train | search) == TINY["num_train"]
    assert first.image_ids("search") == again.image_ids("search")
    assert first.image_ids("search") != other.image_ids("search")
    calib = set(first.image_ids("calib"))
    assert len(calib) == 3 and calib <= train


def test_test_size_takes_a_seeded_subset_of_the_test_split(embedded_root):
    whole = splits(embedded_root).image_ids("test")
    part = splits(embedded_root, test_size=4)
    assert (
        len(whole) == TINY["num_test"]
        and len(part.image_ids("test")) == 4
        and set(part.image_ids("test")) <= set(whole)
    )
    assert part.image_ids("test") == splits(embedded_root, test_size=4).image_ids("test")
    assert len(part.dataset("test", train=False)) == 4 and sorted(part.ground_truth("test").imgs) == part.image_ids(
        "test"
    )


@pytest.mark.parametrize(
    "options, text",
    [
        ({"search_size": 16}, "16 training images: search_size=16"),
        ({"calib_size": 13}, "calib_size=13"),
        ({"test_size": 7}, "test_size=7 is larger than the 6 test images"),
    ],
)
def test_a_split_too_large_for_the_data_says_the_sizes(embedded_root, options, text):
    with pytest.raises(NasEngineError, match=text):
        s = splits(embedded_root, **options)
        s.image_ids("train"), s.image_ids("test")


def test_split_stats_count_annotations(embedded_root):
    data = json.loads((embedded_root / "coco" / "annotations" / "instances_test.json").read_text())
    task = CocoFpnTask(data_root=str(embedded_root / "coco"), **FILES, **SPLIT_OPTIONS)
    stats = task.split_stats("test")
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert stats["images"] == len(data["images"]) and stats["objects"] == len(data["annotations"])
    for category_id, name in names.items():
        assert stats[name] == sum(a["category_id"] == category_id for a in data["annotations"])
    train, search = task.split_stats("train"), task.split_stats("search")
    assert train["images"] + search["images"] == TINY["num_train"] and task.split_stats("calib")["images"] == 3
