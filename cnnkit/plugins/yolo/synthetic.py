"""Synthetic data for YOLO9000-style joint training: rings, crosses and bars.

- ``synthetic:figures`` (detection): 1-3 figures an image; ``labels=fine`` names them
  ``ring``/``cross``/``bar``, ``labels=coarse`` calls every box ``shape`` (a detection set that
  only knows the parent class);
- ``synthetic:figure-crops`` (classification): one figure an image, labelled with its fine class.

On the tree ``shape -1 / ring 0 / cross 0 / bar 0``, joint training on coarse boxes and fine
crops can learn to name fine classes in boxes no detection label ever named.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cnnkit.api import DetectionSample, Synthetic, background, overlap, sample_rng

FIGURES = ("ring", "cross", "bar")
TREE = "shape -1\nring 0\ncross 0\nbar 0\n"  # Darknet's WordTree format


def _draw(draw: ImageDraw.ImageDraw, kind: int, box: list[float], colour: tuple[int, ...]) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if FIGURES[kind] == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(0.2 * min(w, h))))
    elif FIGURES[kind] == "cross":
        t = 0.32
        draw.rectangle([x1, y1 + h * (0.5 - t / 2), x2, y1 + h * (0.5 + t / 2)], fill=colour)
        draw.rectangle([x1 + w * (0.5 - t / 2), y1, x1 + w * (0.5 + t / 2), y2], fill=colour)
    else:
        draw.rectangle(box, fill=colour)


def _figure_box(rng: np.random.Generator, kind: int, size: float, lo: float, hi: float) -> tuple[float, float]:
    """Width and height of a figure: bars are long and thin, either way round."""
    w = rng.uniform(lo, hi) * size
    if FIGURES[kind] != "bar":
        return w, w
    return (w, w * 0.3) if rng.random() < 0.5 else (w * 0.3, w)


class Figures(Synthetic):
    """Detection: 1-``max_objects`` rings, crosses and bars an image."""

    def __init__(self, split: str = "train", n: int = 512, size: int = 128, seed: int = 0,
                 max_objects: int = 3, labels: str = "fine") -> None:
        super().__init__(split, n, size, seed)
        if labels not in ("fine", "coarse"):
            raise ValueError(f"labels must be 'fine' or 'coarse', not {labels!r}")
        self.max_objects, self.coarse = int(max_objects), labels == "coarse"
        self.classes = ["shape"] if self.coarse else list(FIGURES)

    def __getitem__(self, index: int) -> DetectionSample:
        rng = sample_rng(self.seed + 7, self.split, index)
        s = self.size
        img = Image.fromarray(np.clip(background(rng, s), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        count = int(rng.integers(1, self.max_objects + 1))
        boxes: list[list[float]] = []
        labels: list[int] = []
        for _ in range(count * 10):
            if len(boxes) == count:
                break
            kind = int(rng.integers(len(FIGURES)))
            w, h = _figure_box(rng, kind, s, 0.22, 0.45)
            x1, y1 = rng.uniform(0, s - w), rng.uniform(0, s - h)
            box = [x1, y1, x1 + w, y1 + h]
            if any(overlap(box, b) > 0.05 for b in boxes):
                continue
            _draw(draw, kind, box, tuple(int(c) for c in rng.integers(0, 256, 3)))
            boxes.append(box)
            labels.append(0 if self.coarse else kind)
        image = np.asarray(img).astype(np.float32) + rng.normal(0, 4, (s, s, 3))
        return DetectionSample(np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4),
                               np.asarray(labels, np.int64), f"synthetic:figures/{self.split}/{index}")


class FigureCrops(Synthetic):
    """Classification: one figure an image (25-60% of its side, anywhere), labelled ring/cross/bar;
    :meth:`with_box` also gives the figure's box (where a map of the decision should point)."""

    classes = list(FIGURES)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        image, kind, _ = self.with_box(index)
        return image, kind

    def with_box(self, index: int) -> tuple[np.ndarray, int, list[float]]:
        """The sample and its figure's box (xyxy pixels)."""
        rng = sample_rng(self.seed + 11, self.split, index)
        s = self.size
        img = Image.fromarray(np.clip(background(rng, s), 0, 255).astype(np.uint8))
        kind = int(rng.integers(len(FIGURES)))
        w, h = _figure_box(rng, kind, s, 0.3, 0.6)
        x1, y1 = rng.uniform(0, s - w), rng.uniform(0, s - h)
        box = [x1, y1, x1 + w, y1 + h]
        _draw(ImageDraw.Draw(img), kind, box, tuple(int(c) for c in rng.integers(0, 256, 3)))
        image = np.asarray(img).astype(np.float32) + rng.normal(0, 4, (s, s, 3))
        return np.clip(image, 0, 255).astype(np.uint8), kind, box
