"""Pictures of maps: a heatmap over the photo with its caption, side-by-side pairs, grids of a
layer's channels and of the first convolution's kernels."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cnnkit.core.tasks.draw import PALETTE

ALPHA = 0.5  # the heatmap's share of each overlay pixel


def colour(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A map in [0, 1] as RGB uint8 through a matplotlib colour map."""
    from matplotlib import colormaps

    return (colormaps[cmap](np.clip(values, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill: tuple[int, int, int]) -> None:
    tw, th = draw.textbbox((0, 0), text)[2:]
    x, y = xy
    draw.rectangle([x, y, x + tw + 4, y + th + 3], fill=fill)
    draw.text((x + 2, y + 1), text, fill=(255, 255, 255))


def overlay(image: np.ndarray, saliency: np.ndarray, caption: str, box: list[float] | None = None,
            peak: tuple[int, int] | None = None, label: int = 0) -> Image.Image:
    """The heatmap blended over ``image``, the caption in the top-left corner, a detection's box
    and the map's peak (a cross) drawn on it."""
    blended = (image.astype(np.float32) * (1 - ALPHA) + colour(saliency).astype(np.float32) * ALPHA)
    img = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    width = max(1, round(max(image.shape[:2]) / 200))
    if box is not None:
        draw.rectangle(box, outline=PALETTE[label % len(PALETTE)], width=width)
    if peak is not None:
        x, y, r = peak[0], peak[1], 3 * width
        draw.line([x - r, y, x + r, y], fill=(255, 255, 255), width=width)
        draw.line([x, y - r, x, y + r], fill=(255, 255, 255), width=width)
    _label(draw, (0, 0), caption, (0, 0, 0))
    return img


def side_by_side(images: list[Image.Image], caption: str = "", gap: int = 4) -> Image.Image:
    """Images in a row at the height of the tallest, with an optional caption strip above."""
    height = max(i.height for i in images)
    scaled = [i.resize((round(i.width * height / i.height), height)) for i in images]
    strip = 14 if caption else 0
    out = Image.new("RGB", (sum(i.width for i in scaled) + gap * (len(scaled) - 1), height + strip), (255, 255, 255))
    x = 0
    for i in scaled:
        out.paste(i, (x, strip))
        x += i.width + gap
    if caption:
        ImageDraw.Draw(out).text((2, 1), caption, fill=(0, 0, 0))
    return out


def grid(tiles: list[np.ndarray], caption: str, columns: int = 8, tile: int = 48, gap: int = 2) -> Image.Image:
    """RGB tiles (any sizes, nearest-upscaled to ``tile`` px) in a grid under a caption."""
    rows = -(-len(tiles) // columns)
    strip = 14
    out = Image.new("RGB", (columns * (tile + gap) + gap, rows * (tile + gap) + gap + strip), (255, 255, 255))
    for n, t in enumerate(tiles):
        img = Image.fromarray(t).resize((tile, tile), Image.NEAREST)
        out.paste(img, (gap + (n % columns) * (tile + gap), strip + gap + (n // columns) * (tile + gap)))
    ImageDraw.Draw(out).text((2, 1), caption, fill=(0, 0, 0))
    return out


def normalised(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] by its own minimum and maximum (a constant map: zeros)."""
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=np.float32)


def stacked(images: list[Image.Image], gap: int = 4) -> Image.Image:
    """Images one above the other, left-aligned."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                    (255, 255, 255))
    y = 0
    for i in images:
        out.paste(i, (0, y))
        y += i.height + gap
    return out
