"""Pascal VOC detection data, converted into COCO collections so VOC tasks share the COCO code path.

A VOC root holds ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg`` and ``ImageSets/Main/<set>.txt``
(one image id per line). ``VocReader`` parses the XML of the image sets it is given once, and
``collection(set)`` returns the set as an in-memory COCO dict checked exactly like a user's COCO file:

- VOC boxes are 1-based inclusive pixel indices; ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``
  is the 0-based ``[x, y, width, height]`` COCO box covering the same pixels;
- ``difficult`` objects become ``iscrowd = 1``: ignored by COCOeval and left out of training, as the VOC
  protocol ignores them;
- the categories are the task's ``classes`` option when it is given (any other name is an error naming its
  file), else the 20 VOC classes when every name found is one of them (a real VOC root, even a split missing
  a class); category ids are 1..K in that order. Any other name without ``classes`` is an error listing
  the names found with their counts and the ``--set task_options.classes=...`` that names them, because a
  misspelt name would otherwise silently become a class of its own;
- image ids are 1..N in the order of the set file.

Malformed XML (not well-formed, a missing or non-numeric field, ``xmax < xmin``) is one ``NasEngineError``
naming the file and the field. XML that declares a ``<!DOCTYPE>`` or ``<!ENTITY>`` is refused before it is
parsed (VOC never needs one; entity expansion can blow up memory), and an image set none of whose images
has an ``<object>`` is an error naming the set file (nothing to train on, nothing for COCOeval to score).
"""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from nasengine.errors import NasEngineError
from nasengine.tasks.coco_data import Collection, checked_collection

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

VocObject = tuple[str, list[float], bool]
"""``(class name, [xmin, ymin, xmax, ymax] as written, difficult)``."""


def _text(element: ET.Element, field: str, path: Path, where: str) -> str:
    found = element.find(field)
    if found is None or found.text is None or not found.text.strip():
        raise NasEngineError(f"{path}: {where} has no <{field.replace('/', '>/<')}>")
    return found.text.strip()


def _number(element: ET.Element, field: str, path: Path, where: str) -> float:
    text = _text(element, field, path, where)
    try:
        return float(text)
    except ValueError:
        raise NasEngineError(f"{path}: <{field.split('/')[-1]}> of {where} is {text!r}, not a number") from None


def declares_entities(data: bytes) -> bool:
    """Whether raw XML ``data`` holds a DOCTYPE or ENTITY declaration (looked for in UTF-8 and UTF-16)."""
    return any(
        marker.encode(encoding) in data
        for marker in ("<!DOCTYPE", "<!ENTITY")
        for encoding in ("utf-8", "utf-16-le", "utf-16-be")
    )


def read_voc_xml(path: Path) -> tuple[tuple[float, float] | None, list[VocObject]]:
    """The declared ``<size>`` (width, height; None when the file has none) and the objects of one VOC annotation
    file; a one-line error naming the file and the bad field."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NasEngineError(f"{path}: cannot be read ({exc})") from None
    if declares_entities(data):
        raise NasEngineError(
            f"{path}: annotation XML must not declare entities (it holds a <!DOCTYPE> or <!ENTITY> declaration); "
            "remove the declaration"
        )
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise NasEngineError(f"{path}: not well-formed XML ({exc})") from None
    size = root.find("size")
    declared = (
        (_number(size, "width", path, "<size>"), _number(size, "height", path, "<size>")) if size is not None else None
    )
    objects = []
    for index, element in enumerate(root.findall("object"), start=1):
        where = f"object {index}"
        name = _text(element, "name", path, where)
        box = [_number(element, f"bndbox/{field}", path, where) for field in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] < box[0] or box[3] < box[1]:
            raise NasEngineError(f"{path}: {where} ({name}) has xmax < xmin or ymax < ymin in its <bndbox> {box}")
        difficult = element.find("difficult")
        objects.append((name, box, difficult is not None and (difficult.text or "0").strip() not in ("0", "")))
    return declared, objects


class VocReader:
    """The image sets ``image_sets`` of the VOC root ``root``, read on first use."""

    def __init__(self, root: Path, image_sets: tuple[str, ...], classes: list[str] | None = None):
        self.root = Path(root)
        self.image_sets = image_sets
        self.classes = classes

    def set_file(self, image_set: str) -> Path:
        return self.root / "ImageSets" / "Main" / f"{image_set}.txt"

    def _ids(self, image_set: str) -> list[str]:
        path = self.set_file(image_set)
        if not path.is_file():
            folder = path.parent
            found = sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem) if folder.is_dir() else []
            hint = f"image sets there: {', '.join(found)}" if found else f"{folder} holds no image sets"
            raise NasEngineError(f"VOC image set file {path} does not exist ({hint})")
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        if not ids:
            raise NasEngineError(f"VOC image set file {path} lists no images")
        return ids

    @cached_property
    def objects(self) -> dict[str, list[tuple[str, list[VocObject]]]]:
        """``{image set: [(image id, objects), ...]}`` for every set of this reader."""
        parsed: dict[str, list[VocObject]] = {}
        self.declared_sizes: dict[str, tuple[float, float]] = {}
        result = {}
        for image_set in self.image_sets:
            ids = self._ids(image_set)
            for image_id in ids:
                if image_id not in parsed:
                    xml = self.root / "Annotations" / f"{image_id}.xml"
                    if not xml.is_file():
                        raise NasEngineError(
                            f"VOC annotation file {xml} does not exist (listed in {self.set_file(image_set)})"
                        )
                    declared, parsed[image_id] = read_voc_xml(xml)
                    if declared is not None:
                        self.declared_sizes[image_id] = declared
            result[image_set] = [(image_id, parsed[image_id]) for image_id in ids]
        return result

    def _first_object_not_in(self, classes: Sequence[str]) -> tuple[Path, int, str] | None:
        """(annotation file, object number, name) of the first object whose name is not in ``classes``."""
        for images in self.objects.values():
            for image_id, objects in images:
                for index, (name, _, _) in enumerate(objects, start=1):
                    if name not in classes:
                        return self.root / "Annotations" / f"{image_id}.xml", index, name
        return None

    @cached_property
    def class_names(self) -> list[str]:
        if self.classes is not None:
            other = self._first_object_not_in(self.classes)
            if other is not None:
                path, index, name = other
                raise NasEngineError(
                    f"{path}: object {index} is a '{name}', not one of task_options.classes "
                    f"({', '.join(self.classes)}); correct its <name>, or add it to the classes"
                )
            return list(self.classes)
        found = Counter(name for images in self.objects.values() for _, objects in images for name, _, _ in objects)
        if set(found) <= set(VOC_CLASSES):
            return list(VOC_CLASSES)
        names = sorted(found)
        raise NasEngineError(
            f"{self.root}: its objects are not all of the 20 VOC classes; they are of {len(names)} classes "
            f"({', '.join(f'{name} x{found[name]}' for name in names)}); name your data's classes, so that a "
            f"misspelt one cannot become a class of its own: --set task_options.classes={shlex.quote(','.join(names))}"
        )

    def coco_dict(self, image_set: str) -> dict:
        """The image set as a COCO detection dict (boxes 0-based ``xywh``, difficult → ``iscrowd``)."""
        category = {name: index + 1 for index, name in enumerate(self.class_names)}
        images, annotations = [], []
        for number, (voc_id, objects) in enumerate(self.objects[image_set], start=1):
            image = {"id": number, "file_name": f"{voc_id}.jpg"}
            if voc_id in self.declared_sizes:  # checked against the file's like a COCO file's
                image["width"], image["height"] = self.declared_sizes[voc_id]
            images.append(image)
            for name, (xmin, ymin, xmax, ymax), difficult in objects:
                width, height = xmax - xmin + 1, ymax - ymin + 1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": number,
                        "category_id": category[name],
                        "bbox": [xmin - 1, ymin - 1, width, height],
                        "area": width * height,
                        "iscrowd": int(difficult),
                    }
                )
        categories = [{"id": index, "name": name} for name, index in category.items()]
        return {"images": images, "annotations": annotations, "categories": categories}

    def collection(self, image_set: str) -> Collection:
        """The image set as a checked COCO collection over ``JPEGImages``."""
        images = self.objects[image_set]
        if not any(objects for _, objects in images):
            raise NasEngineError(
                f"VOC image set file {self.set_file(image_set)}: none of its {len(images)} images has an <object> in "
                "its annotation XML; a detection training set needs at least one box (and a test set too)"
            )
        return checked_collection(self.root / "JPEGImages", self.coco_dict(image_set), str(self.set_file(image_set)))
