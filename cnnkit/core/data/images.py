"""Safe image reading: EXIF orientation honoured, RGBA/greyscale/palette turned into RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnkit.core.atomic import atomic_path
from cnnkit.core.errors import CnnkitError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_image(path: str | Path) -> Image.Image:
    """Open an image as an upright RGB ``PIL.Image`` or raise a one-line :class:`CnnkitError`."""
    path = Path(path)
    if not path.exists():
        raise CnnkitError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CnnkitError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB uint8 array of shape (H, W, 3)."""
    return np.asarray(open_image(path), dtype=np.uint8).copy()


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image(p))


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 array atomically (a temp file, then a rename)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise CnnkitError(f"{path}: unknown image format '{path.suffix}'")
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt)
    return path
