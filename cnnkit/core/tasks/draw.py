"""Shared detection output: turning tensors into the JSON records ``cnnkit detect`` prints, and
drawing them on images."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def records(boxes: Any, scores: Any, labels: Any, classes: list[str]) -> list[dict[str, Any]]:
    """``[{box: [x1, y1, x2, y2], score, label, class}]`` sorted by score (highest first)."""
    rows = [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "label": int(c),
             "class": classes[int(c)] if int(c) < len(classes) else str(int(c))}
            for b, s, c in zip(boxes.tolist(), scores.tolist(), labels.tolist())]
    return sorted(rows, key=lambda r: -r["score"])


def draw_detections(image: np.ndarray, detections: list[dict[str, Any]]) -> np.ndarray:
    """The image with each detection's box and "class score" label drawn on it."""
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    width = max(1, round(max(image.shape[:2]) / 300))
    for det in detections:
        colour = PALETTE[det["label"] % len(PALETTE)]
        x1, y1, x2, y2 = det["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = f"{det['class']} {det['score']:.2f}"
        tw, th = draw.textbbox((0, 0), text)[2:]
        top = max(y1 - th - 2, 0)
        draw.rectangle([x1, top, x1 + tw + 4, top + th + 2], fill=colour)
        draw.text((x1 + 2, top + 1), text, fill=(255, 255, 255))
    return np.asarray(img)


def annotated_names(paths: list[Path]) -> list[Path]:
    """Where each image's annotated copy goes under ``--save-dir``: its folder relative to the
    images' common folder, its stem and ``.jpg``; two images of one stem in one folder
    (``photo.jpg``, ``photo.png``) keep their own extension (``photo.png.jpg``), so none overwrites another."""
    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath([os.path.dirname(p) for p in absolute]) if absolute else ""
    plain = [Path(os.path.relpath(os.path.dirname(p), common)) / (Path(p).stem + ".jpg") for p in absolute]
    taken = Counter(plain)
    return [name if taken[name] == 1 else name.with_name(Path(p).name + ".jpg") for name, p in zip(plain, absolute)]
