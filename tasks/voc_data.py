"""Pascal VOC detection data, converted into COCO collections so VOC tasks share the COCO code path.

A VOC root holds ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg`` and ``ImageSets/Main/<set>.txt``
(one image id per line). ``VocReader`` parses the XML of the image sets it is given once, and
``collection(set)`` returns the set as an in-memory COCO dict checked exactly like a user's COCO file:

- VOC boxes are 1-based inclusive pixel indices; ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``
  is the 0-based ``[x, y, width, height]`` COCO box covering the same pixels;
- ``difficult`` objects become ``iscrowd = 1``: ignored by COCOeval and left out of training, as the VOC
  protocol ignores them;
- the categories are the 20 VOC classes when every name found is one of them (a real VOC root, even a
  split missing a class), else the names found, sorted; category ids are 1..K in that order;
- image ids are 1..N in the order of the set file.

Malformed XML (not well-formed, a missing or non-numeric field, ``xmax < xmin``) is one ``NasEngineError``
naming the file and the field. XML that declares a ``<!DOCTYPE>`` or ``<!ENTITY>`` is refused before it is
parsed (VOC never needs one; entity expansion can blow up memory), and an image set none of whose images
has an ``<object>`` is an error naming the set file (nothing to train on, nothing for COCOeval to score).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
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


def read_voc_xml(path: Path) -> list[VocObject]:
    """The objects of one VOC annotation file; a one-line error naming the file and the bad field."""
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
    objects = []
    for index, element in enumerate(root.findall("object"), start=1):
        where = f"object {index}"
        name = _text(element, "name", path, where)
        box = [_number(element, f"bndbox/{field}", path, where) for field in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] < box[0] or box[3] < box[1]:
            raise NasEngineError(f"{path}: {where} ({name}) has xmax < xmin or ymax < ymin in its <bndbox> {box}")
        difficult = element.find("difficult")
        objects.append((name, box, difficult is not None and (difficult.text or "0").strip() not in ("0", "")))
    return objects


class VocReader:
    """The image sets ``image_sets`` of the VOC root ``root``, read on first use."""

    def __init__(self, root: Path, image_sets: tuple[str, ...]):
        self.root = Path(root)
        self.image_sets = image_sets

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
                    parsed[image_id] = read_voc_xml(xml)
            result[image_set] = [(image_id, parsed[image_id]) for image_id in ids]
        return result

    @cached_property
    def class_names(self) -> list[str]:
        found = {name for images in self.objects.values() for _, objects in images for name, _, _ in objects}
        return list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found)

    def coco_dict(self, image_set: str) -> dict:
        """The image set as a COCO detection dict (boxes 0-based ``xywh``, difficult → ``iscrowd``)."""
        category = {name: index + 1 for index, name in enumerate(self.class_names)}
        images, annotations = [], []
        for number, (voc_id, objects) in enumerate(self.objects[image_set], start=1):
            images.append({"id": number, "file_name": f"{voc_id}.jpg"})
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
