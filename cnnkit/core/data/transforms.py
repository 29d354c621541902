"""Albumentations pipelines (bbox-aware for detection), letterboxing and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from cnnkit.core.registry import IMAGENET_MEAN, IMAGENET_STD, RAW_MEAN, RAW_STD

Norm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) of pixels in [0, 1]
IMAGENET: Norm = (IMAGENET_MEAN, IMAGENET_STD)
RAW: Norm = (RAW_MEAN, RAW_STD)


def to_tensor(image: np.ndarray, normalize: bool | Norm = True) -> torch.Tensor:
    """HWC uint8 RGB -> CHW float tensor in [0, 1], then ``(x - mean) / std``: ``normalize`` is a
    ``(mean, std)`` pair, True for ImageNet's, False for none."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    mean, std = IMAGENET if normalize is True else RAW if normalize is False else normalize
    if (mean, std) != RAW:
        t = (t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return t


def to_pixels(image: torch.Tensor, normalize: bool | Norm = False) -> np.ndarray:
    """A ``(3, H, W)`` tensor made by :func:`to_tensor` with ``normalize`` back to its RGB uint8
    ``(H, W, 3)`` pixels: ``x * std + mean``, then 0..255 (exact for pixels that went through ``to_tensor``)."""
    mean, std = IMAGENET if normalize is True else RAW if normalize is False else normalize
    t = image.detach().float().cpu()
    if (mean, std) != RAW:
        t = t * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return t.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """The first image of a ``(B, 3, H, W)`` batch in [0, 1] as RGB uint8 ``(H, W, 3)`` (to_tensor's inverse)."""
    return to_pixels(tensor[0])


AUGMENTATIONS = ("default", "alexnet", "vgg", "resnet", "inception", "darknet")


def _shorter_sides(img_size: int, lo: int, hi: int) -> list[int]:
    """The papers' shorter sides ``lo..hi`` (for 224 crops) at ``img_size``."""
    scale = img_size / 224
    return sorted({max(img_size, round(s * scale)) for s in range(lo, hi + 1)})


def classification_pipeline(img_size: int, train: bool, augment: str = "default") -> A.Compose:
    """Training augmentation ``augment``, or resize + centre crop for evaluation. The papers' (sizes
    for their 224 crops, scaled with ``img_size``): ``alexnet`` (shorter side 256, random crops, flips,
    PCA colour noise: Krizhevsky et al. 2012 sec. 4.1), ``vgg`` (shorter side random in 256..512:
    Simonyan & Zisserman's scale jittering), ``resnet`` (256..480: He et al. sec. 3.4), ``inception``
    (8-100% of the area at ratios 3/4..4/3, photometric distortions: GoogLeNet sec. 6), ``darknet``
    (rotations up to 7 degrees, crops, hue/saturation/exposure: darknet19.cfg); ``default`` is
    cnnkit's milder crop (60-100%) for short runs."""
    if not train:
        return A.Compose([A.SmallestMaxSize(max_size=img_size), A.CenterCrop(img_size, img_size)])
    size, flip = (img_size, img_size), A.HorizontalFlip(p=0.5)
    pca = A.FancyPCA(alpha=0.1, p=1.0)  # AlexNet's lighting noise (the image's own principal components)
    if augment in ("alexnet", "vgg", "resnet"):
        lo, hi = {"alexnet": (256, 256), "vgg": (256, 512), "resnet": (256, 480)}[augment]
        return A.Compose([A.SmallestMaxSize(max_size=_shorter_sides(img_size, lo, hi)),
                          A.RandomCrop(img_size, img_size), flip, pca])
    if augment == "inception":
        return A.Compose([A.RandomResizedCrop(size=size, scale=(0.08, 1.0)), flip,
                          A.ColorJitter(0.4, 0.4, 0.4, 0.0, p=0.5)])
    if augment == "darknet":
        return A.Compose([A.Affine(rotate=(-7, 7), p=1.0), A.RandomResizedCrop(size=size, scale=(0.25, 1.0)), flip,
                          A.HueSaturationValue(hue_shift_limit=18, sat_shift_limit=60, val_shift_limit=60, p=1.0)])
    if augment != "default":
        raise ValueError(f"unknown augmentation {augment!r}")
    return A.Compose([A.RandomResizedCrop(size=size, scale=(0.6, 1.0)), flip, A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5)])


def detection_pipeline(img_size: int, train: bool, zoom_out: float = 1.0, jitter: float = 0.25,
                       flip_only: bool = False) -> A.Compose:
    """Letterbox to ``img_size`` square; in training also scale jitter (half the images scaled by a
    random factor in ``1 +- jitter``), flips and HSV (``flip_only``: flips alone, the R-CNN papers'). Boxes
    come with two label fields: ``labels`` and ``kind`` (0 object, 1 difficult, 2 crowd).
    ``zoom_out`` < 1: the letterboxed image is then shrunk by a random factor in [zoom_out, 1]
    and placed at a random spot of the padded square."""
    steps: list[A.BasicTransform] = []
    if train and flip_only:
        steps.append(A.HorizontalFlip(p=0.5))
    elif train:
        steps += [
            A.Affine(scale=(1 - jitter, 1 + jitter), translate_percent=(-0.1, 0.1), p=0.5,
                     border_mode=cv2.BORDER_CONSTANT, fill=114),
            A.HorizontalFlip(p=0.5),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=40, val_shift_limit=30, p=0.5),
        ]
    steps += letterbox_steps(img_size)
    if zoom_out < 1:
        steps += [A.RandomScale(scale_limit=(zoom_out - 1, 0), p=1.0),
                  A.PadIfNeeded(img_size, img_size, position="random", border_mode=cv2.BORDER_CONSTANT, fill=114)]
    return A.Compose(steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "kind"],
                                                     min_visibility=0.3, min_area=4))


@dataclass
class Letterbox:
    """How an image was fitted into a square: ``scale`` then padding ``(left, top)``."""

    scale: float
    pad: tuple[float, float]

    def unmap(self, boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Boxes in letterboxed pixels -> boxes in the original image (clipped to it)."""
        out = boxes.clone()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad[0]) / self.scale).clamp(0, shape[1])
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad[1]) / self.scale).clamp(0, shape[0])
        return out


def letterbox_steps(img_size: int, fill: int = 114) -> list[A.BasicTransform]:
    """Long side to ``img_size`` (linear interpolation), then pad to a centred square: the one
    letterbox of training, evaluation and ``cnnkit detect``."""
    return [A.LongestMaxSize(max_size=img_size),
            A.PadIfNeeded(img_size, img_size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=fill)]


def letterbox(image: np.ndarray, size: int, fill: int = 114) -> tuple[np.ndarray, Letterbox]:
    """:func:`letterbox_steps` on one image, with the scale and padding that map boxes back."""
    resize, pad = letterbox_steps(size, fill)
    resized = resize(image=image)["image"]
    (h, w), (nh, nw) = image.shape[:2], resized.shape[:2]
    top, left = (size - nh) // 2, (size - nw) // 2  # PadIfNeeded's centre split
    return pad(image=resized)["image"], Letterbox(size / max(h, w), (float(left), float(top)))


def publisher_transform(entry: Any) -> Any:
    """The evaluation transform published weights (a ``WeightsSpec``) were measured with, as
    torchvision's ``weights.transforms()`` and timm's ``create_transform(resolve_data_config)`` do
    on a PIL image: resize the short side to ``entry.resize``, centre crop ``entry.crop``, scale to
    [0, 1], normalise with the weights' mean/std."""
    from torchvision import transforms as T

    mode = T.InterpolationMode(entry.interpolation)
    return T.Compose([T.Resize(entry.resize, interpolation=mode), T.CenterCrop(entry.crop), T.ToTensor(),
                      T.Normalize(entry.mean, entry.std)])
