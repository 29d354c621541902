"""Images into network inputs and back at inference, in numpy, OpenCV and PIL (torch only to wrap the
result in a tensor; no albumentations, no torchvision): the letterbox of ``cnnkit detect``, the
classifiers' resize and crop, scaling and normalisation. The torch and onnxruntime paths share it;
training's augmentation pipelines (albumentations) are in :mod:`cnnkit.core.data.transforms`."""

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


def to_tensor(image: np.ndarray, normalize: bool | Norm = True) -> Any:
    """:func:`to_array` as a torch tensor."""
    import torch

    return torch.from_numpy(to_array(image, normalize))


def to_pixels(image: Any, normalize: bool | Norm = False) -> np.ndarray:
    """A ``(3, H, W)`` tensor made by :func:`to_tensor` with ``normalize`` back to its RGB uint8
    ``(H, W, 3)`` pixels: ``x * std + mean``, then 0..255 (exact for pixels that went through ``to_tensor``)."""
    import torch

    mean, std = norm_of(normalize)
    t = image.detach().float().cpu()
    if (mean, std) != RAW:
        t = t * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return t.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def to_image(tensor: Any) -> np.ndarray:
    """The first image of a ``(B, 3, H, W)`` tensor in [0, 1] as RGB uint8 ``(H, W, 3)`` (to_tensor's inverse)."""
    return to_pixels(tensor[0])


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


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` at ``height`` x ``width`` (linear interpolation; unchanged when already that size),
    as albumentations' ``Resize`` does it."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def resize_short_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Short side to ``size`` (linear), then the centre ``size`` x ``size``: the evaluation transform
    of classifiers trained here (albumentations' ``SmallestMaxSize`` + ``CenterCrop``)."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    image = resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def publisher_crop(image: np.ndarray, resize_to: int, crop: int, interpolation: str = "bilinear") -> np.ndarray:
    """Short side to ``resize_to`` and the centre ``crop`` x ``crop``, on a PIL image as torchvision's
    ``Resize`` + ``CenterCrop`` do it (the evaluation transform published weights were measured with;
    tests/test_pixels.py checks it against torchvision's own)."""
    from PIL import Image

    modes = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
             "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
    pil = Image.fromarray(image)
    w, h = pil.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize_to, int(resize_to * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), modes[interpolation])
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return np.asarray(pil.crop((left, top, left + crop, top + crop)))
