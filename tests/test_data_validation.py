"""``check_data`` of the detection tasks: every image decoded once (cached), and the one-line errors it adds."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from test_coco_data import annotation, coco_task, embedded_root, voc_copy, write_coco  # noqa: F401 (a fixture)

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.tasks import coco_data, embedded_detection
from nasengine.tasks.detection import VocFpnTask

XYXY = [[4, 6, 20, 28], [10, 12, 30, 30], [16, 2, 28, 14], [3, 18, 14, 31], [20, 20, 31, 29], [1, 1, 9, 9]]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """A fresh nasengine cache per test, so the image-check cache starts empty."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NASENGINE_CACHE", str(cache))
    return cache


@pytest.fixture
def decoded(monkeypatch) -> list[Path]:
    """The paths ``coco_data.decode`` is called with, in order."""
    calls: list[Path] = []
    real = coco_data.decode

    def counting(path: Path) -> str | None:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(coco_data, "decode", counting)
    return calls


def check_error(task) -> str:
    with pytest.raises(NasEngineError) as info:
        task.check_data()
    message = str(info.value)
    assert "\n" not in message
    return message


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


EMBEDDED_CLASSES = sorted(category["name"] for category in embedded_detection.CATEGORIES)


def voc_task(root: Path, **options) -> VocFpnTask:
    options = {"classes": EMBEDDED_CLASSES, **options}
    return VocFpnTask(data_root=str(root), train_set="train", search_size=0, calib_size=1, **options)


def voc_xml(root: Path, image_set: str = "train") -> list[Path]:
    ids = (root / "ImageSets" / "Main" / f"{image_set}.txt").read_text().split()
    return [root / "Annotations" / f"{image_id}.xml" for image_id in ids]


# --- images are decoded, not just opened ----------------------------------------------------------
def test_truncated_png_passes_loading_but_not_check_data(tmp_path):
    root = write_coco(tmp_path / "coco", [annotation(1, [2, 3, 10, 12])])
    path = root / "train" / "1.png"
    truncate(path)
    task = coco_task(root)
    task.dataset("train", train=False)  # the header is intact: loading alone does not see it
    message = check_error(task)
    assert str(path) in message and "cannot be decoded" in message and "truncated" in message
    assert "re-export or remove it" in message
    assert "cannot be decoded" in check_error(coco_task(root))  # a failure is not cached


def test_truncated_voc_jpeg_is_named(embedded_root, tmp_path):
    root = voc_copy(embedded_root, tmp_path)
    first = (root / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    path = root / "JPEGImages" / f"{first}.jpg"
    truncate(path)
    message = check_error(voc_task(root))
    assert str(path) in message and "cannot be decoded" in message and "OSError" in message


def test_the_cache_skips_decoding_on_later_calls(tmp_path, decoded, private_cache):
    root = write_coco(tmp_path / "coco", [annotation(1, [2, 3, 10, 12]), annotation(2, [1, 1, 5, 5], image_id=2)])
    coco_task(root).check_data()
    assert sorted(decoded) == sorted(root / split / f"{i}.png" for split in ("train", "test") for i in (1, 2))
    assert len(list((private_cache / "image-check").glob("*.json"))) == 2  # one file per image folder
    decoded.clear()
    coco_task(root).check_data()
    assert decoded == []


def test_a_changed_image_is_decoded_again(tmp_path, decoded):
    root = write_coco(tmp_path / "coco", [annotation(1, [2, 3, 10, 12]), annotation(2, [1, 1, 5, 5], image_id=2)])
    coco_task(root).check_data()
    path = root / "train" / "1.png"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same bytes, newer mtime
    decoded.clear()
    coco_task(root).check_data()
    assert decoded == [path]
    truncate(path)  # and a changed size: decoded again, and now refused
    message = check_error(coco_task(root))
    assert str(path) in message and "cannot be decoded" in message


@pytest.mark.parametrize("name", ["coco-fpn", "voc-fpn"])
def test_the_embedded_default_data_passes(embedded_root, monkeypatch, decoded, name):
    monkeypatch.setattr(embedded_detection, "ensure_embedded_detection_data", lambda *args, **kwargs: embedded_root)
    task = registry.create("task", name, search_size=4, calib_size=2, test_size=4)
    task.check_data()
    assert len(decoded) == 16 + 4  # every training image (train + search) and the test subset
    decoded.clear()
    registry.create("task", name, search_size=4, calib_size=2, test_size=4).check_data()
    assert decoded == []


# --- annotations ---------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_a_coco_file_without_annotations_is_refused(tmp_path, split):
    root = write_coco(tmp_path / "coco", [annotation(1, [2, 3, 10, 12])])
    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    data["annotations"] = []
    path.write_text(json.dumps(data))
    message = check_error(coco_task(root))
    assert str(path) in message and "'annotations' is empty" in message and "needs at least one box" in message


def test_a_coco_file_with_no_usable_box_is_refused(tmp_path):
    root = write_coco(tmp_path / "coco", [annotation(1, [32.5, 4, 0.5, 5]), annotation(2, [2, 2, 0, 5])])
    message = check_error(coco_task(root))
    assert "instances_train.json" in message and "no box is left" in message


def test_corner_boxes_written_as_coco_boxes_are_refused(tmp_path):
    boxes = [annotation(i, box, image_id=1 + i % 2) for i, box in enumerate(XYXY, start=1)]
    root = write_coco(tmp_path / "coco", boxes)
    message = check_error(coco_task(root))
    assert "instances_train.json" in message and "5 of 6 boxes extend past their image" in message
    assert "annotation 1" in message and "[x0, y0, x1, y1] written instead" in message


def test_one_box_past_the_edge_among_many_is_named(tmp_path):
    inside = [[2, 2, 10, 10], [5, 5, 20, 20], [0, 0, 31, 31], [12, 3, 6, 9], [-0.5, -1, 32.5, 33], [1, 1, 4, 4]]
    boxes = [annotation(i, box) for i, box in enumerate([*inside, [25, 2, 10, 10]], start=1)]
    message = check_error(coco_task(write_coco(tmp_path / "coco", boxes)))
    assert "instances_train.json: annotation 7 has a box [25, 2, 10, 10] that passes the edge of its 32x32" in message
    task = coco_task(write_coco(tmp_path / "inside", [annotation(i, box) for i, box in enumerate(inside, start=1)]))
    task.check_data()  # within the 1-px tolerance: clipped
    boxes = task.dataset("train", train=False)[0][1]["boxes"]
    assert boxes.max() <= 32 and boxes.min() >= 0 and len(boxes) == 6


def _set_first_object(path: Path, **fields: str) -> None:
    """Change fields (``name``, ``xmax``, ``width``, ...) of the first object (or of ``<size>``) of a VOC XML."""
    text = path.read_text()
    for field, value in fields.items():
        start = text.index(f"<{field}>") + len(field) + 2
        text = text[:start] + value + text[text.index(f"</{field}>", start) :]
    path.write_text(text)


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"xmax": "930"}, "passes the edge of its 64x64 image"),
        ({"ymin": "-5"}, "passes the edge of its 64x64 image"),
        ({"width": "0"}, "is declared 0x64 but the file is 64x64"),
        ({"width": "640", "height": "480"}, "is declared 640x480 but the file is 64x64"),
    ],
)
def test_voc_boxes_and_sizes_that_do_not_fit_the_image_are_refused(embedded_root, tmp_path, fields, expected):
    root = voc_copy(embedded_root, tmp_path)
    _set_first_object(voc_xml(root)[0], **fields)
    message = check_error(voc_task(root))
    assert str(root / "ImageSets" / "Main" / "train.txt") in message and expected in message


def test_a_voc_object_of_an_unknown_class_is_refused(embedded_root, tmp_path):
    root = voc_copy(embedded_root, tmp_path)
    path = voc_xml(root)[0]
    _set_first_object(path, name="Zebra")
    message = check_error(voc_task(root))
    assert f"{path}: object 1 is a 'Zebra', not one of task_options.classes" in message


def test_voc_classes_must_be_named_unless_they_are_vocs(embedded_root, tmp_path):
    root = voc_copy(embedded_root, tmp_path)
    message = check_error(voc_task(root, classes=None))
    assert f"{root}: its objects are not all of the 20 VOC classes; they are of 10 classes (" in message
    hint = message.split("--set task_options.")[1]
    key, value = hint.split("=", 1)
    assert key == "classes" and sorted(shlex.split(value)[0].split(",")) == EMBEDDED_CLASSES
    voc_task(root, classes=shlex.split(value)[0]).check_data()  # the hint, followed
    _set_first_object(voc_xml(root)[0], name="Zebra")  # a misspelt name stands out by its count
    assert "Zebra x1" in check_error(voc_task(root, classes=None))


def test_a_voc_set_without_objects_names_the_set_file(embedded_root, tmp_path):
    root = voc_copy(embedded_root, tmp_path)
    for path in voc_xml(root):
        path.write_text("<annotation><filename>x.jpg</filename></annotation>")
    message = check_error(voc_task(root))
    assert str(root / "ImageSets" / "Main" / "train.txt") in message and "needs at least one box" in message


@pytest.mark.parametrize(
    "declaration",
    [
        '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>',
        '<!DOCTYPE annotation SYSTEM "file:///etc/passwd">',
    ],
)
def test_voc_xml_declaring_entities_is_refused_before_parsing(embedded_root, tmp_path, monkeypatch, declaration):
    root = voc_copy(embedded_root, tmp_path)
    path = voc_xml(root)[0]
    path.write_text(
        f'<?xml version="1.0"?>\n{declaration}\n<annotation><object><name>&lol2;</name></object></annotation>'
    )
    monkeypatch.setattr("nasengine.tasks.voc_data.ET.fromstring", lambda *args: pytest.fail("parsed"))
    message = check_error(voc_task(root))
    assert str(path) in message and "must not declare entities" in message


def test_utf16_voc_xml_declaring_entities_is_refused(embedded_root, tmp_path):
    root = voc_copy(embedded_root, tmp_path)
    path = voc_xml(root)[0]
    path.write_bytes(
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "y">]><annotation/>'.encode("utf-16")
    )
    assert "must not declare entities" in check_error(voc_task(root))
