"""COCO-format detection data: reading and checking annotation files, the dataset, and the four splits.

A collection is an image folder plus its COCO ground truth (``Collection``). ``load_coco`` reads a user's
``instances_*.json``; the VOC reader converts its XML into the same dict and goes through the same checks,
so every problem surfaces as one ``NasEngineError`` line when a split is first loaded, never mid-training:

- a file that is not JSON, or not COCO (which field of which entry is missing or malformed);
- an annotation whose category or image id is not declared in the file (annotation id, the id, the file);
- an empty ``annotations`` list (train or test: a detector cannot learn from no boxes, and COCOeval scores
  nothing against none), or no box left that is not crowd after clipping;
- a box with negative width or height is an error naming the annotation: a correct COCO export never
  writes one, and the usual cause — ``[x0, y0, x1, y1]`` written where ``[x, y, width, height]`` belongs —
  makes every box wrong, which dropping would hide;
- an image whose declared ``width``/``height`` differ from its file's: its boxes were drawn on another size;
- a box that passes its image's edge by more than ``OUTSIDE_TOLERANCE`` px is an error naming it (within the
  tolerance it is clipped: rounding, 1-based exports); when more than half of the boxes (and at least
  ``XYXY_MIN_BOXES``) do, the error says ``[x0, y0, x1, y1]`` was written as ``[x, y, width, height]``;
- a box that is empty (zero width or height, or nothing left after clipping to its image) is dropped, and
  one warning gives the count: COCO itself holds a few, and a detector cannot train on them;
- a missing image file or one PIL cannot read (the file is named; every image's header is read on loading).

``check_images`` (run by the tasks' ``check_data`` before any training) then decodes every image of the
splits fully, so a truncated or corrupt file fails in seconds rather than in a data-loader worker hours
later. Images that decoded are remembered in ``<cache>/image-check/`` by absolute path, size and
modification time, so later runs only ``stat`` them; a changed file is decoded again.

``DetectionSplits`` makes the paper's splits (DetNAS §4) from a training and a test collection:
``search`` holds ``search_size`` training images out (chosen by ``split_seed``), ``train`` is the rest,
``calib`` a subset of ``train``, ``test`` the separate test collection.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from nasengine import console
from nasengine.cache import cache_dir
from nasengine.errors import NasEngineError

OUTSIDE_TOLERANCE = (
    1.0  # pixels a box may pass its image's edge (rounding, 1-based exports) before it counts as outside
)
XYXY_MIN_BOXES = 5  # fewer boxes outside their image than this are named one by one, not taken for corners
PROGRESS_FROM = 1000  # decoding at least this many images shows progress


@dataclass
class Collection:
    """An image folder and its checked COCO ground truth; ``source`` names the annotations in messages."""

    images: Path
    coco: COCO
    source: str


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path``; a one-line error when it is missing or not JSON."""
    if not path.is_file():
        raise NasEngineError(f"annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as exc:
        raise NasEngineError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NasEngineError(f"{path}: cannot be read ({exc})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entries(data: dict, key: str, source: str) -> list:
    if key not in data:
        raise NasEngineError(f"{source}: not a COCO detection file: no '{key}' list at the top level")
    if not isinstance(data[key], list):
        raise NasEngineError(
            f"{source}: not a COCO detection file: '{key}' is a {type(data[key]).__name__}, not a list"
        )
    return data[key]


def _require(entry: Any, key: str, check: Callable[[Any], bool], what: str, where: str, source: str) -> Any:
    if not isinstance(entry, dict):
        raise NasEngineError(f"{source}: {where} is a {type(entry).__name__}, not an object")
    if key not in entry:
        raise NasEngineError(f"{source}: {where} has no '{key}' field")
    if not check(entry[key]):
        raise NasEngineError(f"{source}: '{key}' of {where} is {entry[key]!r}, not {what}")
    return entry[key]


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def check_coco(data: Any, source: str) -> None:
    """Raise a one-line error unless ``data`` is a COCO detection dict that refers only to what it declares."""
    if not isinstance(data, dict):
        raise NasEngineError(
            f"{source}: not a COCO detection file: the top level is a {type(data).__name__}, not an object"
        )
    images, annotations, categories = (_entries(data, key, source) for key in ("images", "annotations", "categories"))
    image_ids: set[int] = set()
    for index, image in enumerate(images):
        where = f"images[{index}]"
        image_id = _require(image, "id", _is_int, "an integer", where, source)
        _require(image, "file_name", lambda v: isinstance(v, str) and v != "", "a file name", where, source)
        if image_id in image_ids:
            raise NasEngineError(f"{source}: image id {image_id} appears twice in 'images'")
        image_ids.add(image_id)
    category_ids: set[int] = set()
    for index, category in enumerate(categories):
        where = f"categories[{index}]"
        category_id = _require(category, "id", _is_int, "an integer", where, source)
        _require(category, "name", lambda v: isinstance(v, str), "a string", where, source)
        if category_id in category_ids:
            raise NasEngineError(f"{source}: category id {category_id} appears twice in 'categories'")
        category_ids.add(category_id)
    if not categories:
        raise NasEngineError(f"{source}: 'categories' is empty; a detection file declares its classes there")
    if not annotations:
        raise NasEngineError(
            f"{source}: 'annotations' is empty; a detection training set needs at least one box "
            "(and a test set too: COCOeval has nothing to score against)"
        )
    annotation_ids: set[int] = set()
    for index, annotation in enumerate(annotations):
        annotation_id = _require(annotation, "id", _is_int, "an integer", f"annotations[{index}]", source)
        where = f"annotation {annotation_id}"
        if annotation_id in annotation_ids:
            raise NasEngineError(f"{source}: annotation id {annotation_id} appears twice in 'annotations'")
        annotation_ids.add(annotation_id)
        image_id = _require(annotation, "image_id", _is_int, "an integer", where, source)
        category_id = _require(annotation, "category_id", _is_int, "an integer", where, source)
        x, y, width, height = _require(
            annotation, "bbox", _is_box, "[x, y, width, height] (4 finite numbers)", where, source
        )
        if image_id not in image_ids:
            raise NasEngineError(
                f"{source}: annotation {annotation_id} refers to image id {image_id}, which is not in 'images'"
            )
        if category_id not in category_ids:
            known = ", ".join(map(str, sorted(category_ids)))
            raise NasEngineError(
                f"{source}: annotation {annotation_id} has unknown category id {category_id} "
                f"(the file declares: {known})"
            )
        if width < 0 or height < 0:
            raise NasEngineError(
                f"{source}: annotation {annotation_id} has a box of negative size {[x, y, width, height]}; "
                "COCO boxes are [x, y, width, height] — was [x0, y0, x1, y1] written instead?"
            )


def _header(path: Path) -> tuple[int, int] | str:
    """``(width, height)`` from the header of ``path``, or why PIL cannot open it."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return f"{type(exc).__name__}: {exc}"


def image_sizes(folder: Path, images: list[dict], source: str) -> dict[int, tuple[int, int]]:
    """``{image id: (width, height)}`` read from every image's header; a one-line error for a missing or bad file."""
    if not folder.is_dir():
        raise NasEngineError(f"image folder {folder} (for {source}) does not exist")
    present = {entry.name for entry in os.scandir(folder)}
    missing = [
        image for image in images if not (image["file_name"] in present or (folder / image["file_name"]).is_file())
    ]
    if missing:
        first = missing[0]
        raise NasEngineError(
            f"image file {folder / first['file_name']} does not exist (image id {first['id']} in {source}); "
            f"{len(missing)} of {len(images)} images are missing"
        )
    paths = [folder / image["file_name"] for image in images]
    with ThreadPoolExecutor(max_workers=8) as pool:  # header reads wait on the disk, not the CPU
        headers = list(pool.map(_header, paths))
    for path, header in zip(paths, headers):
        if isinstance(header, str):
            raise NasEngineError(f"image file {path} cannot be read by PIL ({header})")
    return {image["id"]: header for image, header in zip(images, headers)}


def _outside(bbox: list[float], size: tuple[int, int]) -> bool:
    """Whether the ``[x, y, width, height]`` box ends past the right or bottom edge of a ``size`` image."""
    x, y, width, height = bbox
    return x + width > size[0] + OUTSIDE_TOLERANCE or y + height > size[1] + OUTSIDE_TOLERANCE


def check_not_xyxy(annotations: list[dict], sizes: dict[int, tuple[int, int]], source: str) -> None:
    """A one-line error when most boxes end past their image: corners ``[x0, y0, x1, y1]`` written as COCO boxes."""
    outside = [a for a in annotations if _outside(a["bbox"], sizes[a["image_id"]])]
    if len(outside) < XYXY_MIN_BOXES or 2 * len(outside) <= len(annotations):
        return
    first = outside[0]
    width, height = sizes[first["image_id"]]
    raise NasEngineError(
        f"{source}: {len(outside)} of {len(annotations)} boxes extend past their image (annotation {first['id']}: "
        f"{first['bbox']} on a {width}x{height} image); COCO boxes are [x, y, width, height] — was "
        "[x0, y0, x1, y1] written instead?"
    )


def check_declared_sizes(images: list[dict], sizes: dict[int, tuple[int, int]], source: str) -> None:
    """A one-line error for an image whose declared ``width``/``height`` are not its file's: its boxes were drawn on
    an image of another size (a resized copy), so they would all be wrong."""
    for image in images:
        declared = (image.get("width"), image.get("height"))
        if declared != (None, None) and declared != sizes[image["id"]]:
            width, height = sizes[image["id"]]
            shown = "x".join(f"{value:g}" if isinstance(value, (int, float)) else repr(value) for value in declared)
            raise NasEngineError(
                f"{source}: image {image['id']} ({image['file_name']}) is declared {shown} but the "
                f"file is {width}x{height}; its boxes were drawn on an image of another size — rescale the "
                "annotations to the files, or correct 'width'/'height'"
            )


def check_inside(annotations: list[dict], sizes: dict[int, tuple[int, int]], source: str) -> None:
    """A one-line error for a box that passes its image's edge by more than ``OUTSIDE_TOLERANCE`` px (left, top,
    right or bottom): a correct export never writes one, so the annotation (or its image) is wrong."""
    for annotation in annotations:
        x, y, w, h = annotation["bbox"]
        width, height = sizes[annotation["image_id"]]
        if min(x, y) < -OUTSIDE_TOLERANCE or x + w > width + OUTSIDE_TOLERANCE or y + h > height + OUTSIDE_TOLERANCE:
            raise NasEngineError(
                f"{source}: annotation {annotation['id']} has a box {annotation['bbox']} that passes the edge of its "
                f"{width}x{height} image (by more than {OUTSIDE_TOLERANCE:g} px); correct or remove it"
            )


def clip_boxes(data: dict, sizes: dict[int, tuple[int, int]], source: str) -> None:
    """Check the declared image sizes and that boxes lie inside their images, clip the rounding slack, record
    the real image sizes, fill ``area``/``iscrowd``, and drop empty boxes (counted in one warning)."""
    check_declared_sizes(data["images"], sizes, source)
    for image in data["images"]:
        image["width"], image["height"] = sizes[image["id"]]
    check_not_xyxy(data["annotations"], sizes, source)
    check_inside(data["annotations"], sizes, source)
    kept = []
    for annotation in data["annotations"]:
        width, height = sizes[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x1 <= x0 or y1 <= y0:
            continue
        annotation["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        annotation.setdefault("area", (x1 - x0) * (y1 - y0))
        annotation["iscrowd"] = int(bool(annotation.get("iscrowd", 0)))
        kept.append(annotation)
    dropped = len(data["annotations"]) - len(kept)
    if dropped:
        console.log(
            f"[yellow]warning:[/yellow] {source}: dropped {dropped} empty boxes (zero width or height inside the image)"
        )
    data["annotations"] = kept


def build_coco(data: dict) -> COCO:
    """A pycocotools ``COCO`` over ``data``, without its printing."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def subset_coco(coco: COCO, image_ids: Sequence[int]) -> COCO:
    """The ground truth of ``image_ids`` only (all categories kept)."""
    ids = sorted(image_ids)
    return build_coco(
        {
            "images": [coco.imgs[i] for i in ids],
            "annotations": [annotation for i in ids for annotation in coco.imgToAnns[i]],
            "categories": coco.dataset["categories"],
        }
    )


def checked_collection(folder: Path, data: Any, source: str) -> Collection:
    """``data`` checked against COCO and against the images in ``folder``, as a ``Collection``."""
    check_coco(data, source)
    clip_boxes(data, image_sizes(folder, data["images"], source), source)
    if all(annotation["iscrowd"] for annotation in data["annotations"]):
        raise NasEngineError(
            f"{source}: no box is left to train on or score against (every box is empty inside its image, or crowd/"
            "difficult); a detection set needs at least one ordinary box"
        )
    return Collection(folder, build_coco(data), source)


def load_coco(images: Path, annotations: Path) -> Collection:
    """A user's COCO collection: ``annotations`` (instances json) over the image folder ``images``."""
    return checked_collection(images, read_json(annotations), str(annotations))


def decode(path: Path) -> str | None:
    """None when PIL decodes every pixel of ``path`` to RGB (as ``read_image`` will), else why it cannot."""
    try:
        with Image.open(path) as image:
            image.convert("RGB")
    except Exception as exc:  # OSError (truncated), SyntaxError, ValueError, DecompressionBombError, ...
        return f"{type(exc).__name__}: {exc}"
    return None


def _stamp(path: str) -> list[int]:
    """``[size, mtime_ns]`` of ``path``: a decoded image is trusted until either changes."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise NasEngineError(f"image file {path} cannot be read ({type(exc).__name__}: {exc})") from None
    return [stat.st_size, stat.st_mtime_ns]


def _cache_file(folder: str) -> Path:
    """The decode cache of the images in ``folder`` (one small JSON file per image folder)."""
    digest = hashlib.sha256(folder.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return cache_dir("image-check") / f"{digest}.json"


def _read_cache(file: Path) -> dict[str, list[int]]:
    """``{absolute path: [size, mtime_ns]}`` of the images that decoded; empty when missing or unreadable."""
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_cache(file: Path, folder: str, entries: dict[str, list[int]]) -> None:
    """Replace ``file`` atomically, so concurrent runs (ranks) never read half a file; a cache that cannot be
    written only costs decoding again next time."""
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps({"folder": folder, "images": entries}), encoding="utf-8")
        os.replace(temporary, file)
    except OSError:
        temporary.unlink(missing_ok=True)


def _decode_all(files: list[str]) -> list[str | None]:
    """``decode`` of every file on a thread pool (PIL releases the GIL while decoding), with progress when many."""
    with ThreadPoolExecutor() as pool:
        results = pool.map(decode, map(Path, files))
        if len(files) < PROGRESS_FROM:
            return list(results)
        done: list[str | None] = []
        with console.progress(len(files), "decoding images once to check them", log_every=len(files) // 4) as bar:
            for result in results:
                done.append(result)
                bar.update(len(done))
        return done


def check_images(images: Sequence[Path]) -> None:
    """Decode every image of ``images`` fully once; a one-line error naming the first that cannot be decoded.

    Images that decoded are cached by absolute path, size and mtime (``_cache_file``), so a later call only
    ``stat``s them; a file whose size or mtime changed is decoded again, a failed one every time.
    """
    by_folder: dict[str, dict[str, list[int]]] = {}
    for image in dict.fromkeys(os.path.abspath(path) for path in images):
        by_folder.setdefault(os.path.dirname(image), {})[image] = _stamp(image)
    failures: list[tuple[str, str]] = []
    for folder, stamps in by_folder.items():
        file = _cache_file(folder)
        cached = _read_cache(file)
        todo = [path for path, stamp in stamps.items() if cached.get(path) != stamp]
        if not todo:
            continue
        for path, error in zip(todo, _decode_all(todo)):
            if error is None:
                cached[path] = stamps[path]
            else:
                cached.pop(path, None)
                failures.append((path, error))
        _write_cache(file, folder, cached)
    if failures:
        path, error = failures[0]
        more = len(failures) - 1
        others = f"; {more} more image{'s' if more > 1 else ''} cannot be decoded either" if more else ""
        raise NasEngineError(f"image file {path} cannot be decoded ({error}); re-export or remove it{others}")


def read_image(path: Path) -> torch.Tensor:
    """The RGB image at ``path`` as a float tensor ``[3, H, W]`` in [0, 1]."""
    try:
        with Image.open(path) as image:
            pixels = pil_to_tensor(image.convert("RGB"))
    except Exception as exc:  # a file damaged after the split was checked still gets one clear line
        raise NasEngineError(f"image file {path} cannot be read by PIL ({type(exc).__name__}: {exc})") from None
    return pixels.float().div_(255.0)


class CocoDetection(Dataset):
    """``(image [3, H, W] in [0, 1], target)`` for ``image_ids`` of a COCO collection.

    ``target`` holds ``boxes`` (float ``[N, 4]``, ``xyxy`` absolute pixels), ``labels`` (int64, the index
    of the category id in ``category_ids`` plus one) and ``image_id``. Crowd annotations (and VOC's
    ``difficult`` objects) are left out: evaluation ignores them, training must not learn them. With
    ``train`` an image is flipped horizontally with probability 1/2, drawn from torch's global generator
    so that seeded training is reproducible.
    """

    def __init__(
        self,
        images: Path,
        coco: COCO,
        image_ids: Sequence[int],
        category_ids: Sequence[int],
        class_names: Sequence[str],
        *,
        train: bool,
    ):
        self.images = images
        self.coco = coco
        self.image_ids = list(image_ids)
        self.category_ids = list(category_ids)
        self.class_names = list(class_names)
        self.train = train
        self._label = {category_id: index + 1 for index, category_id in enumerate(self.category_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_paths(self) -> list[Path]:
        """The image file of every item, in order."""
        return [self.images / self.coco.imgs[image_id]["file_name"] for image_id in self.image_ids]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.image_ids[index]
        image = read_image(self.images / self.coco.imgs[image_id]["file_name"])
        height, width = image.shape[-2:]
        annotations = [a for a in self.coco.imgToAnns[image_id] if not a["iscrowd"]]
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        labels = torch.tensor([self._label[a["category_id"]] for a in annotations], dtype=torch.int64)
        # the json's sizes were replaced by the real ones on loading; this guards against float rounding only
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[keep], labels[keep]
        if self.train and torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, {"boxes": boxes, "labels": labels, "image_id": image_id}


class DetectionSplits:
    """``train``/``search``/``calib`` from one collection, ``test`` from another; loaded on first use.

    ``load_train`` and ``load_test`` return the checked collections. Categories (and so labels and
    ``class_names``) come from the training collection; the test collection may use a subset of them.
    Image ids are split with numpy generators seeded by ``split_seed``, so the splits depend on nothing
    else. ``test_size`` (None: all) takes a seeded subset of the test images.
    """

    names = ("train", "search", "test", "calib")

    def __init__(
        self,
        load_train: Callable[[], Collection],
        load_test: Callable[[], Collection],
        *,
        search_size: int,
        calib_size: int,
        test_size: int | None,
        split_seed: int,
    ):
        self._load_train, self._load_test = load_train, load_test
        self.search_size, self.calib_size, self.test_size, self.split_seed = (
            search_size,
            calib_size,
            test_size,
            split_seed,
        )

    @cached_property
    def train_collection(self) -> Collection:
        return self._load_train()

    @cached_property
    def test_collection(self) -> Collection:
        collection = self._load_test()
        unknown = sorted(set(collection.coco.cats) - set(self.train_collection.coco.cats))
        if unknown:
            raise NasEngineError(
                f"{collection.source} has category ids {unknown} that the training annotations "
                f"{self.train_collection.source} do not declare; both must use the same categories"
            )
        return collection

    @property
    def category_ids(self) -> list[int]:
        return sorted(self.train_collection.coco.cats)

    @property
    def class_names(self) -> list[str]:
        cats = self.train_collection.coco.cats
        return [cats[i]["name"] for i in self.category_ids]

    @cached_property
    def _partition(self) -> dict[str, list[int]]:
        ids = sorted(self.train_collection.coco.imgs)
        if not 0 <= self.search_size < len(ids) or not 0 < self.calib_size <= len(ids) - self.search_size:
            raise NasEngineError(
                f"{self.train_collection.source} has {len(ids)} training images: search_size={self.search_size} and "
                f"calib_size={self.calib_size} must leave training images (need search_size < images and "
                "0 < calib_size <= images - search_size); pass smaller task options"
            )
        order = np.random.default_rng(self.split_seed).permutation(len(ids))
        search = sorted(ids[i] for i in order[: self.search_size])
        train = sorted(ids[i] for i in order[self.search_size :])
        calib_order = np.random.default_rng([self.split_seed, 1]).permutation(len(train))
        calib = sorted(train[i] for i in calib_order[: self.calib_size])
        return {"train": train, "search": search, "calib": calib}

    def _check(self, split: str) -> None:
        if split not in self.names:
            raise NasEngineError(f"unknown split {split!r}; detection tasks have: {', '.join(self.names)}")

    def image_ids(self, split: str) -> list[int]:
        """The image ids of ``split``, sorted."""
        self._check(split)
        if split != "test":
            return self._partition[split]
        ids = sorted(self.test_collection.coco.imgs)
        if self.test_size is not None and self.test_size > len(ids):
            raise NasEngineError(
                f"test_size={self.test_size} is larger than the {len(ids)} test images of "
                f"{self.test_collection.source}; "
                "pass a smaller test_size task option (or none for all)"
            )
        if self.test_size is None or self.test_size == len(ids):
            return ids
        order = np.random.default_rng([self.split_seed, 2]).permutation(len(ids))
        return sorted(ids[i] for i in order[: self.test_size])

    @cached_property
    def _search_coco(self) -> COCO:
        return subset_coco(self.train_collection.coco, self.image_ids("search"))

    @cached_property
    def _test_coco(self) -> COCO:
        coco = self.test_collection.coco
        ids = self.image_ids("test")
        return coco if len(ids) == len(coco.imgs) else subset_coco(coco, ids)

    def ground_truth(self, split: str) -> COCO:
        """The COCO ground truth the split is evaluated against (``search`` and ``test``: only their images)."""
        self._check(split)
        if split == "search":
            return self._search_coco
        if split == "test":
            return self._test_coco
        return self.train_collection.coco

    def dataset(self, split: str, *, train: bool) -> CocoDetection:
        """The split's dataset, with horizontal flips when ``train``."""
        collection = self.test_collection if split == "test" else self.train_collection
        return CocoDetection(
            collection.images,
            self.ground_truth(split),
            self.image_ids(split),
            self.category_ids,
            self.class_names,
            train=train,
        )

    def stats(self, split: str) -> dict[str, int]:
        """``images``, ``objects`` and one count per class name, from the annotations alone."""
        coco = self.ground_truth(split)
        ids = self.image_ids(split)
        counts = dict.fromkeys(self.class_names, 0)
        names = dict(zip(self.category_ids, self.class_names))
        objects = 0
        for image_id in ids:
            for annotation in coco.imgToAnns[image_id]:
                counts[names[annotation["category_id"]]] += 1
                objects += 1
        return {"images": len(ids), "objects": objects, **counts}
