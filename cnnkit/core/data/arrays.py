"""Images into network inputs and back, in numpy and OpenCV alone (no torch, no albumentations), so
the torch and the onnxruntime inference paths prepare pixels with the same code: the letterbox of
``cnnkit detect`` and the scaling and normalisation of every task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from cnnkit.core.base.registry import IMAGENET_MEAN, IMAGENET_STD, RAW_MEAN, RAW_STD

Norm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) of pixels in [0, 1]
IMAGENET: Norm = (IMAGENET_MEAN, IMAGENET_STD)
RAW: Norm = (RAW_MEAN, RAW_STD)


def norm_of(normalize: bool | Norm) -> Norm:
    """``(mean, std)``: True is ImageNet's, False none (pixels in [0, 1] as they are)."""
    return IMAGENET if normalize is True else RAW if normalize is False else normalize


def to_array(image: np.ndarray, normalize: bool | Norm = True) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32 in [0, 1], then ``(x - mean) / std`` (see :func:`norm_of`)."""
    x = np.ascontiguousarray(image).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean, std = norm_of(normalize)
    if (mean, std) != RAW:
        x = (x - np.asarray(mean, np.float32).reshape(3, 1, 1)) / np.asarray(std, np.float32).reshape(3, 1, 1)
    return x


def to_pixels(x: np.ndarray) -> np.ndarray:
    """CHW in [0, 1] -> HWC uint8 RGB (:func:`to_array`'s inverse without normalisation)."""
    return (np.clip(x, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)


@dataclass
class Letterbox:
    """How an image was fitted into a square: ``scale`` then padding ``(left, top)``."""

    scale: float
    pad: tuple[float, float]

    def unmap(self, boxes: Any, shape: tuple[int, int]) -> Any:
        """Boxes in letterboxed pixels -> boxes in the original image (clipped to it); numpy arrays
        and torch tensors alike."""
        out = boxes.clone() if hasattr(boxes, "clone") else boxes.copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad[0]) / self.scale).clip(0, shape[1])
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad[1]) / self.scale).clip(0, shape[0])
        return out


def letterbox(image: np.ndarray, size: int, fill: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Long side to ``size`` (linear interpolation), then pad to a centred square of ``fill``: the
    letterbox of training (albumentations' ``LongestMaxSize`` + ``PadIfNeeded``, which
    ``transforms.letterbox_steps`` builds; tests/test_data.py checks they agree pixel for pixel)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    boxed = cv2.copyMakeBorder(resized, top, size - nh - top, left, size - nw - left, cv2.BORDER_CONSTANT,
                               value=(fill, fill, fill))
    return boxed, Letterbox(scale, (float(left), float(top)))
