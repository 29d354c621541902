"""YOLO layouts: an Ultralytics/Darknet ``data.yaml``, or a folder holding one (Roboflow YOLO
exports: ``train/ valid/ test/`` with ``images/`` and ``labels/`` beside ``data.yaml``).

``train:``/``val:``/``test:`` name a folder of images (searched recursively), an image-list
``.txt`` or a list of either, relative to ``path:`` (relative to the yaml's folder, else to the
working directory; absolute works too). A label ``labels/.../x.txt`` sits where the image
``images/.../x.jpg`` is, one ``class cx cy w h`` (normalised) or ``class x1 y1 x2 y2 ...``
(a polygon, whose bounding box is used) a line; an image without one has no objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import yaml

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.detection import DetectionFiles
from cnnkit.core.data.images import IMAGE_SUFFIXES, is_image
from cnnkit.core.data.scan import Scanner, cache_path, cached_scan
from cnnkit.core.data.splits import MissingSplit


def yaml_of(path: Path) -> Path | None:
    """The data.yaml of ``path``: itself, or the one inside a folder."""
    if path.is_dir():
        path = next((path / n for n in ("data.yaml", "data.yml") if (path / n).is_file()), path)
    if path.is_file() and path.suffix in (".yaml", ".yml") and "names" in read_yaml(path):
        return path
    return None


def is_yolo(path: Path) -> bool:
    return yaml_of(path) is not None


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CnnkitError(f"{path}: cannot read YAML ({exc.__class__.__name__})") from None
    return data if isinstance(data, dict) else {}


def class_names(raw: Any, where: Path) -> list[str]:
    """``names:`` as a list, or a dict ``{0: a, 1: b}`` whose keys must be 0..n-1."""
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise CnnkitError(f"{where}: 'names' keys must be class numbers 0, 1, ...") from None
        if keys != list(range(len(keys))):
            raise CnnkitError(f"{where}: 'names' keys must be 0..{len(keys) - 1} without gaps")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in keys]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise CnnkitError(f"{where}: 'names' must be a list or a mapping of class names")


def _root(cfg: dict, cfg_path: Path) -> Path:
    given = cfg.get("path")
    if not given:
        return cfg_path.parent
    path = Path(str(given))
    if path.is_absolute():
        return path
    beside = cfg_path.parent / path
    return beside if beside.exists() or not path.exists() else path


def _entry(root: Path, entry: str) -> Path:
    """``root/entry``; Roboflow's ``../train/images`` is read as ``train/images`` when only
    that exists (as Ultralytics does)."""
    path = root / entry
    if not path.exists() and entry.startswith("../"):
        path = root / entry[3:]
    return path


def _walk_images(folder: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                yield os.path.join(dirpath, name)


def _list_file(path: Path, root: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"{path}: cannot read the image list ({exc.__class__.__name__})") from None
    images = []
    for line in lines:
        line = line.strip()
        if line and not os.path.isabs(line):
            line = next((str(c) for c in (path.parent / line, root / line) if c.exists()), str(path.parent / line))
        if line:
            images.append(line)
    return images


def label_path(image: str) -> str:
    """``.../images/.../x.jpg`` -> ``.../labels/.../x.txt`` (the last ``images`` folder)."""
    head, sep, tail = (os.sep + image).rpartition(f"{os.sep}images{os.sep}")
    path = f"{head}{os.sep}labels{os.sep}{tail}"[1:] if sep else image
    return os.path.splitext(path)[0] + ".txt"


def _objects(label: str, size: tuple[int, int], nc: int) -> list[tuple[list[float], int, int, str]]:
    try:
        with open(label, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"{label}: cannot read labels ({exc.__class__.__name__})") from None
    w, h = size
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{label}:{n}"
        if len(parts) < 5 or len(parts) % 2 == 0:
            raise CnnkitError(f"{where}: expected 'class cx cy w h' (or 'class x1 y1 x2 y2 ...'), got {line!r}")
        try:
            cls = float(parts[0])
            if not cls.is_integer():
                raise ValueError
        except ValueError:
            raise CnnkitError(f"{where}: class {parts[0]!r} is not a class number") from None
        if not 0 <= cls < nc:
            raise CnnkitError(f"{where}: class {int(cls)} is out of range (the dataset has {nc} classes)")
        values = []
        for v in parts[1:]:
            try:
                values.append(float(v))
            except ValueError:
                raise CnnkitError(f"{where}: {v!r} is not a number") from None
        if len(values) == 4:
            cx, cy, bw, bh = values
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
        else:
            xs, ys = values[0::2], values[1::2]
            box = [min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h]
        out.append((box, int(cls), 0, where))
    return out


def yolo_dataset(source: str | Path, split: str = "train") -> DetectionFiles:
    """The ``split`` of a YOLO data.yaml (or of the folder holding one)."""
    cfg_path = yaml_of(Path(source))
    if cfg_path is None:
        raise CnnkitError(f"{source}: no data.yaml with 'names'")
    cfg = read_yaml(cfg_path)
    classes = class_names(cfg["names"], cfg_path)
    raw = cfg.get(split)
    if not raw:
        raise MissingSplit(f"{cfg_path} has no '{split}:' entry")
    root = _root(cfg, cfg_path)
    entries = [str(e) for e in (raw if isinstance(raw, list) else [raw])]
    images: list[str] = []
    for entry in entries:
        path = _entry(root, entry)
        if path.is_dir():
            images += _walk_images(path)
        elif path.is_file() and path.suffix == ".txt":
            images += _list_file(path, root)
        elif path.is_file() and is_image(path):
            images.append(str(path))
        else:
            raise CnnkitError(f"{cfg_path}: {split} entry {entry!r} ({path}) "
                              "is not a folder of images or an image list")
    first = _entry(root, entries[0])
    labels = [label_path(p) for p in images]
    anchor = Path(label_path(str(first / "x"))).parent if first.is_dir() else first
    if not anchor.parent.is_dir():
        anchor = first
    source_text = f"YOLO {cfg_path} {split}: {', '.join(entries)}"

    def scan() -> Scanner:
        scanner = Scanner(source_text, classes)
        for image, label in zip(images, labels):
            size = scanner.image_size(image)
            if size is not None:
                scanner.add(image, size, _objects(label, size, len(classes)))
        return scanner

    records, report, _ = cached_scan(cache_path(anchor), images + labels, repr(classes), source_text, scan,
                                     within=(root, cfg_path.parent))  # `path:` may point anywhere
    return DetectionFiles(records, classes, source_text, report)
