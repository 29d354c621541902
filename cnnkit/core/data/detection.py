"""Detection datasets: YOLO ``data.yaml``, COCO annotation json and Pascal VOC roots.

All adapters yield the same :class:`DetectionSample` (RGB uint8 HWC image, float32 xyxy pixel
boxes, int64 labels). Writers for the three layouts let users (and the tests) export any
detection dataset, e.g. ``synthetic:shapes``, to disk.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import yaml

from cnnkit.core.data.images import is_image, list_images, read_image, write_image
from cnnkit.core.errors import CnnkitError


@dataclass
class DetectionSample:
    """One image with its objects: ``boxes`` (N, 4) xyxy in pixels, ``labels`` (N,)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    path: str = ""


class DetectionDataset(Protocol):
    classes: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> DetectionSample: ...


class _FileDetections:
    """A list of (image path, boxes, labels) read up front; images read lazily."""

    def __init__(self, items: list[tuple[Path, np.ndarray, np.ndarray]], classes: list[str]) -> None:
        if not items:
            raise CnnkitError("the dataset split has no images")
        self.items, self.classes = items, classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> DetectionSample:
        path, boxes, labels = self.items[index]
        image = read_image(path)
        h, w = image.shape[:2]
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        return DetectionSample(image, boxes[keep], labels[keep], str(path))


def _check_label(label: int, classes: list[str], where: str) -> int:
    if not 0 <= label < len(classes):
        raise CnnkitError(f"{where}: class {label} is out of range (the dataset has {len(classes)} classes)")
    return label


# --------------------------------------------------------------------------- YOLO
def is_yolo(path: Path) -> bool:
    return path.is_file() and path.suffix in (".yaml", ".yml") and "names" in _read_yaml(path)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CnnkitError(f"{path}: cannot read YAML ({exc.__class__.__name__})") from None
    return data if isinstance(data, dict) else {}


def _yolo_names(raw: object) -> list[str]:
    if isinstance(raw, dict):
        return [str(raw[k]) for k in sorted(raw)]
    return [str(n) for n in raw]  # type: ignore[union-attr]


def yolo_dataset(source: str | Path, split: str = "train") -> _FileDetections:
    """Ultralytics/Darknet layout: images/<split>/x.jpg with labels/<split>/x.txt
    (``class cx cy w h`` normalised to [0, 1])."""
    cfg_path = Path(source)
    cfg = _read_yaml(cfg_path)
    classes = _yolo_names(cfg["names"])
    root = cfg_path.parent / cfg.get("path", ".")
    key = split if split in cfg else ("val" if split == "test" else split)
    if key not in cfg:
        raise CnnkitError(f"{cfg_path}: no '{split}' entry")
    image_dir = root / cfg[key]
    if not image_dir.is_dir():
        raise CnnkitError(f"{cfg_path}: {split} images folder {image_dir} does not exist")
    items = []
    for image_path in list_images(image_dir):
        label_path = _yolo_label_path(image_path)
        from PIL import Image  # size only, cheap

        with Image.open(image_path) as im:
            w, h = im.size
        boxes, labels = [], []
        if label_path.exists():
            for n, line in enumerate(label_path.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise CnnkitError(f"{label_path}:{n}: expected 'class cx cy w h', got {line!r}")
                labels.append(_check_label(int(parts[0]), classes, f"{label_path}:{n}"))
                cx, cy, bw, bh = (float(v) for v in parts[1:])
                boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        items.append((image_path, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)))
    return _FileDetections(items, classes)


def _yolo_label_path(image_path: Path) -> Path:
    parts = list(image_path.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


# --------------------------------------------------------------------------- COCO
def is_coco(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".json"):
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return b'"images"' in head or b'"annotations"' in head or b'"categories"' in head


def coco_dataset(source: str | Path, split: str = "train") -> _FileDetections:
    """A COCO annotation json; images are found next to it (``file_name`` relative to the
    json's folder or to ``images/``). The val split uses the sibling json whose name has
    ``val`` in place of ``train`` when there is one."""
    path = Path(source)
    if split != "train" and "train" in path.name:
        sibling = path.with_name(path.name.replace("train", "val"))
        path = sibling if sibling.exists() else path
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CnnkitError(f"{path}: cannot read COCO json ({exc.__class__.__name__}: {exc})") from None
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    classes = [c["name"] for c in categories]
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        per_image.setdefault(ann["image_id"], []).append(ann)
    items = []
    for img in data.get("images", []):
        image_path = _find_coco_image(path.parent, img["file_name"])
        boxes, labels = [], []
        for ann in per_image.get(img["id"], []):
            if ann["category_id"] not in index_of:
                raise CnnkitError(f"{path}: annotation {ann.get('id')} has unknown category {ann['category_id']}")
            x, y, w, h = ann["bbox"]
            boxes.append([x, y, x + w, y + h])
            labels.append(index_of[ann["category_id"]])
        items.append((image_path, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)))
    return _FileDetections(items, classes)


def _find_coco_image(root: Path, file_name: str) -> Path:
    for candidate in (root / file_name, root / "images" / file_name, root.parent / "images" / file_name):
        if candidate.exists():
            return candidate
    raise CnnkitError(f"{root}: image {file_name} named in the annotations is missing")


# --------------------------------------------------------------------------- VOC
def is_voc(path: Path) -> bool:
    return path.is_dir() and (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir()


def voc_dataset(source: str | Path, split: str = "train") -> _FileDetections:
    """A Pascal VOC root: Annotations/*.xml, JPEGImages/*, ImageSets/Main/<split>.txt."""
    root = Path(source)
    ids_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not ids_file.exists() and split == "val":
        ids_file = root / "ImageSets" / "Main" / "test.txt"
    if not ids_file.exists():
        raise CnnkitError(f"{root}: no ImageSets/Main/{split}.txt")
    ids = [line.split()[0] for line in ids_file.read_text().splitlines() if line.strip()]
    parsed = [(i, _parse_voc(root / "Annotations" / f"{i}.xml")) for i in ids]
    classes = (root / "labels.txt").read_text().split() if (root / "labels.txt").exists() else \
        sorted({name for _, (_, objects) in parsed for name, _ in objects})
    items = []
    for image_id, (filename, objects) in parsed:
        xml = root / "Annotations" / f"{image_id}.xml"
        boxes, labels = [], []
        for name, box in objects:
            if name not in classes:
                raise CnnkitError(f"{xml}: class '{name}' is not in labels.txt")
            boxes.append(box)
            labels.append(classes.index(name))
        image_path = root / "JPEGImages" / filename
        items.append((image_path, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)))
    return _FileDetections(items, classes)


def _parse_voc(xml: Path) -> tuple[str, list[tuple[str, list[float]]]]:
    try:
        tree = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as exc:
        raise CnnkitError(f"{xml}: cannot read annotation ({exc})") from None
    objects = []
    for obj in tree.iter("object"):
        if obj.findtext("difficult", "0").strip() == "1":
            continue
        bb = obj.find("bndbox")
        if bb is None:
            raise CnnkitError(f"{xml}: an object has no bndbox")
        # VOC pixel coordinates are 1-based and inclusive
        box = [float(bb.findtext(k)) - 1 for k in ("xmin", "ymin")] + [float(bb.findtext(k)) for k in ("xmax", "ymax")]
        objects.append((obj.findtext("name", "").strip(), box))
    return tree.findtext("filename", xml.stem + ".jpg"), objects


# --------------------------------------------------------------------------- writers
def _export_items(dataset: DetectionDataset) -> Iterable[tuple[str, DetectionSample]]:
    for i in range(len(dataset)):
        yield f"{i:06d}", dataset[i]


def write_yolo(splits: dict[str, DetectionDataset], out: str | Path, ext: str = "png") -> Path:
    """Write ``{split: dataset}`` as a YOLO layout (images as ``ext`` files); returns the data.yaml path."""
    out = Path(out)
    classes = next(iter(splits.values())).classes
    for split, dataset in splits.items():
        for stem, s in _export_items(dataset):
            write_image(out / "images" / split / f"{stem}.{ext}", s.image)
            h, w = s.image.shape[:2]
            lines = [f"{int(c)} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} "
                     f"{(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}" for b, c in zip(s.boxes, s.labels)]
            label = out / "labels" / split / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(lines) + ("\n" if lines else ""))
    cfg = {"path": ".", **{split: f"images/{split}" for split in splits}, "names": list(classes)}
    (out / "data.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out / "data.yaml"


def write_coco(splits: dict[str, DetectionDataset], out: str | Path) -> Path:
    """Write ``{split: dataset}`` as COCO json files (``instances_<split>.json``); returns the
    train json path."""
    out = Path(out)
    classes = next(iter(splits.values())).classes
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]
    for split, dataset in splits.items():
        images, annotations = [], []
        for image_id, (stem, s) in enumerate(_export_items(dataset), 1):
            name = f"{split}/{stem}.png"
            write_image(out / "images" / name, s.image)
            images.append({"id": image_id, "file_name": name, "height": s.image.shape[0], "width": s.image.shape[1]})
            for b, c in zip(s.boxes.tolist(), s.labels.tolist()):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                    "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
        (out / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return out / f"instances_{next(iter(splits))}.json"


def write_voc(splits: dict[str, DetectionDataset], out: str | Path) -> Path:
    """Write ``{split: dataset}`` as a Pascal VOC root; returns the root."""
    out = Path(out)
    classes = next(iter(splits.values())).classes
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    (out / "labels.txt").write_text("\n".join(classes) + "\n")
    for split, dataset in splits.items():
        ids = []
        for stem, s in _export_items(dataset):
            image_id = f"{split}_{stem}"
            ids.append(image_id)
            write_image(out / "JPEGImages" / f"{image_id}.png", s.image)
            ann = ET.Element("annotation")
            ET.SubElement(ann, "filename").text = f"{image_id}.png"
            size = ET.SubElement(ann, "size")
            for key, value in zip(("height", "width", "depth"), s.image.shape):
                ET.SubElement(size, key).text = str(value)
            for b, c in zip(s.boxes.tolist(), s.labels.tolist()):
                obj = ET.SubElement(ann, "object")
                ET.SubElement(obj, "name").text = classes[c]
                ET.SubElement(obj, "difficult").text = "0"
                bb = ET.SubElement(obj, "bndbox")
                for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (b[0] + 1, b[1] + 1, b[2], b[3])):
                    ET.SubElement(bb, key).text = f"{value:.4f}"
            ET.ElementTree(ann).write(out / "Annotations" / f"{image_id}.xml")
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return out


def image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders given on a command line into image paths."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(list_images(p))
        elif p.exists():
            if not is_image(p):
                raise CnnkitError(f"{p}: not an image file")
            paths.append(p)
        else:
            raise CnnkitError(f"{p}: no such file or folder")
    return paths
