"""The embedded default detection data: Fashion-MNIST items pasted onto crops of real photographs.

Each image is a crop of a photograph bundled in the scikit-image wheel (``skimage.data``) with one to
three items of the Fashion-MNIST *test* set (unseen in pre-training) pasted on it, scaled to several sizes
and tinted. An item's pixel intensity is its alpha and its mask is ``alpha > ALPHA_THRESHOLD``, so the
pasted pixels are exactly the mask's; a later item may cover an earlier one, but never more than half
of it, and every box is the tight box of the object's *visible* pixels. Train and test images draw
their items from disjoint halves of the Fashion-MNIST test set.

Everything follows from a seeded numpy generator per image, so the data is identical on every machine.
It is written once, as COCO and as Pascal VOC, into the nasengine cache::

    <root>/coco/{train,test}/*.png
    <root>/coco/annotations/instances_{train,test}.json
    <root>/voc/JPEGImages/*.jpg   <root>/voc/Annotations/*.xml   <root>/voc/ImageSets/Main/{train,test}.txt
    <root>/DONE
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from nasengine import console
from nasengine.cache import cache_dir
from nasengine.errors import NasEngineError
from nasengine.tasks import fashion_mnist

VERSION = 2  # 2: 64-px canvas, items of 20–40 px (30–60 % of a 64-px canvas side), one to three per image
CATEGORIES = [
    {"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(fashion_mnist.CLASS_NAMES)
]
# Photographs (and micrographs) that ship inside the scikit-image wheel; the synthetic ones
# (checkerboard, blobs, logo, ...) are left out, and so are those fetched from the network.
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "stereo_motorcycle",
    "camera",
    "coins",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "moon",
    "clock",
    "retina",
    "cell",
)
CANVAS_SIZE = 64  # side of the square images, in pixels
SPLITS = {"train": 0, "test": 1}  # also the half of the Fashion-MNIST test set each split draws items from
ALPHA_GAIN = 4.0  # intensity 64/255 and up is opaque, so dark clothes stay visible
ALPHA_THRESHOLD = 0.25
# Item side as a fraction of the canvas: 20–40 px at the default 64 px, the scale of the 28-px items the
# backbone is pre-trained on (framed at 32 px), so fine-tuning starts from features that fit the objects.
OBJECT_SIZES = (20 / 64, 40 / 64)
OBJECTS_PER_IMAGE = (1, 3)  # fewest and most items pasted on an image (fewer when one finds no room)
MIN_VISIBLE = 0.5  # every object keeps at least half of its mask pixels visible
PLACEMENT_TRIES = 20


@dataclass
class GeneratedObject:
    category_id: int
    mask: np.ndarray  # canvas-sized bool: the object's visible pasted pixels
    bbox: list[int]  # COCO [x, y, w, h] of ``mask``: columns x .. x + w - 1, rows y .. y + h - 1
    truncated: bool  # part of the item fell outside the canvas


@dataclass
class GeneratedImage:
    image: np.ndarray  # H×W×3 uint8
    background: np.ndarray  # the photo crop before pasting
    objects: list[GeneratedObject]


@lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """The bundled photographs as H×W×3 uint8 arrays (grey ones repeated over three channels)."""
    import skimage.data

    loaded = []
    for name in PHOTOS:
        try:
            photo = getattr(skimage.data, name)()
        except Exception as exc:  # a scikit-image build without the bundled file
            raise NasEngineError(
                f"scikit-image could not load its bundled photo {name!r} ({exc}); reinstall scikit-image"
            ) from None
        photo = photo[0] if isinstance(photo, tuple) else photo  # stereo_motorcycle: (left, right, disparity)
        photo = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3]
        loaded.append(np.ascontiguousarray(photo, dtype=np.uint8))
    return tuple(loaded)


@lru_cache(maxsize=1)
def _items() -> tuple[np.ndarray, np.ndarray]:
    """The Fashion-MNIST test images (N×28×28 uint8) and labels."""
    return fashion_mnist.read_split(fashion_mnist.find_fashion_mnist(), "t10k")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    photo = photos()[rng.integers(len(PHOTOS))]
    height, width = photo.shape[:2]
    side = int(rng.integers(min(height, width) // 3, min(height, width) + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
    crop = np.asarray(crop)
    return np.ascontiguousarray(crop[:, ::-1]) if rng.integers(2) else crop


def _item(rng: np.random.Generator, split: str, size: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``(category_id, alpha h×w, colour h×w×3)`` of a random item scaled and tinted; alpha is 0 off the mask."""
    images, labels = _items()
    half = len(images) // 2
    index = SPLITS[split] * half + int(rng.integers(half))
    side = math.exp(rng.uniform(math.log(OBJECT_SIZES[0] * size), math.log(OBJECT_SIZES[1] * size)))
    aspect = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    width, height = max(2, round(side * math.sqrt(aspect))), max(2, round(side / math.sqrt(aspect)))
    intensity = (
        np.asarray(Image.fromarray(images[index]).resize((width, height), Image.BILINEAR), dtype=np.float32) / 255
    )
    alpha = np.clip(intensity * ALPHA_GAIN, 0, 1)
    alpha[alpha <= ALPHA_THRESHOLD] = 0
    tint = rng.uniform(0.35, 1.0, 3).astype(np.float32)
    colour = 255 * tint / tint.max() * (0.3 + 0.7 * intensity[..., None])
    return int(labels[index]) + 1, alpha, colour


def generate_image(split: str, index: int, canvas_size: int = CANVAS_SIZE, seed: int = 0) -> GeneratedImage:
    """Image ``index`` of ``split`` ("train" or "test"), with its objects' visible masks and boxes."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    background = _background(rng, canvas_size)
    canvas = background.astype(np.float32)
    owner = np.full((canvas_size, canvas_size), -1, dtype=np.int32)  # which object each pixel shows
    full_sizes: list[int] = []
    categories: list[int] = []
    truncated: list[bool] = []
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        category, alpha, colour = _item(rng, split, canvas_size)
        height, width = alpha.shape
        mask = alpha > 0
        for _ in range(PLACEMENT_TRIES):
            # The first object lies fully inside the canvas; the others may stick out by a quarter.
            margin_x, margin_y = (0, 0) if not full_sizes else (width // 4, height // 4)
            left = int(rng.integers(-margin_x, canvas_size - width + margin_x + 1))
            top = int(rng.integers(-margin_y, canvas_size - height + margin_y + 1))
            placed = _place(mask, top, left, canvas_size)
            if placed is None:
                continue
            trial = np.where(placed, len(full_sizes), owner)
            counts = np.bincount(trial[trial >= 0].ravel(), minlength=len(full_sizes) + 1)
            if all(counts[k] >= MIN_VISIBLE * n for k, n in enumerate(full_sizes + [int(mask.sum())])):
                break
        else:
            continue  # no room for this item: the image gets one object fewer
        owner = trial
        rows = slice(max(top, 0), min(top + height, canvas_size))
        cols = slice(max(left, 0), min(left + width, canvas_size))
        inner = (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
        a = alpha[inner][..., None]
        canvas[rows, cols] = canvas[rows, cols] * (1 - a) + colour[inner] * a
        full_sizes.append(int(mask.sum()))
        categories.append(category)
        truncated.append(int(placed.sum()) < full_sizes[-1])
    objects = []
    for k, category in enumerate(categories):
        visible = owner == k
        ys, xs = np.nonzero(visible)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        objects.append(GeneratedObject(category, visible, bbox, truncated[k]))
    return GeneratedImage(np.round(canvas).clip(0, 255).astype(np.uint8), background, objects)


def _place(mask: np.ndarray, top: int, left: int, size: int) -> np.ndarray | None:
    """``mask`` placed at ``(top, left)`` on a ``size``² canvas (clipped); None when nothing lands on it."""
    placed = np.zeros((size, size), dtype=bool)
    height, width = mask.shape
    rows = slice(max(top, 0), min(top + height, size))
    cols = slice(max(left, 0), min(left + width, size))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return None
    placed[rows, cols] = mask[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return placed if placed.any() else None


def _voc_xml(file_name: str, size: int, objects: list[GeneratedObject]) -> bytes:
    """Pascal VOC annotation: 1-based inclusive pixel coordinates, so xmin = x + 1 and xmax = x + w."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "folder").text = "JPEGImages"
    ElementTree.SubElement(root, "filename").text = file_name
    source = ElementTree.SubElement(root, "source")
    ElementTree.SubElement(source, "database").text = f"nasengine embedded detection v{VERSION}"
    dims = ElementTree.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ElementTree.SubElement(dims, tag).text = str(value)
    ElementTree.SubElement(root, "segmented").text = "0"
    for obj in objects:
        node = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(node, "name").text = fashion_mnist.CLASS_NAMES[obj.category_id - 1]
        ElementTree.SubElement(node, "pose").text = "Unspecified"
        ElementTree.SubElement(node, "truncated").text = str(int(obj.truncated))
        ElementTree.SubElement(node, "difficult").text = "0"
        box = ElementTree.SubElement(node, "bndbox")
        x, y, w, h = obj.bbox
        for tag, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ElementTree.SubElement(box, tag).text = str(value)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def _write(folder: Path, canvas_size: int, counts: dict[str, int], seed: int) -> None:
    coco, voc = folder / "coco", folder / "voc"
    for sub in (coco / "annotations", voc / "JPEGImages", voc / "Annotations", voc / "ImageSets" / "Main"):
        sub.mkdir(parents=True, exist_ok=True)
    total = sum(counts.values())
    done = 0
    with console.progress(total, "generating embedded detection data", log_every=max(1, total // 4)) as bar:
        for split, count in counts.items():
            (coco / split).mkdir()
            images, annotations, stems = [], [], []
            for index in range(count):
                generated = generate_image(split, index, canvas_size, seed)
                stem = f"{split}_{index + 1:06d}"
                stems.append(stem)
                picture = Image.fromarray(generated.image)
                picture.save(coco / split / f"{stem}.png", format="PNG")
                picture.save(voc / "JPEGImages" / f"{stem}.jpg", format="JPEG", quality=95)
                (voc / "Annotations" / f"{stem}.xml").write_bytes(
                    _voc_xml(f"{stem}.jpg", canvas_size, generated.objects)
                )
                images.append(
                    {"id": index + 1, "file_name": f"{stem}.png", "width": canvas_size, "height": canvas_size}
                )
                for obj in generated.objects:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": index + 1,
                            "category_id": obj.category_id,
                            "bbox": obj.bbox,
                            "area": float(obj.mask.sum()),
                            "iscrowd": 0,
                        }
                    )
                done += 1
                bar.update(done)
            info = {"description": f"nasengine embedded detection data v{VERSION} ({split})", "version": str(VERSION)}
            dataset = {
                "info": info,
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": CATEGORIES,
            }
            (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(dataset))
            (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{stem}\n" for stem in stems))


def ensure_embedded_detection_data(
    canvas_size: int = CANVAS_SIZE, num_train: int = 1500, num_test: int = 300, seed: int = 0
) -> Path:
    """The root of the embedded detection data (``coco/`` and ``voc/`` under it), generated on first use.

    Generation happens in a temporary folder beside the final one, which is renamed into place only when
    complete (with its ``DONE`` marker), so an interrupted or concurrent run never leaves a half dataset.
    """
    if canvas_size < 32 or num_train < 1 or num_test < 1:
        raise NasEngineError(
            f"embedded detection data needs canvas_size >= 32 and at least one train and test image "
            f"(got canvas_size={canvas_size}, num_train={num_train}, num_test={num_test})"
        )
    parent = cache_dir("embedded-detection")
    root = parent / f"v{VERSION}-{canvas_size}px-{num_train}+{num_test}-seed{seed}"
    if (root / "DONE").exists():
        return root
    console.log(f"generating the embedded detection data into {root} (once)")
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=parent))
    try:
        _write(staging, canvas_size, {"train": num_train, "test": num_test}, seed)
        (staging / "DONE").write_text(
            json.dumps(
                {
                    "version": VERSION,
                    "canvas_size": canvas_size,
                    "num_train": num_train,
                    "num_test": num_test,
                    "seed": seed,
                }
            )
            + "\n"
        )
        try:
            os.rename(staging, root)
        except OSError:
            if not (root / "DONE").exists():  # an incomplete folder of unknown origin: replace it
                shutil.rmtree(root, ignore_errors=True)
                os.rename(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # left only when another process finished first
    console.log(f"embedded detection data ready in {time.perf_counter() - started:.1f}s")
    return root
