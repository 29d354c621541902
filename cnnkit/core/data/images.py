"""Safe image reading: EXIF orientation honoured, RGBA/greyscale/palette turned into RGB, and a
limit on decoded pixels (``CNNKIT_MAX_IMAGE_PIXELS``, default PIL's 89,478,485) so a crafted header
claiming 100000x100000 pixels is one clear error instead of a decompression bomb."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnkit.core.base.atomic import atomic_path
from cnnkit.core.base.errors import CnnkitError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
PIXELS_ENV = "CNNKIT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default (1024 * 1024 * 1024 // 4 // 3)
EXIF_SWAPS = {5, 6, 7, 8}  # EXIF orientations that display the image turned by 90 degrees


def max_image_pixels() -> int:
    """The most pixels an image may decode to: ``CNNKIT_MAX_IMAGE_PIXELS`` or PIL's default."""
    raw = os.environ.get(PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        raise CnnkitError(f"{PIXELS_ENV}={raw}: give a positive whole number of pixels")
    return int(raw)


def _open(path: Path) -> Image.Image:
    """``Image.open`` (which reads the header only) refusing images over the pixel limit before any
    decoding; the caller closes it. PIL's own check stays armed at the limit for everything else."""
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = None  # we check the header's size ourselves, to name it
    try:
        img = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if img.width * img.height > limit:
        img.close()
        raise CnnkitError(f"{path}: image is {img.width}x{img.height} pixels, above the limit of {limit} "
                          f"(raise it with --max-image-pixels N or {PIXELS_ENV}=N)")
    return img


@contextmanager
def _quiet_exif() -> Iterator[None]:
    """Pillow's warnings about a damaged EXIF block ("Tag data larger than file", "Corrupt EXIF
    data"): the tag is skipped and the pixels are fine, so nothing for the user's stderr."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def image_size(path: str | Path, decode: bool = False) -> tuple[int, int]:
    """(width, height) as displayed (EXIF rotation applied) from the header, or a one-line
    :class:`CnnkitError` (``PATH: missing``, ``PATH: not a readable image (...)``, the pixel limit).
    Only EXIF that a format keeps ahead of the pixels is read: a PNG's eXIf after them is not.
    ``decode`` also decodes the pixels (a JPEG at 1/8 scale: every byte is still read), so a
    truncated or corrupt file is found here rather than in the middle of an epoch."""
    path = Path(path)
    try:
        with _quiet_exif(), _open(path) as img:
            w, h = img.size
            if (img.format in ("JPEG", "MPO", "TIFF") or "exif" in img.info) and \
                    img.getexif().get(0x0112, 1) in EXIF_SWAPS:
                w, h = h, w
            if decode:
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
            return w, h
    except FileNotFoundError:
        raise CnnkitError(f"{path}: missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        why = "" if isinstance(exc, UnidentifiedImageError) else f": {str(exc).splitlines()[0]}" if str(exc) else ""
        raise CnnkitError(f"{path}: not a readable image ({exc.__class__.__name__}{why})") from None


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_image(path: str | Path) -> Image.Image:
    """Open an image as an upright RGB ``PIL.Image`` (16-bit greyscale scaled to 8 bits) or raise a
    one-line :class:`CnnkitError`."""
    path = Path(path)
    if not path.exists():
        raise CnnkitError(f"{path}: no such file")
    try:
        with _quiet_exif(), _open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit greyscale: convert() would clip it
                grey = np.clip(np.round(np.asarray(img, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
                return Image.fromarray(grey).convert("RGB")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CnnkitError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB uint8 array of shape (H, W, 3)."""
    return np.asarray(open_image(path), dtype=np.uint8).copy()


class ImageFiles:
    """Image files as a map-style dataset for a loader: item ``i`` is the RGB array of
    ``paths[i]``, or the one-line error message when it cannot be read (a worker's exception
    would reach the user as a traceback)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray | str:
        try:
            return read_image(self.paths[index])
        except CnnkitError as exc:
            return str(exc)


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
