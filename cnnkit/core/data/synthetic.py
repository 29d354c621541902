"""Built-in datasets made on the fly, so every training command runs with no data at all.

- ``textures`` (classification): eight procedural texture classes.
- ``shapes`` (detection): circles, squares and triangles on a noisy background.
- ``glyphs`` (identities): each identity is a random stroke glyph; its images are jittered renders.

Every sample is a pure function of (seed, split, index): the same spec always gives the same data.
Parameters come from the spec's query string, e.g. ``synthetic:shapes?n=256&size=128``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.detection import DetectionSample

SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def _whole(name: str, value: Any, least: int) -> int:
    """A query parameter (``?n=64``) as a whole number of at least ``least``, or one line naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise CnnkitError(f"synthetic data: {name}={value} must be a whole number, at least {least}")
    return value


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_OFFSET[split], index])


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour gradient with pixel noise, float32 in [0, 255]."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None])
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = c0 + (c1 - c0) * ramp[..., None]
    return img + rng.normal(0, 8, (size, size, 3))


class Synthetic:
    """Shared bits: a deterministic length, split and seed."""

    def __init__(self, split: str = "train", n: int = 512, size: int = 64, seed: int = 0) -> None:
        if split not in SPLIT_OFFSET:
            raise ValueError(f"unknown split {split!r}")
        self.split, self.size, self.seed = split, _whole("size", size, 8), _whole("seed", seed, 0)
        self.n = _whole("n", n, 1) if split == "train" else max(_whole("n", n, 1) // 4, 1)

    def __len__(self) -> int:
        return self.n


# --------------------------------------------------------------------------- textures
TEXTURES = ("stripes-horizontal", "stripes-vertical", "stripes-diagonal", "checkerboard",
            "dots", "rings", "grid", "blobs")


def _texture(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    freq = rng.uniform(3, 7)
    phase = rng.uniform(0, 2 * math.pi)
    name = TEXTURES[kind]
    if name == "stripes-horizontal":
        v = np.sin(2 * math.pi * freq * y + phase)
    elif name == "stripes-vertical":
        v = np.sin(2 * math.pi * freq * x + phase)
    elif name == "stripes-diagonal":
        sign = rng.choice([-1.0, 1.0])
        v = np.sin(2 * math.pi * freq * (x + sign * y) / math.sqrt(2) + phase)
    elif name == "checkerboard":
        v = np.sign(np.sin(2 * math.pi * freq * x + phase) * np.sin(2 * math.pi * freq * y + phase))
    elif name == "dots":
        v = (np.sin(2 * math.pi * freq * x + phase) * np.sin(2 * math.pi * freq * y + phase)) ** 2
        v = np.where(v > 0.5, 1.0, -1.0)
    elif name == "rings":
        cx, cy = rng.uniform(0.2, 0.8, 2)
        v = np.sin(2 * math.pi * freq * np.hypot(x - cx, y - cy) * 1.5 + phase)
    elif name == "grid":
        lines = np.minimum(np.abs(np.sin(math.pi * freq * x + phase)), np.abs(np.sin(math.pi * freq * y + phase)))
        v = np.where(lines < 0.25, 1.0, -1.0)
    else:  # blobs: smoothed noise
        coarse = rng.normal(0, 1, (6, 6)).astype(np.float32)
        v = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))
        v = np.tanh(v * 2)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    while np.abs(c0 - c1).sum() < 150:
        c1 = rng.uniform(0, 255, 3)
    img = c0 + (c1 - c0) * ((v[..., None] + 1) / 2)
    return img + rng.normal(0, 10, img.shape)


class Textures(Synthetic):
    """Classification: eight texture classes, balanced, ``(image, label)`` samples."""

    classes = list(TEXTURES)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        rng = sample_rng(self.seed, self.split, index)
        label = index % len(self.classes)
        img = _texture(label, rng, self.size)
        return np.clip(img, 0, 255).astype(np.uint8), label


# --------------------------------------------------------------------------- shapes
SHAPES = ("circle", "square", "triangle")


class Shapes(Synthetic):
    """Detection: 0-``max_objects`` shapes an image; about one image in 20 has none."""

    classes = list(SHAPES)

    def __init__(self, split: str = "train", n: int = 512, size: int = 128, seed: int = 0,
                 max_objects: int = 3) -> None:
        super().__init__(split, n, size, seed)
        self.max_objects = _whole("max_objects", max_objects, 1)

    def __getitem__(self, index: int) -> DetectionSample:
        rng = sample_rng(self.seed, self.split, index)
        s = self.size
        img = Image.fromarray(np.clip(background(rng, s), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        count = 0 if rng.random() < 0.05 else int(rng.integers(1, self.max_objects + 1))
        boxes: list[list[float]] = []
        labels: list[int] = []
        for _ in range(count * 10):  # rejection sampling for little overlap
            if len(boxes) == count:
                break
            w = rng.uniform(0.18, 0.45) * s
            label = int(rng.integers(len(SHAPES)))
            h = w if label != 1 else w * rng.uniform(0.8, 1.25)
            x1, y1 = rng.uniform(0, s - w), rng.uniform(0, s - h)
            box = [x1, y1, x1 + w, y1 + h]
            if any(overlap(box, b) > 0.1 for b in boxes):
                continue
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if SHAPES[label] == "circle":
                draw.ellipse(box, fill=colour)
            elif SHAPES[label] == "square":
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(x1 + w / 2, y1), (x1, y1 + h), (x1 + w, y1 + h)], fill=colour)
            boxes.append(box)
            labels.append(label)
        image = np.asarray(img).astype(np.float32) + rng.normal(0, 4, (s, s, 3))
        return DetectionSample(
            image=np.clip(image, 0, 255).astype(np.uint8),
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            path=f"synthetic:shapes/{self.split}/{index}",
        )


def overlap(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- glyphs
@dataclass(frozen=True)
class _Glyph:
    strokes: tuple[tuple[tuple[float, float], ...], ...]


def _make_glyph(rng: np.random.Generator) -> _Glyph:
    grid = [(x / 4, y / 4) for x in range(5) for y in range(5)]
    strokes = []
    for _ in range(int(rng.integers(3, 6))):
        points = rng.choice(len(grid), size=int(rng.integers(2, 4)), replace=False)
        strokes.append(tuple(grid[i] for i in points))
    return _Glyph(tuple(strokes))


class Glyphs:
    """Identities: ``ids`` glyph identities with ``per_id`` jittered images each.

    Validation identities (half as many) are disjoint from training ones (they come from another
    seed range), which is what one-shot verification is measured on. Samples are
    ``(image, identity)``. The defaults favour many identities over many images of each.
    """

    def __init__(self, split: str = "train", ids: int = 256, per_id: int = 4, size: int = 64,
                 seed: int = 0) -> None:
        if split not in SPLIT_OFFSET:
            raise ValueError(f"unknown split {split!r}")
        self.split, self.size, self.seed = split, _whole("size", size, 8), _whole("seed", seed, 0)
        self.ids = _whole("ids", ids, 2) if split == "train" else max(ids // 2, 2)
        self.per_id = _whole("per_id", per_id, 1)
        self.classes = [f"glyph-{self.split}-{i:04d}" for i in range(self.ids)]
        self._glyphs = [_make_glyph(sample_rng(self.seed + 7919, split, i)) for i in range(self.ids)]
        self.targets = [i // self.per_id for i in range(len(self))]

    def __len__(self) -> int:
        return self.ids * self.per_id

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        identity = index // self.per_id
        rng = sample_rng(self.seed, self.split, index)
        s = self.size
        img = Image.fromarray(np.clip(background(rng, s) * 0.3 + 180, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        angle = rng.uniform(-0.25, 0.25)
        scale = rng.uniform(0.55, 0.7) * s
        shift = rng.uniform(-0.06, 0.06, 2) * s + s / 2
        cos, sin = math.cos(angle), math.sin(angle)
        width = max(1, int(round(rng.uniform(0.05, 0.08) * s)))
        ink = tuple(int(c) for c in rng.integers(0, 90, 3))
        for stroke in self._glyphs[identity].strokes:
            pts = []
            for px, py in stroke:
                px, py = px - 0.5 + rng.normal(0, 0.02), py - 0.5 + rng.normal(0, 0.02)
                pts.append((shift[0] + scale * (cos * px - sin * py), shift[1] + scale * (sin * px + cos * py)))
            draw.line(pts, fill=ink, width=width, joint="curve")
        image = np.asarray(img).astype(np.float32) + rng.normal(0, 6, (s, s, 3))
        return np.clip(image, 0, 255).astype(np.uint8), identity


