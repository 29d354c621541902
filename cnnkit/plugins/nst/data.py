"""A flat folder of photos (``--data DIR_OF_PHOTOS``), what the fast stylizer trains on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.api import CnnkitError, is_image, list_images, read_image, scanned


def is_photo_folder(path: Path) -> bool:
    """A folder with image files directly inside (no ``train/`` split, no class folders needed)."""
    if not path.is_dir() or (path / "train").is_dir():
        return False
    return any(p.is_file() and is_image(p) for p in path.iterdir())


class PhotoFolder:
    """Images of one folder; about a tenth (at least one) is kept aside for validation."""

    classes: list[str] = []

    def __init__(self, root: str | Path, split: str = "train") -> None:
        photos = list_images(root)
        if not photos:
            raise CnnkitError(f"{root}: no images found")
        held = max(1, len(photos) // 10) if len(photos) > 1 else 0  # a single photo serves both splits
        cut = len(photos) - held
        chosen = photos[cut:] if split != "train" and held else photos[:cut]
        kept, self.report = scanned(Path(root), f"photos-{split}", [(str(p), 0) for p in chosen], ["photo"],
                                    f"photos {root} {split}")  # an unreadable photo skipped by name
        self.items = [p for p, _ in kept]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return read_image(self.items[index])


def photo_folder(source: str | Path, split: str = "train") -> PhotoFolder:
    return PhotoFolder(source, split)
