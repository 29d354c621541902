"""ImageFolder layout: ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnkit.core.data.images import list_images, read_image
from cnnkit.core.errors import CnnkitError


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir() and any(p.is_dir() for p in (path / "train").iterdir())


class LabelledImages:
    """``(image, label)`` samples from ``items``: a list of (path, label), images read lazily."""

    items: list[tuple[Path, int]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.items[index]
        return read_image(path), label


class FolderDataset(LabelledImages):
    """``(image, label)`` samples from one folder per class; ``classes`` sorted by name."""

    def __init__(self, root: str | Path, classes: list[str] | None = None) -> None:
        root = Path(root)
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.classes = classes if classes is not None else found
        self.items: list[tuple[Path, int]] = []
        for name in found:
            if name not in self.classes:
                raise CnnkitError(f"{root / name}: class '{name}' is not among the training classes")
            self.items += [(p, self.classes.index(name)) for p in list_images(root / name)]
        if not self.items:
            raise CnnkitError(f"{root}: no images found")
        self.targets = [label for _, label in self.items]


def image_folder_dataset(source: str | Path, split: str = "train") -> FolderDataset:
    root = Path(source)
    train_classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    folder = root / split
    if not folder.is_dir():
        raise CnnkitError(f"{root}: no '{split}/' folder")
    return FolderDataset(folder, classes=train_classes)
