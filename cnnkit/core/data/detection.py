"""Detection samples and datasets, and writers for the three file layouts.

Every adapter (``yolo.py``, ``coco.py``, ``voc.py``, ``synthetic.py``) yields the same
:class:`DetectionSample`: an RGB uint8 HWC image, float32 xyxy pixel boxes and int64 labels,
plus the image's *ignore regions* (COCO ``iscrowd`` annotations, VOC ``difficult`` objects).

Ignore regions are neither objects nor background. They travel apart from ``boxes`` so that a
loss which knows nothing of them stays correct for every real object; the detection transform
carries them through augmentation into each target as ``ignore_boxes`` (K, 4),
``ignore_labels`` (K,) and ``ignore_crowd`` (K,) bool, and evaluation hands them to COCOeval
(crowd: ``iscrowd``; difficult: ``ignore``). A loss that wants the protocol's "no positive, no
negative" drops from its negatives the anchors, cells or proposals that overlap an ignore box
(e.g. intersection over the anchor's area above 0.5), as YOLOv3's ignore threshold does for
unassigned predictions.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import yaml

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.images import is_image, list_images, read_image, write_image
from cnnkit.core.data.scan import Record, ScanReport


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


@dataclass
class DetectionSample:
    """One image with its objects: ``boxes`` (N, 4) xyxy in pixels, ``labels`` (N,), and ignore
    regions ``ignore_boxes`` (K, 4) / ``ignore_labels`` (K,) / ``ignore_crowd`` (K,) bool."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    path: str = ""
    ignore_boxes: np.ndarray = field(default_factory=_no_boxes)
    ignore_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignore_crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


class DetectionDataset(Protocol):
    classes: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> DetectionSample: ...


class DetectionFiles:
    """A scanned split of image files: objects from the scan, images read when asked for.
    ``remap`` turns the scan's label indices into indices of ``classes``."""

    def __init__(self, records: list[Record], classes: list[str], source: str, report: ScanReport,
                 remap: np.ndarray | None = None) -> None:
        if not records:
            why = f" ({report.warnings()[0]})" if report.skipped else ""
            raise CnnkitError(f"{source}: no usable images{why}")
        self.records, self.classes, self.source, self.report = records, classes, source, report
        self.remap = remap

    def __len__(self) -> int:
        return len(self.records)

    def paths(self) -> list[Path]:
        return [r.path for r in self.records]

    def __getitem__(self, index: int) -> DetectionSample:
        r = self.records[index]
        labels, ignore_labels = r.labels, r.ignore_labels
        if self.remap is not None:
            labels, ignore_labels = self.remap[labels], self.remap[ignore_labels]
        return DetectionSample(read_image(r.path), r.boxes.copy(), labels.copy(), str(r.path),
                               r.ignore_boxes.copy(), ignore_labels.copy(), r.ignore_crowd.copy())


# --------------------------------------------------------------------------- writers
def _export_items(dataset: DetectionDataset) -> Iterable[tuple[str, DetectionSample]]:
    for i in range(len(dataset)):
        yield f"{i:06d}", dataset[i]


def _objects(s: DetectionSample) -> Iterable[tuple[list[float], int, int]]:
    """``(xyxy box, label, kind)``: kind 0 an object, 1 a difficult object, 2 a crowd region."""
    for b, c in zip(s.boxes.tolist(), s.labels.tolist()):
        yield b, int(c), 0
    for b, c, crowd in zip(s.ignore_boxes.tolist(), s.ignore_labels.tolist(), s.ignore_crowd.tolist()):
        yield b, int(c), 2 if crowd else 1


def write_yolo(splits: dict[str, DetectionDataset], out: str | Path, ext: str = "png") -> Path:
    """Write ``{split: dataset}`` as a YOLO layout (images as ``ext`` files; YOLO has no ignore
    regions: they are left out); returns the data.yaml path."""
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
    """Write ``{split: dataset}`` as COCO json files (``instances_<split>.json``, ignore regions as
    ``iscrowd`` annotations); returns the train json path."""
    out = Path(out)
    classes = next(iter(splits.values())).classes
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]
    for split, dataset in splits.items():
        images, annotations = [], []
        for image_id, (stem, s) in enumerate(_export_items(dataset), 1):
            name = f"{split}/{stem}.png"
            write_image(out / "images" / name, s.image)
            images.append({"id": image_id, "file_name": name, "height": s.image.shape[0], "width": s.image.shape[1]})
            for b, c, kind in _objects(s):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                    "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": int(kind > 0)})
        (out / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return out / f"instances_{next(iter(splits))}.json"


def write_voc(splits: dict[str, DetectionDataset], out: str | Path) -> Path:
    """Write ``{split: dataset}`` as a Pascal VOC root (ignore regions as ``difficult``
    objects); returns the root."""
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
            for b, c, kind in _objects(s):
                obj = ET.SubElement(ann, "object")
                ET.SubElement(obj, "name").text = classes[c]
                ET.SubElement(obj, "difficult").text = str(int(kind > 0))
                bb = ET.SubElement(obj, "bndbox")
                for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (b[0] + 1, b[1] + 1, b[2], b[3])):
                    ET.SubElement(bb, key).text = f"{value:.4f}"
            ET.indent(ann)
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
