"""ImageFolder layout: ``root/train/<class>/*.jpg`` with ``val/`` (or ``valid/``) and ``test/``
beside it, or one folder of class folders (a single split, e.g. what ``--val`` names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.images import list_images, read_image
from cnnkit.core.data.scan import CACHE_SUFFIX, Scanner, ScanReport, cached_scan
from cnnkit.core.data.splits import SPLIT_WORDS, MissingSplit


def _class_folder(path: Path) -> bool:
    """A folder of class folders, each holding images directly."""
    if not path.is_dir() or (path / "train").is_dir():
        return False
    classes = [p for p in path.iterdir() if p.is_dir()]
    return bool(classes) and all(list_images(p) for p in classes)


def is_image_folder(path: Path) -> bool:
    train = path / "train"
    return (path.is_dir() and train.is_dir() and any(p.is_dir() for p in train.iterdir())) or _class_folder(path)


def split_folder(root: Path, split: str) -> Path:
    """``root/<split>/`` (``val/``, ``valid/`` or ``validation/`` for val); a single folder of
    class folders is its own train split."""
    if not (root / "train").is_dir():
        if split == "train":
            return root
        raise MissingSplit(f"{root} is a single folder of classes")
    for word in SPLIT_WORDS[split]:
        if (root / word).is_dir():
            return root / word
    raise MissingSplit(f"{root} has no {' or '.join(w + '/' for w in SPLIT_WORDS[split])} folder")


def scanned(folder: Path, name: str, listed: list[tuple[str, int]], classes: list[str],
            source: str) -> tuple[list[tuple[Path, int]], ScanReport]:
    """The ``(path, label)`` images of ``listed`` that decode, and the scan's report (the others
    skipped by name), cached in ``folder/<name>.cnnkit.cache`` (each label kept as one
    whole-image box); no usable image at all is one line."""
    def scan() -> Scanner:
        scanner = Scanner(source, list(classes))
        for path, label in listed:
            size = scanner.image_size(path)
            if size is not None:
                scanner.add(path, size, [([0.0, 0.0, float(size[0]), float(size[1])], label, 0, path)])
        return scanner

    records, report, _ = cached_scan(folder / f"{name}{CACHE_SUFFIX}", [p for p, _ in listed],
                                     f"folder:{classes!r}", source, scan)
    if not records:
        raise CnnkitError(f"{folder}: no usable images ({report.warnings()[0]})")
    return [(Path(r.path), int(r.labels[0])) for r in records], report


class LabelledImages:
    """``(image, label)`` samples from ``items``: a list of (path, label), images read lazily."""

    items: list[tuple[Path, int]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.items[index]
        return read_image(path), label


class FolderDataset(LabelledImages):
    """``(image, label)`` samples from one folder per class; ``classes`` sorted by name. The
    folder is scanned once like a detection split (each image decoded; unreadable ones skipped
    by name in ``report``), the result cached inside it."""

    def __init__(self, root: str | Path, classes: list[str] | None = None) -> None:
        root = Path(root)
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.classes = classes if classes is not None else found
        listed: list[tuple[str, int]] = []
        for name in found:
            if name not in self.classes:
                raise CnnkitError(f"{root / name}: class '{name}' is not among the training classes")
            listed += [(str(p), self.classes.index(name)) for p in list_images(root / name)]
        if not listed:
            raise CnnkitError(f"{root}: no images found")

        self.items, self.report = scanned(root, "images", listed, self.classes, f"ImageFolder {root}")
        self.targets = [label for _, label in self.items]

    def paths(self) -> list[Path]:
        return [p for p, _ in self.items]


def image_folder_dataset(source: str | Path, split: str = "train") -> FolderDataset:
    root = Path(source)
    train = split_folder(root, "train")
    folder = split_folder(root, split)
    ds = FolderDataset(folder, classes=sorted(p.name for p in train.iterdir() if p.is_dir()))
    ds.source = f"ImageFolder {folder}"
    return ds
