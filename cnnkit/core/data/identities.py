"""Identity roots: one folder a person (``root/<name>/*.jpg``).

Training and validation use disjoint identities (verification is measured on people the model
has never seen): a stable hash of each name sends about a fifth of them to ``val``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from cnnkit.core.data.classification import FolderDataset
from cnnkit.core.data.images import list_images
from cnnkit.core.errors import CnnkitError

SPLITS = ("train", "val")


def is_identity_root(path: Path) -> bool:
    if not path.is_dir() or (path / "train").is_dir():
        return False
    people = [p for p in path.iterdir() if p.is_dir()]
    return bool(people) and all(list_images(p) for p in people)


def identity_split(name: str, val_fraction: float = 0.2) -> str:
    return "val" if zlib.crc32(name.encode()) % 1000 < val_fraction * 1000 else "train"


def _val_people(people: list[str]) -> list[str]:
    """About a fifth of the people, chosen by name hash; tiny sets still keep one aside."""
    val = [p for p in people if identity_split(p) == "val"]
    if not val and len(people) > 1:
        val = people[-max(1, len(people) // 5):]
    return val


class IdentityDataset(FolderDataset):
    """``(image, identity)`` samples; ``classes`` are the people's names."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        people = sorted(p.name for p in root.iterdir() if p.is_dir())
        val = _val_people(people)
        chosen = val if split == "val" else [p for p in people if p not in val]
        if not chosen:
            raise CnnkitError(f"{root}: no identities for the '{split}' split")
        self.classes = chosen
        self.items = [(img, i) for i, name in enumerate(chosen) for img in list_images(root / name)]
        self.targets = [label for _, label in self.items]


def identity_dataset(source: str | Path, split: str = "train") -> IdentityDataset:
    return IdentityDataset(source, split)
