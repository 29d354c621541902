"""Pascal VOC roots: ``Annotations/*.xml``, ``JPEGImages/*``, ``ImageSets/Main/<split>.txt``.

The root itself (``VOC2007/``, ``VOC2012/``, any folder of that shape) or a folder holding one
(``VOCdevkit/``). Splits are ``train.txt`` (else ``trainval.txt``), ``val.txt`` (only beside
``train.txt``: ``trainval.txt`` already holds its images) and ``test.txt``; ``val`` never
falls back to ``test``. ``difficult`` objects become ignore regions. Classes come from
``labels.txt``, else VOC's twenty for a ``VOC20xx`` folder, else the names in the train and
val annotations, sorted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.detection import DetectionFiles
from cnnkit.core.data.images import IMAGE_SUFFIXES
from cnnkit.core.data.scan import Record, Scanner, ScanReport, cache_path, cached_scan
from cnnkit.core.data.splits import MissingSplit

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


def _is_root(path: Path) -> bool:
    return path.is_dir() and (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir()


def voc_root(path: Path) -> Path | None:
    """``path`` when it is a VOC root, else the single VOC root inside it (``VOCdevkit/``)."""
    if _is_root(path):
        return path
    if not path.is_dir():
        return None
    inside = [p for p in sorted(path.iterdir()) if _is_root(p)]
    if len(inside) > 1:
        raise CnnkitError(f"{path}: holds several VOC roots ({', '.join(p.name for p in inside)}); "
                          f"name one, e.g. --data {inside[0]}")
    return inside[0] if inside else None


def is_voc(path: Path) -> bool:
    return voc_root(path) is not None


def split_file(root: Path, split: str) -> Path:
    main = root / "ImageSets" / "Main"
    if split == "train":
        for name in ("train.txt", "trainval.txt"):
            if (main / name).is_file():
                return main / name
    elif split == "val" and (main / "val.txt").is_file():
        if (main / "train.txt").is_file():
            return main / "val.txt"
        raise MissingSplit(f"{root} trains on trainval.txt, which holds val.txt's images")
    elif (main / f"{split}.txt").is_file():
        return main / f"{split}.txt"
    wanted = "train.txt or trainval.txt" if split == "train" else f"{split}.txt"
    raise MissingSplit(f"{root} has no ImageSets/Main/{wanted}")


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _parse(xml: Path, names: dict[str, int], fixed: bool) -> tuple[str, list[tuple[list[float], int, int, str]]]:
    """The image file name and the ``(box, label, kind, where)`` objects of one annotation."""
    try:
        text = xml.read_text()
        tree = ET.fromstring(text)
    except FileNotFoundError:
        raise CnnkitError(f"{xml}: no such annotation file") from None
    except (OSError, UnicodeDecodeError, ET.ParseError) as exc:
        raise CnnkitError(f"{xml}: cannot read annotation ({exc})") from None
    starts = [m.start() for m in re.finditer(r"<object\b", text)]
    objects = []
    for obj, start in zip(tree.iter("object"), starts):
        name = obj.findtext("name", "").strip()
        if not name:
            raise CnnkitError(f"{xml}:{_line(text, start)}: an object has no name")
        if name not in names:
            if fixed:
                raise CnnkitError(f"{xml}:{_line(text, start)}: class '{name}' is not in the dataset's classes")
            names[name] = len(names)
        if obj.find("bndbox") is None:
            raise CnnkitError(f"{xml}:{_line(text, start)}: an object has no bndbox")
        box = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            raw = obj.findtext(f"bndbox/{key}")
            try:
                box.append(float(raw))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                at = text.find(f"<{key}", start)
                raise CnnkitError(f"{xml}:{_line(text, at if at >= 0 else start)}: "
                                  f"{key} {raw!r} is not a number") from None
        box[0] -= 1  # VOC pixels are 1-based and inclusive
        box[1] -= 1
        difficult = obj.findtext("difficult", "0").strip() == "1"
        objects.append((box, names[name], int(difficult), f"{xml}:{_line(text, start)}"))
    return tree.findtext("filename", "").strip(), objects


def _image(root: Path, image_id: str, filename: str) -> str:
    folder = root / "JPEGImages"
    for candidate in ([folder / filename] if filename else []) + [folder / f"{image_id}.jpg"]:
        if candidate.is_file():
            return str(candidate)
    found = [p for p in folder.glob(f"{image_id}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return str(found[0] if found else folder / (filename or f"{image_id}.jpg"))


def _scan(root: Path, ids_file: Path, given: list[str] | None) -> tuple[list[Record], ScanReport, list[str]]:
    # ids name files: one not in UTF-8 keeps its bytes, as the file system's names do
    ids = [line.split()[0] for line in ids_file.read_text(errors="surrogateescape").splitlines() if line.strip()]
    xmls = [root / "Annotations" / f"{i}.xml" for i in ids]

    def scan() -> Scanner:
        names = {n: i for i, n in enumerate(given or [])}
        scanner = Scanner(f"VOC {ids_file}", [])
        for image_id, xml in zip(ids, xmls):
            filename, objects = _parse(xml, names, given is not None)
            image = _image(root, image_id, filename)
            scanner.deps.append(image)
            size = scanner.image_size(image)
            if size is not None:
                scanner.add(image, size, objects)
        scanner.names = list(names)
        return scanner

    return cached_scan(cache_path(ids_file), [str(ids_file), *map(str, xmls)], repr(given), f"VOC {ids_file}", scan)


def _classes(root: Path) -> list[str] | None:
    labels = root / "labels.txt"
    if labels.is_file():
        return labels.read_text().split()
    return None


def voc_dataset(source: str | Path, split: str = "train") -> DetectionFiles:
    """The ``split`` of a VOC root (or of the folder holding one)."""
    root = voc_root(Path(source))
    if root is None:
        raise CnnkitError(f"{source}: not a VOC root (Annotations/, JPEGImages/)")
    given = _classes(root)
    records, report, names = _scan(root, split_file(root, split), given)
    if given is not None:
        classes = given
    else:
        found = set(names)
        for other in ("train", "val"):
            try:
                found |= set(_scan(root, split_file(root, other), None)[2])
            except MissingSplit:
                pass
        standard = re.fullmatch(r"VOC20\d\d", root.absolute().name) and found <= set(VOC_CLASSES)
        classes = list(VOC_CLASSES) if standard else sorted(found)
    report.per_class = {c: report.per_class.get(c, 0) for c in classes}
    remap = np.asarray([classes.index(n) for n in names] or [0], np.int64)
    return DetectionFiles(records, classes, report.source, report, remap)
