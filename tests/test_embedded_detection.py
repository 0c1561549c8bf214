"""The embedded detection data: exact boxes, determinism, valid COCO and VOC, real photographs, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from nasengine.tasks import embedded_detection as ed
from nasengine.tasks.fashion_mnist import CLASS_NAMES

SMALL = {"canvas_size": 96, "num_train": 6, "num_test": 3}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NASENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def small_root(cache) -> Path:
    return ed.ensure_embedded_detection_data(**SMALL)


def tight_box(mask: np.ndarray) -> list[int]:
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]


@pytest.mark.parametrize("split", ["train", "test"])
def test_boxes_are_tight_boxes_of_visible_pasted_pixels(split):
    counts = []
    for index in range(80):
        generated = ed.generate_image(split, index)
        image, background = generated.image.astype(int), generated.background.astype(int)
        size = ed.CANVAS_SIZE
        assert image.shape == (size, size, 3) and 1 <= len(generated.objects) <= 3
        counts.append(len(generated.objects))
        union = np.zeros((size, size), dtype=int)
        for obj in generated.objects:
            assert 1 <= obj.category_id <= 10 and obj.mask.any()
            assert obj.bbox == tight_box(obj.mask)
            x, y, w, h = obj.bbox
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
            changed = np.any(image != background, axis=2)[obj.mask].mean()
            assert changed > 0.8  # the visible pixels really show the pasted item
            union += obj.mask
        assert union.max() <= 1  # each pixel shows at most one object
        assert np.array_equal(image[union == 0], background[union == 0])  # nothing pasted outside the masks
    assert set(counts) == {1, 2, 3}


def test_generation_is_deterministic(tmp_path, monkeypatch):
    def generate(folder: str, seed: int = 0) -> Path:
        monkeypatch.setenv("NASENGINE_CACHE", str(tmp_path / folder))
        return ed.ensure_embedded_detection_data(**SMALL, seed=seed)

    first, second, other = generate("a"), generate("b"), generate("c", seed=1)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    annotations = "coco/annotations/instances_train.json"
    assert (first / annotations).read_bytes() != (other / annotations).read_bytes()


def test_coco_annotations_load_and_match_generation(small_root):
    for split, count in (("train", SMALL["num_train"]), ("test", SMALL["num_test"])):
        coco = COCO(str(small_root / "coco" / "annotations" / f"instances_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASS_NAMES
        assert sorted(coco.getCatIds()) == list(range(1, 11))
        assert len(coco.getImgIds()) == count
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            picture = Image.open(small_root / "coco" / split / info["file_name"])
            assert picture.size == (info["width"], info["height"]) == (96, 96)
            generated = ed.generate_image(split, image_id - 1, canvas_size=96)
            assert np.array_equal(np.asarray(picture), generated.image)
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert [a["bbox"] for a in annotations] == [o.bbox for o in generated.objects]
            assert [a["category_id"] for a in annotations] == [o.category_id for o in generated.objects]
            assert all(a["iscrowd"] == 0 and a["area"] == o.mask.sum() for a, o in zip(annotations, generated.objects))


def test_voc_annotations_match_coco(small_root):
    voc = small_root / "voc"
    for split in ("train", "test"):
        coco = json.loads((small_root / "coco" / "annotations" / f"instances_{split}.json").read_text())
        stems = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        assert [f"{stem}.png" for stem in stems] == [image["file_name"] for image in coco["images"]]
        for image in coco["images"]:
            stem = image["file_name"].removesuffix(".png")
            root = ElementTree.parse(voc / "Annotations" / f"{stem}.xml").getroot()
            assert root.findtext("filename") == f"{stem}.jpg"
            assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (96, 96)
            assert Image.open(voc / "JPEGImages" / f"{stem}.jpg").size == (96, 96)
            expected = [
                (CLASS_NAMES[a["category_id"] - 1], a["bbox"])
                for a in coco["annotations"]
                if a["image_id"] == image["id"]
            ]
            found = []
            for obj in root.iter("object"):
                box = [int(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")]
                assert obj.findtext("difficult") == "0"
                found.append((obj.findtext("name"), [box[0] - 1, box[1] - 1, box[2] - box[0] + 1, box[3] - box[1] + 1]))
            assert found == expected


def neighbour_correlation(image: np.ndarray) -> float:
    grey = image.astype(float).mean(axis=2)
    return float(np.corrcoef(grey[:, :-1].ravel(), grey[:, 1:].ravel())[0, 1])


def test_sources_are_real_photographs():
    import skimage.data

    photos = ed.photos()
    assert len(photos) == len(ed.PHOTOS) >= 9
    for name, photo in zip(ed.PHOTOS, photos):
        assert photo.ndim == 3 and min(photo.shape[:2]) >= 256 and photo.std() > 10, name
        assert neighbour_correlation(photo) > 0.5, name  # natural images; noise would be near 0
    assert np.array_equal(photos[0], skimage.data.astronaut())
    backgrounds = [ed.generate_image("train", i).background for i in range(20)]
    assert np.median([neighbour_correlation(b) for b in backgrounds]) > 0.8


def test_complete_data_is_reused_and_incomplete_data_replaced(cache, monkeypatch):
    root = cache / "embedded-detection" / f"v{ed.VERSION}-96px-6+3-seed0"
    root.mkdir(parents=True)
    (root / "junk.txt").write_text("left by something else")  # no DONE marker: not a dataset
    assert ed.ensure_embedded_detection_data(**SMALL) == root
    assert (root / "DONE").exists() and not (root / "junk.txt").exists()

    def fail(*args, **kwargs):
        raise AssertionError("complete data must not be generated again")

    monkeypatch.setattr(ed, "_write", fail)
    assert ed.ensure_embedded_detection_data(**SMALL) == root


def test_interrupted_generation_leaves_nothing(cache, monkeypatch):
    calls = []

    def interrupted(split, index, canvas_size, seed):
        calls.append(index)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(split, index, canvas_size, seed)

    original = ed.generate_image
    monkeypatch.setattr(ed, "generate_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ed.ensure_embedded_detection_data(**SMALL)
    assert list((cache / "embedded-detection").iterdir()) == []
